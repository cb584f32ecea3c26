"""Heads: scalar node features -> per-atom outputs. The head protocol and its two kinds.

Every head satisfies :class:`Head`: ``atom_outputs(scalars, numbers, gate)`` gives per-atom
contributions ``(n_atoms, out_dim)`` in float64, ``structure_outputs(charge, spin)`` a per-structure
constant ``(n_structs, out_dim)``, and ``reduce`` says how atoms combine ("sum": extensive, like an
energy; "mean": intensive). The model never reaches into a head beyond that, and heads of one
class can offer ``stacked(heads, ...)``: all of them as one batched product.

* :class:`EnergyHead` (registry "energy"): one per dataset / level of theory. It owns its dataset's
  normalisation (SchNetPack's RemoveOffsets/AddOffsets idea): the element reference energies
  (float64, fitted on the training split) and the scale. Training targets are never shifted; the
  model adds back exactly what the fit removed, from the same stored numbers.
* :class:`PropertyHead` (registry "property"): a structure-level regression or classification
  head (e.g. a band gap, a stability class) on the same features, for fine-tuning.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from atomgfm.data.references import state_features
from atomgfm.data.structure import MAX_Z
from atomgfm.registry import register


class Head(nn.Module):
    """The head protocol (see the module docstring)."""

    kind: ClassVar[str] = "property"  # "energy": an energy in eV that forces differentiate
    out_dim: int = 1
    reduce: str = "sum"

    def _apply(self, fn, recurse=True):
        # A head's buffers (references, offsets, scales) are float64: Module.to(dtype) would
        # cast the references to float32 and lose meV on totals of 1e4 eV. They follow the
        # device but stay float64.
        keep = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, old in keep.items():
            self._buffers[name] = old.to(device=self._buffers[name].device, dtype=torch.float64)
        return self

    def atom_outputs(self, s: torch.Tensor, numbers: torch.Tensor,
                     gate: torch.Tensor) -> torch.Tensor:
        """(n, F), (n,), (n,) -> (n, out_dim) float64 per-atom contributions."""
        raise NotImplementedError

    def structure_outputs(self, charge: torch.Tensor, spin: torch.Tensor) -> torch.Tensor:
        """(S,), (S,) -> (S, out_dim) float64 per-structure constants (zero by default)."""
        return torch.zeros((charge.shape[0], self.out_dim), dtype=torch.float64,
                           device=charge.device)

    @classmethod
    def stacked(cls, heads: list[Head], s: torch.Tensor, numbers: torch.Tensor,
                gate: torch.Tensor) -> torch.Tensor:
        """Several heads of this class at once: (n, out_dim, n_heads). Default: one by one."""
        return torch.stack([h.atom_outputs(s, numbers, gate) for h in heads], dim=-1)

    @classmethod
    def stacked_structure_outputs(cls, heads: list[Head], charge: torch.Tensor,
                                  spin: torch.Tensor) -> torch.Tensor:
        """``structure_outputs`` of several heads of this class at once: (S, out_dim, n_heads).
        Default: one by one."""
        return torch.stack([h.structure_outputs(charge, spin) for h in heads], dim=-1)


@register("head", "energy")
class EnergyHead(Head):
    """E_i = e_ref[Z_i] + scale · g_i · MLP(s_i), in eV, float64 (plus, per structure, the
    charge/spin state offset of ``state_offset``, which the model spreads over the atoms).

    Args:
        num_features: width of the backbone's scalar features.
        hidden: hidden width of the MLP (default num_features // 2).

    ``g_i`` is the isolation gate supplied by the model (→ 0 smoothly as an atom loses all
    neighbours), so an isolated atom gets exactly its reference energy.
    """

    kind = "energy"

    def __init__(self, num_features: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(num_features // 2, 1)
        self.hidden = hidden
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.register_buffer("element_energy", torch.zeros(MAX_Z + 1, dtype=torch.float64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))
        # e₊, e₋, e_u: energy per unit of positive charge, negative charge, unpaired electron
        self.register_buffer("state_energy", torch.zeros(3, dtype=torch.float64))

    def set_normalization(self, element_energy, scale: float, state_energy=None) -> None:
        """Store references (eV per atom of each element, index = Z), the scale (eV) and the
        charge/spin state energies (eV, see ``data.references``)."""
        ref = torch.as_tensor(element_energy, dtype=torch.float64)
        if ref.shape != self.element_energy.shape:
            raise ValueError(f"element_energy must have shape {tuple(self.element_energy.shape)}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.element_energy.copy_(ref)
        self.scale.fill_(float(scale))
        if state_energy is not None:
            self.state_energy.copy_(torch.as_tensor(state_energy, dtype=torch.float64))

    def state_offset(self, charge: torch.Tensor, spin: torch.Tensor) -> torch.Tensor:
        """(n_structs,) float64 eV: e₊ q⁺ + e₋ q⁻ + e_u u for each structure."""
        return _state_energies(self.state_energy.unsqueeze(-1), charge, spin)[:, 0]

    def structure_outputs(self, charge: torch.Tensor, spin: torch.Tensor) -> torch.Tensor:
        return self.state_offset(charge, spin).unsqueeze(-1)

    def atom_outputs(self, s: torch.Tensor, numbers: torch.Tensor,
                     gate: torch.Tensor) -> torch.Tensor:
        """(n, F), (n,), (n,) -> (n, 1) float64 per-atom energies in eV."""
        return self(s, numbers, gate).unsqueeze(-1)

    def forward(self, s: torch.Tensor, numbers: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """(n, F), (n,), (n,) -> (n,) float64 per-atom energies in eV."""
        learned = self.mlp(s).squeeze(-1) * gate
        return self.element_energy[numbers] + self.scale * learned.to(torch.float64)

    @classmethod
    def stacked(cls, heads: list[Head], s: torch.Tensor, numbers: torch.Tensor,
                gate: torch.Tensor) -> torch.Tensor:
        """All heads in one product: their first layers concatenated, (n, F) @ (F, H·hidden),
        their second layers as one batched dot product. (n, 1, H) float64 eV."""
        if (cls is not EnergyHead or len(heads) == 1  # a subclass may change the MLP
                or len({h.hidden for h in heads}) != 1):
            return super().stacked(heads, s, numbers, gate)
        n, H, hidden = s.shape[0], len(heads), heads[0].hidden
        w1 = torch.cat([h.mlp[0].weight for h in heads])  # (H·hidden, F)
        b1 = torch.cat([h.mlp[0].bias for h in heads])
        x = F.silu(F.linear(s, w1, b1)).view(n, H, hidden)
        w2 = torch.stack([h.mlp[2].weight.view(-1) for h in heads])  # (H, hidden)
        b2 = torch.cat([h.mlp[2].bias for h in heads])  # (H,)
        learned = ((x * w2).sum(-1) + b2) * gate.unsqueeze(-1)  # (n, H)
        refs = torch.stack([h.element_energy for h in heads], dim=-1)  # (Z, H) float64
        scales = torch.stack([h.scale for h in heads])  # (H,) float64
        out = torch.index_select(refs, 0, numbers) + scales * learned.to(torch.float64)
        return out.unsqueeze(1)

    @classmethod
    def stacked_structure_outputs(cls, heads: list[Head], charge: torch.Tensor,
                                  spin: torch.Tensor) -> torch.Tensor:
        """The heads' state offsets as one (S, 3) @ (3, H) product: (S, 1, H) float64 eV (per
        head, the few small ops cost more than the product when many heads read out small
        batches)."""
        if cls is not EnergyHead:  # a subclass may change its state offsets
            return super().stacked_structure_outputs(heads, charge, spin)
        weights = torch.stack([h.state_energy for h in heads], dim=-1)  # (3, H)
        return _state_energies(weights, charge, spin).unsqueeze(1)


def _state_energies(weights: torch.Tensor, charge: torch.Tensor,
                    spin: torch.Tensor) -> torch.Tensor:
    """(S, H) float64 eV: the state features (q⁺, q⁻, u) of each structure @ (3, H) energies."""
    feats = torch.stack(state_features(charge.to(torch.float64), spin.to(torch.float64)), -1)
    return feats @ weights


@register("head", "property")
class PropertyHead(Head):
    """A structure-level property from the backbone's scalar features:
    y = offset + scale · pool_i MLP(s_i), pooled by ``reduce`` over each structure's atoms.

    Regression (``task="regression"``): ``out_dim=1``, ``reduce="mean"`` (intensive, e.g. a
    HOMO-LUMO gap in eV) or ``"sum"`` (extensive); ``offset`` and ``scale`` are the training
    split's mean and standard deviation, so the MLP learns a standardised target. Binary
    classification (``task="classification"``): one output, the logit of class 1 (loss: binary
    cross-entropy); ``offset`` starts at the training split's log-odds.

    Args:
        num_features: width of the backbone's scalar features.
        hidden: hidden width of the MLP (default num_features // 2).
        out_dim: outputs per structure.
        reduce: "sum" or "mean" over atoms.
        task: "regression" or "classification" (binary: ``out_dim`` 1).
    """

    TASKS = ("regression", "classification")

    def __init__(self, num_features: int, hidden: int | None = None, out_dim: int = 1,
                 reduce: str = "mean", task: str = "regression") -> None:
        super().__init__()
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if task not in self.TASKS:
            raise ValueError(f"task must be one of {self.TASKS}, got {task!r}")
        if task == "classification" and out_dim != 1:
            raise ValueError("classification heads are binary: one logit (out_dim=1)")
        hidden = hidden or max(num_features // 2, 1)
        self.out_dim, self.reduce, self.task, self.hidden = int(out_dim), reduce, task, hidden
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.SiLU(),
                                 nn.Linear(hidden, out_dim))
        self.register_buffer("offset", torch.zeros(out_dim, dtype=torch.float64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))

    def set_normalization(self, offset: float, scale: float) -> None:
        """Store the output offset and scale (the property's unit)."""
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.offset.fill_(float(offset))
        self.scale.fill_(float(scale))

    def spec(self) -> dict:
        """What rebuilds this head (stored in the dataset's registry entry as ``head``)."""
        return {"type": "property", "task": self.task, "reduce": self.reduce,
                "out_dim": self.out_dim, "hidden": self.hidden}

    def structure_outputs(self, charge: torch.Tensor, spin: torch.Tensor) -> torch.Tensor:
        return self.offset.expand(charge.shape[0], self.out_dim)

    def atom_outputs(self, s: torch.Tensor, numbers: torch.Tensor,
                     gate: torch.Tensor) -> torch.Tensor:
        return self.scale * self.mlp(s).to(torch.float64)
