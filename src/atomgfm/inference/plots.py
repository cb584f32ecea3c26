"""Parity plots (predicted vs reference) per dataset, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atomgfm.inference.metrics import MetricAccumulator

_QUANTITIES = (("energy", "(E − E_ref) per atom (eV/atom)"), ("forces", "force component (eV/Å)"),
               ("stress", "stress component (eV/Å³)"))


def parity_plots(acc: MetricAccumulator, out_dir: str | Path) -> list[Path]:
    """One PNG per dataset with a panel per labelled quantity; returns the written paths."""
    # The object API (Figure, not pyplot): no global backend switch, works without a display.
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in acc.names:
        panels = [(q, label, acc.parity(name, q)) for q, label in _QUANTITIES]
        panels = [p for p in panels if p[2] is not None]
        if not panels:
            continue
        fig = Figure(figsize=(4.2 * len(panels), 4.0))
        axes = fig.subplots(1, len(panels), squeeze=False)
        for ax, (q, label, tp) in zip(axes[0], panels, strict=True):
            true, pred = tp
            lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.scatter(true, pred, s=4, alpha=0.5)
            mae = float(np.mean(np.abs(true - pred)))
            ax.set_title(f"{q}: MAE {mae:.3g}", fontsize=10)
            ax.set_xlabel(f"reference {label}")
            ax.set_ylabel(f"predicted {label}")
        fig.suptitle(name)
        fig.tight_layout()
        path = out_dir / f"parity_{name}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
