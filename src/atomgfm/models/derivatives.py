"""Energy model -> energy, forces and stress with one ``torch.autograd.grad`` call.

Stress uses a symmetric strain ε applied to positions and cell (R' = R(1+ε), cell' = cell(1+ε));
σ = (1/V) ∂E/∂ε at ε = 0, the ASE sign convention (eV/Å³). Forces are F = -∂E/∂R. The graph is
kept (``create_graph``) only when the derivatives themselves are trained on.

Whatever per-structure combination of heads the model gives (each structure's own head, or a
blend by router weights) is differentiated once. ``per_head=True`` adds every chosen head's own
energy and forces from one encode: a backward per head over the kept graph (or one call
vectorised over the heads, ``head_backward = "batched"``, the default on CUDA); the combination's
forces then follow by linearity.
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

    #: How ``per_head`` forces are differentiated: "batched" (one backward call, vectorised
    #: over heads by ``is_grads_batched``), "loop" (one backward per head over the kept graph),
    #: or "auto": batched on CUDA, loop on CPU. Measured (benchmarks/readout.py, RESULTS.md):
    #: on an H100 "batched" is 1.8-3.3x faster than "loop"; on 2 CPU cores "loop" wins, as
    #: vmap's per-head copies of the edge tensors leave the cache.
    head_backward: str = "auto"

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
            # Every head's own derivatives; the combination's follow by linearity, so no extra
            # backward: F = Σ_h w_h F_h per structure. Exact because the weights cannot depend on
            # the positions differentiated here (they come from outside, e.g. a composition
            # router); with create_graph they stay differentiable for training a router.
            mode = self.head_backward
            if mode not in ("auto", "batched", "loop"):
                raise ValueError(f"head_backward must be 'auto', 'batched' or 'loop', got "
                                 f"{mode!r}")
            w = out[K.HEAD_WEIGHTS]
            batched = mode == "batched" or (mode == "auto" and pos.is_cuda)
            rows = _batched_grad(out[K.HEAD_ENERGY].sum(0), inputs, create_graph,
                                 batched=batched)  # (H, *input) each
            out[K.HEAD_FORCES] = -rows[0].permute(1, 2, 0)
            w_atoms = torch.index_select(w, 0, batch[K.BATCH]).to(rows[0].dtype)  # (N, H)
            grads = [torch.einsum("hnc,nh->nc", rows[0], w_atoms)]
            if stress:
                grads.append(torch.einsum("hsab,sh->sab", rows[-1], w.to(rows[-1].dtype)))
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


def _batched_grad(totals: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool,
                  batched: bool = True) -> list[torch.Tensor]:
    """∂totals[k]/∂input for every k: one (K, *input.shape) tensor per input. ``batched``: one
    backward call vectorised over k; otherwise, or for ops without a batching rule (logged at
    debug), one backward per k over the retained graph."""
    grads = None
    if batched:
        eye = torch.eye(totals.shape[0], dtype=totals.dtype, device=totals.device)
        try:
            grads = torch.autograd.grad(totals, inputs, grad_outputs=eye,
                                        create_graph=create_graph, is_grads_batched=True,
                                        allow_unused=True)
        except (RuntimeError, NotImplementedError) as exc:
            log.debug("batched backward unavailable (%s); one backward per head", exc)
    if grads is None:
        last = totals.shape[0] - 1
        per_row = [torch.autograd.grad(t, inputs, retain_graph=create_graph or k < last,
                                       create_graph=create_graph, allow_unused=True)
                   for k, t in enumerate(totals)]
        grads = [None if rows[0] is None else torch.stack(rows)
                 for rows in zip(*per_row, strict=True)]
    return [torch.zeros((totals.shape[0], *x.shape), dtype=x.dtype, device=x.device)
            if g is None else g for g, x in zip(grads, inputs, strict=True)]
