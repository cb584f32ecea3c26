"""One trial: the base run config + sampled hyperparameters, on capped data, under a budget.

    cfg = trial_config(base, params, campaign, out_dir)     # the run config the trial trains
    result = run_trial("0003", params, campaign, campaign_dir, report=...)

The data are read once per process (:func:`base_datasets`) and capped per dataset
(:func:`cap_datasets`, deterministic); the Trainer's temperature mixing then draws the minority
datasets more often than their share, as in a full run. After each evaluation the validation loss
goes to ``curve.jsonl`` and to ``report(eval_index, val_loss)``, which returns True to stop the
trial (DeepHyper's stopper). A trial that raises, diverges or runs out of memory is a failed
result with its reason, never an exception out of :func:`run_trial`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from atomgfm.config.schema import Config, ConfigError, config_from_dict
from atomgfm.tune.campaign import Campaign
from atomgfm.tune.records import TrialResult, trial_dir, write_params, write_result
from atomgfm.tune.space import split_params

log = logging.getLogger(__name__)

_DATASETS: dict[str, list] = {}  # base config path -> loaded datasets (one read per process)


def trial_config(base: Config, params: dict[str, Any], campaign: Campaign | None,
                 out_dir: str | Path) -> Config:
    """``base`` with the sampled ``params`` applied; with a ``campaign``, the trial budget
    (steps or a step cap for a time budget, eval_every; warm-up and the EMA horizon shortened
    to fit) replaces the base's schedule, and without one (promotion) the base config's own
    full budget is kept.

    Raises ConfigError for a setting its backbone rejects (type, unknown key).
    """
    raw = copy.deepcopy(base.to_dict())
    if params:
        family, kwargs, shared = split_params(params)
        model = raw["model"]
        same = model["backbone"] == family
        model["backbone"] = family
        if not same:  # another family: its own defaults, not the base family's preset/kwargs
            model["preset"], model["backbone_kwargs"] = None, {}
        model["backbone_kwargs"] = {**model["backbone_kwargs"], **kwargs}
        if "cutoff" in shared:
            model["backbone_kwargs"]["cutoff"] = float(shared["cutoff"])
        if "lr" in shared:
            raw["train"]["lr"] = float(shared["lr"])
        if "forces_weight" in shared:
            for d in raw["data"]["datasets"]:
                d["forces_weight"] = float(shared["forces_weight"])
        if "temperature" in shared:
            raw["data"]["temperature"] = float(shared["temperature"])
    tr = raw["train"]
    tr["out_dir"] = str(out_dir)
    if campaign is not None:
        b = campaign.budget
        tr["max_steps"] = int(b.steps if b.steps is not None else b.max_steps)
        tr["eval_every"] = int(b.eval_every)
        tr["log_every"] = int(min(tr["log_every"], b.eval_every))
        tr["warmup_steps"] = int(min(tr["warmup_steps"], max(tr["max_steps"] // 10, 1)))
        tr["progress"] = False
        if b.steps is not None and b.ema_fraction is not None and tr["ema_decay"]:
            horizon = max(b.ema_fraction * b.steps, 1.0)  # steps the EMA averages over
            tr["ema_decay"] = float(min(tr["ema_decay"], 1.0 - 1.0 / horizon))
    return config_from_dict(raw)


def base_params(base: Config, space) -> tuple[dict[str, Any] | None, str]:
    """The base config as a point of ``space`` (its family, settings, cutoff, lr, force weight
    and temperature), or ``(None, reason)`` when it lies outside the campaign's space."""
    from atomgfm.models.build import backbone_settings

    family = base.model.backbone
    values: dict[str, Any] = {"backbone": family, "lr": base.train.lr,
                              "temperature": base.data.temperature}
    settings = dataclasses.asdict(backbone_settings(base.model))
    values["cutoff"] = settings.pop("cutoff")
    values.update({f"{family}.{k}": v for k, v in settings.items()})
    weights = {d.forces_weight for d in base.data.datasets}
    if len(weights) == 1:
        values["forces_weight"] = weights.pop()
    return space.point(values)


def base_datasets(base: Config, key: str) -> list:
    """The base config's datasets, read once per process and kept under ``key``."""
    if key not in _DATASETS:
        from atomgfm.data.sources import load_datasets

        _DATASETS[key] = load_datasets(base.data)
    return _DATASETS[key]


def cap_datasets(datasets: list, cfg: Config, max_train: int | None, max_val: int | None,
                 seed: int = 0) -> list:
    """At most ``max_train``/``max_val`` records per dataset, the same ones in every trial
    (a permutation seeded by ``seed`` and the dataset's name), each dataset's config replaced
    by ``cfg``'s (its loss weights are trial settings). References stay the full training
    split's fit."""
    by_name = {d.name: d for d in cfg.data.datasets}
    out = []
    for d in datasets:
        rng = np.random.default_rng([seed, zlib.crc32(d.name.encode())])

        def keep(records, cap, rng=rng):
            if cap is None or len(records) <= cap:
                return list(records)
            idx = np.sort(rng.permutation(len(records))[:cap])
            return [records[i] for i in idx]

        out.append(dataclasses.replace(d, config=by_name[d.name], train=keep(d.train, max_train),
                                       val=keep(d.val, max_val)))
    return out


class _Budget:
    """The on_eval hook: writes the curve, reports to the stopper, enforces the budget and
    watches for divergence."""

    def __init__(self, directory: Path, campaign: Campaign, report, t0: float) -> None:
        self.path = directory / "curve.jsonl"
        self.path.write_text("")
        self.campaign, self.report, self.t0 = campaign, report, t0
        self.evals, self.first, self.best = 0, None, math.inf
        self.failure, self.stopped = "", False

    def __call__(self, step: int, score: float, metrics: dict) -> bool:
        self.evals += 1
        seconds = time.perf_counter() - self.t0
        with open(self.path, "a") as f:
            f.write(json.dumps({"eval": self.evals, "step": step, "seconds": round(seconds, 3),
                                "val_loss": score if math.isfinite(score) else str(score)})
                    + "\n")
        if not math.isfinite(score):
            self.failure = f"diverged: validation loss {score} at step {step}"
            return True
        self.first = score if self.first is None else self.first
        if score > self.campaign.divergence * self.first:
            self.failure = (f"diverged: validation loss {score:.4g} at step {step} is over "
                            f"{self.campaign.divergence:g}x the first ({self.first:.4g})")
            return True
        self.best = min(self.best, score)
        full = self.campaign.evals_per_trial
        if self.report is not None and self.report(self.evals, score):
            if full is None or self.evals < full:
                self.stopped = True
            return True
        b = self.campaign.budget
        return b.seconds is not None and seconds >= b.seconds


def _reason(exc: BaseException, building: bool) -> str:
    """``out of memory: ...``, ``invalid config: ...`` (raised while the config, data or model
    were being built) or ``error: ...`` (raised while training)."""
    import torch

    text = str(exc).lower()
    if isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
            isinstance(exc, RuntimeError)
            and ("can't allocate memory" in text or "out of memory" in text)):
        return f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    if building or isinstance(exc, ConfigError):
        return f"invalid config: {type(exc).__name__}: {msg}"
    return f"error: {type(exc).__name__}: {msg}"


def run_trial(trial_id: str, params: dict[str, Any], campaign: Campaign, campaign_dir: str | Path,
              report: Callable[[int, float], bool] | None = None,
              directory: Path | None = None) -> TrialResult:
    """Train one configuration under the campaign's budget and write its records.

    Args:
        trial_id: the trial's name (its folder under ``campaign_dir/trials``).
        params: sampled hyperparameters (:mod:`atomgfm.tune.space` names); ``{}`` trains the
            base config unchanged (the benchmark's reference).
        report: ``report(eval_index, val_loss) -> stop`` after each evaluation (the stopper).
        directory: where the records go (default ``campaign_dir/trials/<trial_id>``).
    """
    import torch

    from atomgfm.data.sources import prepare_data
    from atomgfm.models.build import backbone_settings, build_model
    from atomgfm.registry import get
    from atomgfm.train.loop import Trainer

    directory = Path(directory) if directory is not None else trial_dir(campaign_dir, trial_id)
    write_params(directory, trial_id, params)
    torch.set_num_threads(campaign.threads_per_trial)
    t0 = time.perf_counter()
    hook, building = None, True
    result = TrialResult(trial_id, params, "failed")
    try:
        base = campaign.base_config()
        cfg = trial_config(base, params, campaign, directory / "run")
        (directory / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        datasets = cap_datasets(base_datasets(base, campaign.base), cfg,
                                campaign.data.max_train_per_dataset,
                                campaign.data.max_val_per_dataset, campaign.data.seed)
        cutoff = backbone_settings(cfg.model).cutoff
        data = prepare_data(cfg.data, cutoff, datasets, progress=False,
                            needs=get("backbone", cfg.model.backbone).needs)
        model = build_model(cfg.model, data.table, data.stats, seed=cfg.train.seed)
        trainer = Trainer(model, data, cfg, resume=False)
        hook, building = _Budget(directory, campaign, report, time.perf_counter()), False
        trainer.fit(on_eval=hook, plot=False)
        result.steps = trainer.step
        if trainer.skipped_steps > trainer.step // 2:
            hook.failure = hook.failure or (f"diverged: {trainer.skipped_steps} of "
                                            f"{trainer.step} steps had a non-finite loss")
        if hook.failure:
            result.error = hook.failure
        else:
            result.status = "stopped" if hook.stopped else "ok"
            result.best_val_loss = float(hook.best)
    except Exception as exc:  # noqa: BLE001 - every failure is a recorded result, with its reason
        result.error = _reason(exc, building)
        (directory / "error.txt").write_text(traceback.format_exc())
        log.warning("trial %s failed: %s", trial_id, result.error)
    if hook is not None and hook.best < math.inf and result.status == "failed":
        result.best_val_loss = float(hook.best)  # what it reached before failing (not ranked)
    result.seconds = round(time.perf_counter() - t0, 2)
    write_result(directory, result)
    return result


def run_job(job, campaign: dict, campaign_dir: str) -> dict:
    """DeepHyper's run function (importable, for process evaluators): one trial, its
    validation losses recorded to the stopper as ``job.record(eval_index, -val_loss)``."""
    from atomgfm.tune.campaign import campaign_from_dict

    c = campaign_from_dict(campaign)
    params = {k: v for k, v in job.parameters.items() if k != "trial_id"}
    driver = os.getppid()

    def report(evals: int, val_loss: float) -> bool:
        if os.getppid() != driver:  # the driver was killed: leave the trial unfinished (rerun)
            os._exit(3)
        if c.stopper.kind == "none":
            return False
        job.record(evals, -val_loss)
        return job.stopped()

    result = run_trial(job.parameters["trial_id"], params, c, campaign_dir, report=report)
    return {"objective": result.objective,
            "metadata": {"trial_id": result.id, "status": result.status}}
