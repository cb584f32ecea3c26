"""Energy model -> energy, forces and stress with one ``torch.autograd.grad`` call.

Stress uses a symmetric strain ε applied to positions and cell (R' = R(1+ε), cell' = cell(1+ε));
σ = (1/V) ∂E/∂ε at ε = 0, the ASE sign convention (eV/Å³). Forces are F = -∂E/∂R. The graph is
kept (``create_graph``) only when the derivatives themselves are trained on.

Whatever per-structure combination of heads the model gives (each structure's own head, or a
blend by router weights) is differentiated once. ``per_head=True`` adds every chosen head's own
energy and forces: one encode, and one batched backward (a vector-Jacobian product per head,
vectorised by ``is_grads_batched``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from atomgfm import keys as K

log = logging.getLogger(__name__)


class ForceField(nn.Module):
    """Wraps a :class:`~atomgfm.models.multitask.MultiTaskModel` and adds exact forces and
    stress. Exposes ``backbone``, ``heads``, ``cutoff``, ``dataset_names``, ``encode`` and
    ``readout`` of the model it wraps.

    Args:
        model: the multi-task energy model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    @property
    def heads(self) -> nn.ModuleDict:
        return self.model.heads

    @property
    def cutoff(self) -> float:
        return self.model.cutoff

    @property
    def dataset_names(self) -> list[str]:
        return self.model.dataset_names

    def encode(self, batch):
        return self.model.encode(batch)

    def readout(self, features, batch, heads=None):
        return self.model.readout(features, batch, heads)

    def forward(self, batch: dict[str, torch.Tensor], forces: bool = True, stress: bool = False,
                create_graph: bool | None = None, heads: list[str] | None = None,
                weights: torch.Tensor | None = None,
                per_head: bool = False) -> dict[str, torch.Tensor]:
        """Returns ENERGY (n_structs,) eV float64, ATOM_ENERGY, REFERENCE_ENERGY, and if asked
        FORCES (n_atoms, 3) eV/Å and STRESS (n_structs, 3, 3) eV/Å³ (zero for structures not
        periodic in 3D). ``heads``/``weights`` choose the combination (see
        ``MultiTaskModel.forward``); ``per_head`` adds HEAD_ENERGY (n_structs, n_heads) and, with
        ``forces``, HEAD_FORCES (n_atoms, 3, n_heads)."""
        if create_graph is None:
            create_graph = self.training
        with torch.enable_grad():
            return self._forward(dict(batch), forces, stress, create_graph, heads, weights,
                                 per_head)

    def _forward(self, batch, forces, stress, create_graph, heads, weights, per_head):
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
        out = dict(self.model(batch, heads=heads, weights=weights, per_head=per_head))
        if not inputs:
            return out
        if per_head and forces:
            # Row 0: the combined energy; rows 1..H: each head. One batched backward for all.
            totals = torch.cat([out[K.ENERGY].sum().unsqueeze(0), out[K.HEAD_ENERGY].sum(0)])
            rows = _batched_grad(totals, inputs, create_graph)
            out[K.HEAD_FORCES] = -rows[0][1:].permute(1, 2, 0)
            grads = [r[0] for r in rows]
        else:
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


def _batched_grad(totals: torch.Tensor, inputs: list[torch.Tensor],
                  create_graph: bool) -> list[torch.Tensor]:
    """∂totals[k]/∂input for every k, as one batched backward: one (K, *input.shape) tensor per
    input. Ops without a batching rule fall back to one backward per row (logged at debug)."""
    eye = torch.eye(totals.shape[0], dtype=totals.dtype, device=totals.device)
    try:
        grads = torch.autograd.grad(totals, inputs, grad_outputs=eye, create_graph=create_graph,
                                    is_grads_batched=True, allow_unused=True)
    except (RuntimeError, NotImplementedError) as exc:
        log.debug("batched backward unavailable (%s); one backward per head", exc)
        per_row = [torch.autograd.grad(t, inputs, retain_graph=True, create_graph=create_graph,
                                       allow_unused=True) for t in totals]
        grads = [None if rows[0] is None else torch.stack(rows)
                 for rows in zip(*per_row, strict=True)]
    return [torch.zeros((totals.shape[0], *x.shape), dtype=x.dtype, device=x.device)
            if g is None else g for g, x in zip(grads, inputs, strict=True)]
