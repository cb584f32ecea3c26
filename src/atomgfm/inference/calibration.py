"""Does the spread predict the error? Uncertainty calibration on held-out data, per dataset.

For every held-out structure with force labels, predicted by its own dataset's head
(:class:`~atomgfm.inference.spread.SpreadPredictor`):

- predicted spread: the RMS over atoms of the per-atom force spread σ_i (eV/Å), across heads,
  across ensemble members, and both together (σ_i² summed);
- observed error: the RMS over atoms of |F_pred,i − F_true,i| (eV/Å); for energies, the spread and
  |E_pred − E_true| per atom (eV/atom).

Per dataset and spread source: the Spearman rank correlation of spread and error (does a larger
spread mean a larger error?), the RMS spread and RMS error (their ratio: is the spread the right
size?), and a calibration plot: structures binned by predicted spread (equal-count bins), RMS
predicted spread against RMS observed error per bin, with the line y = x of a calibrated spread.
A source that is zero for a whole dataset (e.g. heads when one head alone covers its elements) has
no correlation (nan) and is said so in the table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from atomgfm.data.structure import Structure

SOURCES = ("heads", "ensemble", "total")


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); nan when fewer than
    two points or either variable is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))


def binned(spread, error, n_bins: int = 8) -> list[dict]:
    """Equal-count bins of ``spread`` (sorted): per bin n, RMS spread and RMS error."""
    spread, error = np.asarray(spread, float), np.asarray(error, float)
    order = np.argsort(spread, kind="mergesort")
    out = []
    for idx in np.array_split(order, min(n_bins, len(order))):
        if len(idx):
            out.append({"n": int(len(idx)), "rms_spread": float(np.sqrt(np.mean(spread[idx] ** 2))),
                        "rms_error": float(np.sqrt(np.mean(error[idx] ** 2)))})
    return out


@dataclass
class DatasetCalibration:
    """Per-structure spreads and errors of one dataset (eV/Å for forces, eV/atom for energy)."""

    name: str
    force_error: list[float] = field(default_factory=list)
    energy_error: list[float] = field(default_factory=list)
    force_spread: dict[str, list[float]] = field(
        default_factory=lambda: {s: [] for s in SOURCES})
    energy_spread: dict[str, list[float]] = field(
        default_factory=lambda: {s: [] for s in SOURCES})
    skipped: int = 0  # structures without force labels

    def row(self, source: str) -> dict:
        fs, fe = np.array(self.force_spread[source]), np.array(self.force_error)
        es, ee = np.array(self.energy_spread[source]), np.array(self.energy_error)

        def rms(v):
            return float(np.sqrt(np.mean(v ** 2))) if len(v) else float("nan")

        return {"dataset": self.name, "source": source, "n": len(fe),
                "spearman_forces": spearman(fs, fe), "spearman_energy": spearman(es, ee),
                "rms_force_spread": rms(fs), "rms_force_error": rms(fe),
                "rms_energy_spread": rms(es), "rms_energy_error": rms(ee),
                "bins": binned(fs, fe) if len(fe) else [], "skipped": self.skipped}


def calibrate(predictor, structures: dict[str, list[Structure]]) -> list[DatasetCalibration]:
    """Spreads and errors per dataset: ``structures`` maps a head name to its held-out records
    (predicted by that head); ``predictor`` is a SpreadPredictor."""
    out = []
    for name, records in structures.items():
        cal = DatasetCalibration(name)
        labelled = [s for s in records if s.forces is not None and s.energy is not None]
        cal.skipped = len(records) - len(labelled)
        results = predictor.predict(labelled, head=name, forces=True, stress=False)
        for s, r in zip(labelled, results, strict=True):
            df = np.linalg.norm(r["forces"] - s.forces, axis=1)
            cal.force_error.append(float(np.sqrt(np.mean(df ** 2))))
            cal.energy_error.append(abs(r["energy"] - s.energy) / s.n_atoms)
            fh, fe = r["forces_spread_heads"], r["forces_spread_ensemble"]
            for source, f in (("heads", fh), ("ensemble", fe), ("total", np.hypot(fh, fe))):
                cal.force_spread[source].append(float(np.sqrt(np.mean(f ** 2))))
            eh, ee = r["energy_spread_heads"], r["energy_spread_ensemble"]
            for source, e in (("heads", eh), ("ensemble", ee), ("total", np.hypot(eh, ee))):
                cal.energy_spread[source].append(float(e))
        out.append(cal)
    return out


def _fmt(x: float, spec: str) -> str:
    return "nan" if not np.isfinite(x) else format(x, spec)


def calibration_rows(cals: list[DatasetCalibration], sources=None) -> list[dict]:
    """One row per dataset and spread source (sources with no spread at all are left out when
    ``sources`` is None: the ensemble without an ensemble; heads where one head covers)."""
    rows = []
    for cal in cals:
        for source in sources or SOURCES:
            row = cal.row(source)
            if sources is None and source != "heads" and not np.any(cal.force_spread[source]):
                continue
            if sources is None and source == "total" and not (
                    np.any(cal.force_spread["heads"]) and np.any(cal.force_spread["ensemble"])):
                continue
            rows.append(row)
    return rows


def calibration_table(rows: list[dict]) -> str:
    """Markdown: per dataset and source, Spearman ρ (forces, energy) and RMS spread vs error."""
    lines = ["| dataset | spread | n | ρ forces | ρ energy | RMS F spread meV/Å | "
             "RMS F error meV/Å | spread/error | RMS E spread meV/atom | RMS E error meV/atom |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = (r["rms_force_spread"] / r["rms_force_error"]
                 if r["rms_force_error"] > 0 else float("nan"))
        note = " (no spread: one head covers)" if (
            r["source"] == "heads" and not r["rms_force_spread"] > 0) else ""
        lines.append(f"| {r['dataset']} | {r['source']}{note} | {r['n']} | "
                     f"{_fmt(r['spearman_forces'], '.3f')} | {_fmt(r['spearman_energy'], '.3f')} | "
                     f"{_fmt(1000 * r['rms_force_spread'], '.1f')} | "
                     f"{_fmt(1000 * r['rms_force_error'], '.1f')} | {_fmt(ratio, '.3f')} | "
                     f"{_fmt(1000 * r['rms_energy_spread'], '.1f')} | "
                     f"{_fmt(1000 * r['rms_energy_error'], '.1f')} |")
    return "\n".join(lines)


def calibration_plot(rows: list[dict], path: str | Path) -> Path:
    """PNG: binned RMS predicted force spread vs RMS observed force error, one line per dataset
    and spread source, log-log, with y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = np.inf, 0.0
    for r in rows:
        b = [x for x in r["bins"] if x["rms_spread"] > 0 and x["rms_error"] > 0]
        if not b:
            continue
        xs = [1000 * x["rms_spread"] for x in b]
        ys = [1000 * x["rms_error"] for x in b]
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        ax.plot(xs, ys, "o-", ms=4, label=f"{r['dataset']} ({r['source']}, "
                f"ρ={_fmt(r['spearman_forces'], '.2f')})")
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="calibrated (y = x)")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("predicted force spread, RMS per bin (meV/Å)")
    ax.set_ylabel("observed force error, RMS per bin (meV/Å)")
    ax.set_title("uncertainty calibration (held-out)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_calibration(cals: list[DatasetCalibration], out_dir: str | Path) -> tuple[str, Path]:
    """calibration.md, calibration.json (rows with bins, and per-structure values) and
    calibration.png in ``out_dir``; returns (markdown table, png path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = calibration_rows(cals)
    table = calibration_table(rows)
    (out_dir / "calibration.md").write_text(table + "\n")
    (out_dir / "calibration.json").write_text(json.dumps(
        {"rows": rows, "structures": [asdict(c) for c in cals]}, indent=1,
        default=lambda x: None))
    return table, calibration_plot(rows, out_dir / "calibration.png")
