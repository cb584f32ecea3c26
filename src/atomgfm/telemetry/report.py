"""``atomgfm report RUN_DIR``: training curves and the per-rank phase breakdown as PNG.

Reads ``RUN_DIR/log.jsonl`` (losses, validation metrics) and ``RUN_DIR/telemetry.jsonl`` (every
rank's phase times, throughput and peak memory per log interval) and writes
``curves.png`` and ``phases.png`` into the output folder, plus a per-rank summary table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atomgfm.telemetry.curves import plot_curves
from atomgfm.telemetry.recorder import PHASES, read_telemetry

COLOURS = {"data": "#8c8c8c", "forward": "#1f77b4", "backward": "#d62728",
           "allreduce": "#ff7f0e", "optimizer": "#2ca02c", "other": "#e0e0e0"}


def rank_summary(records: list[dict]) -> dict[int, dict]:
    """Per rank: mean ms per step of each phase, structures/s, atoms/s (step-weighted over the
    log intervals, the first one left out when there are several: it holds the warm-up), and
    the largest peak memory."""
    by_rank: dict[int, list[dict]] = {}
    for r in records:
        by_rank.setdefault(r["rank"], []).append(r)
    out = {}
    for rank, recs in sorted(by_rank.items()):
        use = recs[1:] if len(recs) > 1 else recs
        w = np.array([r["steps"] for r in use], dtype=np.float64)
        phases = {p: float(np.average([r["phases_ms"].get(p, 0.0) for r in use], weights=w))
                  for p in (*PHASES, "other")}
        seconds = np.array([r["step_ms"] * r["steps"] / 1000 for r in use])
        out[rank] = {"steps": int(w.sum()),
                     "step_ms": float(np.average([r["step_ms"] for r in use], weights=w)),
                     "phases_ms": {p: v for p, v in phases.items() if v > 0},
                     "structures_per_s": float(sum(r["structures_per_s"] * s for r, s in
                                                   zip(use, seconds, strict=True))
                                               / seconds.sum()),
                     "atoms_per_s": float(sum(r["atoms_per_s"] * s for r, s in
                                              zip(use, seconds, strict=True)) / seconds.sum()),
                     "peak_mem_mb": max(r["peak_mem_mb"] for r in recs),
                     "mem": recs[-1]["mem"]}
    return out


def summary_table(summary: dict[int, dict]) -> str:
    """Markdown: one row per rank."""
    cols = [p for p in (*PHASES, "other") if any(p in s["phases_ms"] for s in summary.values())]
    lines = ["| rank | steps | step ms | " + " | ".join(f"{c} ms" for c in cols)
             + " | structures/s | atoms/s | peak MiB |",
             "|" + "---|" * (len(cols) + 6)]
    for rank, s in summary.items():
        lines.append(f"| {rank} | {s['steps']} | {s['step_ms']:.1f} | "
                     + " | ".join(f"{s['phases_ms'].get(c, 0.0):.1f}" for c in cols)
                     + f" | {s['structures_per_s']:.1f} | {s['atoms_per_s']:.0f} | "
                       f"{s['peak_mem_mb']:.0f} ({s['mem']}) |")
    return "\n".join(lines)


def plot_phases(records: list[dict], out_path: Path) -> Path:
    """Two panels: mean ms per step by phase, one stacked bar per rank; structures/s per rank
    against the step."""
    from matplotlib.figure import Figure

    summary = rank_summary(records)
    fig = Figure(figsize=(11, 4))
    ax_bar, ax_rate = fig.subplots(1, 2)
    ranks = list(summary)
    bottom = np.zeros(len(ranks))
    for p in (*PHASES, "other"):
        vals = np.array([summary[r]["phases_ms"].get(p, 0.0) for r in ranks])
        if vals.any():
            ax_bar.bar([str(r) for r in ranks], vals, bottom=bottom, label=p,
                       color=COLOURS[p])
            bottom += vals
    ax_bar.set(xlabel="rank", ylabel="ms per step (mean)", title="phase breakdown")
    ax_bar.legend(fontsize=8)
    for r in ranks:
        pts = [(x["step"], x["structures_per_s"]) for x in records if x["rank"] == r]
        ax_rate.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"rank {r}")
    ax_rate.set(xlabel="step", ylabel="structures/s", title="throughput per rank")
    ax_rate.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    return out_path


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """Write ``curves.png`` and ``phases.png`` (and ``telemetry.md``) for a run. Returns
    ``{"curves": path, "phases": path | None, "table": markdown | None}``."""
    run_dir = Path(run_dir)
    log_path = run_dir / "log.jsonl"
    if not log_path.exists():
        raise FileNotFoundError(f"{run_dir}: no log.jsonl (is this a training run's out_dir?)")
    out = Path(out_dir) if out_dir else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"curves": plot_curves(log_path, out / "curves.png"), "phases": None,
                    "table": None}
    tel = run_dir / "telemetry.jsonl"
    records = read_telemetry(tel) if tel.exists() else []
    if records:
        result["phases"] = plot_phases(records, out / "phases.png")
        result["table"] = summary_table(rank_summary(records))
        (out / "telemetry.md").write_text(result["table"] + "\n")
    return result
