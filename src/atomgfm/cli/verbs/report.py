"""``atomgfm report RUN_DIR``: training curves and the per-rank phase breakdown as PNG.

    atomgfm report runs/demo                 # runs/demo/report/{curves,phases}.png, telemetry.md
"""

from __future__ import annotations

HELP = "training curves and per-rank phase breakdown (PNG) of a run"
ORDER = 25


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a training run's out_dir (log.jsonl, telemetry.jsonl)")
    p.add_argument("--out", help="folder for the PNGs (default RUN_DIR/report)")


def run(args) -> int:
    from atomgfm.telemetry.report import write_report

    rep = write_report(args.run_dir, args.out)
    print(f"training curves: {rep['curves']}")
    if rep["phases"] is None:
        print(f"{args.run_dir}: no telemetry.jsonl records; no phase breakdown")
    else:
        print("per rank (mean per step after the first log interval):")
        print(rep["table"])
        print(f"phase breakdown: {rep['phases']}")
    return 0
