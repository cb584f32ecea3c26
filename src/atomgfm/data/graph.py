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
_BOOL_KEYS = frozenset({K.PBC, K.HAS_ENERGY, K.HAS_FORCES, K.HAS_STRESS, K.HAS_PROPERTY})


def structure_to_graph(s: Structure, cutoff: float, dataset_id: int = 0,
                       needs: frozenset[str] | set[str] = frozenset()) -> dict[str, np.ndarray]:
    """Build the graph of one structure; absent labels are zero-filled with a False mask.

    ``needs``: extra fields a backbone declares (``Backbone.needs``); ``TRIPLET_INDEX`` adds the
    edge pairs meeting at an atom (:func:`triplets`). Unknown names are an error.
    """
    unknown = set(needs) - {K.TRIPLET_INDEX}
    if unknown:
        raise ValueError(f"graph building cannot provide {sorted(unknown)}")
    nb = neighbor_list(s.positions, s.cell, s.pbc, cutoff)
    if nb.edge_index.shape[1]:
        i, j = nb.edge_index
        d = np.linalg.norm(s.positions[j] - s.positions[i] + nb.cell_shifts @ s.cell, axis=1)
        k = int(np.argmin(d))
        if d[k] < MIN_DISTANCE:
            raise StructureError(f"{s.source or '<memory>'}, record {s.index}: atoms {i[k]} and "
                                 f"{j[k]} are {d[k]:.3g} Å apart (< {MIN_DISTANCE} Å): "
                                 "overlapping atoms")
    graph = graph_fields(s, nb.edge_index, nb.cell_shifts, dataset_id)
    if K.TRIPLET_INDEX in needs:
        graph[K.TRIPLET_INDEX] = triplets(nb.edge_index, nb.cell_shifts, s.n_atoms)
    return graph


def graph_fields(s: Structure, edge_index: np.ndarray, cell_shifts: np.ndarray,
                 dataset_id: int = 0) -> dict[str, np.ndarray]:
    """The graph dict of ``s`` with these edges (absent labels zero-filled with a False mask)."""
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
        K.EDGE_INDEX: edge_index,
        K.CELL_SHIFTS: cell_shifts,
        K.ENERGY: np.array([0.0 if s.energy is None else s.energy]),
        K.FORCES: np.zeros((n, 3)) if s.forces is None else s.forces,
        K.STRESS: (np.zeros((3, 3)) if s.stress is None else s.stress)[None],
        K.HAS_ENERGY: np.array([s.energy is not None]),
        K.HAS_FORCES: np.array([s.forces is not None]),
        K.HAS_STRESS: np.array([s.stress is not None]),
    }


def triplets(edge_index: np.ndarray, cell_shifts: np.ndarray, n_atoms: int) -> np.ndarray:
    """Pairs of edges (k→j, j→i) meeting at atom j, as (2, n_triplets) indices into the edges.

    Edge e = (i, j) (row 0 centre, row 1 neighbour) carries the message j→i; k→j is an edge with
    centre j. The pair that returns along the same bond (k = i with the opposite lattice shift)
    is left out; a periodic image of i is a distinct k. Built from edges sorted by centre, so
    memory is linear in the number of triplets (no n_edges × n_edges table).
    """
    centre, neighbour = edge_index
    order = np.argsort(centre, kind="stable")
    counts = np.bincount(centre, minlength=n_atoms)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_edge = counts[neighbour]  # edges k→j available for each j→i
    total = int(per_edge.sum())
    e_ji = np.repeat(np.arange(len(centre)), per_edge)
    within = np.arange(total) - np.repeat(np.cumsum(per_edge) - per_edge, per_edge)
    e_kj = order[np.repeat(starts[neighbour], per_edge) + within]
    back = (neighbour[e_kj] == centre[e_ji]) & np.all(
        cell_shifts[e_kj] == -cell_shifts[e_ji], axis=1)
    return np.stack([e_kj[~back], e_ji[~back]]).astype(np.int64)


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

