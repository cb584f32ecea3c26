"""Build a force field from a model config and a dataset registry."""

from __future__ import annotations

from typing import Any

from atomgfm.models.derivatives import ForceField
from atomgfm.models.multitask import MultiTaskModel
from atomgfm.registry import get


def build_model(model_cfg: dict[str, Any], datasets: list[str]) -> ForceField:
    """``model_cfg`` = {"backbone": name, "backbone_kwargs": {...}, "head": name,
    "head_hidden": int|None}; names are looked up in the registry."""
    cfg = dict(model_cfg)
    backbone_cls = get("backbone", cfg.get("backbone", "painn"))
    try:
        backbone = backbone_cls(**cfg.get("backbone_kwargs", {}))
    except TypeError as exc:
        raise ValueError(f"bad settings for backbone {cfg.get('backbone')!r}: {exc}") from None
    head_cls = get("head", cfg.get("head", "energy"))
    return ForceField(MultiTaskModel(backbone, datasets, cfg.get("head_hidden"), head_cls))
