"""Scatter helpers over the first dimension (plain ``index_add``, no extra dependency)."""

from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[k] = Σ_{e: index[e]=k} src[e]; shape (size, *src.shape[1:]).

    bf16/fp16 inputs are summed in float32 (many edges per atom would lose digits in bf16).
    """
    if src.dtype in (torch.bfloat16, torch.float16):
        src = src.float()
    out = torch.zeros((size, *src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add_(0, index, src)
