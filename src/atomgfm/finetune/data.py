"""Fine-tuning data: the new datasets (energy or structure-level property tasks), the replayed
pretraining datasets, their graphs and the mixing that joins them.

Energy datasets are read, split and referenced exactly as in training (``load_datasets``: split
seeded by the dataset's name, references fitted on the training split). A property dataset reads
its label from each record's info key (``property_key``); its energy, forces and stress are not
trained. Replayed pretraining datasets are split as the pretraining run split them and keep the
references stored in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from atomgfm import keys as K
from atomgfm.config.schema import DataConfig, DatasetConfig
from atomgfm.data.mixing import mixing_probabilities
from atomgfm.data.readers import iter_structures
from atomgfm.data.references import Normalization, fit_references
from atomgfm.data.sources import (
    LoadedDataset,
    PreparedData,
    build_graphs,
    file_digest,
    load_datasets,
    split_indices,
)
from atomgfm.data.stats import graph_stats
from atomgfm.data.structure import MAX_Z, Structure, StructureError

log = logging.getLogger(__name__)


def _sources(dc: DatasetConfig, root: str) -> list[Path]:
    paths = [dc.path] if isinstance(dc.path, str) else list(dc.path)
    return [p if p.is_absolute() else Path(root) / p for p in map(Path, paths)]


def absolute_paths(dc: DatasetConfig, root: str) -> DatasetConfig:
    """``dc`` with its paths made absolute against ``root`` (a merged config may mix roots)."""
    paths = [str(p.resolve()) for p in _sources(dc, root)]
    return dataclasses.replace(dc, path=paths[0] if isinstance(dc.path, str) else paths)


def property_value(s: Structure, dc: DatasetConfig) -> float:
    """The label of a property dataset's record, validated; errors name file and record."""
    where = f"{s.source or '<memory>'}, record {s.index} (dataset {dc.name})"
    if dc.property_key not in s.info:
        raise StructureError(f"{where}: no info key {dc.property_key!r} (the property label); "
                             f"info has {sorted(s.info)}", "missing property")
    raw = s.info[dc.property_key]
    try:
        value = float(np.asarray(raw, dtype=np.float64).reshape(-1)[0]) if np.size(raw) == 1 \
            else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise StructureError(f"{where}: property {dc.property_key!r} = {raw!r} is not a finite "
                             "scalar", "bad property")
    if dc.task == "classification" and value not in (0.0, 1.0):
        raise StructureError(f"{where}: class label {dc.property_key!r} = {raw!r} is not 0 or 1 "
                             "(binary classification)", "bad property")
    return value


def load_property_dataset(dc: DatasetConfig, ds_id: int, cfg: DataConfig) -> LoadedDataset:
    """Read a property dataset, split it like every dataset, and describe its head.

    Records without a valid label are errors (``on_error: raise``) or counted skips. The
    normalisation holds the label's scale (standard deviation; 1 for classification) and the
    registry entry gets a ``head`` spec (task, pooling, offset, scale) the model builder reads.
    """
    structures: list[Structure] = []
    skipped: list[str] = []
    files: list[Path] = []
    options = getattr(dc, "reader_options", None)
    for source in _sources(dc, cfg.root):
        kwargs = {"reader_options": options} if options else {}
        stream = iter_structures(source, dataset=dc.name, format=dc.format,
                                 energy_unit=dc.energy_unit, length_unit=dc.length_unit,
                                 on_error=cfg.on_error, **kwargs)
        reasons: Counter = Counter()
        n_read = 0
        with stream:
            for s in stream:
                n_read += 1
                try:
                    value = property_value(s, dc)
                except StructureError as exc:
                    if cfg.on_error == "raise":
                        raise
                    reasons[exc.reason] += 1
                    continue
                info = {**s.info, dc.property_key: value}
                structures.append(dataclasses.replace(s, energy=None, forces=None, stress=None,
                                                      info=info))
        files.extend(Path(f) for f in stream.files)
        if stream.skipped.total:
            skipped.append(str(stream.skipped))
        if reasons:
            msg = (f"skipped {sum(reasons.values())} of {n_read} records in {source}: "
                   + ", ".join(f"{n} {r}" for r, n in reasons.items()))
            skipped.append(msg)
            log.warning("dataset %s: %s", dc.name, msg)
    if len(structures) < 2:
        raise ValueError(f"dataset {dc.name!r}: {len(structures)} record(s) with a property "
                         f"{dc.property_key!r}; at least 2 are needed (train and validation)")
    seed = zlib.crc32(dc.name.encode()) + cfg.split_seed  # as load_datasets: by name
    tr, va = split_indices(len(structures), cfg.val_fraction, seed)
    train, val = [structures[i] for i in tr], [structures[i] for i in va]
    d = LoadedDataset(dc, ds_id, train, val, None, file_digest(files), skipped)
    return _describe_property(d)


def _describe_property(d: LoadedDataset) -> LoadedDataset:
    """Normalisation and head spec of a property dataset from its training split: offset =
    mean (regression) or log-odds (classification), scale = standard deviation (or 1)."""
    dc = d.config
    y = np.array([s.info[dc.property_key] for s in d.train])
    if dc.task == "classification":
        rate = float(np.clip(y.mean(), 0.02, 0.98))
        offset, scale = math.log(rate / (1 - rate)), 1.0
    else:
        offset, scale = float(y.mean()), float(y.std()) if y.std() > 1e-12 else 1.0
    d.normalization = Normalization(np.zeros(MAX_Z + 1), scale, math.nan, math.nan,
                                    len(d.train))
    d.head = {"type": "property", "task": dc.task, "reduce": dc.property_reduce,
              "offset": offset, "scale": scale}
    return d


def subset(d: LoadedDataset, n: int) -> LoadedDataset:
    """The first ``n`` training records of ``d`` (same validation split), with references (or
    the property's offset and scale) refitted on them: a learning-curve point."""
    if n > len(d.train):
        raise ValueError(f"dataset {d.name!r} has {len(d.train)} training records, not {n}")
    out = dataclasses.replace(d, train=d.train[:n], skipped=list(d.skipped))
    if d.config.task != "energy":
        return _describe_property(out)
    out.normalization = fit_references(out.train, d.name)
    return out


def registry_entry(d: LoadedDataset) -> dict:
    """The dataset's registry entry, with the ``head`` spec and ``task`` of property datasets."""
    entry = d.registry_entry()
    entry["task"] = d.config.task
    if getattr(d, "head", None) is not None:
        entry["head"] = dict(d.head)
        entry["property_key"] = d.config.property_key
    return entry


def load_new_datasets(cfg: DataConfig, first_id: int = 0) -> list[LoadedDataset]:
    """The datasets of a fine-tuning config, with ids from ``first_id`` in config order."""
    if not cfg.datasets:
        raise ValueError("config.data.datasets is empty: name the downstream dataset(s)")
    out = []
    for k, dc in enumerate(cfg.datasets):
        if dc.task == "energy":
            one = dataclasses.replace(cfg, datasets=[dc])
            (d,) = load_datasets(one)
            d.id = first_id + k
        else:
            d = load_property_dataset(dc, first_id + k, cfg)
        out.append(d)
    return out


def load_pretraining_datasets(state: dict, names: list[str] | None = None,
                              data_root: str | None = None) -> list[LoadedDataset]:
    """The pretraining datasets named in a checkpoint's config, split as it split them, with
    the checkpoint's references and ids. Raises FileNotFoundError when the files are gone."""
    raw = state["config"]["data"]
    cfg = DataConfig(**{k: v for k, v in raw.items() if k != "datasets"})
    if data_root is not None:
        cfg.root = data_root
    table = {d["name"]: d for d in state["datasets"]}
    wanted = names if names is not None else [d["name"] for d in state["datasets"]]
    configs = []
    for d in raw["datasets"]:
        if d["name"] in wanted:
            known = {f.name for f in dataclasses.fields(DatasetConfig)}
            configs.append(DatasetConfig(**{k: v for k, v in d.items() if k in known}))
    cfg.datasets = [dc for dc in configs if dc.task == "energy"]
    loaded = load_datasets(cfg) if cfg.datasets else []
    loaded += [load_property_dataset(dc, 0, cfg) for dc in configs if dc.task != "energy"]
    for d in loaded:
        entry = table[d.name]
        d.id = int(entry["id"])
        d.normalization = Normalization.from_dict(entry["normalization"])
        if d.provenance != entry["provenance"]:
            log.warning("files of pretraining dataset %r changed since it was trained "
                        "(provenance %s -> %s)", d.name, entry["provenance"], d.provenance)
        d.config = absolute_paths(d.config, cfg.root)
    return sorted(loaded, key=lambda d: d.id)


def prepare(datasets: list[LoadedDataset], cutoff: float, needs: frozenset[str],
            progress: bool = False) -> PreparedData:
    """Graphs of every dataset (ids renumbered 0..n-1 in the given order) as PreparedData; when
    any dataset is a property task, every graph carries the property fields."""
    for k, d in enumerate(datasets):
        d.id = k
    any_property = any(d.config.task != "energy" for d in datasets)
    train, val = [], []
    for d in datasets:
        for split, out in ((d.train, train), (d.val, val)):
            g = build_graphs(split, cutoff, d.id, f"graphs {d.name}", progress, needs)
            if any_property:
                key = d.config.property_key if d.config.task != "energy" else None
                for graph, s in zip(g.graphs, split, strict=True):
                    graph[K.PROPERTY] = np.array([float(s.info[key]) if key else 0.0])
                    graph[K.HAS_PROPERTY] = np.array([key is not None])
            out.append(g)
    stats = graph_stats(source[i] for source in train for i in range(len(source)))
    return PreparedData([registry_entry(d) for d in datasets], train, val, stats, float(cutoff),
                        datasets, frozenset(needs))


def replay_ratios(new: list[LoadedDataset], old: list[LoadedDataset], replay: float,
                  cfg: DataConfig, old_cfg: dict) -> dict[str, float]:
    """Explicit mixing: the new datasets share 1 − ``replay`` of the draws (by the config's
    strategy among themselves), the replayed pretraining datasets ``replay`` (by the
    pretraining run's strategy)."""
    p_new = mixing_probabilities({d.name: len(d.train) for d in new}, cfg.mixing,
                                 cfg.temperature, cfg.ratios if cfg.mixing == "explicit" else None)
    ratios = {k: (1.0 - replay) * v for k, v in p_new.items()}
    if old and replay > 0:
        strategy = old_cfg.get("mixing", "temperature")
        table = old_cfg.get("ratios") or {}
        p_old = mixing_probabilities(
            {d.name: len(d.train) for d in old}, strategy, old_cfg.get("temperature", 2.0),
            {d.name: table.get(d.name, 0.0) for d in old} if strategy == "explicit" else None)
        ratios.update({k: replay * v for k, v in p_old.items()})
    return ratios
