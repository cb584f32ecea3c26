"""``atomgfm evaluate CHECKPOINT``: per-dataset metrics table and parity plots."""

from __future__ import annotations

HELP = "per-dataset metrics table and parity plots"
ORDER = 30


def add_arguments(p) -> None:
    p.add_argument("checkpoint")
    p.add_argument("--out", help="folder for plots and metrics.json (default: beside checkpoint)")
    p.add_argument("--split", choices=["val", "train"], default="val")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp64", "fp32", "bf16"],
                   help="evaluate in this precision (default: the one it was trained in)")
    p.add_argument("--calibration", action="store_true",
                   help="also: does the head (and ensemble) spread predict the error? "
                        "Spearman ρ per dataset, calibration.md/json/png")
    p.add_argument("--ensemble", nargs="*", default=[], metavar="CKPT",
                   help="with --calibration: more checkpoints for the ensemble spread")


def run(args) -> int:
    from atomgfm.inference.evaluate import evaluate_checkpoint

    ev = evaluate_checkpoint(args.checkpoint, out_dir=args.out, split=args.split,
                             device=args.device, calibration=args.calibration,
                             ensemble=args.ensemble, precision=args.precision)
    print(f"{args.checkpoint} (step {ev.step}), {ev.split} split"
          + (f", {args.precision}:" if args.precision else ":"))
    print(ev.table)
    if ev.calibration:
        print("uncertainty calibration (spread vs error, per structure):")
        print(ev.calibration)
    print(f"parity plots: {', '.join(str(p) for p in ev.plots)}")
    return 0
