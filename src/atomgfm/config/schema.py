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
    format: str | None = None  # a reader's format (ani1x, spice, mptrj, ASE's...); None = by suffix
    energy_unit: str = "eV"
    length_unit: str = "Å"
    # The reader's own settings, e.g. {energy_key: ccsd(t)_cbs.energy} for ANI-1x or
    # {split: test} for Transition1x (docs/data.md lists each reader's); unknown ones are errors.
    reader_options: dict[str, Any] = field(default_factory=dict)
    # Loss weights of this dataset's task. Terms are in normalised units (docs/training.md), so
    # equal energy and force weights make both count.
    energy_weight: float = 10.0
    forces_weight: float = 10.0
    stress_weight: float = 1.0
    # What this dataset's head learns: "energy" (energy/forces/stress labels) or a structure-level
    # property read from each record's extxyz info key ``property_key``: "regression" (a scalar,
    # pooled by ``property_reduce`` mean|sum) or "classification" (binary, labels 0/1).
    # Property tasks are trained by fine-tuning (docs/finetune.md); energy_weight weighs them.
    task: str = "energy"
    property_key: str | None = None
    property_reduce: str = "mean"


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
    max_edges_per_batch: int | None = None  # also close a batch at this many edges (manifest)
    on_error: str = "raise"  # raise | skip (skips are counted and reported)
    # A preprocessed store (`atomgfm data preprocess`; relative to root) to stream from instead
    # of reading the files; `datasets`, when given, selects and reweights the store's datasets.
    store: str | None = None
    stage_dir: str | None = None  # copy the store's shards here first (node-local disk), verified
    verify_store: bool = True  # check every shard's hash before training (refuse a bad shard)
    loader_workers: int = 0  # DataLoader worker processes building batches (0: in the loop)
    prefetch: int = 2  # batches each loader worker prepares ahead


@dataclass
class ModelConfig:
    backbone: str = "painn"
    preset: str | None = None  # the backbone's S | M | L settings; backbone_kwargs override them
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
    tf32: bool = False  # fp32 matrix products in TF32 on CUDA (Ampere and newer); no effect on CPU
    grad_sync: str = "ddp"  # ddp | flat: how gradients are averaged over data-parallel ranks
    eval_every: int = 200
    log_every: int = 20
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True


@dataclass
class FinetuneConfig:
    """``atomgfm finetune``: start from a pretrained checkpoint (docs/finetune.md)."""

    checkpoint: str | None = None  # relative paths are resolved against the config's folder
    regime: str = "full"  # scratch | frozen | full
    backbone_lr_multiplier: float = 1.0  # full: backbone lr = train.lr × this
    backbone_warmup_steps: int = 0  # full: backbone lr ramps 0 → its value over these steps
    replay: float = 0.0  # share of draws from the pretraining datasets (their heads keep training)
    head_init: str | dict[str, str] = "auto"  # auto | <head name> | none, or {dataset: choice}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

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
    if cfg.train.grad_sync not in ("ddp", "flat"):
        raise ConfigError(f"config.train.grad_sync: {cfg.train.grad_sync!r} is not ddp|flat")
    if cfg.data.on_error not in ("raise", "skip"):
        raise ConfigError(f"config.data.on_error: {cfg.data.on_error!r} is not raise|skip")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError("config.data.val_fraction must be in (0, 1)")
    if cfg.data.loader_workers < 0 or cfg.data.prefetch < 1:
        raise ConfigError("config.data.loader_workers must be >= 0 and config.data.prefetch >= 1")
    for i, d in enumerate(cfg.data.datasets):
        where = f"config.data.datasets[{i}] ({d.name})"
        if d.task not in ("energy", "regression", "classification"):
            raise ConfigError(f"{where}.task: {d.task!r} is not energy|regression|classification")
        if d.task != "energy" and not d.property_key:
            raise ConfigError(f"{where}: task {d.task!r} needs property_key (the info key)")
        if d.property_reduce not in ("mean", "sum"):
            raise ConfigError(f"{where}.property_reduce: {d.property_reduce!r} is not mean|sum")
    ft = cfg.finetune
    if ft.regime not in ("scratch", "frozen", "full"):
        raise ConfigError(f"config.finetune.regime: {ft.regime!r} is not scratch|frozen|full")
    if not 0.0 <= ft.replay < 1.0:
        raise ConfigError(f"config.finetune.replay: {ft.replay} is not in [0, 1)")
    if not ft.backbone_lr_multiplier > 0:
        raise ConfigError("config.finetune.backbone_lr_multiplier must be positive")
    if ft.backbone_warmup_steps < 0:
        raise ConfigError("config.finetune.backbone_warmup_steps must be >= 0")
    if not isinstance(ft.head_init, str | dict):
        raise ConfigError(f"config.finetune.head_init: expected a string or a mapping, got "
                          f"{ft.head_init!r}")
    from atomgfm.models.build import backbone_settings

    try:  # the backbone's typed settings: a wrong or unknown key is named now, not at build
        backbone_settings(cfg.model)
    except KeyError as exc:
        raise ConfigError(f"config.model.backbone: {exc.args[0]}") from None
    return cfg


# ---- YAML files: a config is plain data (safe loader, no object tags); every problem in a
# file is one line naming the file and, where YAML knows it, the line.

_STANDARD_TAG = "tag:yaml.org,2002:"


def _yaml_error(path: Path, exc: yaml.YAMLError, text: str) -> ConfigError:
    """``FILE: line N: problem`` (1-based) for a YAML syntax error or a refused tag."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        problem = f"{exc.reason} (character {char!r})"
    elif isinstance(exc, yaml.constructor.ConstructorError) and problem and "tag '" in problem:
        tag = problem.split("tag '", 1)[1].rsplit("'", 1)[0]
        if tag.startswith(_STANDARD_TAG):
            tag = "!!" + tag[len(_STANDARD_TAG):]
        problem = (f"tag {tag} is not allowed: a config is plain YAML data (mappings, lists, "
                   "strings, numbers, booleans, null), never Python objects")
    else:
        problem = f"YAML syntax error: {problem or str(exc).splitlines()[0]}"
        ctx, ctx_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if ctx and ctx_mark is not None and ctx_mark.line + 1 != line:
            problem += f" ({ctx} that starts on line {ctx_mark.line + 1})"
        elif ctx:
            problem += f" ({ctx})"
    where = f"line {line}: " if line is not None else ""
    return ConfigError(f"{path}: {where}{problem}")


def _check_keys(node: Any, where: str) -> None:
    """Every mapping key is a string (``1: x`` or ``null: x`` is a typo, not a setting)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: key {k!r} is not a string")
            _check_keys(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_keys(v, f"{where}[{i}]")


def read_yaml(path: str | Path) -> Any:
    """The plain data in a YAML file (``yaml.safe_load``); any problem is a one-line
    :class:`ConfigError` naming the file (and line), never a YAML traceback."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (invalid UTF-8 at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc, text) from None


def load_config(path: str | Path) -> Config:
    """Read a YAML config; ``data.root`` defaults to the config file's folder.

    Raises FileNotFoundError for a missing file and :class:`ConfigError` (a ValueError) with a
    one-line message naming the file for everything else: YAML syntax (``FILE: line N: ...``),
    Python object tags, a top level that is not a mapping, unknown keys, wrong types.
    """
    path = Path(path)
    raw = read_yaml(path)
    if raw is None:  # an empty file: all defaults
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        _check_keys(raw, "config")
        data = raw.setdefault("data", {})
        # relative roots are relative to the config file's folder
        if isinstance(data, dict) and isinstance(data.get("root", "."), str):
            root = Path(data.get("root", "."))
            data["root"] = str(root if root.is_absolute() else (path.parent / root).resolve())
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
