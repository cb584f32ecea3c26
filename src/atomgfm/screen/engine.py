"""The screening step on one batch: encode once, all kept heads as one stacked product, blend by
router weight, one backward of the blend for the forces.

    out = blend(ff, batch, weights, heads, threshold=0.01, forces=True)

Skipping: a head whose weight for a structure is below ``threshold`` gets weight 0 there and the
kept weights are renormalised to sum to 1; a head below the threshold for every structure of
the batch is not read out at all. With kept weights w' and skipped weights s = Σ_skipped w,
the blend E' = Σ_kept w' E_h differs from the full blend E = Σ w E_h by exactly
Σ_skipped w_h (E_h - E') (so |E - E'| ≤ Σ_skipped w_h |E_h - E'|): the skipped heads' own
contribution measured against what was kept. Forces are -∂E'/∂R from one backward; the weights
depend on composition only, never on positions, so this equals Σ_kept w' F_h exactly.

Inference copy (:func:`screening_model`): the screener works on a copy of the force field with
its weights frozen (``requires_grad`` False: the backward then computes the position gradient
only, and nothing is kept for weight gradients), optionally with the backbone compiled by
``torch.compile(dynamic=True)`` (inductor; C++/OpenMP kernels on CPU). Compiling fuses PaiNN's
edge-wise products, gathers and scatters, forward and backward, which dominate its eager time;
one dynamic-shape graph serves every batch size (no recompiles per shape). Measured in
benchmarks/screening.py (rows ``blend/compiled``) and benchmarks/RESULTS.md.
"""

from __future__ import annotations

import copy
import logging

import torch

from atomgfm import keys as K

log = logging.getLogger(__name__)


def screening_model(ff, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None, compile: bool = False,
                    cuda_graphs: bool = False):
    """A copy of ``ff`` for screening: moved to ``device``/``dtype``, eval mode, weights frozen,
    and the backbone optionally compiled (:func:`compile_backbone`). ``ff`` is left unchanged."""
    ff = copy.deepcopy(ff).to(device=device, dtype=dtype).eval()
    ff.requires_grad_(False)
    if compile:
        compile_backbone(ff, cuda_graphs)
    return ff


def compile_backbone(ff, cuda_graphs: bool = False):
    """Compile ``ff``'s backbone in place with ``torch.compile(dynamic=True)``; returns ``ff``.

    The first batch pays the compilation (about 30 s for PaiNN 128x3 on one CPU core, fewer
    with inductor's cache warm from an earlier run); later batches of any size reuse it, and
    the weights and state_dict keys are unchanged. ``cuda_graphs``: also replay CUDA graphs
    (``mode="reduce-overhead"``), CUDA only; not measured yet (no GPU was available)."""
    if cuda_graphs:
        device = next(ff.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA model, this one is on {device}")
    ff.model.backbone.compile(dynamic=True, mode="reduce-overhead" if cuda_graphs else None)
    log.info("backbone compiled (torch.compile dynamic=True%s); the first batch compiles it",
             ", CUDA graphs" if cuda_graphs else "")
    return ff


def kept_weights(weights: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, H) weights -> (renormalised kept weights (S, H) float64, kept mask (S, H) bool).

    A structure whose weights are all below the threshold keeps its largest head."""
    w = weights.to(torch.float64)
    keep = w >= threshold
    top = torch.nn.functional.one_hot(w.argmax(-1), w.shape[-1]).bool()
    keep = keep | (top & ~keep.any(-1, keepdim=True))
    kept = torch.where(keep, w, torch.zeros_like(w))
    total = kept.sum(-1, keepdim=True)
    return kept / torch.where(total > 0, total, torch.ones_like(total)), keep


def blend(ff, batch: dict[str, torch.Tensor], weights: torch.Tensor, heads: list[str],
          threshold: float = 0.0, forces: bool = False,
          reference: bool = True) -> dict[str, torch.Tensor]:
    """Screen one collated batch.

    Args:
        ff: a ``ForceField`` (its ``model``'s weighted forward and ``reference`` are used).
        weights: (n_structs, len(heads)) router weights (rows need not be normalised; zeros mean
            "never this head", e.g. for elements outside a head's training set).
        heads: head names, the columns of ``weights``.
        threshold: weights below it are skipped (see the module docstring).
        forces: also FORCES (n_atoms, 3) eV/Å of the blend, from one backward.
        reference: also the heads' reference energies (element + charge/spin fits), for
            energies relative to each head's references.

    Returns ENERGY (S,) float64 eV (the kept blend), HEAD_ENERGY (S, H) float64 eV (NaN where a
    head was not read out for that structure's batch, i.e. skipped everywhere in it),
    HEAD_WEIGHTS (S, H) (the kept, renormalised weights), "kept" (S, H) bool, optionally FORCES
    and "head_reference" (S, H) float64 eV.
    """
    w, keep = kept_weights(weights, threshold)
    n_structs = batch[K.N_ATOMS].shape[0]
    cols = torch.nonzero(keep.any(0)).flatten().tolist()
    names = [heads[c] for c in cols]
    pos = batch[K.POSITIONS]
    with torch.set_grad_enabled(forces):
        if forces:
            pos = pos.detach().requires_grad_(True)
            batch = {**batch, K.POSITIONS: pos}
        # The model's own weighted forward: one encode, the kept heads as one stacked product.
        model_out = ff.model(batch, heads=names, weights=w[:, cols], per_head=True)
        energy, head_e = model_out[K.ENERGY], model_out[K.HEAD_ENERGY]
        out = {K.ENERGY: energy.detach()}
        if forces:
            (grad,) = torch.autograd.grad(energy.sum(), [pos])
            out[K.FORCES] = -grad
    full = torch.full((n_structs, len(heads)), float("nan"), dtype=torch.float64,
                      device=head_e.device)
    full[:, cols] = head_e.detach()
    out.update({K.HEAD_ENERGY: full, K.HEAD_WEIGHTS: w, "kept": keep})
    if reference:
        with torch.no_grad():
            ref = torch.full_like(full, float("nan"))
            ref[:, cols] = ff.model.reference(batch, names)
        out["head_reference"] = ref
    return out


def naive(ff, batch: dict[str, torch.Tensor], weights: torch.Tensor, heads: list[str],
          forces: bool = False) -> dict[str, torch.Tensor]:
    """The reference the screening step must equal: every head on its own (its own encoder pass
    and backward), then blended by the normalised weights. (S,) energy, (N, 3) forces."""
    w = weights.to(torch.float64)
    w = w / w.sum(-1, keepdim=True)
    energy, f = 0.0, 0.0
    ones = torch.ones((batch[K.N_ATOMS].shape[0], 1), dtype=torch.float64, device=w.device)
    for k, name in enumerate(heads):
        if forces:
            out = ff(batch, forces=True, heads=[name], weights=ones)
        else:
            with torch.no_grad():
                out = ff.model(batch, heads=[name], weights=ones)
        energy = energy + w[:, k] * out[K.ENERGY].detach()
        if forces:
            wa = torch.index_select(w[:, k], 0, batch[K.BATCH]).unsqueeze(-1)
            f = f + wa * out[K.FORCES].detach().to(torch.float64)
    res = {K.ENERGY: energy}
    if forces:
        res[K.FORCES] = f
    return res
