"""Precision is a model setting carried explicitly (no global default dtype).

fp64: parameters and geometry in float64. fp32: float32. bf16: float32 parameters and geometry,
bfloat16 autocast for the network's matrix products (edge vectors stay float32, energies are summed
in float64 in every mode). bf16 keeps float32 master weights: the optimiser updates float32
parameters, autocast casts them to bfloat16 for each product.

TF32 (``train.tf32``, CUDA only): float32 matrix products and convolutions on tensor cores with a
10-bit mantissa; ``matmul_tf32`` turns it on inside a block and restores the previous setting.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.float32}


def param_dtype(precision: str) -> torch.dtype:
    try:
        return DTYPES[precision]
    except KeyError:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}") from None


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def matmul_tf32(enabled: bool, device: torch.device):
    """Allow TF32 for float32 products on CUDA inside the block (no effect on CPU or when
    ``enabled`` is false); the previous flags are restored on exit."""
    if not enabled or device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)
