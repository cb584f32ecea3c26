"""SchNet: continuous-filter convolutions on interatomic distances.

Schütt, Sauceda, Kindermans, Tkatchenko, Müller, "SchNet – a deep learning architecture for
molecules and materials", J. Chem. Phys. 148, 241722 (2018), https://arxiv.org/abs/1706.08566.

Each atom carries scalars x_i (F,). An interaction block is

    y_i  = W_in x_i                                         atom-wise, no bias    (N, F_f)
    m_i  = Σ_j y_j ⊙ W(r_ij) f_cut(r_ij)                    continuous-filter conv (N, F_f)
    x_i ← x_i + Dense(ssp(Dense(m_i)))                      atom-wise, residual   (N, F)

with the filter W(r) = Dense(ssp(Dense(gaussians(r)))) generated from the distance alone, and
ssp(x) = softplus(x) − ln 2 (the shifted softplus). Every function of geometry enters through
r_ij, so features are invariant by construction. A cosine cutoff multiplies the filter, so the
energy keeps its value and slope as a neighbour crosses r_c. As in SchNetPack and PyG, the filter
network's last layer is linear.

One addition to the paper, active only when the builder passes training statistics: the summed
messages are divided by the training graphs' mean neighbour count (MACE-style), so activations do
not grow with coordination (a 5 Å sphere holds ~8 neighbours in a molecule, ~40 in a metal). With
``stats=None`` the sum is plain, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.models.backbones.base import Backbone, BackboneSettings, setting
from atomgfm.nn.embedding import AtomEmbedding
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import CosineCutoff, GaussianBasis
from atomgfm.nn.scatter import scatter_sum
from atomgfm.registry import register


class ShiftedSoftplus(nn.Module):
    """ssp(x) = ln(1 + eˣ) − ln 2: smooth, ssp(0) = 0, slope ½ at 0."""

    _LN2 = math.log(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - self._LN2


class SchNetInteraction(nn.Module):
    """One interaction block: atom-wise in, cfconv, atom-wise out (the residual is the caller's)."""

    def __init__(self, F: int, num_filters: int, num_rbf: int) -> None:
        super().__init__()
        self.in2f = nn.Linear(F, num_filters, bias=False)
        self.filter_net = nn.Sequential(nn.Linear(num_rbf, num_filters), ShiftedSoftplus(),
                                        nn.Linear(num_filters, num_filters))
        self.f2out = nn.Sequential(nn.Linear(num_filters, F), ShiftedSoftplus(), nn.Linear(F, F))

    def forward(self, x, i, j, rbf, fcut, norm: float):
        """``rbf`` (E, num_rbf) the expanded distances, ``fcut`` (E, 1) the cutoff envelope."""
        w = self.filter_net(rbf) * fcut  # (E, F_f): zero, with zero slope, at r_c
        # index_select rather than y[j]: its backward is a fast index_add, not index_put.
        m = torch.index_select(self.in2f(x), 0, j) * w  # (E, F_f)
        m = scatter_sum(m, i, x.shape[0])  # (N, F_f)
        if norm != 1.0:
            m = m * norm
        return self.f2out(m)  # (N, F)


@dataclass
class SchNetSettings(BackboneSettings):
    num_features: int = setting(128, range=(32, 256), log=True,
                                doc="width F of the atom-wise features")
    num_interactions: int = setting(3, range=(1, 6), doc="interaction blocks")
    num_filters: int = setting(0, doc="width of the continuous filters; 0 means num_features "
                                      "(the paper's choice)")
    num_rbf: int = setting(20, range=(8, 50), doc="Gaussians on an even grid over [0, cutoff]")


@register("backbone", "schnet")
class SchNet(Backbone):
    """SchNet backbone (invariant scalars only).

    Args:
        num_features: width F of the atom-wise features (default 128).
        num_interactions: interaction blocks (default 3).
        num_filters: width of the continuous filters (default 0: the same as ``num_features``).
        cutoff: neighbour cutoff in Å (default 5.0).
        num_rbf: Gaussians of width equal to their spacing on [0, cutoff] (default 20).
        max_charge, max_spin: range of the total-charge and multiplicity embeddings.
        elements: the training elements (unused: every element is embedded).
        stats: training-graph statistics; when given, summed messages are divided by
            ``stats.avg_num_neighbors``.
    """

    Settings = SchNetSettings
    presets = {"S": {"num_features": 32, "num_interactions": 2, "num_rbf": 16},
               "M": {"num_features": 128, "num_interactions": 3, "num_rbf": 20},
               "L": {"num_features": 256, "num_interactions": 6, "num_rbf": 50}}
    feature_kind = "scalars"

    def __init__(self, num_features: int = 128, num_interactions: int = 3, num_filters: int = 0,
                 cutoff: float = 5.0, num_rbf: int = 20, max_charge: int = 6, max_spin: int = 8,
                 elements=None, stats=None) -> None:
        super().__init__()
        if num_features < 1 or num_interactions < 1 or num_filters < 0 or num_rbf < 2:
            raise ValueError("SchNet needs num_features >= 1, num_interactions >= 1, "
                             "num_filters >= 0 (0: same as num_features) and num_rbf >= 2; got "
                             f"{num_features}, {num_interactions}, {num_filters}, {num_rbf}")
        if not cutoff > 0:
            raise ValueError(f"SchNet needs a positive cutoff, got {cutoff}")
        num_filters = num_filters or num_features
        self.cutoff = float(cutoff)
        self.max_charge, self.max_spin = int(max_charge), int(max_spin)
        self.num_scalar_features = num_features
        self.num_vector_features = 0
        avg = float(stats.avg_num_neighbors) if stats is not None else 0.0
        self.message_norm = 1.0 / avg if avg > 0 else 1.0  # 1/mean neighbour count, or 1
        self.embedding = AtomEmbedding(num_features, max_charge, max_spin)
        self.rbf = GaussianBasis(cutoff, num_rbf)
        self.fcut = CosineCutoff(cutoff)
        self.interactions = nn.ModuleList(SchNetInteraction(num_features, num_filters, num_rbf)
                                          for _ in range(num_interactions))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        i, j = batch[K.EDGE_INDEX]
        r = torch.linalg.vector_norm(edge_vectors(batch), dim=-1)  # (E,)
        rbf = self.rbf(r)  # (E, num_rbf)
        fcut = self.fcut(r).unsqueeze(-1)  # (E, 1)
        x = self.embedding(batch)  # (N, F)
        for interaction in self.interactions:
            x = x + interaction(x, i, j, rbf, fcut, self.message_norm)
        return {K.NODE_SCALARS: x}
