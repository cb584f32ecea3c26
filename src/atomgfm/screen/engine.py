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
"""

from __future__ import annotations

import torch

from atomgfm import keys as K


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
