"""Energy model -> energy, forces and stress with one ``torch.autograd.grad`` call.

Stress uses a symmetric strain ε applied to positions and cell (R' = R(1+ε), cell' = cell(1+ε));
σ = (1/V) ∂E/∂ε at ε = 0, the ASE sign convention (eV/Å³). Forces are F = -∂E/∂R. The graph is
kept (``create_graph``) only when the derivatives themselves are trained on.
"""

from __future__ import annotations

import torch
from torch import nn

from atomgfm import keys as K


class ForceField(nn.Module):
    """Wraps an energy model (batch -> {ENERGY, ...}) and adds exact forces and stress.

    Args:
        model: an energy model, e.g. ``MultiTaskModel``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], forces: bool = True, stress: bool = False,
                create_graph: bool | None = None) -> dict[str, torch.Tensor]:
        """Returns ENERGY (n_structs,) eV float64, ATOM_ENERGY, and if asked FORCES (n_atoms, 3)
        eV/Å and STRESS (n_structs, 3, 3) eV/Å³ (zero for structures not periodic in 3D)."""
        if create_graph is None:
            create_graph = self.training
        with torch.enable_grad():
            return self._forward(dict(batch), forces, stress, create_graph)

    def _forward(self, batch, forces, stress, create_graph):
        inputs = []
        if forces or stress:
            pos = batch[K.POSITIONS].detach().requires_grad_(True)
            inputs.append(pos)
            batch[K.POSITIONS] = pos
        if stress:
            n_structs = batch[K.N_ATOMS].shape[0]
            strain = torch.zeros((n_structs, 3, 3), dtype=pos.dtype, device=pos.device,
                                 requires_grad=True)
            inputs.append(strain)
            # The strain acts in the geometry's precision even under bf16 autocast.
            with torch.autocast(device_type=pos.device.type, enabled=False):
                sym = 0.5 * (strain + strain.transpose(1, 2))
                batch[K.POSITIONS] = pos + torch.einsum("ni,nij->nj", pos, sym[batch[K.BATCH]])
                batch[K.CELL] = batch[K.CELL] + torch.bmm(batch[K.CELL].to(pos.dtype), sym)
        out = dict(self.model(batch))
        if not inputs:
            return out
        grads = torch.autograd.grad(out[K.ENERGY].sum(), inputs, create_graph=create_graph,
                                    allow_unused=True)
        if forces:
            g = grads[0]
            out[K.FORCES] = -g if g is not None else torch.zeros_like(pos)
        if stress:
            g = grads[-1] if grads[-1] is not None else torch.zeros_like(strain)
            cell = batch[K.CELL].detach()
            volume = torch.linalg.det(cell).abs()
            periodic = batch[K.PBC].all(dim=1)
            safe = torch.where(periodic, volume, torch.ones_like(volume))
            out[K.STRESS] = g / safe[:, None, None] * periodic[:, None, None].to(g.dtype)
        return out
