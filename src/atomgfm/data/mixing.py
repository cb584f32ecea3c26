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


def epoch_counts(sizes: list[int], probs: np.ndarray, length: int) -> np.ndarray:
    """Draws per dataset in an epoch of ``length`` draws: p_d · length, rounded by largest
    remainder so they sum to ``length``; every dataset with p_d > 0 gets at least one (so an
    epoch is longer than ``length`` when a dataset's share rounds to zero)."""
    exact = np.asarray(probs, dtype=np.float64) * length
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: length - counts.sum()]] += 1
    counts[(counts == 0) & (np.asarray(probs) > 0)] = 1
    return counts


class MixedBatchSampler:
    """Endless stream of batches of (dataset id, record index), packed to ``max_atoms``.

    An epoch is a fixed sequence of ``epoch_length`` draws (default: the total number of training
    records), a pure function of (seed, epoch): dataset d appears ``epoch_counts`` times
    (p_d · length, so oversampling is exact, not a random outcome), its records taken from
    reshuffled passes over the dataset, and all datasets interleaved by a seeded shuffle. Rank r
    of ``world_size`` takes every world_size-th draw starting at r, so ranks never overlap and
    together cover the epoch. A batch closes when the next structure would push it past
    ``max_atoms`` atoms, ``max_structures`` structures or (with the manifest's edge counts)
    ``max_edges`` edges; a structure larger than a limit forms a batch alone. The state is
    (seed, epoch, cursor): the position in this rank's share.

    Args:
        atoms_per_structure: one int array per dataset (id order), from the size manifest.
        probs: drawing probability per dataset (id order).
    """

    def __init__(self, atoms_per_structure: list[np.ndarray], probs: list[float],
                 max_atoms: int = 512, max_structures: int = 64, seed: int = 0, rank: int = 0,
                 world_size: int = 1, epoch_length: int | None = None,
                 edges_per_structure: list[np.ndarray] | None = None,
                 max_edges: int | None = None) -> None:
        if len(atoms_per_structure) != len(probs):
            raise ValueError("one probability per dataset is required")
        if max_atoms < 1 or max_structures < 1:
            raise ValueError("max_atoms and max_structures must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
        self.sizes = [np.asarray(a, dtype=np.int64) for a in atoms_per_structure]
        if max_edges is not None and edges_per_structure is None:
            raise ValueError("max_edges needs edges_per_structure (the manifest's edge counts)")
        self.edges = (None if max_edges is None
                      else [np.asarray(e, dtype=np.int64) for e in edges_per_structure])
        self.max_edges = None if max_edges is None else int(max_edges)
        if any(len(s) == 0 for s in self.sizes):
            raise ValueError("every dataset needs at least one training record")
        self.probs = np.asarray(probs, dtype=np.float64) / np.sum(probs)
        self.max_atoms, self.max_structures = int(max_atoms), int(max_structures)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch_length = int(epoch_length or sum(len(s) for s in self.sizes))
        if self.epoch_length < world_size:
            raise ValueError(f"an epoch of {self.epoch_length} draws cannot feed {world_size} "
                             "ranks")
        self.epoch, self.cursor = 0, 0
        self._items: np.ndarray | None = None  # this rank's share of the current epoch, (n, 2)

    def epoch_items(self, epoch: int) -> np.ndarray:
        """All draws of ``epoch`` (every rank's), (n, 2): dataset id, record index."""
        counts = epoch_counts([len(s) for s in self.sizes], self.probs, self.epoch_length)
        per_dataset = []
        for d, (k, sizes) in enumerate(zip(counts, self.sizes, strict=True)):
            if k == 0:  # drawn with probability 0 (an explicit ratio of 0)
                continue
            rng = self._rng(epoch, d + 1)
            passes = -(-int(k) // len(sizes))
            idx = np.concatenate([rng.permutation(len(sizes)) for _ in range(passes)])[:k]
            per_dataset.append(np.stack([np.full(k, d), idx], axis=1))
        items = np.concatenate(per_dataset)
        return items[self._rng(epoch, 0).permutation(len(items))]

    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        """An independent generator per (seed, epoch, stream): stream 0 interleaves the datasets,
        stream d + 1 shuffles dataset d (spawn keys keep the streams apart)."""
        return np.random.default_rng(np.random.SeedSequence(self.seed,
                                                            spawn_key=(epoch, stream)))

    def _share(self) -> np.ndarray:
        if self._items is None:
            self._items = self.epoch_items(self.epoch)[self.rank::self.world_size]
        return self._items

    def peek(self) -> tuple[int, int]:
        """The next (dataset id, record index) this rank will draw, without drawing it."""
        if self.cursor >= len(self._share()):
            self.epoch, self.cursor, self._items = self.epoch + 1, 0, None
        d, i = self._share()[self.cursor]
        return int(d), int(i)

    def next_batch(self) -> list[tuple[int, int]]:
        batch: list[tuple[int, int]] = []
        atoms = edges = 0
        while len(batch) < self.max_structures:
            item = self.peek()
            n = int(self.sizes[item[0]][item[1]])
            e = int(self.edges[item[0]][item[1]]) if self.edges is not None else 0
            if batch and (atoms + n > self.max_atoms
                          or (self.max_edges is not None and edges + e > self.max_edges)):
                break
            batch.append(item)
            atoms += n
            edges += e
            self.cursor += 1
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "cursor": self.cursor,
                "rank": self.rank, "world_size": self.world_size,
                "epoch_length": self.epoch_length}

    def load_state_dict(self, state: dict) -> None:
        if "epoch" not in state:
            raise ValueError("sampler state from an older atomgfm version (it stored "
                             "permutations); restart the run with --restart")
        if state.get("world_size") != self.world_size or state["epoch_length"] != self.epoch_length:
            raise ValueError(
                f"the checkpoint was written by {state['world_size']} rank(s) with epochs of "
                f"{state['epoch_length']} draws; this run has {self.world_size} rank(s) and "
                f"{self.epoch_length}: resume with the same world size and data (each rank's "
                "position in the epoch depends on how its batches were packed)")
        epoch, cursor = state["epoch"], state["cursor"]
        if "ranks" in state:  # a checkpoint of every rank's position: take this rank's
            epoch, cursor = state["ranks"][self.rank]
        elif state.get("rank", 0) != self.rank:
            raise ValueError(f"sampler state of rank {state.get('rank')} given to rank "
                             f"{self.rank}")
        self.seed, self.epoch, self.cursor = state["seed"], int(epoch), int(cursor)
        self._items = None


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
