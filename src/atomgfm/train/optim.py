"""Optimiser and learning-rate schedule: AdamW, linear warm-up, cosine decay."""

from __future__ import annotations

import math

import torch

from atomgfm.config.schema import TrainConfig


class WarmupCosine:
    """lr factor: linear 0→1 over ``warmup`` steps, then cosine 1→``floor`` at ``total``."""

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = max(warmup, 0), max(total, 1), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))


class BackboneWarmup(WarmupCosine):
    """lr factor of the backbone's groups when fine-tuning: the schedule times a linear ramp
    0→1 over ``ramp`` steps (the new heads adapt before the backbone moves much). Plain
    numbers only, so the scheduler's state stays checkpoint data."""

    def __init__(self, warmup: int, total: int, floor: float, ramp: int) -> None:
        super().__init__(warmup, total, floor)
        self.ramp = max(ramp, 0)

    def __call__(self, step: int) -> float:
        ramp = min((step + 1) / self.ramp, 1.0) if self.ramp else 1.0
        return ramp * super().__call__(step)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, finetune=None):
    """AdamW over the parameters that require gradients (frozen ones are left out) and its
    warm-up + cosine schedule. With a ``finetune`` section (regime ``full``), the pretrained
    parameters get their own groups: lr × ``backbone_lr_multiplier``, ramped in over
    ``backbone_warmup_steps``. They are the backbone's and those of the heads the model lists
    in ``pretrained_heads`` (replayed pretraining heads: a fresh optimiser at the new heads' lr
    would move a converged head by ~lr per step)."""
    split = (finetune is not None and finetune.regime == "full"
             and (finetune.backbone_lr_multiplier != 1.0 or finetune.backbone_warmup_steps > 0))
    groups: dict[tuple[bool, bool], list] = {}
    slow = ("backbone.", *(f"heads.{h}." for h in getattr(model, "pretrained_heads", ())))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        backbone = split and any(f".{prefix}" in f".{name}" for prefix in slow)
        no_decay = p.ndim < 2 or "embedding" in name
        groups.setdefault((backbone, no_decay), []).append(p)
    param_groups, lambdas = [], []
    args = (cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    for (backbone, no_decay), params in sorted(groups.items()):
        lr = cfg.lr * (finetune.backbone_lr_multiplier if backbone else 1.0)
        param_groups.append({"params": params, "lr": lr,
                             "weight_decay": 0.0 if no_decay else cfg.weight_decay})
        lambdas.append(BackboneWarmup(*args, finetune.backbone_warmup_steps) if backbone
                       else WarmupCosine(*args))
    if not param_groups:
        raise ValueError("no trainable parameters (every parameter has requires_grad=False)")
    # The fused kernel (CPU and CUDA): one call per step instead of ~10 small ops per parameter;
    # same update. On 2 CPU cores it took 0.7 ms for PaiNN 128x3, the per-parameter loop 2-8 ms.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for group in param_groups for p in group["params"])
    opt = torch.optim.AdamW(param_groups, lr=cfg.lr, fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
    return opt, sched
