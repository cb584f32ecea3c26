"""Statistics of the training graphs that backbones are built with.

Computed on the training split only, at the model's cutoff, and stored in the checkpoint so a
reloaded model is built with exactly the numbers it was trained with: the mean number of
neighbours (MACE-style normalisation of summed messages) and the histogram of atom degrees
(PNA's degree scalers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from atomgfm import keys as K


@dataclass
class GraphStats:
    """Attributes:
    elements: atomic numbers present in the training splits.
    avg_num_neighbors: mean degree (edges per atom) at the cutoff.
    degree_histogram: ``degree_histogram[k]`` = atoms with exactly k neighbours.
    n_atoms, n_edges: totals over the training graphs.
    """

    elements: list[int] = field(default_factory=list)
    avg_num_neighbors: float = 0.0
    degree_histogram: list[int] = field(default_factory=list)
    n_atoms: int = 0
    n_edges: int = 0

    def to_dict(self) -> dict:
        return {"elements": list(self.elements), "avg_num_neighbors": self.avg_num_neighbors,
                "degree_histogram": list(self.degree_histogram), "n_atoms": self.n_atoms,
                "n_edges": self.n_edges}

    @classmethod
    def from_dict(cls, d: dict | None) -> GraphStats | None:
        if d is None:
            return None
        return cls([int(z) for z in d["elements"]], float(d["avg_num_neighbors"]),
                   [int(c) for c in d["degree_histogram"]], int(d["n_atoms"]), int(d["n_edges"]))


def graph_stats(graphs: Iterable[dict]) -> GraphStats:
    """Statistics of graphs (the graph dicts of ``data.graph.structure_to_graph``)."""
    elements: set[int] = set()
    hist = np.zeros(0, dtype=np.int64)
    n_atoms = n_edges = 0
    for g in graphs:
        n = len(g[K.ATOMIC_NUMBERS])
        elements.update(int(z) for z in np.unique(g[K.ATOMIC_NUMBERS]))
        degree = np.bincount(g[K.EDGE_INDEX][0], minlength=n)
        counts = np.bincount(degree)
        if len(counts) > len(hist):
            hist = np.pad(hist, (0, len(counts) - len(hist)))
        hist[: len(counts)] += counts
        n_atoms += n
        n_edges += int(g[K.EDGE_INDEX].shape[1])
    if n_atoms == 0:
        raise ValueError("no training graphs to compute statistics from")
    return GraphStats(sorted(elements), n_edges / n_atoms, hist.tolist(), n_atoms, n_edges)
