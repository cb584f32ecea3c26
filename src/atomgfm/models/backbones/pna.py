"""PNAEq: principal neighbourhood aggregation over equivariant scalar and vector features.

Corso, Cavalleri, Beaini, Liò, Veličković, "Principal Neighbourhood Aggregation for Graph Nets",
NeurIPS 2020, https://arxiv.org/abs/2004.05718; the equivariant variant follows the idea of
HydraGNN's ``PNAEq`` (PNA aggregation of scalar messages, PaiNN vector messages and update).

Each atom carries scalars s_i (F,) and vectors v_i (3, F). With r_ij = R_j − R_i + shift (Å),
û_ij = r_ij / r_ij, w_ij = f_c(r_ij) (the DimeNet polynomial cutoff, smooth to second order) and
d_i = Σ_j w_ij the *cutoff-weighted* degree, a layer computes

    [m_ij, b_ij, a_ij] = W₂ SiLU(W_i s_i + W_j s_j + W_r bessel(r_ij) + b)     (E, 3F)
    scalar aggregates of m_ij over j, each a smooth function of (w_ij, m_ij):
        mean  μ_i  = Σ_j w_ij m_ij / (d_i + ε)
        max   M_i  = Σ_j w_ij e^{m_ij/T} m_ij / (Σ_j w_ij e^{m_ij/T} + ε)   (softmax-weighted mean)
        min   the same with −m_ij/T
        std   σ_i  = sqrt(Σ_j w_ij m_ij² / (d_i + ε) − μ_i² + ε_σ) − sqrt(ε_σ)
    degree scalers of the concatenated aggregates A_i:
        identity 1,  amplification log(d_i + 1)/δ,  attenuation δ/log(1 + sqrt(1 + d_i²))
    s_i ← s_i + φ_post([s_i, A_i, amp_i A_i, att_i A_i])
    v_i ← v_i + Σ_j w_ij (û_ij b_ij + v_j a_ij) / (d_i + ε)
    then PaiNN's gated update (only norms and dot products of vectors enter nonlinearities).

Smoothness: a neighbour enters every sum with its weight w_ij, which goes to zero with zero slope
(and curvature) at r_c, and every count is the weighted degree d_i, never a hard count; so energy
and forces are continuous as a neighbour crosses the cutoff. ε acts as a virtual neighbour with
message 0 and weight ε: it keeps every denominator positive (an isolated atom aggregates to 0)
without any branch. The soft max/min tend to the hard max/min as T → 0 and to the mean as T → ∞;
they are evaluated with a detached per-atom shift max(0, max_j m_ij/T), of which the result is
exactly independent (so the gradient is exact), so exp never overflows. The attenuation scaler
uses log(1 + sqrt(1 + d²)) ≥ log 2, the smooth form of PNA's ``clamp(d, min=1)``.

δ is the mean of log(k + 1) over the training degree histogram (``stats.degree_histogram``,
hard neighbour counts at the cutoff; 1.0 without statistics), a buffer so a checkpoint restores
it. The weighted degree d_i is smaller than the hard count (w < 1), so amplification and
attenuation are not 1 at the mean degree; the post network absorbs that constant factor.
No BatchNorm (predictions would depend on the batch) and no neighbour truncation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.models.backbones.base import Backbone, BackboneSettings, setting
from atomgfm.models.backbones.painn import PaiNNUpdate
from atomgfm.nn.embedding import AtomEmbedding
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import BesselBasis, PolynomialCutoff
from atomgfm.nn.scatter import scatter_sum
from atomgfm.registry import register

AGGREGATORS = ("mean", "max", "min", "std")
SCALERS = ("identity", "amplification", "attenuation")
DEFAULT_LOG_DEGREE = 1.0  # δ without training statistics
_EPS_W = 1e-3  # weight of the virtual zero-message neighbour in every denominator
_EPS_STD = 1e-4  # inside the square root of the std aggregator


def parse_names(value: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``"mean,max"`` -> ("mean", "max"), validated against ``allowed``."""
    names = tuple(n.strip() for n in str(value).split(",") if n.strip())
    bad = [n for n in names if n not in allowed]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"PNAEq {what} must be distinct, comma-separated names from "
                         f"{list(allowed)}; got {value!r}")
    return names


def mean_log_degree(histogram) -> float:
    """δ = Σ_k h_k log(k + 1) / Σ_k h_k for ``histogram[k]`` atoms with k neighbours."""
    h = torch.as_tensor(list(histogram), dtype=torch.float64)
    if h.numel() == 0 or h.sum() <= 0 or (h < 0).any():
        raise ValueError(f"degree histogram must be non-negative counts, not all zero: "
                         f"{list(histogram)}")
    k = torch.arange(h.numel(), dtype=torch.float64)
    return float((h * torch.log1p(k)).sum() / h.sum())


def aggregate(m: torch.Tensor, i: torch.Tensor, w: torch.Tensor, w_mean: torch.Tensor, n: int,
              aggregators: tuple[str, ...], temperature: float) -> torch.Tensor:
    """The PNA aggregates of edge messages over each atom's neighbours, smooth in w.

    Args:
        m: (E, F) messages (float32 or float64); i: (E,) receiving atom of each edge.
        w: (E,) cutoff weights f_c(r_ij); w_mean: (E,) w_ij / (d_i + ε).
        n: number of atoms; aggregators: names from ``AGGREGATORS``; temperature: T.

    Returns:
        (n, len(aggregators) * F), in the order of ``aggregators``.

    Every edge column is summed in one scatter. Mean and std are the moments of the weights
    w_mean (with the virtual zero message of weight ε, so the variance is never negative but for
    rounding, clamped before the smooth square root). Soft max/min: Σ w e^{±m/T} m /
    (Σ w e^{±m/T} + ε), evaluated with the per-atom shift c = max(0, max_j ±m_ij/T), detached:
    it cancels exactly between numerator and denominator (ε is scaled by e^{−c}), and keeps
    every exponent ≤ 0. Edges of zero weight (at r_c) get z = 0, so 0 · exp(large) never occurs.
    """
    E, F = m.shape
    columns = []
    moments = "mean" in aggregators or "std" in aggregators
    if moments:
        wm = w_mean.unsqueeze(-1) * m  # (E, F)
        columns += [wm, wm * m] if "std" in aggregators else [wm]
    signs = [sign for name, sign in (("max", 1.0), ("min", -1.0)) if name in aggregators]
    if signs:
        k = len(signs)
        z = torch.cat([m * (sign / temperature) for sign in signs], dim=-1)  # (E, kF)
        z = z.masked_fill((w == 0).unsqueeze(-1), 0.0)
        with torch.no_grad():
            c = z.new_zeros((n, k * F)).scatter_reduce_(
                0, i.unsqueeze(-1).expand_as(z), z, "amax", include_self=True)  # (N, kF)
        p = w.unsqueeze(-1) * torch.exp(z - torch.index_select(c, 0, i))  # (E, kF), ≤ w
        columns += [(p.view(E, k, F) * m.unsqueeze(1)).view(E, k * F), p]
    sums = scatter_sum(torch.cat(columns, dim=-1) if len(columns) > 1 else columns[0], i, n)
    out, at = {}, 0
    if moments:
        out["mean"] = mean = sums[:, :F]
        at = F
        if "std" in aggregators:
            var = (sums[:, F:2 * F] - mean * mean).clamp_min(0.0)
            out["std"] = torch.sqrt(var + _EPS_STD) - math.sqrt(_EPS_STD)
            at = 2 * F
    if signs:
        num, den = sums[:, at:at + k * F], sums[:, at + k * F:]
        soft = num / (den + _EPS_W * torch.exp(-c))  # (N, kF)
        for idx, name in enumerate(name for name in ("max", "min") if name in aggregators):
            out[name] = soft[:, idx * F:(idx + 1) * F]
    return torch.cat([out[name] for name in aggregators], dim=-1)


class PNAEqMessage(nn.Module):
    """Edge messages, PNA aggregation of the scalars, weighted mean of the vector messages."""

    def __init__(self, F: int, aggregators: tuple[str, ...], num_scalers: int,
                 temperature: float, first: bool) -> None:
        super().__init__()
        self.F, self.first, self.temperature = F, first, float(temperature)
        self.aggregators = aggregators
        self.node_in = nn.Linear(F, 2 * F, bias=False)  # W_i s_i and W_j s_j, per node
        self.edge_out = nn.Linear(F, (2 if first else 3) * F)  # m, b (, a: v = 0 in layer 1)
        n_in = (1 + num_scalers * len(aggregators)) * F
        self.post = nn.Sequential(nn.Linear(n_in, F), nn.SiLU(), nn.Linear(F, F))
        self.act = nn.SiLU()

    def forward(self, s, v, i, j, radial, unit, w, w_mean, scales):
        """s (N, F), v (N, 3, F), radial (E, F): this layer's bessel term with bias, unit (E, 3),
        w (E,) cutoff weights, w_mean (E,) = w_ij / (d_i + ε), scales: (N, 1) degree scalers
        (None: identity)."""
        n = s.shape[0]
        hi, hj = torch.split(self.node_in(s), self.F, dim=-1)
        x = torch.index_select(hi, 0, i) + torch.index_select(hj, 0, j) + radial  # (E, F)
        out = torch.split(self.edge_out(self.act(x)), self.F, dim=-1)
        m, b = out[0], out[1]
        if m.dtype in (torch.bfloat16, torch.float16):
            m = m.float()  # aggregate (exp, squares, sums) in float32 under autocast
        agg = aggregate(m, i, w, w_mean, n, self.aggregators, self.temperature)  # (N, A·F)
        features = [s] + [agg if scale is None else agg * scale for scale in scales]
        s = s + self.post(torch.cat([f.to(agg.dtype) for f in features], dim=-1))
        wn = w_mean.unsqueeze(-1)  # (E, 1): the weighted mean of vector messages
        dv = unit.unsqueeze(-1) * (b * wn).unsqueeze(1)  # (E, 3, F)
        if not self.first:
            vj = torch.index_select(v.flatten(1), 0, j).view(-1, 3, self.F)  # (E, 3, F)
            dv = torch.addcmul(dv, vj, (out[2] * wn).unsqueeze(1))
        v = v + scatter_sum(dv.flatten(1), i, n).view(n, 3, self.F)
        return s, v


@dataclass
class PNAEqSettings(BackboneSettings):
    num_features: int = setting(128, range=(32, 256), log=True,
                                doc="width F of scalar and vector channels")
    num_layers: int = setting(3, range=(1, 6), doc="message + update blocks")
    num_rbf: int = setting(16, range=(8, 32), doc="Bessel radial functions")
    aggregators: str = setting("mean,max,min,std",
                               choices=["mean,max,min,std", "mean,max,min", "mean,std", "mean"],
                               doc="neighbour aggregators (max/min are cutoff-weighted softmax "
                                   "and softmin means)")
    scalers: str = setting("identity,amplification,attenuation",
                           choices=["identity,amplification,attenuation",
                                    "identity,amplification", "identity"],
                           doc="degree scalers of the aggregates")
    temperature: float = setting(1.0, range=(0.1, 10.0), log=True,
                                 doc="softmax/softmin temperature T of the max/min aggregators")


@register("backbone", "pnaeq")
class PNAEq(Backbone):
    """PNAEq backbone.

    Args:
        num_features: width F of scalar and vector channels (default 128).
        num_layers: message + update blocks (default 3).
        cutoff: neighbour cutoff in Å (default 5.0).
        num_rbf: Bessel radial functions (default 16).
        aggregators: comma-separated subset of mean, max, min, std (default all four).
        scalers: comma-separated subset of identity, amplification, attenuation (default all).
        temperature: T of the soft max/min (default 1.0).
        max_charge, max_spin: range of the total-charge and multiplicity embeddings.
        elements: the training elements (unused: every element is embedded).
        stats: training-graph statistics; ``degree_histogram`` gives δ of the degree scalers.
    """

    Settings = PNAEqSettings
    presets = {"S": {"num_features": 32, "num_layers": 2, "num_rbf": 8},
               "M": {"num_features": 128, "num_layers": 3, "num_rbf": 16},
               "L": {"num_features": 256, "num_layers": 4, "num_rbf": 20}}
    feature_kind = "vectors"

    def __init__(self, num_features: int = 128, num_layers: int = 3, cutoff: float = 5.0,
                 num_rbf: int = 16, aggregators: str = "mean,max,min,std",
                 scalers: str = "identity,amplification,attenuation", temperature: float = 1.0,
                 max_charge: int = 6, max_spin: int = 8, elements=None, stats=None) -> None:
        super().__init__()
        if num_features < 1 or num_layers < 1 or num_rbf < 1:
            raise ValueError("PNAEq needs num_features, num_layers and num_rbf >= 1")
        if not cutoff > 0 or not temperature > 0:
            raise ValueError(f"PNAEq cutoff and temperature must be positive, got {cutoff}, "
                             f"{temperature}")
        self.aggregators = parse_names(aggregators, AGGREGATORS, "aggregators")
        self.scalers = parse_names(scalers, SCALERS, "scalers")
        self.cutoff = float(cutoff)
        self.max_charge, self.max_spin = int(max_charge), int(max_spin)
        self.num_scalar_features = self.num_vector_features = num_features
        delta = DEFAULT_LOG_DEGREE
        if stats is not None and stats.degree_histogram:
            delta = mean_log_degree(stats.degree_histogram)
        if not delta > 0:
            raise ValueError(f"PNAEq: mean log degree of the training graphs is {delta}; "
                             "the degree scalers need connected training graphs")
        self.register_buffer("log_degree", torch.tensor(delta, dtype=torch.float64))  # δ
        self.embedding = AtomEmbedding(num_features, max_charge, max_spin)
        self.rbf = BesselBasis(cutoff, num_rbf)
        self.fcut = PolynomialCutoff(cutoff)
        # The bessel term of every layer's message network in one product (num_rbf -> layers x F).
        self.radial = nn.Linear(num_rbf, num_layers * num_features)
        self.messages = nn.ModuleList(
            PNAEqMessage(num_features, self.aggregators, len(self.scalers), temperature, k == 0)
            for k in range(num_layers))
        self.updates = nn.ModuleList(PaiNNUpdate(num_features) for _ in range(num_layers))

    def degree_scalers(self, d: torch.Tensor) -> list[torch.Tensor]:
        """The scalers of weighted degrees d (N,) as (N, 1) columns; None for identity."""
        delta = self.log_degree.to(d.dtype)
        table = {"identity": lambda: None,
                 "amplification": lambda: torch.log1p(d) / delta,
                 "attenuation": lambda: delta / torch.log1p(torch.sqrt(1.0 + d * d))}
        columns = [table[name]() for name in self.scalers]
        return [None if c is None else c.unsqueeze(-1) for c in columns]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        i, j = batch[K.EDGE_INDEX]
        vec = edge_vectors(batch)  # (E, 3)
        r = torch.linalg.vector_norm(vec, dim=-1)  # (E,)
        unit = vec / r.unsqueeze(-1)
        w = self.fcut(r)  # (E,)
        s = self.embedding(batch)  # (N, F)
        n = s.shape[0]
        d = scatter_sum(w, i, n)  # (N,) cutoff-weighted degree
        w_mean = w / torch.index_select(d + _EPS_W, 0, i)  # (E,)
        scales = self.degree_scalers(d)
        radial = torch.split(self.radial(self.rbf(r)), self.num_scalar_features, dim=-1)
        v = s.new_zeros((n, 3, s.shape[1]))  # (N, 3, F)
        for message, update, rad in zip(self.messages, self.updates, radial, strict=True):
            s, v = message(s, v, i, j, rad, unit, w, w_mean, scales)
            s, v = update(s, v)
        return {K.NODE_SCALARS: s, K.NODE_VECTORS: v}
