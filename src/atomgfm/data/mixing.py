"""Multi-dataset mixing and size-packed batching over cheap metadata (atoms per structure).

Per-dataset probabilities:
  proportional  p_d ∝ n_d
  balanced      p_d = 1/D
  temperature   p_d ∝ n_d^(1/T)   (T=1 proportional, T→∞ balanced)
  explicit      p_d ∝ ratio_d from a table
The oversampling of dataset d is p_d / (n_d / Σn): a number you can read and test.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

STRATEGIES = ("proportional", "balanced", "temperature", "explicit")


def mixing_probabilities(sizes: Mapping[str, int], strategy: str = "temperature",
                         temperature: float = 2.0,
                         ratios: Mapping[str, float] | None = None) -> dict[str, float]:
    """Probability of drawing each dataset; keys follow ``sizes``."""
    names = list(sizes)
    n = np.array([sizes[k] for k in names], dtype=np.float64)
    if (n <= 0).any():
        raise ValueError(f"every dataset needs at least one structure, got sizes {dict(sizes)}")
    if strategy == "proportional":
        w = n
    elif strategy == "balanced":
        w = np.ones_like(n)
    elif strategy == "temperature":
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        w = n ** (1.0 / temperature)
    elif strategy == "explicit":
        if not ratios or set(ratios) != set(names):
            raise ValueError(f"explicit mixing needs a ratio for exactly these datasets: {names}; "
                             f"got {sorted(ratios or {})}")
        w = np.array([float(ratios[k]) for k in names])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixing ratios must be non-negative and not all zero: {dict(ratios)}")
    else:
        raise ValueError(f"unknown mixing strategy {strategy!r}; choose from {STRATEGIES}")
    p = w / w.sum()
    return dict(zip(names, p.tolist(), strict=True))


def oversampling(sizes: Mapping[str, int], probs: Mapping[str, float]) -> dict[str, float]:
    """How many times more often each dataset is drawn than under proportional sampling."""
    total = sum(sizes.values())
    return {k: probs[k] / (sizes[k] / total) for k in sizes}


class MixedBatchSampler:
    """Endless stream of batches of (dataset id, record index), packed to ``max_atoms``.

    Datasets are drawn by ``probs``; within a dataset, records are drawn without replacement
    from a reshuffled permutation each pass. A batch closes when the next structure would push it
    past ``max_atoms`` atoms or ``max_structures`` structures; a structure larger than
    ``max_atoms`` forms a batch alone. ``state_dict`` captures the exact position for resume.

    Args:
        atoms_per_structure: one int array per dataset (id order).
        probs: drawing probability per dataset (id order).
    """

    def __init__(self, atoms_per_structure: list[np.ndarray], probs: list[float],
                 max_atoms: int = 512, max_structures: int = 64, seed: int = 0) -> None:
        if len(atoms_per_structure) != len(probs):
            raise ValueError("one probability per dataset is required")
        if max_atoms < 1 or max_structures < 1:
            raise ValueError("max_atoms and max_structures must be >= 1")
        self.sizes = [np.asarray(a, dtype=np.int64) for a in atoms_per_structure]
        self.probs = np.asarray(probs, dtype=np.float64) / np.sum(probs)
        self.max_atoms, self.max_structures = int(max_atoms), int(max_structures)
        self.rng = np.random.default_rng(seed)
        self.perms = [self.rng.permutation(len(s)) for s in self.sizes]
        self.cursors = [0] * len(self.sizes)
        self.pending: tuple[int, int] | None = None

    def _draw(self) -> tuple[int, int]:
        d = int(self.rng.choice(len(self.probs), p=self.probs))
        if self.cursors[d] >= len(self.perms[d]):
            self.perms[d] = self.rng.permutation(len(self.sizes[d]))
            self.cursors[d] = 0
        idx = int(self.perms[d][self.cursors[d]])
        self.cursors[d] += 1
        return d, idx

    def next_batch(self) -> list[tuple[int, int]]:
        batch: list[tuple[int, int]] = []
        atoms = 0
        while len(batch) < self.max_structures:
            item = self.pending if self.pending is not None else self._draw()
            self.pending = None
            n = int(self.sizes[item[0]][item[1]])
            if batch and atoms + n > self.max_atoms:
                self.pending = item
                break
            batch.append(item)
            atoms += n
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "perms": [p.tolist() for p in self.perms],
                "cursors": list(self.cursors), "pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perms = [np.asarray(p, dtype=np.int64) for p in state["perms"]]
        self.cursors = list(state["cursors"])
        self.pending = tuple(state["pending"]) if state["pending"] is not None else None


def packed_batches(sizes: np.ndarray, max_atoms: int, max_structures: int,
                   edges: np.ndarray | None = None,
                   max_edges: int | None = None) -> list[list[int]]:
    """Deterministic in-order packing (validation, prediction): a batch closes before it would
    exceed ``max_atoms`` atoms, ``max_structures`` structures or ``max_edges`` edges (when edge
    counts are given). A structure larger than a limit forms a batch alone."""
    sizes = np.asarray(sizes, dtype=np.int64)
    edges = np.zeros_like(sizes) if edges is None else np.asarray(edges, dtype=np.int64)
    edge_cap = max_edges if max_edges is not None else np.iinfo(np.int64).max
    batches, current, atoms, n_edges = [], [], 0, 0
    for i, (n, e) in enumerate(zip(sizes, edges, strict=True)):
        if current and (atoms + n > max_atoms or len(current) >= max_structures
                        or n_edges + e > edge_cap):
            batches.append(current)
            current, atoms, n_edges = [], 0, 0
        current.append(i)
        atoms += int(n)
        n_edges += int(e)
    if current:
        batches.append(current)
    return batches
