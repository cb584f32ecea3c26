"""The backbone contract: a batch in, node features out; no autograd, no datasets."""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Maps a batch dict to node features.

    Subclasses set ``cutoff`` (Å), ``num_scalar_features`` and ``num_vector_features`` (0 for
    invariant models) in ``__init__`` and return ``{NODE_SCALARS: (n_atoms, F)[, NODE_VECTORS:
    (n_atoms, 3, F_v)]}`` from ``forward``. They read edge vectors with
    ``atomgfm.nn.geometry.edge_vectors`` so forces and stress flow through positions and cell.
    """

    cutoff: float
    num_scalar_features: int
    num_vector_features: int = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
