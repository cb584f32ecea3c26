"""Per-dataset energy heads: scalar node features -> per-atom energies in the dataset's reference.

A head owns its dataset's normalisation (SchNetPack's RemoveOffsets/AddOffsets idea): the element
reference energies (float64, fitted on the training split) and the scale. Training targets are
never shifted; the model adds back exactly what the fit removed, from the same stored numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from atomgfm.data.references import state_features
from atomgfm.data.structure import MAX_Z
from atomgfm.registry import register


@register("head", "energy")
class EnergyHead(nn.Module):
    """E_i = e_ref[Z_i] + scale · g_i · MLP(s_i), in eV, float64 (plus, per structure, the
    charge/spin state offset of ``state_offset``, which the model spreads over the atoms).

    Args:
        num_features: width of the backbone's scalar features.
        hidden: hidden width of the MLP (default num_features // 2).

    ``g_i`` is the isolation gate supplied by the model (→ 0 smoothly as an atom loses all
    neighbours), so an isolated atom gets exactly its reference energy.
    """

    def __init__(self, num_features: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(num_features // 2, 1)
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.register_buffer("element_energy", torch.zeros(MAX_Z + 1, dtype=torch.float64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))
        # e₊, e₋, e_u: energy per unit of positive charge, negative charge, unpaired electron
        self.register_buffer("state_energy", torch.zeros(3, dtype=torch.float64))

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) would cast the references to float32 and lose meV on totals of
        # 1e4 eV: they follow the device but stay float64.
        keep = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, old in keep.items():
            self._buffers[name] = old.to(device=self._buffers[name].device, dtype=torch.float64)
        return self

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
        feats = torch.stack(state_features(charge.to(torch.float64), spin.to(torch.float64)), -1)
        return feats @ self.state_energy

    def forward(self, s: torch.Tensor, numbers: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """(n, F), (n,), (n,) -> (n,) float64 per-atom energies in eV."""
        learned = self.mlp(s).squeeze(-1) * gate
        return self.element_energy[numbers] + self.scale * learned.to(torch.float64)
