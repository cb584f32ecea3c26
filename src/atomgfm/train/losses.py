"""Masked multi-task loss: presence masks and per-dataset weights multiply, never index.

Every term is in the dataset's normalised units (divided by its scale), so datasets with
different energy scales (EMT vs DFT) weigh in comparably:
  energy  ((E_pred - E) / N / scale)²                         per structure
  forces  (|F_pred - F|² / 3) / scale²                        per atom
  stress  ((σ_pred - σ) · V / N)² / 9 / scale²   (virial per atom)  per structure
  property  regression ((y_pred - y) / scale)², classification binary cross-entropy of the
            logit; weighted by the dataset's energy weight                per structure
"""

from __future__ import annotations

import torch

from atomgfm import keys as K
from atomgfm.registry import register


@register("loss", "mse")
def multitask_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                   scales: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Args:
        scales: (n_datasets,) float64 per-dataset scale in eV.
        weights: (n_datasets, 3) loss weights for energy, forces, stress.
    Returns the scalar loss and its parts (floats) for logging.
    """
    ds = batch[K.DATASET]
    n = batch[K.N_ATOMS].to(torch.float64)
    scale = scales[ds]  # (S,)
    w = weights[ds].to(torch.float64)  # (S, 3)
    parts = {}

    e_err = (out[K.ENERGY] - batch[K.ENERGY].to(torch.float64)) / n / scale
    has_e = batch[K.HAS_ENERGY].to(torch.float64)
    loss_e = (w[:, 0] * has_e * e_err**2).sum() / has_e.sum().clamp(min=1)
    parts["energy"] = loss_e
    loss = loss_e

    if K.FORCES in out:
        b = batch[K.BATCH]
        f_err = (out[K.FORCES] - batch[K.FORCES]).to(torch.float64) / scale[b, None]
        has_f = batch[K.HAS_FORCES][b].to(torch.float64)
        loss_f = (w[b, 1] * has_f * (f_err**2).sum(-1)).sum() / (3 * has_f.sum()).clamp(min=1)
        parts["forces"] = loss_f
        loss = loss + loss_f

    if K.STRESS in out:
        volume = torch.linalg.det(batch[K.CELL].to(torch.float64)).abs()
        s_err = (out[K.STRESS] - batch[K.STRESS]).to(torch.float64)
        s_err = s_err * (volume / n / scale)[:, None, None]
        has_s = batch[K.HAS_STRESS].to(torch.float64)
        loss_s = (w[:, 2] * has_s * (s_err**2).sum((1, 2))).sum() / (9 * has_s.sum()).clamp(min=1)
        parts["stress"] = loss_s
        loss = loss + loss_s

    if K.PROPERTY_OUTPUT in out and K.HAS_PROPERTY in batch:
        pred, y = out[K.PROPERTY_OUTPUT], batch[K.PROPERTY].to(torch.float64)
        has_p = batch[K.HAS_PROPERTY].to(torch.float64)
        regression = ((pred - y) / scale) ** 2
        classification = torch.nn.functional.binary_cross_entropy_with_logits(
            pred, y.clamp(0, 1), reduction="none")
        term = torch.where(out[K.PROPERTY_TASK] == 2, classification, regression)
        loss_p = (w[:, 0] * has_p * term).sum() / has_p.sum().clamp(min=1)
        parts["property"] = loss_p
        loss = loss + loss_p
    return loss, {k: float(v.detach()) for k, v in parts.items()}
