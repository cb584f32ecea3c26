"""Batches for the training loop, built by DataLoader workers ahead of the step that takes them.

    loader = BatchLoader(sampler, data.train, dtype, device, workers=2, prefetch=2)
    items, batch = loader.next()   # the (dataset, record) pairs and their collated batch

The sampler stays the Trainer's: the loader's workers draw from a copy of it started at the same
position, and every ``next()`` also advances the Trainer's sampler by one batch and checks that
both drew the same records. A checkpoint therefore stores the position of the last batch *used*,
not of the batches prefetched, and a resumed run continues exactly. With ``workers=0`` batches
are built in the calling process (the loop's behaviour without a loader).

Workers read graph sources in their own processes (a store source opens its own shards there);
each holds at most ``prefetch`` batches, so memory is the shard cache per worker plus
``workers × prefetch`` batches.
"""

from __future__ import annotations

import copy

import torch

from atomgfm.data.graph import collate
from atomgfm.data.mixing import MixedBatchSampler


class _Batches(torch.utils.data.Dataset):
    """Maps a batch's (dataset, record) pairs to the collated batch (on the CPU)."""

    def __init__(self, sources, dtype: torch.dtype) -> None:
        self.sources, self.dtype = sources, dtype

    def __getitem__(self, items):
        # Arrays, not tensors: a batch is a few dozen small arrays, and pickling them through
        # the worker's pipe is cheaper than a shared-memory segment per tensor (demo store:
        # 1 worker 994 -> 1,098 structures/s, 2 workers 1,685 -> 2,651).
        batch = collate([self.sources[d][i] for d, i in items], self.dtype)
        return items, {k: v.numpy() for k, v in batch.items()}

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader asks only for repr
        raise TypeError("an endless stream of batches has no length")


class _Draws(torch.utils.data.Sampler):
    def __init__(self, sampler: MixedBatchSampler) -> None:
        self.sampler = sampler

    def __iter__(self):
        while True:
            yield self.sampler.next_batch()


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers build batches; the main process owns the cores' math


def _identity(x):
    return x


class BatchLoader:
    """``next()`` → (items, batch on ``device``); see the module docstring."""

    def __init__(self, sampler: MixedBatchSampler, sources, dtype: torch.dtype,
                 device: torch.device | str | None = None, workers: int = 0,
                 prefetch: int = 2) -> None:
        if workers < 0 or prefetch < 1:
            raise ValueError("workers must be >= 0 and prefetch >= 1")
        self.sampler, self.sources, self.dtype = sampler, sources, dtype
        self.device = torch.device(device) if device is not None else None
        self.workers, self.prefetch = int(workers), int(prefetch)
        self._it = None

    def _start(self) -> None:
        shadow = copy.deepcopy(self.sampler)
        loader = torch.utils.data.DataLoader(
            _Batches(self.sources, self.dtype), sampler=_Draws(shadow), batch_size=None,
            collate_fn=_identity, num_workers=self.workers, prefetch_factor=self.prefetch,
            worker_init_fn=_one_thread)  # arrays arrive in the main process (no pinning)
        self._it = iter(loader)

    def next(self) -> tuple[list[tuple[int, int]], dict[str, torch.Tensor]]:
        if self.workers == 0:
            items = self.sampler.next_batch()
            return items, collate([self.sources[d][i] for d, i in items], self.dtype,
                                  self.device)
        if self._it is None:
            self._start()
        items, arrays = next(self._it)
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        expected = self.sampler.next_batch()
        if [tuple(x) for x in items] != [tuple(x) for x in expected]:
            raise RuntimeError("the loader's workers drew other records than the sampler: its "
                               "state changed after the loader started (call reset())")
        if self.device is not None:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return items, batch

    def reset(self) -> None:
        """Stop the workers; the next ``next()`` restarts them at the sampler's position."""
        self._it = None
