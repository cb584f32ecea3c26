"""``atomgfm evaluate CHECKPOINT``: per-dataset metrics table and parity plots."""

from __future__ import annotations

HELP = "per-dataset metrics table and parity plots"
ORDER = 30


def add_arguments(p) -> None:
    p.add_argument("checkpoint")
    p.add_argument("--out", help="folder for plots and metrics.json (default: beside checkpoint)")
    p.add_argument("--split", choices=["val", "train"], default="val")
    p.add_argument("--device", default="auto")


def run(args) -> int:
    from atomgfm.inference.evaluate import evaluate_checkpoint

    ev = evaluate_checkpoint(args.checkpoint, out_dir=args.out, split=args.split,
                             device=args.device)
    print(f"{args.checkpoint} (step {ev.step}), {ev.split} split:")
    print(ev.table)
    print(f"parity plots: {', '.join(str(p) for p in ev.plots)}")
    return 0
