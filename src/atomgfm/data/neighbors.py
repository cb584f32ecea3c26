"""Neighbour lists through vesin, with periodic shifts.

Every pair within the cutoff is kept (a full list, both directions, no top-k truncation); the
model multiplies messages by a smooth cutoff, so the energy surface stays continuous. Atoms with
no neighbour are allowed: they contribute their element reference energy, and are counted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
from vesin import NeighborList

from atomgfm.registry import register


@dataclass
class Neighbors:
    """Edges of one structure.

    Attributes:
        edge_index: (2, n_edges) int64; row 0 centre atom i, row 1 neighbour j.
        cell_shifts: (n_edges, 3) float64 integer lattice shifts S with r_ij = R_j - R_i + S @ cell.
        n_isolated: number of atoms with no neighbour within the cutoff.
    """

    edge_index: np.ndarray
    cell_shifts: np.ndarray
    n_isolated: int


@register("neighbors", "vesin")
def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> Neighbors:
    """Full neighbour list within ``cutoff`` Å (both directions of every pair, no self pairs).

    Args:
        positions: (n, 3) Å.
        cell: (3, 3) Å, lattice vectors as rows (ignored where pbc is False).
        pbc: (3,) bool.
        cutoff: radius in Å.
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    n = len(positions)
    box = np.asarray(cell, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    if n == 1 and not pbc.any():
        i = j = np.zeros(0, np.int64)
        shifts = np.zeros((0, 3))
    else:
        nl = NeighborList(cutoff=float(cutoff), full_list=True)
        i, j, shifts = nl.compute(positions, box, pbc.tolist(), quantities="ijS")
    edge_index = np.stack([np.asarray(i, np.int64), np.asarray(j, np.int64)])
    return Neighbors(edge_index, np.asarray(shifts, np.float64).reshape(-1, 3),
                     count_isolated(edge_index, n))


def count_isolated(edge_index: np.ndarray, n_atoms: int) -> int:
    """Atoms that are the centre of no edge (no neighbour within the cutoff)."""
    return int((np.bincount(edge_index[0], minlength=n_atoms) == 0).sum())



# Overlap search radius. vesin's cell list has bins of about the cutoff, so a 0.1 Å search builds
# ~1000x more bins than a 1 Å one: measured 2-11 ms vs 0.14-0.6 ms per structure (Cu4, Cu256,
# benzene). Pairs under 1 Å are few (X-H bonds), so searching 1 Å and keeping d < limit is cheaper.
# One thread: between calls a reader runs Python, and waking OpenMP workers cost ~0.4 ms per call
# (reading 2000 Cu4 rows: 1.1 s in vesin with all threads, 0.12 s with one).
_OVERLAP_SEARCH = 1.0
# vesin < 0.6 has no thread pool (nor the argument).
_ONE_THREAD = ({"n_threads": 1} if "n_threads" in inspect.signature(NeighborList).parameters
               else {})


def closest_pair(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, below: float
) -> tuple[int, int, float] | None:
    """The closest pair of atoms nearer than ``below`` Å (periodic images included), or None.

    Args:
        positions: (n, 3) Å.
        cell: (3, 3) Å, lattice vectors as rows (ignored where pbc is False).
        pbc: (3,) bool.
        below: distance in Å; only pairs closer than this are reported.

    Returns:
        ``(i, j, distance)`` with i <= j (i == j: an atom and its own periodic image), or None.
    """
    if below <= 0:
        raise ValueError(f"below must be positive, got {below}")
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if len(positions) == 1 and not pbc.any():
        return None
    box = np.asarray(cell, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    nl = NeighborList(cutoff=max(float(below), _OVERLAP_SEARCH), full_list=False, **_ONE_THREAD)
    i, j, d = nl.compute(positions, box, pbc.tolist(), quantities="ijd")
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    if d[k] >= below:
        return None
    a, b = sorted((int(i[k]), int(j[k])))
    return a, b, float(d[k])
