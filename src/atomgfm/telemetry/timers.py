"""Phase timers (data, forward, backward, optimiser, ...) for the training loop."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates wall time per named phase; synchronises CUDA so GPU time lands in its phase."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.cuda = device is not None and device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.totals[phase] += time.perf_counter() - t

    def summary(self, reset: bool = False) -> dict[str, float]:
        out = {k: round(v, 4) for k, v in self.totals.items()}
        if reset:
            self.totals.clear()
        return out
