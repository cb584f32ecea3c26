"""EGNN: E(n) equivariant graph neural network, as an interatomic potential.

Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021,
https://arxiv.org/abs/2102.09844.

A layer of the paper (its equations 3-6) computes an edge message from invariants, moves each node's
coordinate along the sum of its bond vectors weighted by those messages, and updates the node
features from the summed messages:

    m_ij = φ_e(h_i, h_j, ‖x_i − x_j‖²)
    x_i ← x_i + C Σ_j (x_i − x_j) φ_x(m_ij)
    h_i ← h_i + φ_h(h_i, Σ_j m_ij)

**Coordinates are not moved.** The atoms' positions stay the input positions: moving them would
make a periodic image drift away from the atom it images, and put the positions, not only the
strain, inside the stress derivative. Instead each atom carries ``vector_channels`` equivariant
vectors v_i (3, C), zero at the start: the displacement of C *virtual* copies of the atom,
x_i^c = R_i + v_i^c. Periodic images share their atom's v, so virtual bond vectors stay periodic,
and forces and stress still flow only through ``edge_vectors`` (positions and cell). This is the
paper's update with C coordinates per atom, its positions held fixed (the paper itself keeps
positions fixed for QM9). With r_ij = R_j − R_i + shift (Å) and f_c the polynomial cutoff:

    d_ij^c = x_i^c − x_j^c = v_i^c − v_j^c − r_ij                    (E, 3, C)
    δ_ij^c = ‖d_ij^c‖² − ‖r_ij‖²                                     (E, C), zero in layer 1
    m_ij   = f_c(r_ij) · φ_e(h_i, h_j, bessel(r_ij), δ_ij)            (E, F)
    v_i^c ← v_i^c + (1/n̄) Σ_j d_ij^c / r_ij · φ_x(m_ij)^c · f_c(r_ij)
    h_i   ← h_i + φ_h(h_i, (1/n̄) Σ_j m_ij, ‖v_i‖²)

φ_h also reads ‖v_i^c‖² (a departure from the paper, where h never sees x): it lets the scalars
see angular information from layer 1 on, and keeps every parameter in the energy's graph (the
last layer's φ_x would otherwise be unused, which DDP does not allow). The output is the
invariant scalars h (for the heads) and the equivariant v (NODE_VECTORS). With
``vector_channels=0`` the model is the invariant EGNN (no coordinate channel at all).

Smoothness: every message and every vector update carries f_c(r_ij), which goes to zero with
zero first and second derivative at the cutoff, so energy and forces are continuous as a
neighbour crosses it. Sums over neighbours are divided by a constant n̄ (the training graphs'
mean neighbour count, ``stats.avg_num_neighbors``; 10 without statistics), never by an atom's own
neighbour count, which would jump when a neighbour enters the cutoff sphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.models.backbones.base import Backbone, BackboneSettings, setting
from atomgfm.nn.embedding import AtomEmbedding
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import BesselBasis, PolynomialCutoff
from atomgfm.nn.scatter import scatter_sum
from atomgfm.registry import register

DEFAULT_NEIGHBORS = 10.0  # n̄ when the builder passes no training statistics


def _gather(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """v[index] for (N, 3, C) vectors, as rows of (N, 3C): on CPU the backward's index_add over
    flat rows is several times faster than over (3, C) blocks."""
    return torch.index_select(v.flatten(1), 0, index).view(-1, *v.shape[1:])


class EGNNLayer(nn.Module):
    """One equivariant graph convolution: edge messages, vector update, residual node update."""

    def __init__(self, F: int, C: int, first: bool) -> None:
        super().__init__()
        self.F, self.C, self.first = F, C, first
        # φ_e's first layer on [h_i, h_j, bessel, δ], split so the h parts run per node:
        # W [h_i; h_j; ...] = W_i h_i + W_j h_j + ... (the bessel part, with the bias, is
        # computed for all layers at once by the backbone).
        self.node_in = nn.Linear(F, 2 * F, bias=False)
        self.vector_in = nn.Linear(C, F, bias=False) if C and not first else None  # δ, (C,) -> F
        self.edge_out = nn.Linear(F, F)
        self.phi_x = nn.Linear(F, C) if C else None
        self.phi_h = nn.Sequential(nn.Linear(2 * F + C, F), nn.SiLU(), nn.Linear(F, F))
        self.act = nn.SiLU()

    def forward(self, h, v, i, j, radial, r, vec, fcut, inv_n):
        """h (N, F), v (N, 3, C) or None, radial (E, F): this layer's bessel term with bias,
        r (E,), vec (E, 3) = r_ij, fcut (E,), inv_n: 1/n̄."""
        n = h.shape[0]
        hi, hj = torch.split(self.node_in(h), self.F, dim=-1)  # (N, F) each
        x = torch.index_select(hi, 0, i) + torch.index_select(hj, 0, j) + radial  # (E, F)
        if self.C:
            if v is None:  # before the first vector update: v = 0, d = −r_ij, δ = 0
                d = -vec.unsqueeze(-1).expand(-1, 3, self.C)  # (E, 3, C)
            else:
                dv = _gather(v, i) - _gather(v, j)  # v_i − v_j, (E, 3, C)
                # ‖dv − r_ij‖² − r², expanded so no large squares cancel in low precision
                delta = (dv * (dv - 2.0 * vec.unsqueeze(-1))).sum(1)  # (E, C)
                d = dv - vec.unsqueeze(-1)
                x = x + self.vector_in(delta)
        m = self.act(self.edge_out(self.act(x))) * fcut.unsqueeze(-1)  # (E, F)
        features = [h, scatter_sum(m, i, n) * inv_n]
        if self.C:
            w = self.phi_x(m) * (fcut / r).unsqueeze(-1)  # (E, C)
            step = scatter_sum((d * w.unsqueeze(1)).flatten(1), i, n).view(n, 3, self.C) * inv_n
            v = step if v is None else v + step  # (N, 3, C)
            features.append((v * v).sum(1))  # ‖v_i^c‖², (N, C)
        h = h + self.phi_h(torch.cat([f.to(h.dtype) for f in features], dim=-1))
        return h, v


@dataclass
class EGNNSettings(BackboneSettings):
    num_features: int = setting(128, range=(32, 256), log=True,
                                doc="width F of node features and messages")
    num_layers: int = setting(4, range=(1, 6), doc="equivariant graph convolution layers")
    num_rbf: int = setting(16, range=(8, 32), doc="Bessel radial functions")
    vector_channels: int = setting(16, choices=[0, 4, 8, 16, 32],
                                   doc="equivariant vector channels C (virtual coordinates); "
                                       "0: invariant EGNN")


@register("backbone", "egnn")
class EGNN(Backbone):
    """EGNN backbone with a vector channel instead of moving coordinates.

    Args:
        num_features: width F of node features and messages (default 128).
        num_layers: equivariant graph convolution layers (default 4).
        cutoff: neighbour cutoff in Å (default 5.0).
        num_rbf: Bessel radial functions of the distance fed to φ_e (default 16).
        vector_channels: equivariant vectors C per atom (default 16); 0 gives the invariant EGNN.
        max_charge, max_spin: range of the total-charge and multiplicity embeddings.
        elements: the training elements (unused: every element is embedded).
        stats: training-graph statistics; ``avg_num_neighbors`` normalises neighbour sums.
    """

    Settings = EGNNSettings
    presets = {"S": {"num_features": 32, "num_layers": 2, "num_rbf": 8, "vector_channels": 4},
               "M": {"num_features": 128, "num_layers": 4, "num_rbf": 16, "vector_channels": 16},
               "L": {"num_features": 256, "num_layers": 5, "num_rbf": 20, "vector_channels": 32}}
    feature_kind = "vectors"

    def __init__(self, num_features: int = 128, num_layers: int = 4, cutoff: float = 5.0,
                 num_rbf: int = 16, vector_channels: int = 16, max_charge: int = 6,
                 max_spin: int = 8, elements=None, stats=None) -> None:
        super().__init__()
        if num_features < 1 or num_layers < 1 or num_rbf < 1:
            raise ValueError("EGNN needs num_features, num_layers and num_rbf >= 1")
        if vector_channels < 0:
            raise ValueError(f"EGNN vector_channels must be >= 0, got {vector_channels}")
        if not cutoff > 0:
            raise ValueError(f"EGNN cutoff must be positive, got {cutoff}")
        self.cutoff = float(cutoff)
        self.max_charge, self.max_spin = int(max_charge), int(max_spin)
        self.num_scalar_features, self.num_vector_features = num_features, vector_channels
        n = stats.avg_num_neighbors if stats is not None else DEFAULT_NEIGHBORS
        self.avg_num_neighbors = max(float(n), 1.0)
        self.embedding = AtomEmbedding(num_features, max_charge, max_spin)
        self.rbf = BesselBasis(cutoff, num_rbf)
        self.fcut = PolynomialCutoff(cutoff)
        # The bessel part of every layer's φ_e input layer in one product (num_rbf -> layers x F).
        self.radial = nn.Linear(num_rbf, num_layers * num_features)
        self.layers = nn.ModuleList(EGNNLayer(num_features, vector_channels, first=k == 0)
                                    for k in range(num_layers))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        i, j = batch[K.EDGE_INDEX]
        vec = edge_vectors(batch)  # (E, 3) r_ij, Å
        r = torch.linalg.vector_norm(vec, dim=-1)  # (E,)
        fcut = self.fcut(r)  # (E,)
        radial = torch.split(self.radial(self.rbf(r)), self.num_scalar_features, dim=-1)
        h = self.embedding(batch)  # (N, F)
        v = None  # (N, 3, C) after the first layer
        inv_n = 1.0 / self.avg_num_neighbors
        for layer, rad in zip(self.layers, radial, strict=True):
            h, v = layer(h, v, i, j, rad, r, vec, fcut, inv_n)
        if v is None:  # vector_channels = 0
            v = h.new_zeros((h.shape[0], 3, 0))
        return {K.NODE_SCALARS: h, K.NODE_VECTORS: v}
