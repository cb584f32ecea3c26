"""Training curves from ``log.jsonl``: loss parts and per-dataset validation force/energy MAE."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(log_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Write a PNG with three panels: training loss (parts), validation force MAE and energy MAE
    per dataset, against the step. Returns the PNG path."""
    # The object API (Figure, not pyplot): no global backend switch, works without a display.
    from matplotlib.figure import Figure

    records = read_log(log_path)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    out_path = Path(out_path) if out_path else Path(log_path).with_name("curves.png")
    fig = Figure(figsize=(14, 4))
    axes = fig.subplots(1, 3)
    for part in ("loss", "energy", "forces", "stress"):
        pts = [(r["step"], r[part]) for r in train if part in r]
        if pts:
            axes[0].plot(*zip(*pts, strict=True), label=part)
    axes[0].set(yscale="log", xlabel="step", ylabel="training loss (normalised units)")
    names = sorted({n for r in val for n in r["metrics"]})
    for ax, key, label in ((axes[1], "forces_mae_meV_A", "validation force MAE (meV/Å)"),
                           (axes[2], "energy_mae_meV_atom", "validation energy MAE (meV/atom)")):
        for name in names:
            pts = [(r["step"], r["metrics"][name][key]) for r in val
                   if key in r["metrics"].get(name, {})]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name)
        ax.set(yscale="log", xlabel="step", ylabel=label)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    return out_path
