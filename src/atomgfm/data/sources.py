"""Datasets from config: read files, split train/validation, fit normalisation, build graphs.

The dataset registry (name → id, level of theory, labels, normalisation, provenance) that every
checkpoint stores is produced here, from the training split only.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from atomgfm import keys as K
from atomgfm.config.schema import DataConfig, DatasetConfig
from atomgfm.data.graph import structure_to_graph
from atomgfm.data.neighbors import count_isolated
from atomgfm.data.readers import read_structures
from atomgfm.data.references import Normalization, fit_references
from atomgfm.data.structure import Structure


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
                "n_train": len(self.train), "n_val": len(self.val),
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


def load_datasets(cfg: DataConfig) -> list[LoadedDataset]:
    """Read every dataset of the config; report skipped records; fit references on train."""
    if not cfg.datasets:
        raise ValueError("config.data.datasets is empty: name at least one dataset")
    root = Path(cfg.root)
    out = []
    for ds_id, dc in enumerate(cfg.datasets):
        paths = [dc.path] if isinstance(dc.path, str) else list(dc.path)
        files = [p if Path(p).is_absolute() else root / p for p in map(Path, paths)]
        structures: list[Structure] = []
        skipped = []
        for f in files:
            result = read_structures(f, dataset=dc.name, format=dc.format,
                                     energy_unit=dc.energy_unit, length_unit=dc.length_unit,
                                     on_error=cfg.on_error)
            structures.extend(result.structures)
            if result.skipped.total:
                skipped.append(str(result.skipped))
                print(f"[atomgfm] dataset {dc.name}: {result.skipped}")
        # Seeded by the dataset's name, so reordering the config never reshuffles a split.
        seed = zlib.crc32(dc.name.encode()) + cfg.split_seed
        tr, va = split_indices(len(structures), cfg.val_fraction, seed)
        train = [structures[i] for i in tr]
        val = [structures[i] for i in va]
        norm = fit_references(train, dc.name)
        out.append(LoadedDataset(dc, ds_id, train, val, norm, file_digest(files), skipped))
    return out


@dataclass
class GraphSet:
    """Graphs of one split of one dataset, plus the atom counts the samplers pack by."""

    graphs: list[dict]
    n_atoms: np.ndarray
    n_isolated_atoms: int


def build_graphs(structures: list[Structure], cutoff: float, dataset_id: int,
                 desc: str = "graphs", progress: bool = True) -> GraphSet:
    graphs = [structure_to_graph(s, cutoff, dataset_id)
              for s in tqdm(structures, desc=desc, disable=not progress, leave=False)]
    isolated = sum(count_isolated(g[K.EDGE_INDEX], len(g[K.ATOMIC_NUMBERS])) for g in graphs)
    return GraphSet(graphs, np.array([len(g[K.ATOMIC_NUMBERS]) for g in graphs]), isolated)
