"""Data-parallel training: torchrun's environment, the process group, gradient averaging, and the
one reduction every cross-rank decision goes through.

``all_reduce_sum`` is a no-op in a single process and a sum over ranks under
``torch.distributed``: the non-finite-step decision and the validation metric sums both use it, so
ranks never disagree about whether a step was taken or which checkpoint is best.

``launch_env`` reads what ``torchrun`` (or ``srun`` running ``torchrun``) puts in the environment;
``init_distributed`` joins the process group (gloo on CPU, NCCL on GPU, one process per device,
device ``cuda:LOCAL_RANK``); ``data_parallel`` wraps the model in PyTorch DDP, whose bucketed
all-reduce overlaps the backward pass. The Trainer's ``grad_sync: flat`` instead averages all
gradients after the backward as one flat tensor through the reduce function (the same numbers;
kept as the reference and for a custom ``reduce``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

# What torchrun sets for every worker (torch.distributed.run); MASTER_ADDR/PORT feed env://.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT")


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


@dataclass(frozen=True)
class LaunchEnv:
    """This worker's place, as torchrun describes it: global rank and world size, rank and
    number of workers on this node."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """torchrun's environment, or None when this process was not started by torchrun.

    A partial environment (say RANK without MASTER_PORT) is an error that names what is missing:
    guessing would start ranks that wait for each other forever."""
    env = os.environ if environ is None else environ
    present = [k for k in TORCHRUN_VARS if k in env]
    if not present:
        return None
    missing = [k for k in TORCHRUN_VARS if k not in env and k != "LOCAL_WORLD_SIZE"]
    if missing:
        raise ValueError(f"torchrun environment incomplete: {', '.join(present)} set but "
                         f"{', '.join(missing)} missing; start the ranks with torchrun (or srun "
                         "running torchrun, docs/distributed.md)")
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env["LOCAL_RANK"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise ValueError("torchrun environment: RANK, WORLD_SIZE, LOCAL_RANK and "
                         "LOCAL_WORLD_SIZE must be integers, got "
                         + ", ".join(f"{k}={env.get(k)!r}" for k in TORCHRUN_VARS[:4])) from None
    if not (0 <= rank < world and 0 <= local < local_world):
        raise ValueError(f"torchrun environment: RANK={rank} of WORLD_SIZE={world}, "
                         f"LOCAL_RANK={local} of LOCAL_WORLD_SIZE={local_world} is not a place")
    return LaunchEnv(rank, world, local, local_world)


def rank_device(device: str, local_rank: int) -> torch.device:
    """The device of the rank with ``local_rank`` on its node: ``cuda:LOCAL_RANK`` for
    ``auto`` (with CUDA) and ``cuda``; ``cpu`` for ``cpu`` and for ``auto`` without CUDA."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device not in ("auto", "cuda"):
        raise ValueError(f"train.device {device!r} under torchrun: use auto, cuda or cpu (each "
                         "rank takes cuda:LOCAL_RANK)")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but CUDA is not available")
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA "
                           "device(s) on this node: start one process per GPU "
                           "(torchrun --nproc-per-node=<GPUs>)")
    return torch.device("cuda", local_rank)


def init_distributed(env: LaunchEnv, device: str = "auto",
                     timeout_s: float = 1800.0) -> torch.device:
    """Join the process group torchrun set up (env://): NCCL when this rank runs on a GPU, gloo
    on CPU. Returns this rank's device (``cuda:LOCAL_RANK`` is made the current device)."""
    dev = rank_device(device, env.local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not is_distributed():
        dist.init_process_group(backend, init_method="env://", rank=env.rank,
                                world_size=env.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return dev


def shutdown(barrier: bool = True) -> None:
    """Leave the process group (a no-op outside one).

    gloo joins its worker threads in the group's destructor, which runs where the last reference
    goes (DDP's reducer holds one, so often when the Trainer is freed) with the GIL held. A worker
    still freeing a finished collective's tensors waits for the GIL there, and the two wait on
    each other for ever: a run that finished hung at exit (torch 2.13, seen in our two-rank tests
    about one run in ten). So on a clean exit (``barrier``) every rank first meets the others,
    then lets go of the GIL long enough for the workers to finish and idle; the group's
    destructor then joins idle threads. After an error pass ``barrier=False``: the other ranks
    may be gone."""
    if not is_distributed():
        return
    if barrier:
        dist.barrier()
    time.sleep(0.2)  # the GIL is free: gloo's workers release what they still hold
    dist.destroy_process_group()


@contextlib.contextmanager
def leaving_process_group():
    """Leave the process group when the block ends: through :func:`shutdown`'s barrier when it
    ran through, at once (``barrier=False``) when it raised."""
    try:
        yield
    except BaseException:
        shutdown(barrier=False)
        raise
    shutdown()


def data_parallel(model: torch.nn.Module, device: torch.device):
    """``model`` in PyTorch DDP: gradients are averaged in buckets while the backward runs.

    Every parameter takes part in every step (training combines heads by masks that multiply),
    so there is no unused-parameter search; buffers (references, scales) are identical on every
    rank: synced once when wrapped, not re-broadcast each forward. Needs a process group."""
    from torch.nn.parallel import DistributedDataParallel

    if not is_distributed():
        raise RuntimeError("train.grad_sync 'ddp' needs an initialised torch.distributed process "
                           "group (torchrun, or init_distributed); with a custom reduce "
                           "function use grad_sync: flat")
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False,
                                   find_unused_parameters=False)


def average_gradients(model: torch.nn.Module, world_size: int, reduce=all_reduce_sum) -> None:
    """Mean of every rank's gradients, as one flat tensor through ``reduce`` (the plain form of
    what DDP does; a parameter without a gradient contributes zeros)."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    flat = reduce(flat) / world_size
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
