"""Build a force field from a model config, the dataset table and the training statistics.

    settings = backbone_settings(cfg.model)          # typed, preset applied; errors name the key
    ff = build_model(cfg.model, data.table, data.stats, seed=0)

The builder is the registry entry: the backbone class named in the config declares its
``Settings`` (defaults and search ranges) and ``presets``; the builder passes it the training
elements and graph statistics, and gives each dataset's head its references and scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from atomgfm.data.stats import GraphStats
from atomgfm.models.derivatives import ForceField
from atomgfm.models.multitask import MultiTaskModel
from atomgfm.registry import get


def _model_dict(model_cfg) -> dict[str, Any]:
    return dict(model_cfg) if isinstance(model_cfg, dict) else dataclasses.asdict(model_cfg)


def backbone_settings(model_cfg, where: str = "config.model"):
    """The backbone's typed ``Settings``: class defaults, then the preset (S/M/L), then
    ``backbone_kwargs``. Unknown keys and wrong types are errors naming the key."""
    from atomgfm.config.schema import ConfigError, _build

    cfg = _model_dict(model_cfg)
    name = cfg.get("backbone", "painn")
    cls = get("backbone", name)
    raw: dict[str, Any] = {}
    preset = cfg.get("preset")
    if preset is not None:
        if preset not in cls.presets:
            raise ConfigError(f"{where}.preset: {preset!r} is not a preset of backbone {name!r}; "
                              f"choose from {sorted(cls.presets)}")
        raw.update(cls.presets[preset])
    raw.update(cfg.get("backbone_kwargs") or {})
    return _build(cls.Settings, raw, f"{where}.backbone_kwargs")


def build_model(model_cfg, datasets: list[dict] | list[str], stats: GraphStats | None = None,
                seed: int | None = None) -> ForceField:
    """A force field with one head per dataset.

    Args:
        model_cfg: ``ModelConfig`` or its dict: backbone, preset, backbone_kwargs, head,
            head_hidden.
        datasets: the dataset table (registry entries with name, id, normalization) in id
            order, or just names (heads then keep zero references and unit scale).
        stats: training-graph statistics passed to the backbone (with the training elements).
        seed: when given, parameters are initialised from this seed without touching the global
            RNG state.
    """
    cfg = _model_dict(model_cfg)
    entries = [d if isinstance(d, dict) else {"name": d} for d in datasets]
    if any("id" in d for d in entries):
        ids = [d.get("id") for d in entries]
        if ids != list(range(len(entries))):
            raise ValueError(f"dataset table must be in id order 0..n-1, got ids {ids}")
    names = [d["name"] for d in entries]
    settings = backbone_settings(cfg)
    if seed is None:
        return _build(cfg, settings, entries, names, stats)
    # Parameters are created on the CPU: seed only the CPU generator (torch.manual_seed would
    # also reseed every CUDA device's), and restore it afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return _build(cfg, settings, entries, names, stats)


def _build(cfg, settings, entries, names, stats) -> ForceField:
    backbone_cls = get("backbone", cfg.get("backbone", "painn"))
    elements = stats.elements if stats is not None else None
    try:
        backbone = backbone_cls(**dataclasses.asdict(settings), elements=elements, stats=stats)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad settings for backbone {cfg.get('backbone')!r}: {exc}") from None
    head_cls = get("head", cfg.get("head", "energy"))
    if head_cls.kind != "energy":
        raise ValueError(f"model.head {cfg.get('head')!r} is not an energy head: each dataset's "
                         "head gives its energy (structure-level property heads are added "
                         "beside them, e.g. when fine-tuning)")
    model = ForceField(MultiTaskModel(backbone, names, cfg.get("head_hidden"), head_cls))
    for d in entries:
        spec = d.get("head")
        if spec is not None:  # a structure-level property head (fine-tuning), see heads.py
            spec = dict(spec)
            cls = get("head", spec.pop("type"))
            offset, scale = spec.pop("offset", 0.0), spec.pop("scale", 1.0)
            head = cls(backbone.num_scalar_features, **spec)
            head.set_normalization(offset, scale)
            model.heads[d["name"]] = head
            continue
        norm = d.get("normalization")
        if norm is not None:
            model.heads[d["name"]].set_normalization(
                np.asarray(norm["element_energy"]), norm["scale"], norm.get("state_energy"))
    return model
