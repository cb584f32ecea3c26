"""Graphs per structure and their collation into the batch dict of ``keys.py``.

A graph is a plain ``dict[str, np.ndarray]`` with the same keys as a batch, for one structure.
Collation concatenates per-atom, per-edge and per-triplet fields, stacks per-structure fields, and
offsets every index field (edges into atoms, triplets into edges); which field is which comes from
the key sets in ``keys.py`` only.
"""

from __future__ import annotations

import numpy as np
import torch

from atomgfm import keys as K
from atomgfm.data.neighbors import neighbor_list
from atomgfm.data.structure import MIN_DISTANCE, Structure, StructureError

_INT_KEYS = frozenset({K.ATOMIC_NUMBERS, K.BATCH, K.N_ATOMS, K.DATASET, *K.INDEX_FIELDS})
_BOOL_KEYS = frozenset({K.PBC, K.HAS_ENERGY, K.HAS_FORCES, K.HAS_STRESS})


def structure_to_graph(s: Structure, cutoff: float, dataset_id: int = 0) -> dict[str, np.ndarray]:
    """Build the graph of one structure; absent labels are zero-filled with a False mask."""
    nb = neighbor_list(s.positions, s.cell, s.pbc, cutoff)
    if nb.edge_index.shape[1]:
        i, j = nb.edge_index
        d = np.linalg.norm(s.positions[j] - s.positions[i] + nb.cell_shifts @ s.cell, axis=1)
        k = int(np.argmin(d))
        if d[k] < MIN_DISTANCE:
            raise StructureError(f"{s.source or '<memory>'}, record {s.index}: atoms {i[k]} and "
                                 f"{j[k]} are {d[k]:.3g} Å apart (< {MIN_DISTANCE} Å): "
                                 "overlapping atoms")
    n = s.n_atoms
    return {
        K.POSITIONS: s.positions,
        K.ATOMIC_NUMBERS: s.numbers,
        K.CELL: s.cell[None],
        K.PBC: s.pbc[None],
        K.CHARGE: np.array([s.charge]),
        K.SPIN: np.array([s.spin]),
        K.N_ATOMS: np.array([n]),
        K.DATASET: np.array([dataset_id]),
        K.EDGE_INDEX: nb.edge_index,
        K.CELL_SHIFTS: nb.cell_shifts,
        K.ENERGY: np.array([0.0 if s.energy is None else s.energy]),
        K.FORCES: np.zeros((n, 3)) if s.forces is None else s.forces,
        K.STRESS: (np.zeros((3, 3)) if s.stress is None else s.stress)[None],
        K.HAS_ENERGY: np.array([s.energy is not None]),
        K.HAS_FORCES: np.array([s.forces is not None]),
        K.HAS_STRESS: np.array([s.stress is not None]),
    }


def collate(graphs: list[dict[str, np.ndarray]], dtype: torch.dtype = torch.float32,
            device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Concatenate graphs into one batch dict (see ``keys.py`` for shapes and units)."""
    if not graphs:
        raise ValueError("cannot collate an empty list of graphs")
    batch: dict[str, np.ndarray] = {}
    for key in graphs[0]:
        if key in K.INDEX_FIELDS:
            counted = K.INDEX_FIELDS[key]
            offsets = np.cumsum([0] + [g[counted].shape[-1] for g in graphs[:-1]])
            batch[key] = np.concatenate(
                [g[key] + off for g, off in zip(graphs, offsets, strict=True)], axis=1)
        elif (key in K.PER_ATOM or key in K.PER_EDGE or key in K.PER_TRIPLET
              or key in K.PER_STRUCTURE):
            batch[key] = np.concatenate([g[key] for g in graphs], axis=0)
        else:
            raise KeyError(f"field {key!r} is not declared in keys.py's index or per-atom/edge/"
                           "triplet/structure sets")
    n_atoms = batch[K.N_ATOMS]
    batch[K.BATCH] = np.repeat(np.arange(len(graphs)), n_atoms)
    out = {}
    for key, value in batch.items():
        if key == K.ENERGY:  # total energies (~1e4 eV) need float64 whatever the model dtype
            t = torch.as_tensor(value, dtype=torch.float64)
        elif key in _INT_KEYS:
            t = torch.as_tensor(value, dtype=torch.long)
        elif key in _BOOL_KEYS:
            t = torch.as_tensor(value, dtype=torch.bool)
        else:
            t = torch.as_tensor(value, dtype=dtype)
        out[key] = t.to(device) if device is not None else t
    return out

