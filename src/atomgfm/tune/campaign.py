"""The campaign YAML: what to search, from which base run, under which budget.

    base: demo.yaml              # a run config (relative to this file); its data, heads, batches
    out_dir: ../runs/tune_demo   # CAMPAIGN_DIR (relative to this file)
    max_evals: 12                # trials in total, across restarts
    evaluators: 2                # trials at once (local processes)
    backbones: [painn, schnet]   # default: every registered backbone
    budget: {steps: 150, eval_every: 25}     # or {seconds: 60, eval_every: 25}
    data: {max_train_per_dataset: 80, max_val_per_dataset: 20}
    stopper: {kind: successive_halving, min_evals: 1, reduction_factor: 3}
    space: {lr: {range: [1.0e-3, 5.0e-3]}, painn.num_features: {range: [16, 64]}}

Unknown keys and wrong types are errors that name the file and the key (docs/tune.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomgfm.config.schema import Config, ConfigError, _build, load_config, read_yaml
from atomgfm.tune.space import SearchSpace, build_space

STOPPERS = ("successive_halving", "median", "none")
METHODS = ("process", "thread", "loky", "ray", "mpicomm")  # DeepHyper evaluators


@dataclass
class Budget:
    steps: int | None = None  # optimiser steps per trial
    seconds: float | None = None  # wall time per trial (checked at each evaluation)
    eval_every: int = 25  # steps between validations (each one is reported to the stopper)
    max_steps: int = 100000  # the step cap of a time-budgeted trial (its cosine schedule's length)
    # The weight EMA's horizon 1/(1 - ema_decay) is cut to at most this fraction of a
    # step budget: the demo's 0.995 (200 steps) would still be mostly the initial weights
    # after 150 steps. null keeps the base config's decay.
    ema_fraction: float | None = 0.1


@dataclass
class DataCaps:
    max_train_per_dataset: int | None = 200  # training structures per dataset (deterministic)
    max_val_per_dataset: int | None = 50  # validation structures per dataset
    seed: int = 0  # which structures the caps keep


@dataclass
class StopperConfig:
    kind: str = "successive_halving"  # successive_halving | median | none
    min_evals: int = 1  # evaluations before a trial may be stopped
    reduction_factor: float = 3.0  # successive halving keeps the best 1/reduction_factor
    min_competing: int = 2  # median: trials seen at a budget before comparing to them


@dataclass
class SearchConfig:
    initial_points: int = 4  # random configurations before the surrogate proposes
    base_point: bool = True  # the first trial of a new campaign is the base config itself
    surrogate: str = "ET"  # DeepHyper's surrogate model (ET: extra trees)
    acq_func: str = "UCBd"
    kappa: float = 1.96  # exploration weight of UCB
    # How the acquisition function is maximised: "sampling" (best of acq_points random
    # configurations: 0.3 s per result on 2 cores) or "mixedga" (a genetic algorithm: ~6 s)
    acq_optimizer: str = "sampling"
    acq_points: int = 2000


@dataclass
class Campaign:
    base: str
    out_dir: str
    max_evals: int = 10
    evaluators: int = 1
    method: str = "process"  # DeepHyper evaluator: process | thread | loky | ray | mpicomm
    threads: int | None = None  # torch threads per trial; default cores / evaluators
    seed: int = 0
    backbones: list[str] | None = None
    budget: Budget = field(default_factory=Budget)
    data: DataCaps = field(default_factory=DataCaps)
    stopper: StopperConfig = field(default_factory=StopperConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    space: dict[str, Any] = field(default_factory=dict)
    divergence: float = 1e3  # a validation loss this many times the first one is a divergence

    @property
    def threads_per_trial(self) -> int:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)  # the cores this process may use (affinity mask)
        return self.threads or max(1, cores // self.evaluators)

    @property
    def evals_per_trial(self) -> int | None:
        """Evaluations a full trial makes (the stopper's max budget); None under a time budget."""
        if self.budget.steps is None:
            return None
        return -(-self.budget.steps // self.budget.eval_every)

    def base_config(self) -> Config:
        return load_config(self.base)

    def space_for(self, base: Config) -> SearchSpace:
        return build_space(self.backbones, self.space,
                           temperature=base.data.mixing == "temperature")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def campaign_from_dict(raw: Any, where: str = "campaign") -> Campaign:
    """Validate a campaign mapping; paths are taken as given (see :func:`load_campaign`)."""
    c = _build(Campaign, raw, where)
    if c.backbones is not None and (not isinstance(c.backbones, list)
                                    or not all(isinstance(b, str) for b in c.backbones)):
        raise ConfigError(f"{where}.backbones: expected a list of backbone names")
    for name, lo in (("max_evals", 1), ("evaluators", 1)):
        if getattr(c, name) < lo:
            raise ConfigError(f"{where}.{name}: must be >= {lo}, got {getattr(c, name)}")
    if c.method not in METHODS:
        raise ConfigError(f"{where}.method: {c.method!r} is not one of {METHODS}")
    if c.threads is not None and c.threads < 1:
        raise ConfigError(f"{where}.threads: must be >= 1, got {c.threads}")
    b = c.budget
    if (b.steps is None) == (b.seconds is None):
        raise ConfigError(f"{where}.budget: give exactly one of steps or seconds per trial")
    if b.steps is not None and b.steps < 1 or b.seconds is not None and not b.seconds > 0:
        raise ConfigError(f"{where}.budget: steps and seconds must be positive")
    if b.ema_fraction is not None and not 0 < b.ema_fraction <= 1:
        raise ConfigError(f"{where}.budget.ema_fraction: must be in (0, 1] or null")
    if b.eval_every < 1:
        raise ConfigError(f"{where}.budget.eval_every: must be >= 1, got {b.eval_every}")
    for name in ("max_train_per_dataset", "max_val_per_dataset"):
        v = getattr(c.data, name)
        if v is not None and v < 1:
            raise ConfigError(f"{where}.data.{name}: must be >= 1 (or null: no cap), got {v}")
    if c.stopper.kind not in STOPPERS:
        raise ConfigError(f"{where}.stopper.kind: {c.stopper.kind!r} is not one of {STOPPERS}")
    if c.stopper.kind != "none" and b.steps is None:
        raise ConfigError(f"{where}.stopper: early stopping compares trials at equal steps and "
                          "needs budget.steps; with budget.seconds use stopper: {kind: none}")
    if c.stopper.reduction_factor <= 1 or c.stopper.min_evals < 1:
        raise ConfigError(f"{where}.stopper: reduction_factor must be > 1 and min_evals >= 1")
    if c.search.initial_points < 1 or c.search.acq_points < 1:
        raise ConfigError(f"{where}.search: initial_points and acq_points must be >= 1")
    if c.search.acq_optimizer not in ("sampling", "lbfgs", "ga", "mixedga"):
        raise ConfigError(f"{where}.search.acq_optimizer: {c.search.acq_optimizer!r} is not "
                          "sampling|lbfgs|ga|mixedga")
    if not c.divergence > 1:
        raise ConfigError(f"{where}.divergence: must be > 1, got {c.divergence}")
    build_space(c.backbones, c.space, where=f"{where}.space")  # names and ranges, checked now
    return c


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file; ``base`` and ``out_dir`` are resolved against the
    file's folder. Every problem is one :class:`ConfigError` line naming the file."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a campaign is a mapping (base, out_dir, max_evals, ...), got "
                          f"{type(raw).__name__}")
    try:
        c = campaign_from_dict(raw)
        base = Path(c.base)
        c.base = str(base if base.is_absolute() else (path.parent / base).resolve())
        out = Path(c.out_dir)
        c.out_dir = str(out if out.is_absolute() else (path.parent / out).resolve())
        if not Path(c.base).is_file():
            raise ConfigError(f"campaign.base: base run config {c.base} not found")
        base_cfg = c.base_config()
        c.space_for(base_cfg)  # temperature only with temperature mixing
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return c
