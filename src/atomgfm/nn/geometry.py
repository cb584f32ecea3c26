"""Edge vectors from positions, cells and periodic shifts."""

from __future__ import annotations

import torch

from atomgfm import keys as K


def edge_vectors(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """r_ij = R_j - R_i + S_ij · cell_{b(i)}  (n_edges, 3) in Å; differentiable in R and cell."""
    pos = batch[K.POSITIONS]
    i, j = batch[K.EDGE_INDEX]
    # Geometry stays in the positions' precision even under bf16 autocast.
    with torch.autocast(device_type=pos.device.type, enabled=False):
        vec = torch.index_select(pos, 0, j) - torch.index_select(pos, 0, i)
        shifts = batch[K.CELL_SHIFTS]
        if shifts.numel():
            cell = torch.index_select(batch[K.CELL], 0, batch[K.BATCH][i])  # (E, 3, 3)
            vec = vec + torch.einsum("ek,ekl->el", shifts.to(vec.dtype), cell.to(vec.dtype))
    return vec
