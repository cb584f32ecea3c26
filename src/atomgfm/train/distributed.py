"""The one reduction every cross-rank decision goes through.

``all_reduce_sum`` is a no-op in a single process and a sum over ranks under
``torch.distributed``: the non-finite-step decision and the validation metric sums both use it, so
ranks never disagree about whether a step was taken or which checkpoint is best.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (in place, returned); unchanged in one process. Under NCCL a CPU
    tensor makes the trip through the current CUDA device."""
    if is_distributed():
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            on_device = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            t.copy_(on_device)
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
