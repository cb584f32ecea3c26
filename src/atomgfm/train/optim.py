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


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
    return opt, sched
