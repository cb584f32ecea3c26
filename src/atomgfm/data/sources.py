"""Datasets from config: read files, split train/validation, fit normalisation, build graphs.

    data = prepare_data(cfg.data, cutoff=5.0)   # -> PreparedData
    data.table            # the dataset registry: one dict per dataset, in id order
    data.train[d][i]      # graph i of dataset d's training split (a GraphSource)
    data.stats            # GraphStats of the training graphs, for the model builder

The dataset registry (name → id, level of theory, labels, normalisation, provenance) that every
checkpoint stores is produced here, from the training split only. Graph sources are sequences
with a size manifest (atoms and edges per entry), so samplers pack batches without opening
records and a sharded store can stand in for the in-memory lists. With ``data.store`` set,
``prepare_data`` opens a preprocessed store instead (``data/store/``) and streams from it.

Splits are decided by each structure's content hash (``data/store/splits.py``), in files and in
stores alike: adding data never moves a structure between train and validation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from atomgfm import keys as K
from atomgfm.config.schema import DataConfig, DatasetConfig
from atomgfm.data.graph import structure_to_graph
from atomgfm.data.neighbors import count_isolated
from atomgfm.data.readers import iter_structures
from atomgfm.data.references import Normalization, fit_references
from atomgfm.data.stats import GraphStats, graph_stats
from atomgfm.data.store.splits import hash_split
from atomgfm.data.structure import Structure

log = logging.getLogger(__name__)


@dataclass
class LoadedDataset:
    """One dataset after reading and splitting; ``id`` is its head index."""

    config: DatasetConfig
    id: int
    train: list[Structure]
    val: list[Structure]
    normalization: Normalization
    provenance: str
    skipped: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    def split(self, which: str) -> list[Structure]:
        """The ``"train"`` or ``"val"`` records."""
        if which not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {which!r}")
        return self.train if which == "train" else self.val

    def registry_entry(self) -> dict:
        labels = {
            "energy": any(s.energy is not None for s in self.train),
            "forces": any(s.forces is not None for s in self.train),
            "stress": any(s.stress is not None for s in self.train),
        }
        return {"name": self.name, "id": self.id,
                "level_of_theory": self.config.level_of_theory, "labels": labels,
                "elements": sorted({int(z) for s in self.train for z in s.numbers}),
                # (total charge, multiplicity) pairs of the training split, for "never trained
                # on this state" warnings at prediction time.
                "states": sorted({(int(round(s.charge)), int(round(s.spin))) for s in self.train}),
                "normalization": self.normalization.to_dict(), "provenance": self.provenance,
                "n_train": len(self.train), "n_val": len(self.val), "skipped": list(self.skipped),
                "weights": {"energy": self.config.energy_weight,
                            "forces": self.config.forces_weight,
                            "stress": self.config.stress_weight}}


def file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled split; at least one validation record when n >= 2."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(int(round(n * val_fraction)), 1 if n >= 2 else 0), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def dataset_paths(cfg: DataConfig, dc: DatasetConfig) -> list[Path]:
    """The files or folders of dataset ``dc``, relative paths resolved against ``cfg.root``."""
    paths = [dc.path] if isinstance(dc.path, str) else list(dc.path)
    return [p if p.is_absolute() else Path(cfg.root) / p for p in map(Path, paths)]


def load_datasets(cfg: DataConfig) -> list[LoadedDataset]:
    """Read every dataset of the config; report skipped records; split by content hash; fit
    references on train."""
    if not cfg.datasets:
        raise ValueError("config.data.datasets is empty: name at least one dataset")
    out = []
    for ds_id, dc in enumerate(cfg.datasets):
        sources = dataset_paths(cfg, dc)
        structures: list[Structure] = []
        skipped = []
        files: list[Path] = []  # a source may be a folder of files (OMat24/OMol25 layouts)
        for source in sources:
            stream = iter_structures(source, dataset=dc.name, format=dc.format,
                                     energy_unit=dc.energy_unit, length_unit=dc.length_unit,
                                     on_error=cfg.on_error, reader_options=dc.reader_options)
            with stream:
                structures.extend(stream)
            files.extend(Path(f) for f in stream.files)
            if stream.skipped.total:
                skipped.append(str(stream.skipped))
                log.warning("dataset %s: %s", dc.name, stream.skipped)
        # By content hash: reordering the config or adding data never moves a structure.
        tr, va = hash_split(structures, cfg.val_fraction, cfg.split_seed)
        train = [structures[i] for i in tr]
        val = [structures[i] for i in va]
        norm = fit_references(train, dc.name)
        out.append(LoadedDataset(dc, ds_id, train, val, norm, file_digest(files), skipped))
    return out


@runtime_checkable
class GraphSource(Protocol):
    """What training and evaluation read graphs from: a sequence of graph dicts with a size
    manifest (``n_atoms``, ``n_edges``: one int per entry), so batches are packed from metadata."""

    n_atoms: np.ndarray
    n_edges: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict: ...


@dataclass
class GraphList(Sequence):
    """In-memory :class:`GraphSource`: graphs of one split of one dataset, with their sizes."""

    graphs: list[dict]
    n_atoms: np.ndarray
    n_edges: np.ndarray
    n_isolated_atoms: int = 0

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i):
        return self.graphs[i]


def build_graphs(structures: list[Structure], cutoff: float, dataset_id: int,
                 desc: str = "graphs", progress: bool = True,
                 needs: frozenset[str] = frozenset()) -> GraphList:
    graphs = [structure_to_graph(s, cutoff, dataset_id, needs)
              for s in tqdm(structures, desc=desc, disable=not progress, leave=False)]
    isolated = sum(count_isolated(g[K.EDGE_INDEX], len(g[K.ATOMIC_NUMBERS])) for g in graphs)
    return GraphList(graphs, np.array([len(g[K.ATOMIC_NUMBERS]) for g in graphs], dtype=np.int64),
                     np.array([g[K.EDGE_INDEX].shape[1] for g in graphs], dtype=np.int64),
                     isolated)


@dataclass
class PreparedData:
    """Everything a Trainer needs from the data side.

    Attributes:
        table: dataset registry entries (dicts, see ``LoadedDataset.registry_entry``) in id order.
        train, val: one graph source per dataset, in id order.
        stats: statistics of the training graphs (for the model builder).
        cutoff: the cutoff (Å) the graphs were built at.
        datasets: the loaded records when the data came from files (None from a store); used
            for baselines in evaluation tables.
        needs: the extra graph fields the graphs were built with (e.g. ``TRIPLET_INDEX``).
    """

    table: list[dict]
    train: list[GraphSource]
    val: list[GraphSource]
    stats: GraphStats
    cutoff: float
    datasets: list[LoadedDataset] | None = None
    needs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        ids = [d["id"] for d in self.table]
        if ids != list(range(len(self.table))):
            raise ValueError(f"dataset table must be in id order 0..n-1, got ids {ids}")
        if not len(self.train) == len(self.val) == len(self.table):
            raise ValueError("one train and one val graph source per dataset are required")

    @property
    def names(self) -> list[str]:
        return [d["name"] for d in self.table]


def prepare_data(cfg: DataConfig, cutoff: float, datasets: list[LoadedDataset] | None = None,
                 progress: bool = True, needs: frozenset[str] = frozenset()) -> PreparedData:
    """Read (unless ``datasets`` are given), split, fit references and build graphs at
    ``cutoff`` Å, with the extra fields the backbone ``needs`` (e.g. triplets). With
    ``cfg.store`` (and no ``datasets``) the graphs stream from that preprocessed store."""
    if cfg.store and datasets is None:
        from atomgfm.data.store.source import prepare_store_data

        return prepare_store_data(cfg, cutoff, progress=progress, needs=needs)
    datasets = datasets if datasets is not None else load_datasets(cfg)
    train = [build_graphs(d.train, cutoff, d.id, f"graphs {d.name}/train", progress, needs)
             for d in datasets]
    val = [build_graphs(d.val, cutoff, d.id, f"graphs {d.name}/val", progress, needs)
           for d in datasets]
    stats = graph_stats(source[i] for source in train for i in range(len(source)))
    return PreparedData([d.registry_entry() for d in datasets], train, val, stats, float(cutoff),
                        datasets, frozenset(needs))


def check_charge_spin(datasets: list[LoadedDataset], max_charge: int, max_spin: int) -> None:
    """Every record's charge and multiplicity within the range the backbone embeds: an error
    naming the record at load time rather than mid-training."""
    for d in datasets:
        for s in d.train + d.val:
            if abs(round(s.charge)) > max_charge or not 0 <= round(s.spin) <= max_spin:
                raise ValueError(
                    f"{s.source}, record {s.index} (dataset {d.name}): charge {s.charge:g} / "
                    f"multiplicity {s.spin:g} outside the model's range ±{max_charge} / "
                    f"0..{max_spin} (backbone_kwargs max_charge, max_spin)")
