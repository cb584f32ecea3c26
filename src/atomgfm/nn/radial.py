"""Radial bases and smooth cutoff envelopes.

The cutoff goes to zero with zero first and second derivative at ``r_cut`` so energies and forces
are continuous as neighbours cross the cutoff sphere.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CosineCutoff(nn.Module):
    """f(r) = ½(cos(πr/r_c) + 1) for r < r_c, else 0 (Behler). Continuous value and slope."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        f = 0.5 * (torch.cos(r * (math.pi / self.cutoff)) + 1.0)
        return f * (r < self.cutoff).to(r.dtype)


class PolynomialCutoff(nn.Module):
    """Polynomial envelope of DimeNet (p=6): smooth to second order at r_c."""

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = r / self.cutoff
        p = self.p
        f = (1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1)
             - p * (p + 1) / 2 * x ** (p + 2))
        return f * (x < 1.0).to(r.dtype)


class BesselBasis(nn.Module):
    """sin(nπr/r_c)/r, n = 1..num_basis (PaiNN, DimeNet); finite as r → 0 is never needed
    because self-pairs are excluded from neighbour lists."""

    def __init__(self, cutoff: float, num_basis: int = 20, trainable: bool = False) -> None:
        super().__init__()
        freqs = torch.arange(1, num_basis + 1, dtype=torch.float64) * math.pi / cutoff
        self.freqs = nn.Parameter(freqs, requires_grad=trainable)
        self.num_basis = num_basis

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # (E,) -> (E, num_basis)
        r = r.unsqueeze(-1)
        return torch.sin(self.freqs.to(r.dtype) * r) / r


class GaussianBasis(nn.Module):
    """Gaussians on an even grid in [0, r_c] (SchNet)."""

    def __init__(self, cutoff: float, num_basis: int = 50) -> None:
        super().__init__()
        centers = torch.linspace(0.0, cutoff, num_basis, dtype=torch.float64)
        self.register_buffer("centers", centers)
        self.gamma = 0.5 / float(centers[1] - centers[0]) ** 2
        self.num_basis = num_basis

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # (E,) -> (E, num_basis)
        x = self.gamma * (r.unsqueeze(-1) - self.centers.to(r.dtype)) ** 2
        # Tails below exp(-80) ≈ 2e-35 are exactly 0: in float32 they would be denormal numbers,
        # and CPU arithmetic on denormals made PaiNN's training step ~4x slower on alloys.
        return torch.where(x < 80.0, torch.exp(-x.clamp(max=80.0)), 0.0)
