"""Per-dataset evaluation: errors on graph sets, a table beside the reference baseline, and
``evaluate_checkpoint`` (the ``atomgfm evaluate`` verb): re-read the checkpoint's datasets with the
same deterministic split, evaluate, write metrics and parity plots."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate
from atomgfm.data.mixing import packed_batches
from atomgfm.data.references import Normalization
from atomgfm.data.sources import GraphSource, LoadedDataset, build_graphs, load_datasets
from atomgfm.inference.metrics import MetricAccumulator
from atomgfm.precision import autocast, param_dtype, resolve_device

log = logging.getLogger(__name__)


def evaluate_graphs(model, graph_sets: list[GraphSource], names: list[str], *, precision: str,
                    device: torch.device, dtype: torch.dtype, max_atoms: int = 512,
                    max_structures: int = 64, keep_values: bool = False, rank: int = 0,
                    world_size: int = 1, max_edges: int | None = None) -> MetricAccumulator:
    """Energy/force/stress errors of ``model`` on every graph source (datasets in id order).

    With ``world_size`` > 1, this process evaluates every world_size-th batch starting at
    ``rank``; combine the processes with ``MetricAccumulator.reduce``."""
    model.eval()
    acc = MetricAccumulator(names, keep_values)
    for gs in graph_sets:
        batches = packed_batches(gs.n_atoms, max_atoms, max_structures, gs.n_edges, max_edges)
        for idx in batches[rank::world_size]:
            batch = collate([gs[i] for i in idx], dtype, device)
            with autocast(precision, device):
                out = model(batch, forces=True, stress=bool(batch[K.HAS_STRESS].any()))
            acc.update(out, batch)
    return acc


class _BaselineErrors:
    """Running sums of the reference baseline's errors (E = Σ e_Z + charge/spin state energies,
    F = 0, σ = 0) and of the force components' spread, one structure at a time: the same
    numbers from loaded structures and from a store's graphs."""

    def __init__(self, norm: Normalization) -> None:
        self.norm = norm
        self.e = self.f = self.f1 = self.f2 = self.s = 0.0
        self.ne = self.nf = self.ns = 0

    def add(self, numbers, charge, spin, energy=None, forces=None, stress=None) -> None:
        if energy is not None:
            self.e += abs(energy - self.norm.reference(numbers, charge, spin)) / len(numbers)
            self.ne += 1
        if forces is not None:
            f = np.asarray(forces, dtype=np.float64).ravel()
            self.f += np.abs(f).sum()
            self.f1 += f.sum()
            self.f2 += (f * f).sum()
            self.nf += f.size
        if stress is not None:
            self.s += np.abs(stress).sum()
            self.ns += 9

    def metrics(self) -> dict[str, float]:
        out = {}
        for key, total, count in (("energy_mae_meV_atom", self.e, self.ne),
                                  ("forces_mae_meV_A", self.f, self.nf),
                                  ("stress_mae_meV_A3", self.s, self.ns)):
            if count:
                out[key] = 1000 * float(total / count)
        return out

    def force_std(self) -> float:
        """Standard deviation of the force components (eV/Å), NaN without forces."""
        if not self.nf:
            return float("nan")
        return float(np.sqrt(max(self.f2 / self.nf - (self.f1 / self.nf) ** 2, 0.0)))


def _structure_baseline(d: LoadedDataset, split: str) -> _BaselineErrors:
    acc = _BaselineErrors(d.normalization)
    for s in d.split(split):
        acc.add(s.numbers, s.charge, s.spin, s.energy, s.forces, s.stress)
    return acc


def baseline_metrics(d: LoadedDataset, split: str = "val") -> dict[str, float]:
    """Errors of the reference baseline: E = Σ e_Z + charge/spin state energies, F = 0, σ = 0."""
    return _structure_baseline(d, split).metrics()


def force_std(d: LoadedDataset, split: str = "val") -> float:
    """Standard deviation of force components (eV/Å) of a split."""
    return _structure_baseline(d, split).force_std()


COLUMNS = (("energy_mae_meV_atom", "E MAE meV/atom"), ("forces_mae_meV_A", "F MAE meV/Å"),
           ("stress_mae_meV_A3", "σ MAE meV/Å³"))


def graph_baseline(entry: dict, source: GraphSource) -> tuple[dict[str, float], float]:
    """``baseline_metrics`` and the force standard deviation (eV/Å) of a graph source (a store's
    validation split, read once, streaming), for the dataset table entry ``entry``."""
    acc = _BaselineErrors(Normalization.from_dict(entry["normalization"]))
    for i in range(len(source)):
        g = source[i]
        acc.add(g[K.ATOMIC_NUMBERS], g[K.CHARGE][0], g[K.SPIN][0],
                g[K.ENERGY][0] if g[K.HAS_ENERGY][0] else None,
                g[K.FORCES] if g[K.HAS_FORCES][0] else None,
                g[K.STRESS] if g[K.HAS_STRESS][0] else None)
    return acc.metrics(), acc.force_std()


def metrics_table(datasets: list[LoadedDataset] | None, metrics: dict, split: str = "val", *,
                  table: list[dict] | None = None,
                  sources: list[GraphSource] | None = None) -> str:
    """Markdown table: model vs per-element-reference baseline, and force MAE / force std.

    From loaded ``datasets``, or (data streamed from a store) from the dataset ``table`` and the
    split's graph ``sources``."""
    head = "| dataset | level of theory | n | " + " | ".join(
        f"{c} (model / baseline)" for _, c in COLUMNS) + " | F std meV/Å | F MAE / F std |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 5)]
    if datasets is not None:
        rows = []
        for d in datasets:
            acc = _structure_baseline(d, split)
            rows.append((d.name, d.config.level_of_theory, len(d.split(split)), acc.metrics(),
                         acc.force_std()))
    elif table is not None and sources is not None:
        rows = [(e["name"], e["level_of_theory"], len(src), *graph_baseline(e, src))
                for e, src in zip(table, sources, strict=True)]
    else:
        raise ValueError("metrics_table needs loaded datasets, or a table and graph sources")
    for name, level, n, b, std in rows:
        m = metrics.get(name, {})
        cells = []
        for key, _ in COLUMNS:
            cells.append(f"{m[key]:.1f} / {b[key]:.1f}" if key in m and key in b else "–")
        fstd = 1000 * std
        ratio = (f"{m['forces_mae_meV_A'] / fstd:.3f}" if "forces_mae_meV_A" in m and fstd > 0
                 else "–")
        lines.append(f"| {name} | {level or '?'} | {n} | "
                     + " | ".join(cells) + f" | {fstd:.0f} | {ratio} |")
    return "\n".join(lines)


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None,
                        split: str = "val", device: str = "auto", calibration: bool = False,
                        ensemble: list[str] | tuple[str, ...] = (),
                        precision: str | None = None) -> Evaluation:
    """Re-read the checkpoint's datasets (same deterministic split), evaluate, write the
    metrics (JSON, markdown) and parity plots to ``out_dir``. With ``calibration``, also how
    well the head spread (and the spread across the ``ensemble`` checkpoints) predicts the
    error, per dataset (:mod:`atomgfm.inference.calibration`). ``precision`` (fp64, fp32,
    bf16) overrides the precision the checkpoint was trained in."""
    from atomgfm.config.schema import config_from_dict
    from atomgfm.models.checkpoint import load_model

    model, state = load_model(checkpoint)
    out_dir = Path(out_dir) if out_dir else Path(checkpoint).parent / "eval"
    cfg = config_from_dict(state["config"])
    if precision is not None:
        param_dtype(precision)  # a clear error for an unknown name
        cfg.train.precision = precision
    if cfg.data.store:
        if calibration:
            raise ValueError("evaluate --calibration reads datasets from their files; "
                             f"{checkpoint} was trained from a store (not supported yet)")
        return _evaluate_store(checkpoint, model, state, cfg, out_dir, split, device)
    # energy datasets; fine-tuned structure-level property heads are reported by finetune
    cfg.data.datasets = [d for d in cfg.data.datasets if d.task == "energy"]
    datasets = load_datasets(cfg.data)
    stored = {d["name"]: d for d in state["datasets"]}
    for d in datasets:
        entry = stored.get(d.name)
        if entry is None:
            raise ValueError(f"dataset {d.name!r} is not in checkpoint {checkpoint}")
        if entry["provenance"] != d.provenance:
            log.warning("files of dataset %r changed since training (provenance %s -> %s)",
                        d.name, entry["provenance"], d.provenance)
    names = [d["name"] for d in sorted(state["datasets"], key=lambda d: d["id"])]
    by_name = {d.name: d for d in datasets}
    datasets = [by_name[n] for n in names if n in by_name]
    precision = cfg.train.precision
    sets = [build_graphs(d.split(split), model.cutoff, stored[d.name]["id"],
                         needs=model.backbone.needs, progress=False) for d in datasets]
    ev = _evaluate_and_write(model, sets, names, device, precision, out_dir, split,
                             state.get("step"), datasets=datasets)
    if calibration:
        from atomgfm.inference.calibration import calibrate, write_calibration
        from atomgfm.inference.spread import SpreadPredictor

        sp = SpreadPredictor.from_checkpoints([checkpoint, *ensemble], device, precision)
        cals = calibrate(sp, {d.name: d.split(split) for d in datasets})
        ev.calibration, path = write_calibration(cals, out_dir)
        ev.plots = [*ev.plots, path]
    return ev


def _evaluate_store(checkpoint, model, state, cfg, out_dir, split: str, device: str):
    """``evaluate_checkpoint`` for a model trained from a store: the same store, its stored
    split, streamed."""
    from atomgfm.data.sources import prepare_data

    data = prepare_data(cfg.data, model.cutoff, progress=False, needs=model.backbone.needs)
    names = [d["name"] for d in sorted(state["datasets"], key=lambda d: d["id"])]
    if data.names != names:
        raise ValueError(f"{checkpoint}: trained on datasets {names}, the store gives "
                         f"{data.names}")
    sets = data.val if split == "val" else data.train
    return _evaluate_and_write(model, sets, names, device, cfg.train.precision, out_dir, split,
                               state.get("step"), table=data.table)


def _evaluate_and_write(model, sets: list[GraphSource], names: list[str], device: str,
                        precision: str, out_dir: Path, split: str, step: int | None, *,
                        datasets: list[LoadedDataset] | None = None,
                        table: list[dict] | None = None) -> Evaluation:
    """Move ``model`` to ``device`` in ``precision``, evaluate it on the graph ``sets`` and write
    ``metrics.json``, ``metrics.md`` (:func:`metrics_table` of the loaded ``datasets``, or of the
    dataset ``table`` with ``sets`` as its sources) and the parity plots to ``out_dir``."""
    from atomgfm.inference.plots import parity_plots

    dev = resolve_device(device)
    model = model.to(dev, param_dtype(precision))
    acc = evaluate_graphs(model, sets, names, precision=precision, device=dev,
                          dtype=param_dtype(precision), keep_values=True)
    metrics = acc.compute()
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = parity_plots(acc, out_dir)
    text = metrics_table(datasets, metrics, split, table=table, sources=sets)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "metrics.md").write_text(text + "\n")
    return Evaluation(metrics, text, plots, step, split)


@dataclass
class Evaluation:
    """What ``evaluate_checkpoint`` measured: metrics per dataset, the markdown table (also in
    ``out_dir/metrics.md``), the parity-plot paths, the checkpoint's step and the split."""

    metrics: dict
    table: str
    plots: list[Path]
    step: int | None
    split: str
    calibration: str | None = None  # the calibration table (markdown), when asked for
