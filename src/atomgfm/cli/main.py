"""``atomgfm``: one command, verbs as thin layers over the library.

    atomgfm data demo --out demo_data          # generate the demo corpus (real calculators)
    atomgfm train configs/demo.yaml            # train (resumes from out_dir/last.pt)
    atomgfm evaluate runs/demo/best.pt         # per-dataset table + parity plots
    atomgfm info runs/demo/best.pt             # what a checkpoint holds
    atomgfm info                               # registered backbones, heads, readers, ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys


def _data(args) -> int:
    if args.what == "demo":
        from atomgfm.demo.corpus import generate_demo

        specs = generate_demo(args.out, seed=args.seed, scale=args.scale)
        for s in specs:
            print(f"  {s['name']:<12} {s['n_structures']:>6} structures  {s['level_of_theory']}")
        print(f"demo corpus written to {args.out}")
    return 0


def _train(args) -> int:
    from atomgfm.config.schema import load_config
    from atomgfm.inference.evaluate import metrics_table
    from atomgfm.train.loop import Trainer

    cfg = load_config(args.config)
    if args.out_dir:
        cfg.train.out_dir = args.out_dir
    if args.max_steps:
        cfg.train.max_steps = args.max_steps
    trainer = Trainer.from_config(cfg, resume=not args.restart)
    metrics = trainer.fit()
    print(f"validation at the last step ({trainer.step}), EMA weights:")
    print(metrics_table(trainer.datasets, metrics))
    print(f"checkpoints in {cfg.train.out_dir}: best.pt, last.pt; training curves: curves.png")
    return 0


def _evaluate(args) -> int:
    from atomgfm.inference.evaluate import evaluate_checkpoint

    ev = evaluate_checkpoint(args.checkpoint, out_dir=args.out, split=args.split,
                             device=args.device)
    print(f"{args.checkpoint} (step {ev.step}), {ev.split} split:")
    print(ev.table)
    print(f"parity plots: {', '.join(str(p) for p in ev.plots)}")
    return 0


def _registry_info() -> dict:
    """The registry, with what a user chooses from: backbone settings (defaults, search ranges),
    presets and feature kinds; reader formats, suffixes and backend packages."""
    import dataclasses

    from atomgfm.registry import KINDS, get, names

    info: dict = {kind: names(kind) for kind in KINDS}
    backbones = {}
    for name in names("backbone"):
        cls = get("backbone", name)
        space = cls.search_space()
        backbones[name] = {
            "feature_kind": cls.feature_kind, "presets": cls.presets,
            "settings": {f.name: {"default": f.default, **{k: v for k, v in space.get(
                f.name, {}).items() if k != "default"}} for f in dataclasses.fields(cls.Settings)}}
    info["backbone"] = backbones
    readers = {}
    for name in names("reader"):
        spec = get("reader", name)
        readers[name] = {"suffixes": " ".join(spec.suffixes[:12])
                         + (" ..." if len(spec.suffixes) > 12 else ""),
                         "requires": list(spec.requires)}
    info["reader"] = readers
    return info


def _info(args) -> int:
    from atomgfm.models.checkpoint import read_checkpoint

    if args.checkpoint is None:  # what this installation can build and read
        print(json.dumps(_registry_info(), indent=2, ensure_ascii=False))
        return 0

    st = read_checkpoint(args.checkpoint)
    info = {"step": st.get("step"), "model": st["config"]["model"], "elements": st["elements"],
            "datasets": [{k: d[k] for k in ("name", "id", "level_of_theory", "labels",
                                             "n_train", "n_val", "provenance")}
                         for d in st["datasets"]],
            "metrics": st.get("metrics")}
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atomgfm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)

    d = sub.add_parser("data", help="datasets: generate the demo corpus")
    d.add_argument("what", choices=["demo"])
    d.add_argument("--out", default="demo_data", help="output folder (default demo_data)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--scale", type=float, default=1.0, help="multiply dataset sizes")
    d.set_defaults(func=_data)

    t = sub.add_parser("train", help="train a multi-task model from a YAML config")
    t.add_argument("config")
    t.add_argument("--out-dir", help="override train.out_dir")
    t.add_argument("--max-steps", type=int, help="override train.max_steps")
    t.add_argument("--restart", action="store_true", help="ignore out_dir/last.pt, start over")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="per-dataset metrics table and parity plots")
    e.add_argument("checkpoint")
    e.add_argument("--out", help="folder for plots and metrics.json (default: beside checkpoint)")
    e.add_argument("--split", choices=["val", "train"], default="val")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=_evaluate)

    i = sub.add_parser("info", help="what a checkpoint holds; without one, the registry")
    i.add_argument("checkpoint", nargs="?")
    i.set_defaults(func=_info)
    return p


# ---- logging and errors: library modules log to ``logging.getLogger(__name__)``; the CLI
# decides what is shown (stderr, "[atomgfm] message"). Command output (tables, JSON) is print.

log = logging.getLogger("atomgfm.cli")


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (tests and callers may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno != logging.INFO:
            msg = f"{record.levelname.lower()}: {msg}"
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f"[atomgfm] {msg}"


@contextlib.contextmanager
def cli_logging(level: int = logging.INFO):
    """Show the ``atomgfm`` loggers' records at ``level`` and above on stderr while inside;
    leaves the logging configuration as it found it."""
    logger = logging.getLogger("atomgfm")
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose (DEBUG) and -q/--quiet (warnings only), before or after any verb."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for p in [parser, *(sp for a in subparsers for sp in a.choices.values())]:
        if "-v" in p._option_string_actions or "-q" in p._option_string_actions:
            continue  # a verb with its own -v/-q keeps them
        g = p.add_mutually_exclusive_group()
        g.add_argument("-v", "--verbose", dest="log_level", action="store_const",
                       const=logging.DEBUG, default=argparse.SUPPRESS,
                       help="show debug messages (and tracebacks of errors)")
        g.add_argument("-q", "--quiet", dest="log_level", action="store_const",
                       const=logging.WARNING, default=argparse.SUPPRESS,
                       help="show warnings and errors only")


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # str(KeyError) would quote the message
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _add_verbosity(parser)
    args = parser.parse_args(argv)
    with cli_logging(getattr(args, "log_level", logging.INFO)):
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print(f"atomgfm {args.verb}: interrupted", file=sys.stderr)
            return 130
        except (OSError, ValueError, KeyError) as exc:
            log.debug("traceback of the error below", exc_info=True)
            print(f"atomgfm {args.verb}: error: {_message(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
