"""``atomgfm tune report DIR``: ranked table, validation-loss trajectories, promotion.

    rows = report(campaign_dir)            # prints the table; writes report.csv, report.md,
                                           # trajectories.png in campaign_dir
    promote(campaign_dir, k=2)             # retrains the top 2 with the base config's budget

Ranking: finished trials (``ok``, then early-``stopped`` ones, which saw fewer steps) by their
best validation loss, lowest first; failed trials last with their reason.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml

from atomgfm.tune.records import TrialResult, read_trials
from atomgfm.tune.space import split_params

log = logging.getLogger(__name__)

COLUMNS = ("rank", "trial", "status", "backbone", "best_val_loss", "steps", "seconds",
           "settings", "error")


def rank(results: list[TrialResult]) -> list[TrialResult]:
    """Trials that ran their full budget (ok) by best validation loss, then the early-stopped
    ones (fewer steps: not comparable) by theirs, then the failed ones."""
    def finite(r):
        return (r.status != "failed" and r.best_val_loss is not None
                and math.isfinite(r.best_val_loss))

    good = sorted((r for r in results if finite(r)),
                  key=lambda r: (r.status != "ok", r.best_val_loss, r.id))
    return good + sorted((r for r in results if not finite(r)), key=lambda r: r.id)


def _settings(params: dict[str, Any]) -> str:
    if not params:
        return "base config"
    _, kwargs, shared = split_params(params)
    parts = [f"{k}={_fmt(v)}" for k, v in sorted({**shared, **kwargs}.items())]
    return " ".join(parts)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def base_trial(campaign_dir: Path, results: list[TrialResult]) -> str | None:
    """The id of the trial that trained the base config itself (``search.base_point``)."""
    saved = Path(campaign_dir) / "campaign.yaml"
    if not saved.exists():
        return None
    from atomgfm.tune.campaign import campaign_from_dict
    from atomgfm.tune.trial import base_params

    campaign = campaign_from_dict(yaml.safe_load(saved.read_text()), where=str(saved))
    base = campaign.base_config()
    point, _ = base_params(base, campaign.space_for(base))
    if point is None:
        return None
    want = split_params(point)  # the active entries (inactive families' placeholders differ)

    def same(a, b) -> bool:
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        return a == b

    return next((r.id for r in results
                 if all(same(x, y) for x, y in zip(split_params(r.params), want, strict=True))),
                None)


def table_rows(results: list[TrialResult], base: str | None = None) -> list[dict[str, Any]]:
    """One row per trial, best first; ``base``: the base config's trial, marked as such."""
    rows = []
    for i, r in enumerate(rank(results)):
        ranked = r.status != "failed" and r.best_val_loss is not None
        rows.append({"rank": i + 1 if ranked else "-", "trial": r.id, "status": r.status,
                     "backbone": r.family,
                     "best_val_loss": (round(r.best_val_loss, 5)
                                       if r.best_val_loss is not None else ""),
                     "steps": r.steps, "seconds": round(r.seconds, 1),
                     "settings": ("base config: " if r.id == base else "")
                     + _settings(r.params), "error": r.error})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'rank':>4}  {'trial':<6}{'status':<9}{'backbone':<10}{'val loss':>10}"
             f"{'steps':>7}{'s':>7}  settings / error"]
    for r in rows:
        val = f"{r['best_val_loss']:.4f}" if r["best_val_loss"] != "" else "-"
        tail = r["error"] if r["status"] == "failed" else r["settings"]
        lines.append(f"{r['rank']!s:>4}  {r['trial']:<6}{r['status']:<9}{r['backbone']:<10}"
                     f"{val:>10}{r['steps']:>7}{r['seconds']:>7.0f}  {tail}")
    return "\n".join(lines)


def write_tables(rows: list[dict[str, Any]], directory: Path) -> tuple[Path, Path]:
    csv_path, md_path = directory / "report.csv", directory / "report.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        md.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in COLUMNS) + " |")
    md_path.write_text("\n".join(md) + "\n")
    return csv_path, md_path


def plot_trajectories(results: list[TrialResult], path: Path) -> Path:
    """Validation loss against step, one panel per backbone family: finished trials solid,
    early-stopped dashed, failed grey; the family's best trial labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({r.family for r in results})
    fig, axes = plt.subplots(1, max(len(families), 1), figsize=(4.2 * max(len(families), 1), 3.4),
                             sharey=True, squeeze=False)
    ranked = rank(results)
    for ax, fam in zip(axes[0], families, strict=False):
        best = next((r for r in ranked if r.family == fam and r.status != "failed"), None)
        for r in results:
            if r.family != fam:
                continue
            pts = [(c["step"], c["val_loss"]) for c in r.curve
                   if isinstance(c.get("val_loss"), int | float) and math.isfinite(c["val_loss"])]
            if not pts:
                continue
            steps, vals = zip(*pts, strict=True)
            style = {"ok": "-", "stopped": "--", "failed": ":"}[r.status]
            color = "0.6" if r.status == "failed" else None
            lw, label = (2.2, f"best: trial {r.id}") if r is best else (1.0, None)
            ax.plot(steps, vals, style, color=color, lw=lw, label=label, marker=".", ms=3)
        ax.set_title(f"{fam} ({sum(r.family == fam for r in results)} trials)")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        if best is not None:
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel("validation loss (force MAE / force RMS)")
    fig.suptitle("validation loss per trial: solid ok, dashed stopped early, dotted failed",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(campaign_dir: str | Path, echo=None) -> list[dict[str, Any]]:
    """Print the ranked table and write ``report.csv``, ``report.md`` and ``trajectories.png``
    in ``campaign_dir``; returns the table's rows (best first). ``echo``: where the text
    goes (the CLI passes print; default: this module's logger)."""
    echo = echo or log.info
    directory = Path(campaign_dir)
    if not (directory / "trials").is_dir():
        raise FileNotFoundError(f"{directory}: not a campaign directory (no trials/ folder)")
    results, unfinished = read_trials(directory)
    if not results:
        raise ValueError(f"{directory}: no finished trial yet")
    rows = table_rows(results, base_trial(directory, results))
    echo(format_table(rows))
    csv_path, md_path = write_tables(rows, directory)
    png = plot_trajectories(results, directory / "trajectories.png")
    extra = f"; {len(unfinished)} unfinished (rerun on resume)" if unfinished else ""
    echo(f"{len(results)} trials{extra}; table: {csv_path}, {md_path}; trajectories: {png}")
    return rows


def promote(campaign_dir: str | Path, k: int, max_steps: int | None = None,
            echo=None) -> list[dict[str, Any]]:
    """Retrain the top ``k`` configurations on the base config's full data and budget
    (``max_steps`` overrides the budget) into ``campaign_dir/promoted/<trial id>/``;
    resumable (a rerun continues each from its ``last.pt``; folders are named by trial, not by
    rank, since an extended campaign's ranks change). Returns one summary per promoted trial."""
    from atomgfm.inference.evaluate import metrics_table
    from atomgfm.train.loop import Trainer
    from atomgfm.tune.campaign import campaign_from_dict
    from atomgfm.tune.trial import trial_config

    echo = echo or log.info
    directory = Path(campaign_dir)
    if k < 1:
        raise ValueError(f"--promote must be >= 1, got {k}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
    saved = directory / "campaign.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{directory}: no campaign.yaml (not a campaign directory)")
    campaign = campaign_from_dict(yaml.safe_load(saved.read_text()), where=str(saved))
    base = campaign.base_config()
    results, _ = read_trials(directory)
    top = [r for r in rank(results) if r.status != "failed"][:k]
    if len(top) < k:
        log.warning("%s: only %d successful trial(s) to promote (asked for %d)", directory,
                    len(top), k)
    out = []
    for i, r in enumerate(top, start=1):
        run_dir = directory / "promoted" / r.id
        cfg = trial_config(base, r.params, None, run_dir)
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        echo(f"promoting rank {i}: trial {r.id} ({r.family}, campaign val loss "
             f"{r.best_val_loss:.4f}) for {cfg.train.max_steps} steps into {run_dir}")
        trainer = Trainer.from_config(cfg)
        metrics = trainer.fit()
        echo(metrics_table(trainer.datasets, metrics, table=trainer.table,
                           sources=trainer.val_sets))
        summary = {"rank": i, "trial": r.id, "backbone": r.family, "params": r.params,
                   "campaign_val_loss": r.best_val_loss, "steps": trainer.step,
                   "best_val_loss": trainer.best, "checkpoint": str(run_dir / "best.pt")}
        echo(f"rank {i} (trial {r.id}): best validation loss {trainer.best:.4f} after "
             f"{trainer.step} steps; checkpoint {run_dir / 'best.pt'}")
        out.append(summary)
    (directory / "promoted").mkdir(exist_ok=True)
    (directory / "promoted" / "summary.json").write_text(json.dumps(out, indent=1))
    return out
