"""Typed configuration sections loaded from YAML. Unknown keys are errors, never ignored."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or section is invalid; the message names the key."""


@dataclass
class DatasetConfig:
    name: str
    path: str | list[str]  # file(s); relative paths are resolved against data.root
    level_of_theory: str = ""
    format: str | None = None  # ASE format name; None = guess from the suffix
    energy_unit: str = "eV"
    length_unit: str = "Å"
    # Loss weights of this dataset's task. Terms are in normalised units (docs/training.md), so
    # equal energy and force weights make both count.
    energy_weight: float = 10.0
    forces_weight: float = 10.0
    stress_weight: float = 1.0


@dataclass
class DataConfig:
    datasets: list[DatasetConfig] = field(default_factory=list)
    root: str = "."
    val_fraction: float = 0.1
    split_seed: int = 0
    mixing: str = "temperature"  # proportional | balanced | temperature | explicit
    temperature: float = 2.0
    ratios: dict[str, float] | None = None
    max_atoms_per_batch: int = 512
    max_structures_per_batch: int = 64
    on_error: str = "raise"  # raise | skip (skips are counted and reported)


@dataclass
class ModelConfig:
    backbone: str = "painn"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head: str = "energy"  # registered head type, one instance per dataset
    head_hidden: int | None = None


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    max_steps: int = 1000
    lr: float = 2e-3
    min_lr_ratio: float = 0.02  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    ema_decay: float | None = 0.99
    precision: str = "fp32"  # fp64 | fp32 | bf16
    eval_every: int = 200
    log_every: int = 20
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a scalar against its type hint; YAML's '1e-3' (a string) becomes 0.001."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return value  # e.g. str | list[str]: checked where used
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    origin = typing.get_origin(hint)
    if origin in (dict, list) and not isinstance(value, origin):
        raise ConfigError(f"{where}: expected a {origin.__name__}, got {value!r}")
    return value


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{where}.{name}")
        elif name == "datasets":
            if not isinstance(value, list):
                raise ConfigError(f"{where}.datasets: expected a list")
            value = [_build(DatasetConfig, v, f"{where}.datasets[{i}]")
                     for i, v in enumerate(value)]
        else:
            value = _coerce(value, hint, f"{where}.{name}")
        kwargs[name] = value
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw, "config")
    names = [d.name for d in cfg.data.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"config.data.datasets: dataset names must be unique, got {names}")
    if cfg.train.precision not in ("fp64", "fp32", "bf16"):
        raise ConfigError(f"config.train.precision: {cfg.train.precision!r} is not fp64|fp32|bf16")
    if cfg.data.on_error not in ("raise", "skip"):
        raise ConfigError(f"config.data.on_error: {cfg.data.on_error!r} is not raise|skip")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError("config.data.val_fraction must be in (0, 1)")
    return cfg


def load_config(path: str | Path) -> Config:
    """Read a YAML config; ``data.root`` defaults to the config file's folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    data = raw.setdefault("data", {})
    if isinstance(data, dict):  # relative roots are relative to the config file's folder
        root = Path(data.get("root", "."))
        data["root"] = str(root if root.is_absolute() else (path.parent / root).resolve())
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
