"""PaiNN: polarizable atom interaction neural network.

Schütt, Unke, Gastegger, "Equivariant message passing for the prediction of tensorial properties
and molecular spectra", ICML 2021, https://arxiv.org/abs/2102.03150.

Each atom carries scalars s_i (F,) and vectors v_i (3, F). A layer is a message block (filters of
the interatomic distance, vector messages along the unit bond direction) followed by an update
block (gated mixing of scalar and vector channels). Invariant scalars and equivariant vectors are
guaranteed by construction: only norms and dot products of vectors enter nonlinearities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.models.backbones.base import Backbone, BackboneSettings, setting
from atomgfm.nn.embedding import AtomEmbedding
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import BesselBasis, CosineCutoff, GaussianBasis
from atomgfm.nn.scatter import scatter_sum
from atomgfm.registry import register

_EPS = 1e-8  # keeps ‖v‖ differentiable at v = 0


class PaiNNMessage(nn.Module):
    def __init__(self, F: int) -> None:
        super().__init__()
        self.F = F
        self.phi = nn.Sequential(nn.Linear(F, F), nn.SiLU(), nn.Linear(F, 3 * F))

    def forward(self, s, v, i, j, filt, filt_vv, unit):
        """``filt`` (E, 2F): this layer's distance filters of the scalar and direction channels,
        ``filt_vv`` (E, F) the vector-gate filter, or None before the first message (v = 0);
        cutoff applied to both."""
        F = self.F
        h = self.phi(s)  # (N, 3F): scalar, vector-gate and direction channels
        # index_select rather than x[j]: its backward is a fast index_add, not index_put.
        x = torch.index_select(torch.cat([h[:, :F], h[:, 2 * F:]], dim=-1), 0, j) * filt
        ds, dvs = torch.split(x, F, dim=-1)  # (E, F) each
        if filt_vv is None:
            dv = unit.unsqueeze(-1) * dvs.unsqueeze(1)  # (E, 3, F)
        else:
            # v_j ⊙ (h_j W_ij) as (v_j ⊙ h_j) W_ij: the gate product once per atom, not per edge.
            # The (E, 3, F) gather goes in the plain product, not as addcmul's tensor argument
            # (its backward rescales those by ``value``: cheap only for (E, 3, 1) and (E, 1, F)).
            vh = torch.index_select(v * h[:, F:2 * F].unsqueeze(1), 0, j)  # (E, 3, F)
            dv = torch.addcmul(vh * filt_vv.unsqueeze(1), unit.unsqueeze(-1), dvs.unsqueeze(1))
        n = s.shape[0]
        return s + scatter_sum(ds, i, n), v + scatter_sum(dv, i, n)


class PaiNNUpdate(nn.Module):
    """Vectors mixed by U, V; scalars gated by ‖V v‖ and ⟨U v, V v⟩ (also PNAEq's update)."""

    def __init__(self, F: int) -> None:
        super().__init__()
        self.F = F
        self.U = nn.Linear(F, F, bias=False)
        self.V = nn.Linear(F, F, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * F, F), nn.SiLU(), nn.Linear(F, 3 * F))

    def forward(self, s, v):
        Uv, Vv = self.U(v), self.V(v)  # (N, 3, F)
        norm = torch.sqrt((Vv * Vv).sum(1) + _EPS)  # (N, F)
        a = self.mlp(torch.cat([s.to(norm.dtype), norm], dim=-1))
        avv, asv, ass = torch.split(a, self.F, dim=-1)
        dot = (Uv * Vv).sum(1)
        return s + asv * dot + ass, v + avv.unsqueeze(1) * Uv


@dataclass
class PaiNNSettings(BackboneSettings):
    num_features: int = setting(64, range=(16, 256), log=True,
                                doc="width F of scalar and vector channels")
    num_layers: int = setting(3, range=(1, 6), doc="message + update blocks")
    num_rbf: int = setting(20, range=(8, 32), doc="radial basis functions")
    radial: str = setting("gaussian", choices=["gaussian", "bessel"],
                          doc="radial basis: Gaussians on an even grid or sin(nπr/r_c)/r")


@register("backbone", "painn")
class PaiNN(Backbone):
    """PaiNN backbone.

    Args:
        num_features: width F of scalar and vector channels (default 64).
        num_layers: message + update blocks (default 3).
        cutoff: neighbour cutoff in Å (default 5.0).
        num_rbf: radial basis functions (default 20).
        radial: ``"gaussian"`` (default: num_rbf Gaussians of width r_c/(num_rbf − 1) on an
            even grid in [0, r_c], SchNetPack's) or ``"bessel"`` (sin(nπr/r_c)/r, the paper's
            and, before issue 14, ours). Measured at equal steps
            (``benchmarks/painn_accuracy.py``, RESULTS.md 2026-11-26): with Bessel functions the
            energy of small distorted molecules stopped improving (training error = validation
            error, ~200 meV/atom after 800 steps on 288 GFN2 molecules) where Gaussians kept
            learning; checkpoints written before the setting existed load as Bessel.
        max_charge, max_spin: range of the total-charge and multiplicity embeddings.
        elements, stats: the training elements and graph statistics (unused: PaiNN embeds every
            element and needs no neighbour-count normalisation).
    """

    Settings = PaiNNSettings
    presets = {"S": {"num_features": 32, "num_layers": 2, "num_rbf": 12},
               "M": {"num_features": 64, "num_layers": 3, "num_rbf": 20},
               "L": {"num_features": 128, "num_layers": 4, "num_rbf": 20}}
    feature_kind = "vectors"

    def __init__(self, num_features: int = 64, num_layers: int = 3, cutoff: float = 5.0,
                 num_rbf: int = 20, max_charge: int = 6, max_spin: int = 8,
                 elements=None, stats=None, radial: str = "gaussian") -> None:
        super().__init__()
        if num_features < 1 or num_layers < 1:
            raise ValueError("PaiNN needs num_features >= 1 and num_layers >= 1")
        self.cutoff = float(cutoff)
        self.max_charge, self.max_spin = int(max_charge), int(max_spin)
        self.num_scalar_features = self.num_vector_features = num_features
        self.embedding = AtomEmbedding(num_features, max_charge, max_spin)
        if radial not in ("bessel", "gaussian"):
            raise ValueError(f"PaiNN radial must be 'bessel' or 'gaussian', got {radial!r}")
        self.rbf = (BesselBasis if radial == "bessel" else GaussianBasis)(cutoff, num_rbf)
        self.fcut = CosineCutoff(cutoff)
        # The distance filters of all layers in one product (num_rbf -> layers x 3F).
        self.filters = nn.Linear(num_rbf, num_layers * 3 * num_features)
        self.messages = nn.ModuleList(PaiNNMessage(num_features) for _ in range(num_layers))
        self.updates = nn.ModuleList(PaiNNUpdate(num_features) for _ in range(num_layers))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint written before the ``radial`` setting (Bessel then, the only basis) has
        # ``rbf.freqs`` and a config without ``radial``: rebuild the basis it was trained with.
        # (Called before the children load, so the new basis takes its own weights.)
        if prefix + "rbf.freqs" in state_dict and not isinstance(self.rbf, BesselBasis):
            freqs = state_dict[prefix + "rbf.freqs"]
            self.rbf = BesselBasis(self.cutoff, freqs.shape[0]).to(freqs.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        i, j = batch[K.EDGE_INDEX]
        vec = edge_vectors(batch)  # (E, 3)
        r = torch.linalg.vector_norm(vec, dim=-1)  # (E,)
        unit = vec / r.unsqueeze(-1)
        # Filters (W·rbf + b)·f_cut as [rbf·f_cut, f_cut] @ [W, b]ᵀ: the cutoff multiplies the
        # (E, num_rbf + 1) input instead of the (E, layers·3F) output, and each layer's slice of
        # the weight is its own product (no split of a wide tensor, whose backward is a copy).
        fcut = self.fcut(r).unsqueeze(-1)  # (E, 1)
        basis = torch.cat([self.rbf(r) * fcut, fcut], dim=-1)  # (E, num_rbf + 1)
        weight = torch.cat([self.filters.weight, self.filters.bias.unsqueeze(-1)], dim=-1)
        width = 3 * self.num_scalar_features
        s = self.embedding(batch)  # (N, F)
        v = s.new_zeros((s.shape[0], 3, s.shape[1]))  # (N, 3, F)
        F = self.num_scalar_features
        for k, (message, update) in enumerate(zip(self.messages, self.updates, strict=True)):
            w = weight[k * width:(k + 1) * width]  # (3F, num_rbf + 1): scalar, gate, direction
            filt = torch.mm(basis, torch.cat([w[:F], w[2 * F:]]).t())  # (E, 2F)
            # No vector-gate filter before the first message: it would multiply v = 0.
            filt_vv = torch.mm(basis, w[F:2 * F].t()) if k else None  # (E, F)
            s, v = message(s, v, i, j, filt, filt_vv, unit)
            s, v = update(s, v)
        return {K.NODE_SCALARS: s, K.NODE_VECTORS: v}
