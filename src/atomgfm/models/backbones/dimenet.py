"""DimeNet++: directional message passing on edges, with triplet (angle) updates.

Gasteiger, Giri, Margraf, Günnemann, "Fast and Uncertainty-Aware Directional Message Passing for
Non-Equilibrium Molecules", 2020, https://arxiv.org/abs/2011.14115 (DimeNet++); Gasteiger,
Groß, Günnemann, "Directional Message Passing for Molecular Graphs", ICLR 2020,
https://arxiv.org/abs/2003.03123 (DimeNet).

Each edge e = (i, j) (centre i, neighbour j) carries a message m_ji (H,). With x = d/c and the
envelope u(x) = f_p(x)/x (f_p the polynomial cutoff of order p = envelope_exponent + 1, so u · x
and its first two derivatives vanish at the cutoff):

    radial     e_n(d)        = u(x) sin(ω_n x)                 ω_n = nπ, trainable       (E, R)
    spherical  a_ln(d, θ)    = u(x) N_ln j_l(z_ln x) Y_l0(θ)   d = d_kj, θ = ∠(k, j, i)  (T, L·R)
    embedding  m_ji          = σ(W [h_i ‖ h_j ‖ σ(W_e e(d_ji))])  h: element+charge+spin (E, H)
    interaction (DimeNet++)
               t_kj          = σ(W_down (σ(W_kj m_kj) ⊙ W_e2 W_e1 e(d_kj)))              (E, I)
               s_ji          = Σ_k t_kj ⊙ W_a2 W_a1 a(d_kj, θ_kji)                        (E, I)
               m_ji         ← residual stack(σ(W_ji m_ji) + σ(W_up s_ji)) + m_ji
    output     o_i           = W_o MLP(W_oup Σ_j (W_r e(d_ji)) ⊙ m_ji)                     (N, H)
    features   s_i           = Σ over the embedding and every interaction block of o_i

j_l are spherical Bessel functions, z_ln the n-th positive zero of j_l (found once with SciPy at
construction), N_ln = √2/|j_{l+1}(z_ln)| (unit norm on [0, 1] with weight x²), and
Y_l0(θ) = √((2l+1)/4π) P_l(cos θ) the zonal real spherical harmonics: the paper's 2D basis. j_l is
evaluated in torch by its power series where the upward recurrence loses digits (z < l) and by
the recurrence from sin z/z, sin z/z² − cos z/z elsewhere, so fp32 agrees with fp64 to rounding.

Every path from an edge to an atom or to another edge is multiplied by a bias-free projection of
e(d) or a(d, θ), which vanish with zero value, slope and curvature at the cutoff: energies and
forces are continuous as neighbours cross it. Triplets come from ``TRIPLET_INDEX`` (k→j, j→i),
built by graph building, so memory is linear in the number of triplets. Angles use
atan2(|a×b|, a·b) of the two edge vectors from :func:`~atomgfm.nn.geometry.edge_vectors` (periodic
shifts included), exact at 0 and π. Settings not exposed (the paper's): one residual layer before
the skip connection, two after, three dense layers in each output block, SiLU (swish), Glorot
orthogonal initialisation (scale 2). The output blocks' last layer maps to H node features (the
paper's maps to the targets, zero-initialised; here heads read the features, so it is not zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from atomgfm import keys as K
from atomgfm.models.backbones.base import Backbone, BackboneSettings, setting
from atomgfm.nn.embedding import AtomEmbedding
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import BesselBasis, PolynomialCutoff
from atomgfm.nn.scatter import scatter_sum
from atomgfm.registry import register

NUM_BEFORE_SKIP, NUM_AFTER_SKIP, NUM_OUTPUT_LAYERS = 1, 2, 3  # the paper's


def spherical_bessel_zeros(num_spherical: int, num_radial: int) -> np.ndarray:
    """z_ln, the n-th positive zero of j_l: (num_spherical, num_radial) float64.

    The zeros of j_l interlace those of j_{l-1}, so each lies in a bracket of the previous ones,
    starting from the zeros nπ of j_0.
    """
    from scipy.optimize import brentq
    from scipy.special import spherical_jn

    zeros = np.zeros((num_spherical, num_radial))
    points = np.arange(1, num_radial + num_spherical) * np.pi
    zeros[0] = points[:num_radial]
    for order in range(1, num_spherical):
        points = np.array([brentq(lambda z, n=order: spherical_jn(n, z), a, b)
                           for a, b in zip(points[:-1], points[1:], strict=True)])
        zeros[order] = points[:num_radial]
    return zeros


def spherical_jn(z: torch.Tensor) -> torch.Tensor:
    """j_l(z) for z > 0 where row l of ``z`` (..., L, R) holds the arguments of order l.

    Accurate to rounding in fp32 and fp64: the upward recurrence j_{l+1} = (2l+1)/z j_l − j_{l−1}
    from j_0 = sin z/z, j_1 = sin z/z² − cos z/z where z ≥ l (where it is stable); the power series
    j_l(z) = z^l Σ_k (−z²/2)^k / (k! (2l+2k+1)!!) where z < l (12 + l terms reach 1e-17). Each
    branch sees only its own range of z, so neither produces inf or NaN gradients. All orders are
    evaluated at once (a few dozen elementwise ops whatever the number of orders).
    """
    L = z.shape[-2]
    order = torch.arange(L, dtype=z.dtype, device=z.device).unsqueeze(-1)  # (L, 1)
    big = z >= order
    zr = torch.where(big, z, order.clamp(min=1.0))  # recurrence branch: z >= l
    s, c = torch.sin(zr), torch.cos(zr)
    j_prev, j = s / zr, s / zr**2 - c / zr
    rec = torch.where(order == 0, j_prev, j)
    for m in range(1, L - 1):
        j_prev, j = j, (2 * m + 1) / zr * j - j_prev
        rec = torch.where(order == m + 1, j, rec)
    zs = torch.where(big, torch.ones_like(z), z)  # series branch: z < l
    h = -0.5 * zs * zs
    double_factorial = [float(np.prod(np.arange(1, 2 * n + 2, 2))) for n in range(L)]
    term = zs**order / order.new_tensor(double_factorial).unsqueeze(-1)  # z^l / (2l+1)!!
    series = term
    for k in range(1, 12 + L):
        term = term * h / (k * (2 * order + 2 * k + 1))
        series = series + term
    return torch.where(big, rec, series)


def glorot_orthogonal_(linear: nn.Linear, scale: float = 2.0) -> None:
    """The paper's initialisation: an orthogonal weight rescaled to variance
    scale/(fan_in + fan_out), zero bias (default Linear init shrinks the small angular signal
    through the many layers a triplet's contribution passes)."""
    w = linear.weight
    with torch.no_grad():
        nn.init.orthogonal_(w)
        w.mul_(torch.sqrt(scale / ((w.shape[0] + w.shape[1]) * w.square().mean())))
        if linear.bias is not None:
            linear.bias.zero_()


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    """‖v‖ along the last axis with a zero (not NaN) gradient, to second order, at v = 0."""
    sq = (v * v).sum(-1)
    nonzero = sq > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), 0.0)


class SphericalBasis(nn.Module):
    """The 2D basis a_ln(d, θ) = u(d/c) N_ln j_l(z_ln d/c) Y_l0(θ) of DimeNet, (T, L·R).

    The radial part is evaluated once per edge and gathered for the triplets' k→j edges.
    """

    def __init__(self, num_spherical: int, num_radial: int, cutoff: float) -> None:
        super().__init__()
        from scipy.special import spherical_jn as jn

        self.num_spherical, self.num_radial, self.cutoff = num_spherical, num_radial, cutoff
        zeros = spherical_bessel_zeros(num_spherical, num_radial)
        norm = np.sqrt(2.0) / np.abs(np.stack([jn(n + 1, zeros[n])
                                               for n in range(num_spherical)]))
        self.register_buffer("zeros", torch.as_tensor(zeros))  # (L, R)
        self.register_buffer("norm", torch.as_tensor(norm))  # (L, R)
        y_norm = [math.sqrt((2 * n + 1) / (4 * math.pi)) for n in range(num_spherical)]
        self.register_buffer("y_norm", torch.tensor(y_norm, dtype=torch.float64))  # (L,)

    def forward(self, d: torch.Tensor, u: torch.Tensor, cos: torch.Tensor,
                idx_kj: torch.Tensor) -> torch.Tensor:
        """``d`` (E,) distances, ``u`` (E,) envelope, ``cos`` (T,) cos θ, ``idx_kj`` (T,)."""
        x = (d / self.cutoff).unsqueeze(-1)  # (E, 1)
        zeros, norm = self.zeros.to(d.dtype), self.norm.to(d.dtype)
        radial = spherical_jn(zeros * x.unsqueeze(-1)) * norm * u[:, None, None]  # (E, L, R)
        p = [torch.ones_like(cos), cos]  # Legendre P_l(cos θ) by Bonnet's recurrence
        for n in range(1, self.num_spherical - 1):
            p.append(((2 * n + 1) * cos * p[n] - n * p[n - 1]) / (n + 1))
        y = torch.stack(p[: self.num_spherical], dim=-1) * self.y_norm.to(d.dtype)  # (T, L)
        out = torch.index_select(radial, 0, idx_kj) * y.unsqueeze(-1)  # (T, L, R)
        return out.reshape(-1, self.num_spherical * self.num_radial)


class ResidualLayer(nn.Module):
    def __init__(self, H: int) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(H, H), nn.Linear(H, H)

    def forward(self, x):
        return x + F.silu(self.lin2(F.silu(self.lin1(x))))


class EdgeEmbedding(nn.Module):
    """m_ji = σ(W [h_i ‖ h_j ‖ σ(W_e e(d_ji))]): DimeNet's embedding block on our atom embedding."""

    def __init__(self, H: int, num_radial: int) -> None:
        super().__init__()
        self.lin_rbf = nn.Linear(num_radial, H)
        self.lin = nn.Linear(3 * H, H)

    def forward(self, h, rbf, i, j):
        e = F.silu(self.lin_rbf(rbf))  # (E, H)
        hi, hj = torch.index_select(h, 0, i), torch.index_select(h, 0, j)
        return F.silu(self.lin(torch.cat([hi, hj, e.to(hi.dtype)], dim=-1)))  # (E, H)


class InteractionPP(nn.Module):
    """DimeNet++ interaction: the triplet product runs at int_emb_size, the bases are projected
    through basis_emb_size (bias-free, so they keep their zero at the cutoff)."""

    def __init__(self, H: int, I: int, B: int, num_spherical: int, num_radial: int) -> None:  # noqa: E741
        super().__init__()
        self.lin_rbf1 = nn.Linear(num_radial, B, bias=False)
        self.lin_rbf2 = nn.Linear(B, H, bias=False)
        self.lin_sbf1 = nn.Linear(num_spherical * num_radial, B, bias=False)
        self.lin_sbf2 = nn.Linear(B, I, bias=False)
        self.lin_kj, self.lin_ji = nn.Linear(H, H), nn.Linear(H, H)
        self.lin_down = nn.Linear(H, I, bias=False)
        self.lin_up = nn.Linear(I, H, bias=False)
        self.before_skip = nn.Sequential(*(ResidualLayer(H) for _ in range(NUM_BEFORE_SKIP)))
        self.lin = nn.Linear(H, H)
        self.after_skip = nn.Sequential(*(ResidualLayer(H) for _ in range(NUM_AFTER_SKIP)))

    def forward(self, m, rbf, sbf, idx_kj, idx_ji):
        x_ji = F.silu(self.lin_ji(m))  # (E, H)
        x_kj = F.silu(self.lin_kj(m)) * self.lin_rbf2(self.lin_rbf1(rbf))  # (E, H)
        x_kj = F.silu(self.lin_down(x_kj))  # (E, I); zero where e(d_kj) is
        t = torch.index_select(x_kj, 0, idx_kj) * self.lin_sbf2(self.lin_sbf1(sbf))  # (T, I)
        s = F.silu(self.lin_up(scatter_sum(t, idx_ji, m.shape[0])))  # (E, H)
        h = self.before_skip(x_ji + s)
        h = F.silu(self.lin(h)) + m
        return self.after_skip(h)


class OutputPP(nn.Module):
    """o_i = W_o MLP(W_up Σ_j (W_r e(d_ji)) ⊙ m_ji): messages summed onto their centre atom."""

    def __init__(self, H: int, O: int, num_radial: int) -> None:  # noqa: E741
        super().__init__()
        self.lin_rbf = nn.Linear(num_radial, H, bias=False)
        self.lin_up = nn.Linear(H, O, bias=False)
        self.lins = nn.ModuleList(nn.Linear(O, O) for _ in range(NUM_OUTPUT_LAYERS))
        self.lin = nn.Linear(O, H, bias=False)

    def forward(self, m, rbf, i, n_atoms: int):
        x = scatter_sum(self.lin_rbf(rbf) * m, i, n_atoms)  # (N, H)
        x = self.lin_up(x)
        for lin in self.lins:
            x = F.silu(lin(x))
        return self.lin(x)  # (N, H)


@dataclass
class DimeNetSettings(BackboneSettings):
    hidden_channels: int = setting(128, range=(32, 256), log=True,
                                   doc="width H of the edge messages and of the node features")
    num_blocks: int = setting(4, range=(1, 6), doc="interaction blocks")
    int_emb_size: int = setting(64, doc="width of the triplet product (DimeNet++ down-projection)")
    basis_emb_size: int = setting(8, doc="bottleneck the radial and spherical bases pass through")
    out_emb_channels: int = setting(256, doc="width of the output blocks' dense layers")
    num_spherical: int = setting(7, doc="angular orders l = 0 .. num_spherical - 1")
    num_radial: int = setting(6, doc="radial Bessel functions (and zeros per order)")
    envelope_exponent: int = setting(5, doc="DimeNet's envelope exponent (polynomial order p-1)")


@register("backbone", "dimenet")
class DimeNetPP(Backbone):
    """DimeNet++ backbone (invariant scalars only; reads ``TRIPLET_INDEX``).

    Args:
        hidden_channels: width H of the edge messages and node features (default 128).
        num_blocks: interaction blocks (default 4).
        int_emb_size: width of the triplet product (default 64).
        basis_emb_size: bottleneck of the basis projections (default 8).
        out_emb_channels: width of the output blocks' dense layers (default 256).
        num_spherical: angular orders of the spherical basis (default 7).
        num_radial: radial functions (default 6).
        cutoff: neighbour cutoff in Å (default 5.0).
        envelope_exponent: the envelope u(x) = f_p(x)/x uses p = envelope_exponent + 1 (default 5).
        max_charge, max_spin: range of the total-charge and multiplicity embeddings.
        elements, stats: the training elements and graph statistics (unused, as in the paper).
    """

    Settings = DimeNetSettings
    presets = {
        "S": {"hidden_channels": 32, "num_blocks": 2, "int_emb_size": 16, "basis_emb_size": 4,
              "out_emb_channels": 32, "num_spherical": 4, "num_radial": 4},
        "M": {"hidden_channels": 128, "num_blocks": 4, "int_emb_size": 64, "basis_emb_size": 8,
              "out_emb_channels": 256, "num_spherical": 7, "num_radial": 6},
        "L": {"hidden_channels": 256, "num_blocks": 6, "int_emb_size": 128, "basis_emb_size": 16,
              "out_emb_channels": 512, "num_spherical": 7, "num_radial": 8},
    }
    feature_kind = "scalars"
    needs = frozenset({K.TRIPLET_INDEX})

    def __init__(self, hidden_channels: int = 128, num_blocks: int = 4, int_emb_size: int = 64,
                 basis_emb_size: int = 8, out_emb_channels: int = 256, num_spherical: int = 7,
                 num_radial: int = 6, cutoff: float = 5.0, envelope_exponent: int = 5,
                 max_charge: int = 6, max_spin: int = 8, elements=None, stats=None) -> None:
        super().__init__()
        sizes = dict(hidden_channels=hidden_channels, num_blocks=num_blocks,
                     int_emb_size=int_emb_size, basis_emb_size=basis_emb_size,
                     out_emb_channels=out_emb_channels, num_spherical=num_spherical,
                     num_radial=num_radial, envelope_exponent=envelope_exponent)
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad or num_spherical < 2:
            raise ValueError(f"DimeNet++ needs every size >= 1 and num_spherical >= 2; got {bad}"
                             f" (num_spherical={num_spherical})")
        if not cutoff > 0:
            raise ValueError(f"DimeNet++ needs a positive cutoff, got {cutoff}")
        H = hidden_channels
        self.cutoff = float(cutoff)
        self.max_charge, self.max_spin = int(max_charge), int(max_spin)
        self.num_scalar_features = H
        self.num_vector_features = 0
        self.embedding = AtomEmbedding(H, max_charge, max_spin)
        self.rbf = BesselBasis(cutoff, num_radial, trainable=True)  # sin(ω_n r/c)/r
        self.envelope = PolynomialCutoff(cutoff, p=envelope_exponent + 1)
        self.sbf = SphericalBasis(num_spherical, num_radial, self.cutoff)
        self.edge_embedding = EdgeEmbedding(H, num_radial)
        self.interactions = nn.ModuleList(
            InteractionPP(H, int_emb_size, basis_emb_size, num_spherical, num_radial)
            for _ in range(num_blocks))
        self.outputs = nn.ModuleList(OutputPP(H, out_emb_channels, num_radial)
                                     for _ in range(num_blocks + 1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                glorot_orthogonal_(module)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        i, j = batch[K.EDGE_INDEX]
        idx_kj, idx_ji = batch[K.TRIPLET_INDEX]
        n_atoms = batch[K.ATOMIC_NUMBERS].shape[0]
        vec = edge_vectors(batch)  # (E, 3) R_j − R_i (+ shift)
        with torch.autocast(device_type=vec.device.type, enabled=False):  # geometry: full precision
            d = torch.linalg.vector_norm(vec, dim=-1)  # (E,)
            env = self.envelope(d)  # (E,) f_p(x), x = d/c
            u = env * (self.cutoff / d)  # (E,) u(x) = f_p(x)/x
            rbf = self.rbf(d) * (self.cutoff * env).unsqueeze(-1)  # (E, R) u(x) sin(ω_n x)
            a = -torch.index_select(vec, 0, idx_ji)  # (T, 3) j → i
            b = torch.index_select(vec, 0, idx_kj)  # (T, 3) j → k
            angle = torch.atan2(_safe_norm(torch.linalg.cross(a, b)), (a * b).sum(-1))  # (T,)
            sbf = self.sbf(d, u, torch.cos(angle), idx_kj)  # (T, L·R)
        m = self.edge_embedding(self.embedding(batch), rbf, i, j)  # (E, H)
        s = self.outputs[0](m, rbf, i, n_atoms)  # (N, H)
        for interaction, output in zip(self.interactions, self.outputs[1:], strict=True):
            m = interaction(m, rbf, sbf, idx_kj, idx_ji)
            s = s + output(m, rbf, i, n_atoms)
        return {K.NODE_SCALARS: s}
