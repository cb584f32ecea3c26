"""MACE: higher-order equivariant message passing.

Batatia, Kovács, Simm, Ortner, Csányi, "MACE: Higher Order Equivariant Message Passing Neural
Networks for Fast and Accurate Force Fields", NeurIPS 2022, https://arxiv.org/abs/2206.07697.

Each atom carries C channels of irreps (``C x 0e`` or ``C x 0e + C x 1o``), stored as
(n_atoms, C, Σ(2l+1)). A layer is

1. **interaction**: a radial MLP of Bessel(r)·envelope(r) weights a channel-wise (uvu) tensor
   product of the sender's features with the real spherical harmonics Y(r̂_ij) up to ``max_ell``;
   summed onto the receiver and divided by the mean neighbour count n̄ (a constant from the
   training graphs), then mixed per l: the atomic basis A_i (n_atoms, C, (max_ell+1)²);
2. **symmetric contraction** (the product basis): B_i,c^L = Σ_ν Σ_k W^{ν,L}_{z_i,k,c}
   Σ_{m1..mν} U^{ν,L}_{k,M,m1..mν} A_i,c,m1 ⋯ A_i,c,mν, ν = 1..``correlation``, with weights
   per element;
3. a per-l linear layer plus an element-dependent linear skip of the layer's input.

The coupling tensors U (generalised Clebsch–Gordan coefficients) are built once, in float64, at
construction (:func:`symmetric_basis`): chain e3nn's Wigner-3j symbols over ν copies of the
spherical-harmonic irreps, symmetrise over the ν indices and keep an orthonormal basis of their
span (Gram–Schmidt in the paths' fixed order, so U is the same on every machine). Because U
is symmetric, it acts on the distinct monomials of A's components (``(d+ν-1 choose ν)`` of them
instead of d^ν), and only on those U reads (parity and angular
momentum leave most out) plus the pairs the triples are built from. Gathers are products with
0/1 matrices (exact, and their backward is a product, not a scatter): at the M preset (d = 16,
ν ≤ 3, output 0e) (N·C, 16) × (16, 222) and (N·C, 72) × (72, 77) form the 1 + 72 + 77
monomials, and one (N·C, 150) × (150, 13) product projects them on the 1 + 4 + 8 coupling
paths: about 11k multiply-adds per atom and channel, against d^ν·K ≈ 53k for a dense
contraction of U with A ⊗ A ⊗ A (mace-torch contracts U with the element weights first, then
with A one order at a time, also of order d^ν·K).
Building U takes about a second at construction (ν = 3, max_ell = 3).

The invariant (0e) features of every layer, concatenated, are the node scalars heads read; the
last layer's irreps are ``NODE_IRREPS`` (``irreps_out``).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from atomgfm import keys as K
from atomgfm.data.structure import MAX_Z
from atomgfm.models.backbones.base import Backbone, BackboneSettings, setting
from atomgfm.nn.embedding import AtomEmbedding
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import BesselBasis, PolynomialCutoff
from atomgfm.nn.scatter import scatter_sum
from atomgfm.registry import register

_SILU_NORM = 1.6791767923989418  # 1 / sqrt(E[silu(x)²]) for x ~ N(0, 1) (e3nn's normalize2mom)


def _parity(ell: int) -> int:
    return -1 if ell % 2 else 1


@functools.cache
def wigner_3j(l1: int, l2: int, l3: int) -> torch.Tensor:
    """e3nn's real Clebsch–Gordan coefficients (2l1+1, 2l2+1, 2l3+1), float64, cached."""
    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64)


def _slices(ls: list[int]) -> list[slice]:
    out, start = [], 0
    for ell in ls:
        out.append(slice(start, start + 2 * ell + 1))
        start += 2 * ell + 1
    return out


def symmetric_basis(max_ell: int, nu: int, L: int) -> torch.Tensor:
    """Orthonormal basis of the equivariant maps Sym^ν(V) → (L, (-1)^L), V = ⊕_{l≤max_ell} l.

    Returns U (K, 2L+1, d, ..., d) in float64 (ν indices of size d = (max_ell+1)², each
    symmetric under permutations of them); K may be 0.
    """
    d = (max_ell + 1) ** 2
    slices = _slices(list(range(max_ell + 1)))
    # Coupled tensors (l_out, parity, T (2l_out+1, d^k)) after k factors, all intermediate paths.
    paths = []
    for ell in range(max_ell + 1):
        t = torch.zeros(2 * ell + 1, d, dtype=torch.float64)
        t[:, slices[ell]] = torch.eye(2 * ell + 1, dtype=torch.float64)
        paths.append((ell, _parity(ell), t))
    for step in range(nu - 1):
        new = []
        reach = (nu - 2 - step) * max_ell  # how far the factors still to come can move l
        for l1, p1, t1 in paths:
            for l2 in range(max_ell + 1):
                for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                    if abs(l3 - L) > reach:
                        continue
                    cg = wigner_3j(l1, l2, l3) * math.sqrt(2 * l3 + 1)
                    t = torch.zeros(2 * l3 + 1, *t1.shape[1:], d, dtype=torch.float64)
                    t[..., slices[l2]] = torch.einsum("abM,a...->M...b", cg, t1)
                    new.append((l3, p1 * _parity(l2), t))
        paths = new
    ts = [t for ell, p, t in paths if ell == L and p == _parity(L)]
    if not ts:
        return torch.zeros(0, 2 * L + 1, *([d] * nu), dtype=torch.float64)
    t = torch.stack(ts)  # (P, 2L+1, d, ..., d)
    perms = list(itertools.permutations(range(2, 2 + nu)))
    t = sum(t.permute(0, 1, *p) for p in perms) / len(perms)
    # Gram–Schmidt over the paths in their fixed order (twice, for accuracy), not an SVD: the
    # basis is then the same on every machine and library version (an SVD may return any
    # rotation of a degenerate subspace), so a checkpoint's weights mean the same everywhere.
    basis: list[torch.Tensor] = []
    for v in t.reshape(t.shape[0], -1):
        norm = torch.linalg.vector_norm(v)
        for _ in range(2):
            for b in basis:
                v = v - (v @ b) * b
        if norm > 1e-12 and torch.linalg.vector_norm(v) > 1e-6 * norm:
            basis.append(v / torch.linalg.vector_norm(v))
    if not basis:
        return torch.zeros(0, *t.shape[1:], dtype=torch.float64)
    return torch.stack(basis).reshape(-1, *t.shape[1:])


class _Constants:
    """Float64 constant tensors kept outside the module's buffers, so ``.float()`` followed by
    ``.double()`` never rounds them; a copy per (device, dtype) is made on first use."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.master = {k: v.to(torch.float64) for k, v in tensors.items()}
        self.cache: dict = {}

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        if key not in self.cache:
            self.cache[key] = self.master[name].to(device=like.device, dtype=like.dtype)
        return self.cache[key]


class SymmetricContraction(nn.Module):
    """A (n_atoms, C, d) → B (n_atoms, C, Σ_L(2L+1)): the element-weighted product basis.

    ``weights_L{L}[ν-1]`` (n_elements, K_ν, C) weighs the K_ν coupling paths of order ν onto
    output L, per element and channel; a model of lower correlation reads the same names.
    """

    def __init__(self, C: int, max_ell: int, out_ls: list[int], nu: int, n_elements: int) -> None:
        super().__init__()
        d = (max_ell + 1) ** 2
        self.out_ls, self.nu = list(out_ls), nu
        # Distinct monomials of each degree k: index tuples i1 ≤ ... ≤ ik.
        monos = [list(itertools.combinations_with_replacement(range(d), k))
                 for k in range(1, nu + 1)]
        blocks = {}  # L -> [(K_k, 2L+1, n_monomials_k)] in the monomial basis
        used = [torch.zeros(len(m), dtype=torch.bool) for m in monos]
        for L in out_ls:
            blocks[L] = []
            for k in range(nu):
                U = symmetric_basis(max_ell, k + 1, L)  # (K, 2L+1, d, ..., d)
                idx = torch.tensor(monos[k]).T
                mult = torch.tensor([math.factorial(k + 1) / math.prod(
                    math.factorial(t.count(v)) for v in set(t)) for t in monos[k]],
                    dtype=torch.float64)
                u = U[(slice(None), slice(None), *idx)] * mult
                used[k] |= (u.abs() > 1e-12).flatten(0, 1).any(0)
                blocks[L].append(u)
        sel = [u.nonzero().flatten().tolist() for u in used]
        # The monomials formed: degree 1 and 3 as U reads them; degree 2 as U reads them or as
        # factors of the degree-3 ones. Rows of U follow this order.
        deg = [[monos[0][s] for s in sel[0]], [], []]
        if nu >= 3:
            deg[2] = [monos[2][s] for s in sel[2]]
        if nu >= 2:
            deg[1] = sorted({monos[1][s] for s in sel[1]} | {t[:2] for t in deg[2]})
        deg = deg[:nu]
        # Gathers as products with 0/1 matrices (exact; the backward is a product too):
        # A @ first → degree-1 monomials, the two factors of each pair, the last of each triple.
        eye = torch.eye(d, dtype=torch.float64)
        first = [eye[:, [t[0] for t in deg[0]]]]
        if nu >= 2:
            first += [eye[:, [t[0] for t in deg[1]]], eye[:, [t[1] for t in deg[1]]]]
        if nu >= 3:
            first.append(eye[:, [t[2] for t in deg[2]]])
            pos2 = {t: n for n, t in enumerate(deg[1])}
            second = torch.zeros(len(deg[1]), len(deg[2]), dtype=torch.float64)
            second[[pos2[t[:2]] for t in deg[2]], range(len(deg[2]))] = 1.0
        self.split = [f.shape[1] for f in first]
        mats = {"first": torch.cat(first, dim=1)}
        if nu >= 3:
            mats["second"] = second
        self.n_monomials = sum(len(t) for t in deg)
        self.n_paths = {L: [b.shape[0] for b in blocks[L]] for L in out_ls}
        for L in out_ls:
            K_tot = sum(self.n_paths[L])
            m = torch.zeros(self.n_monomials, 2 * L + 1, K_tot, dtype=torch.float64)
            row = col = 0
            for k, b in enumerate(blocks[L]):
                pos = {t: n for n, t in enumerate(monos[k])}
                idx = [pos[t] for t in deg[k]]
                m[row:row + len(idx), :, col:col + b.shape[0]] = b[:, :, idx].permute(2, 1, 0)
                row, col = row + len(idx), col + b.shape[0]
            mats[f"U{L}"] = m.reshape(self.n_monomials, -1)
            setattr(self, f"weights_L{L}", nn.ParameterList(
                nn.Parameter(torch.randn(n_elements, k, C) / max(k, 1))
                for k in self.n_paths[L]))
        self.const = _Constants(**mats)

    def forward(self, A: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        parts = torch.split(torch.matmul(A, self.const.get("first", A)), self.split, dim=-1)
        feats = [parts[0]]
        if self.nu >= 2:
            pairs = parts[1] * parts[2]  # (N, C, n_pairs)
            feats.append(pairs)
        if self.nu >= 3:
            feats.append(torch.matmul(pairs, self.const.get("second", pairs)) * parts[3])
        P = torch.cat(feats, dim=-1)  # (N, C, n_monomials)
        out = []
        for L in self.out_ls:
            proj = torch.matmul(P, self.const.get(f"U{L}", P))  # (N, C, (2L+1)·K)
            proj = proj.unflatten(-1, (2 * L + 1, -1))  # (N, C, 2L+1, K)
            W = torch.cat(list(getattr(self, f"weights_L{L}")), dim=1)
            W = torch.index_select(W, 0, element)  # (N, K, C)
            out.append((proj * W.transpose(1, 2).unsqueeze(2)).sum(-1))
        return torch.cat(out, dim=-1)


class PerLLinear(nn.Module):
    """Channel mixing per l on (N, C, Σ(2l+1)): x_l ← x_l W_l / √C (no bias: equivariant)."""

    def __init__(self, C: int, ls: list[int]) -> None:
        super().__init__()
        self.ls, self.slices, self.scale = list(ls), _slices(ls), C**-0.5
        self.weight = nn.Parameter(torch.randn(len(ls), C, C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = [torch.matmul(x[..., s].transpose(-1, -2), self.weight[k]).transpose(-1, -2)
               for k, s in enumerate(self.slices)]
        return torch.cat(out, dim=-1) * self.scale


class ElementLinear(nn.Module):
    """The element-dependent skip: x_l ← x_l W_{z,l} / √C for l in both lists (zero for others)."""

    def __init__(self, C: int, in_ls: list[int], out_ls: list[int], n_elements: int) -> None:
        super().__init__()
        self.in_slices, self.out_ls, self.scale = _slices(in_ls), list(out_ls), C**-0.5
        self.ls = [ell for ell in in_ls if ell in out_ls]
        self.weight = nn.Parameter(torch.randn(len(self.ls), n_elements, C, C))
        self.in_ls = list(in_ls)

    def forward(self, x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        out = []
        for ell in self.out_ls:
            if ell in self.ls:
                k = self.ls.index(ell)
                xl = x[..., self.in_slices[self.in_ls.index(ell)]].transpose(1, 2)  # (N, m, C)
                W = torch.index_select(self.weight[k], 0, element)  # (N, C, C)
                out.append(torch.bmm(xl, W).transpose(1, 2) * self.scale)
            else:
                out.append(x.new_zeros(x.shape[0], x.shape[1], 2 * ell + 1))
        return torch.cat(out, dim=-1)


class RadialMLP(nn.Module):
    """Bias-free MLP with normalised SiLU: zero input (r = r_c) gives zero weights."""

    def __init__(self, n_in: int, width: int, n_out: int, hidden_layers: int = 3) -> None:
        super().__init__()
        sizes = [n_in] + [width] * hidden_layers + [n_out]
        pairs = zip(sizes, sizes[1:], strict=False)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in pairs)
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=layer.in_features**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < len(self.layers) - 1:
                x = torch.nn.functional.silu(x) * _SILU_NORM
        return x


class Interaction(nn.Module):
    """Node features (N, C, in) → atomic basis A (N, C, (max_ell+1)²) and the skip (N, C, out).

    Channel-wise (uvu) tensor product of the sender's features with Y(r̂), one radial weight per
    path (l_in, l_sh, l_out) and channel; only l_out ≤ max_ell of parity (-1)^l_out are kept.
    """

    def __init__(self, C: int, in_ls: list[int], hidden_ls: list[int], max_ell: int,
                 num_bessel: int, radial_width: int, n_elements: int, avg_num_neighbors: float):
        super().__init__()
        self.C, self.in_ls, self.max_ell = C, list(in_ls), max_ell
        self.d = (max_ell + 1) ** 2
        self.inv_avg = 1.0 / float(avg_num_neighbors)
        self.up = PerLLinear(C, in_ls)
        self.skip = ElementLinear(C, in_ls, hidden_ls, n_elements)
        sh = list(range(max_ell + 1))
        # l_in = 0 paths (0, ell, ell) first, one per l; then l_in > 0 paths.
        paths = [(0, ell, ell) for ell in sh] if 0 in in_ls else []
        paths += [(l1, l2, l3) for l1 in in_ls if l1 > 0 for l2 in sh
                  for l3 in range(abs(l1 - l2), min(l1 + l2, max_ell) + 1)
                  if _parity(l1) * _parity(l2) == _parity(l3)]
        self.paths = paths
        count = [sum(p[2] == ell for p in paths) for ell in sh]  # paths into each l_out
        self.radial = RadialMLP(num_bessel, radial_width, len(paths) * C)
        self.down = PerLLinear(C, sh)
        self.sh_slices = _slices(sh)
        ynorm = torch.cat([torch.full((2 * ell + 1,), count[ell] ** -0.5) for ell in sh])
        consts = {"ynorm": ynorm}  # (d,): 1/√(paths into l_out), folded into Y
        hi = [p for p in paths if p[0] > 0]
        self.n_hi = len(hi)
        if hi:  # one (dim_in_hi · d, n_cols) coupling matrix and a (n_cols, d) placement
            hi_ls = [ell for ell in in_ls if ell > 0]  # coupled from x[..., 1:] (after the 0e)
            in_sl = _slices(hi_ls)
            dim_in = sum(2 * ell + 1 for ell in hi_ls)
            sh_sl = _slices(sh)
            n_cols = sum(2 * p[2] + 1 for p in hi)
            cg = torch.zeros(dim_in, self.d, n_cols, dtype=torch.float64)
            place = torch.zeros(n_cols, self.d, dtype=torch.float64)
            col_path = []
            col = 0
            for k, (l1, l2, l3) in enumerate(hi):
                w = wigner_3j(l1, l2, l3) * math.sqrt(2 * l3 + 1)
                n = 2 * l3 + 1
                cg[in_sl[hi_ls.index(l1)], sh_sl[l2], col:col + n] = w
                place[col:col + n, sh_sl[l3]] = torch.eye(n, dtype=torch.float64)
                place[col:col + n] *= count[l3] ** -0.5
                col_path += [len(sh) * (0 in in_ls) + k] * n
                col += n
            consts["cg"] = cg.reshape(dim_in * self.d, n_cols)
            consts["place"] = place
            self.register_buffer("col_path", torch.tensor(col_path), persistent=False)
        self.const = _Constants(**consts)

    def forward(self, x, element, Y, edge_feats, i, j):
        sc = self.skip(x, element)
        xj = torch.index_select(self.up(x), 0, j)  # (E, C, dim_in)
        R = self.radial(edge_feats).unflatten(-1, (self.C, -1))  # (E, C, n_paths)
        E, n = xj.shape[0], x.shape[0]
        Yc = Y.to(xj.dtype)
        parts = []  # the (0, l, l) paths, per l: (E, C, 2l+1)
        if 0 in self.in_ls:
            w = R[..., :self.max_ell + 1] * xj[..., :1]  # (E, C, max_ell+1)
            Yn = (Yc * self.const.get("ynorm", Yc)).unsqueeze(1)  # (E, 1, d)
            ws = torch.split(w, 1, dim=-1)  # one split, not slices (whose backward zero-fills)
            parts = [wl * Yn[..., sl] for wl, sl in zip(ws, self.sh_slices, strict=True)]
        if not self.n_hi:  # scattered per l: no (E, C, d) concatenation
            A = torch.cat([scatter_sum(p, i, n) for p in parts], dim=-1) * self.inv_avg
            return self.down(A), sc
        msg = torch.cat(parts, dim=-1) if parts else xj.new_zeros(E, self.C, self.d)
        xh = xj[..., 1:] if 0 in self.in_ls else xj  # (E, C, dim_hi)
        xy = (xh.unsqueeze(-1) * Yc.unsqueeze(1).unsqueeze(2)).flatten(2)  # (E, C, dim_hi·d)
        Rp = torch.index_select(R, -1, self.col_path)  # (E, C, n_cols)
        out = torch.matmul(xy, self.const.get("cg", xy)) * Rp
        msg = msg + torch.matmul(out, self.const.get("place", out))
        A = scatter_sum(msg, i, n) * self.inv_avg  # (N, C, d)
        return self.down(A), sc


@dataclass
class MACESettings(BackboneSettings):
    num_channels: int = setting(128, range=(16, 256), log=True,
                                doc="channels C of every irrep of the hidden features")
    max_ell: int = setting(3, choices=[1, 2, 3], doc="highest ell of the edge spherical harmonics")
    hidden_max_l: int = setting(0, choices=[0, 1],
                                doc="hidden irreps: 0 → C x 0e, 1 → C x 0e + C x 1o")
    correlation: int = setting(3, choices=[1, 2, 3], doc="body order ν of the product basis")
    num_interactions: int = setting(2, range=(1, 3), doc="interaction + product layers")
    num_bessel: int = setting(8, doc="Bessel radial functions")
    num_poly_cutoff: int = setting(5, doc="exponent p of the polynomial envelope")
    radial_mlp: int = setting(64, doc="width of the radial MLP's three hidden layers")


@register("backbone", "mace")
class MACE(Backbone):
    """MACE backbone (hidden irreps ``C x 0e`` or ``C x 0e + C x 1o``).

    Args:
        num_channels: channels C per irrep (default 128).
        max_ell: highest ell of the edge spherical harmonics and of the atomic basis (default 3).
        hidden_max_l: 0 for ``C x 0e`` hidden features, 1 for ``C x 0e + C x 1o`` (default 0).
        correlation: body order ν of the symmetric contraction (default 3).
        num_interactions: layers (default 2).
        num_bessel, num_poly_cutoff: radial basis size and envelope exponent (8, 5).
        cutoff: neighbour cutoff in Å (default 5.0).
        radial_mlp: width of the radial MLP (default 64).
        max_charge, max_spin: range of the total-charge and multiplicity embeddings.
        elements: atomic numbers the element-dependent weights cover (default: all 1..118).
        stats: training-graph statistics; ``avg_num_neighbors`` divides summed messages
            (10 without statistics).
    """

    Settings = MACESettings
    presets = {
        "S": {"num_channels": 8, "max_ell": 2, "hidden_max_l": 1, "correlation": 2,
              "num_interactions": 2, "num_bessel": 6, "radial_mlp": 16},
        "M": {"num_channels": 128, "max_ell": 3, "hidden_max_l": 0, "correlation": 3,
              "num_interactions": 2, "num_bessel": 8, "radial_mlp": 64},
        "L": {"num_channels": 128, "max_ell": 3, "hidden_max_l": 1, "correlation": 3,
              "num_interactions": 2, "num_bessel": 8, "radial_mlp": 64},
    }
    feature_kind = "irreps"

    def __init__(self, num_channels: int = 128, max_ell: int = 3, hidden_max_l: int = 0,
                 correlation: int = 3, num_interactions: int = 2, num_bessel: int = 8,
                 num_poly_cutoff: int = 5, cutoff: float = 5.0, radial_mlp: int = 64,
                 max_charge: int = 6, max_spin: int = 8, elements=None, stats=None) -> None:
        super().__init__()
        if num_channels < 1 or num_interactions < 1 or num_bessel < 1 or radial_mlp < 1:
            raise ValueError("MACE needs num_channels, num_interactions, num_bessel and "
                             "radial_mlp >= 1")
        if max_ell not in (1, 2, 3) or hidden_max_l not in (0, 1) or correlation not in (1, 2, 3):
            raise ValueError(f"MACE needs max_ell in 1..3 (got {max_ell}), hidden_max_l 0 or 1 "
                             f"(got {hidden_max_l}) and correlation in 1..3 (got {correlation})")
        C = num_channels
        self.cutoff = float(cutoff)
        self.max_charge, self.max_spin = int(max_charge), int(max_spin)
        self.avg_num_neighbors = float(stats.avg_num_neighbors) if stats is not None and \
            stats.avg_num_neighbors > 0 else 10.0
        table = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        zs = sorted({int(z) for z in elements}) if elements else list(range(MAX_Z + 1))
        table[torch.tensor(zs)] = torch.arange(len(zs))
        self.register_buffer("element_index", table, persistent=False)
        self.elements = zs
        hidden_ls = [0] if hidden_max_l == 0 else [0, 1]
        self.hidden_ls, self.C = hidden_ls, C
        self.num_scalar_features = num_interactions * C
        self.num_vector_features = 0
        self.irreps_out = o3.Irreps("+".join(f"{C}x{ell}{'e' if ell % 2 == 0 else 'o'}"
                                             for ell in hidden_ls))
        self.embedding = AtomEmbedding(C, max_charge, max_spin)
        self.rbf = BesselBasis(cutoff, num_bessel)
        self.rbf_scale = math.sqrt(2.0 / cutoff)
        self.envelope = PolynomialCutoff(cutoff, num_poly_cutoff)
        self.sh_ls = list(range(max_ell + 1))
        n_el = len(zs)
        self.interactions = nn.ModuleList(
            Interaction(C, [0] if t == 0 else hidden_ls, hidden_ls, max_ell, num_bessel,
                        radial_mlp, n_el, self.avg_num_neighbors)
            for t in range(num_interactions))
        self.contractions = nn.ModuleList(
            SymmetricContraction(C, max_ell, hidden_ls, correlation, n_el)
            for _ in range(num_interactions))
        self.linears = nn.ModuleList(PerLLinear(C, hidden_ls) for _ in range(num_interactions))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        i, j = batch[K.EDGE_INDEX]
        vec = edge_vectors(batch)  # (E, 3)
        r = torch.linalg.vector_norm(vec, dim=-1)  # (E,)
        Y = o3.spherical_harmonics(self.sh_ls, vec, normalize=True, normalization="component")
        edge_feats = self.rbf(r) * (self.rbf_scale * self.envelope(r)).unsqueeze(-1)  # (E, nb)
        element = self.element_index[batch[K.ATOMIC_NUMBERS]]  # (N,)
        if not torch.jit.is_scripting() and bool((element < 0).any()):
            unknown = sorted(set(batch[K.ATOMIC_NUMBERS][element < 0].tolist()))
            raise ValueError(f"MACE was built for elements {self.elements}; got {unknown}")
        x = self.embedding(batch).unsqueeze(-1)  # (N, C, 1): C x 0e
        scalars = []
        for inter, contract, linear in zip(self.interactions, self.contractions, self.linears,
                                           strict=True):
            A, sc = inter(x, element, Y, edge_feats, i, j)  # (N, C, d), (N, C, dim_hidden)
            x = linear(contract(A, element)) + sc  # (N, C, dim_hidden)
            scalars.append(x[..., 0])
        irreps = torch.cat([x[..., s].flatten(1) for s in _slices(self.hidden_ls)], dim=-1)
        return {K.NODE_SCALARS: torch.cat(scalars, dim=-1), K.NODE_IRREPS: irreps}
