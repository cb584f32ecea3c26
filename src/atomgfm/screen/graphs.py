"""Graphs of a block of candidates, with the neighbour lists of small molecules built together.

``structure_to_graph`` calls the cell-list neighbour search once per structure; for a molecule of a
few atoms that call (and its Python around it) costs more than the search. Here every
non-periodic structure of up to ``SMALL`` atoms in a block is searched at once: all ordered pairs
of atoms within each molecule, as flat NumPy arrays over the block, kept when closer than the
cutoff. The graphs are those of ``structure_to_graph`` (same fields, dtypes and edge set; edges
sorted by centre then neighbour), which handles every other structure (tested).
"""

from __future__ import annotations

import numpy as np

from atomgfm.data.graph import graph_fields, structure_to_graph
from atomgfm.data.structure import MIN_DISTANCE, Structure, StructureError

#: Largest non-periodic structure whose pairs are enumerated with the block (n² pairs each).
SMALL = 64
#: Atom pairs enumerated at once (memory ~ 100 bytes a pair), so a large block stays bounded.
MAX_PAIRS = 1 << 18


def block_graphs(structures: list[Structure], cutoff: float,
                 needs: frozenset[str] = frozenset()) -> list[dict | StructureError]:
    """Graph of every structure (same order), or the ``StructureError`` that stopped it."""
    out: list[dict | StructureError | None] = [None] * len(structures)
    small = [k for k, s in enumerate(structures)
             if not needs and not s.pbc.any() and 1 < s.n_atoms <= SMALL]
    group: list[int] = []
    pairs = 0
    for k in small + [-1]:
        n2 = structures[k].n_atoms ** 2 if k >= 0 else 0
        if group and (k < 0 or pairs + n2 > MAX_PAIRS):
            for m, g in zip(group, _small_molecules([structures[m] for m in group], cutoff),
                            strict=True):
                out[m] = g
            group, pairs = [], 0
        if k >= 0:
            group.append(k)
            pairs += n2
    for k, s in enumerate(structures):
        if out[k] is None:
            try:
                out[k] = structure_to_graph(s, cutoff, 0, needs)
            except StructureError as exc:
                out[k] = exc
    return out


def _small_molecules(structs: list[Structure], cutoff: float) -> list[dict | StructureError]:
    sizes = np.array([s.n_atoms for s in structs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.concatenate([s.positions for s in structs])
    pairs = sizes * sizes
    mol = np.repeat(np.arange(len(structs)), pairs)
    local = np.arange(int(pairs.sum())) - np.repeat(np.cumsum(pairs) - pairs, pairs)
    a, b = np.divmod(local, sizes[mol])
    i, j = starts[mol] + a, starts[mol] + b
    d = np.linalg.norm(pos[j] - pos[i], axis=1)
    keep = (a != b) & (d < cutoff)
    i, j, d, mol = i[keep], j[keep], d[keep], mol[keep]
    bounds = np.searchsorted(mol, np.arange(len(structs) + 1))
    graphs = []
    for m, s in enumerate(structs):
        lo, hi = bounds[m], bounds[m + 1]
        edge_index = np.stack([i[lo:hi], j[lo:hi]]) - starts[m]
        if hi > lo:
            k = int(np.argmin(d[lo:hi]))
            if d[lo + k] < MIN_DISTANCE:
                graphs.append(StructureError(
                    f"{s.source or '<memory>'}, record {s.index}: atoms {edge_index[0, k]} and "
                    f"{edge_index[1, k]} are {d[lo + k]:.3g} Å apart (< {MIN_DISTANCE} Å): "
                    "overlapping atoms"))
                continue
        graphs.append(graph_fields(s, edge_index.astype(np.int64),
                                   np.zeros((edge_index.shape[1], 3))))
    return graphs

