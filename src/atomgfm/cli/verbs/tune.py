"""``atomgfm tune CAMPAIGN.yaml``: a hyperparameter campaign with DeepHyper (docs/tune.md).

    atomgfm tune configs/tune_demo.yaml                  # run, or resume after a kill
    atomgfm tune configs/tune_demo.yaml --max-evals 20   # extend a finished campaign
    atomgfm tune report runs/tune_demo                   # ranked table, CSV/Markdown, PNG
    atomgfm tune report runs/tune_demo --promote 2       # retrain the top 2 with the full budget

Needs the ``tune`` extra (``pip install 'atomgfm[tune]'``: DeepHyper).
"""

from __future__ import annotations

HELP = "hyperparameter campaigns over the backbone registry (DeepHyper); report, promote"
ORDER = 35


def add_arguments(p) -> None:
    p.add_argument("target", metavar="CAMPAIGN.yaml | report",
                   help="a campaign file to run or resume, or 'report'")
    p.add_argument("dir", nargs="?", metavar="DIR", help="report: the campaign directory")
    g = p.add_argument_group("campaign")
    g.add_argument("--max-evals", type=int, help="override max_evals (extends a campaign)")
    g.add_argument("--evaluators", type=int, help="override evaluators (trials at once)")
    g = p.add_argument_group("report")
    g.add_argument("--promote", type=int, metavar="K",
                   help="retrain the top K configurations with the base config's full budget "
                        "into DIR/promoted/<trial id>/")
    g.add_argument("--max-steps", type=int,
                   help="promote: override the base config's max_steps")


def run(args) -> int:
    if args.target == "report":
        if not args.dir:
            raise ValueError("usage: atomgfm tune report DIR [--promote K]")
        from atomgfm.tune.report import promote, report

        report(args.dir, echo=print)
        if args.promote is not None:
            promote(args.dir, args.promote, max_steps=args.max_steps, echo=print)
        return 0
    if args.dir or args.promote is not None or args.max_steps is not None:
        raise ValueError("DIR, --promote and --max-steps belong to 'atomgfm tune report DIR'")
    _require_deephyper()
    from atomgfm.tune.campaign import load_campaign
    from atomgfm.tune.report import report
    from atomgfm.tune.search import run_campaign

    campaign = load_campaign(args.target)
    for name in ("max_evals", "evaluators"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            setattr(campaign, name, value)
    run_campaign(campaign)
    report(campaign.out_dir, echo=print)
    return 0


def _require_deephyper() -> None:
    try:
        import deephyper  # noqa: F401
    except ImportError:
        raise ValueError("atomgfm tune needs DeepHyper: pip install 'atomgfm[tune]'") from None
