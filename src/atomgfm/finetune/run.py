"""``finetune(cfg)``: a pretrained checkpoint, new datasets, a regime; the Trainer does the rest.

    cfg = load_finetune_config("finetune.yaml")
    result = finetune(cfg)          # trains, writes out_dir/{finetuned.pt, forgetting.json, ...}

Regimes (``finetune.regime``):

* ``scratch``: the checkpoint's architecture with fresh weights (the baseline fine-tuning must
  beat); only the new datasets' heads.
* ``frozen``: the pretrained backbone with ``requires_grad`` off (left out of the optimiser);
  only the new heads train.
* ``full``: everything trains; the backbone optionally at a lower learning rate
  (``backbone_lr_multiplier``) ramped in over ``backbone_warmup_steps``.

New energy heads start from the closest pretrained head (``finetune.heads``) unless
``head_init`` names one or says ``none``; property heads start fresh. With ``replay`` > 0 the
pretraining datasets join the run with that share of the draws and their heads keep training.
The Trainer's own files (``best.pt``, ``last.pt``: resumable) hold the heads it trains;
``finetuned.pt`` holds every head (pretraining heads included, untouched unless replayed) and
a config whose data section names every dataset by absolute path, so it loads in
``atomgfm.Calculator``, ``atomgfm evaluate`` and another ``atomgfm finetune``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from atomgfm.config.schema import Config, ConfigError, ModelConfig, load_config, read_yaml
from atomgfm.data.sources import LoadedDataset, build_graphs
from atomgfm.data.stats import GraphStats
from atomgfm.finetune.data import (
    absolute_paths,
    load_new_datasets,
    load_pretraining_datasets,
    prepare,
    replay_ratios,
)
from atomgfm.finetune.heads import choose_head, copy_head, energy_heads, fit_candidates
from atomgfm.inference.evaluate import evaluate_graphs
from atomgfm.models.build import backbone_settings, build_model
from atomgfm.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from atomgfm.precision import param_dtype, resolve_device
from atomgfm.train.loop import Trainer

log = logging.getLogger(__name__)


class UnseenElementsWarning(UserWarning):
    """New data has elements the pretraining never saw (their embeddings start untrained)."""


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes:
        checkpoint: ``out_dir/finetuned.pt`` (every head).
        metrics: validation metrics per trained dataset at the end (EMA weights).
        start_metrics: the same before the first step (the initialised heads).
        forgetting: per pretraining dataset {"before": metrics, "after": metrics} (empty for
            scratch, or when the pretraining files are not found: see ``notes``).
        head_init: per new dataset, the head it was copied from (or "none") and every
            candidate's error after the reference refit.
        table, forgetting_table: the printed markdown tables.
    """

    checkpoint: Path
    metrics: dict
    start_metrics: dict
    forgetting: dict
    head_init: dict
    table: str
    forgetting_table: str
    notes: list[str] = field(default_factory=list)


def load_finetune_config(path: str | Path) -> Config:
    """A fine-tuning config: ``finetune.checkpoint`` relative to the config's folder; a
    ``model`` section, if given, must agree with the checkpoint (checked by ``finetune``)."""
    cfg = load_config(path)
    raw = read_yaml(path) or {}
    ck = cfg.finetune.checkpoint
    if ck and not Path(ck).is_absolute():
        cfg.finetune.checkpoint = str((Path(path).parent / ck).resolve())
    cfg._model_given = "model" in raw  # noqa: SLF001 - remembered for the contradiction check
    return cfg


def check_model_settings(cfg: Config, stored: dict, path) -> None:
    """A config's model section must describe the checkpoint's model: every differing setting is
    named (the checkpoint's architecture wins; leave ``model`` out of a fine-tuning config)."""
    if not getattr(cfg, "_model_given", cfg.model != ModelConfig()):
        return
    mine = dataclasses.asdict(cfg.model)
    theirs = {**dataclasses.asdict(ModelConfig()), **stored}
    diffs = []
    for key in ("backbone", "head", "head_hidden"):
        if mine[key] != theirs.get(key):
            diffs.append(f"model.{key}: config {mine[key]!r}, checkpoint {theirs.get(key)!r}")
    if not diffs:
        a = dataclasses.asdict(backbone_settings(mine))
        b = dataclasses.asdict(backbone_settings(theirs, "checkpoint model"))
        diffs = [f"model.backbone_kwargs.{k}: config {a[k]!r}, checkpoint {b[k]!r}"
                 for k in a if a[k] != b.get(k)]
    if diffs:
        raise ConfigError(f"the config's model section contradicts checkpoint {path}: "
                          + "; ".join(diffs) + " (fine-tuning keeps the checkpoint's model; "
                          "leave model out of the config)")


def _head_choice(cfg: Config, name: str) -> str:
    choice = cfg.finetune.head_init
    if isinstance(choice, dict):
        unknown = set(choice) - {d.name for d in cfg.data.datasets}
        if unknown:
            raise ConfigError(f"config.finetune.head_init: {sorted(unknown)} are not datasets "
                              "of this config")
        return str(choice.get(name, "auto"))
    return str(choice)


def _check_elements(new: list[LoadedDataset], seen: list[int], regime: str) -> list[str]:
    from ase.data import chemical_symbols

    notes = []
    for d in new:
        unseen = sorted({int(z) for s in d.train + d.val for z in s.numbers} - set(seen))
        if not unseen:
            continue
        names = ", ".join(chemical_symbols[z] for z in unseen)
        if regime == "frozen":
            raise ValueError(f"dataset {d.name!r} has elements the pretraining never saw "
                             f"({names}); a frozen backbone cannot learn their embeddings: "
                             "use regime full or scratch")
        if regime in ("full", "scratch"):
            msg = (f"dataset {d.name!r}: elements the pretraining never saw ({names}); their "
                   "embeddings start untrained" + (" (as every embedding in scratch)"
                                                    if regime == "scratch" else ""))
            warnings.warn(msg, UnseenElementsWarning, stacklevel=3)
            notes.append(msg)
    return notes


def _evaluate(model, sets, names, tc) -> dict:
    device = resolve_device(tc.device)
    dtype = param_dtype(tc.precision)
    model = model.to(device, dtype)
    return evaluate_graphs(model, sets, names, precision=tc.precision, device=device,
                           dtype=dtype).compute()


def finetune(cfg: Config, *, resume: bool = True, datasets: list[LoadedDataset] | None = None,
             pretrained=None, pretraining: list[LoadedDataset] | None = None,
             report_forgetting: bool = True, measure_start: bool = True) -> FinetuneResult:
    """Fine-tune ``cfg.finetune.checkpoint`` on ``cfg.data`` (see the module docstring).

    Args:
        cfg: a config with a ``finetune`` section (``load_finetune_config``).
        resume: continue from ``train.out_dir/last.pt`` when it exists.
        datasets: the new datasets already loaded (``finetune.data.load_new_datasets``), to skip
            reading files (benchmarks reuse them across runs).
        pretrained: ``(model, state)`` of ``models.checkpoint.load_model``, likewise.
        pretraining: the pretraining datasets already loaded (``load_pretraining_datasets``),
            for replay and the forgetting report.
        report_forgetting: measure every pretraining head before and after (reads the
            pretraining data unless given).
        measure_start: evaluate the assembled model before the first step (``start_metrics``).
    """
    ft, tc = cfg.finetune, cfg.train
    if ft.checkpoint is None:
        raise ConfigError("config.finetune.checkpoint: name the pretrained checkpoint")
    try:
        pre_model, state = pretrained or load_model(ft.checkpoint)
    except FileNotFoundError:
        raise FileNotFoundError(f"config.finetune.checkpoint: checkpoint not found: "
                                f"{ft.checkpoint}") from None
    check_model_settings(cfg, state["config"]["model"], ft.checkpoint)
    model_cfg = ModelConfig(**state["config"]["model"])
    old_table = sorted(state["datasets"], key=lambda d: d["id"])
    old_names = [d["name"] for d in old_table]
    new = datasets if datasets is not None else load_new_datasets(cfg.data)
    clash = [d.name for d in new if d.name in old_names]
    if clash:
        raise ConfigError(f"dataset(s) {clash} are already heads of {ft.checkpoint}; give the "
                          "new data another name (replay keeps training the pretraining heads)")
    notes = _check_elements(new, state["elements"], ft.regime)
    regime = ft.regime
    new_ids = {id(d) for d in new}

    old: list[LoadedDataset] = []
    if regime != "scratch" and ft.replay > 0:
        old = pretraining if pretraining is not None else load_pretraining_datasets(
            state, [d["name"] for d in old_table if d.get("task", "energy") == "energy"])
        old = [dataclasses.replace(d) for d in old]  # prepare() renumbers ids
    backbone_cls_needs = pre_model.backbone.needs
    data = prepare(old + new, pre_model.cutoff, backbone_cls_needs, progress=tc.progress)

    run_cfg = copy.deepcopy(cfg)
    run_cfg.model = model_cfg
    run_cfg.data.datasets = [absolute_paths(d.config, cfg.data.root) if id(d) in new_ids
                             else d.config
                             for d in old + new]
    run_cfg.data.root = "/"
    run_cfg.data.mixing = "explicit"
    run_cfg.data.ratios = replay_ratios(new, old, ft.replay, cfg.data, state["config"]["data"])

    pre_stats = GraphStats.from_dict(state.get("stats"))
    stats = data.stats if regime == "scratch" else pre_stats
    model = build_model(model_cfg, data.table, stats, seed=tc.seed)
    if state["config"]["train"].get("precision") == "fp64":
        model = model.double()
    head_init: dict = {}
    if regime != "scratch":
        model.backbone.load_state_dict(pre_model.backbone.state_dict())
        for d in old:
            model.heads[d.name].load_state_dict(pre_model.heads[d.name].state_dict())
        # replayed heads train with the backbone's lr (train.optim.build_optimizer)
        model.pretrained_heads = [d.name for d in old]
        candidates = energy_heads(pre_model)
        for d, graphs in zip(data.datasets, data.train, strict=True):
            if id(d) not in new_ids or d.config.task != "energy":
                continue
            choice = _head_choice(cfg, d.name)
            if choice == "none":
                head_init[d.name] = {"from": "none"}
                continue
            fits = fit_candidates(pre_model, d, graphs, candidates)
            source = choose_head(choice, fits, d.name, candidates)
            copy_head(model.heads[d.name], pre_model.heads[source], fits[source])
            head_init[d.name] = {"from": source, "choice": choice,
                                 "candidates": [f.summary() for f in fits.values()]}
            # the registry entry describes the head the model has
            entry = data.table[d.id]["normalization"]
            entry["element_energy"] = fits[source].element_energy.tolist()
            entry["state_energy"] = fits[source].state_energy.tolist()
            d.normalization.element_energy = fits[source].element_energy
            d.normalization.state_energy = fits[source].state_energy
        if regime == "frozen":
            for p in model.backbone.parameters():
                p.requires_grad_(False)

    start_metrics = _evaluate(model, data.val, data.names, tc) if measure_start else {}
    trainer = Trainer(model, data, run_cfg, resume=resume)
    metrics = trainer.fit()
    best = read_checkpoint(Path(tc.out_dir) / "best.pt")
    model.load_state_dict(best["ema"] if best.get("ema") is not None else best["model"])
    metrics = best.get("metrics") or metrics

    final_table, final_model = _merge(model, pre_model, model_cfg, old_table, data.table,
                                      stats, regime, state)
    merged = _merged_config(run_cfg, cfg, state, regime, new)
    elements = sorted(set(stats.elements) | {z for d in final_table for z in d["elements"]})
    out = Path(tc.out_dir)
    path = out / "finetuned.pt"
    save_checkpoint(path, {"model": final_model.state_dict(), "ema": None, "config": merged,
                           "datasets": final_table, "elements": elements,
                           "stats": stats.to_dict(), "step": trainer.step, "metrics": metrics,
                           "finetune": {"pretrained": str(ft.checkpoint), "regime": regime,
                                        "head_init": head_init, "start_metrics": start_metrics}})

    forgetting, forgetting_table = {}, ""
    if regime != "scratch" and report_forgetting:
        forgetting, forgetting_table, more = forgetting_report(pre_model, final_model, state,
                                                               pretraining or old, tc)
        notes += more
        (out / "forgetting.json").write_text(json.dumps(forgetting, indent=2))
    (out / "finetune.json").write_text(json.dumps(
        {"regime": regime, "head_init": head_init, "start_metrics": start_metrics,
         "metrics": metrics, "notes": notes}, indent=2))
    table = results_table(data.table, start_metrics, metrics)
    return FinetuneResult(path, metrics, start_metrics, forgetting, head_init, table,
                          forgetting_table, notes)


def _merge(model, pre_model, model_cfg, old_table, run_table, stats, regime, state):
    """Every head in one force field: the pretraining heads (trained ones if replayed) with
    their ids, then the new heads."""
    run_names = [d["name"] for d in run_table]
    old_names = [d["name"] for d in old_table] if regime != "scratch" else []
    new_entries = [dict(d) for d in run_table if d["name"] not in old_names]
    table = [dict(d) for d in old_table] if regime != "scratch" else []
    for k, d in enumerate(new_entries):
        d["id"] = len(table) + k
    table += new_entries
    final = build_model(model_cfg, table, stats)
    if state["config"]["train"].get("precision") == "fp64":
        final = final.double()
    final.backbone.load_state_dict(model.backbone.state_dict())
    for d in table:
        src = model.heads[d["name"]] if d["name"] in run_names else pre_model.heads[d["name"]]
        final.heads[d["name"]].load_state_dict(src.state_dict())
    return table, final.eval()


def _merged_config(run_cfg: Config, cfg: Config, state: dict, regime: str, new) -> dict:
    """The config saved in ``finetuned.pt``: every dataset by absolute path, the fine-tuning
    config's own mixing (not the run's explicit table)."""
    merged = run_cfg.to_dict()
    old_root = state["config"]["data"].get("root", ".")
    from atomgfm.config.schema import DatasetConfig

    known = {f.name for f in dataclasses.fields(DatasetConfig)}
    old = ([dataclasses.asdict(absolute_paths(
        DatasetConfig(**{k: v for k, v in d.items() if k in known}), old_root))
        for d in state["config"]["data"]["datasets"]] if regime != "scratch" else [])
    merged["data"]["datasets"] = old + [dataclasses.asdict(absolute_paths(d.config,
                                                                          cfg.data.root))
                                        for d in new]
    merged["data"]["mixing"] = cfg.data.mixing
    merged["data"]["ratios"] = cfg.data.ratios
    return merged


def forgetting_report(pre_model, final_model, state: dict, old: list[LoadedDataset], tc):
    """Every pretraining energy head's validation error before and after fine-tuning, on the
    pretraining run's validation split. Returns (dict, markdown table, notes)."""
    notes = []
    table = sorted(state["datasets"], key=lambda d: d["id"])
    names = [d["name"] for d in table if d.get("task", "energy") == "energy"]
    if not old:
        try:
            old = load_pretraining_datasets(state, names)
        except (FileNotFoundError, OSError, ValueError) as exc:
            msg = f"forgetting not measured: the pretraining data cannot be read ({exc})"
            log.warning(msg)
            return {}, msg, [msg]
    by_name = {d.name: d for d in old}
    all_names = [d["name"] for d in table]
    ids = {d["name"]: int(d["id"]) for d in table}
    sets = [build_graphs(by_name[n].val, pre_model.cutoff, ids[n], progress=False,
                         needs=pre_model.backbone.needs) if n in by_name else None
            for n in all_names]
    present = [s for s in sets if s is not None]
    before = _evaluate(pre_model, present, all_names, tc)
    after = _evaluate(final_model, present, all_names, tc)
    report = {n: {"before": before.get(n, {}), "after": after.get(n, {})} for n in names}
    lines = ["| pretraining head | E MAE meV/atom before → after | F MAE meV/Å before → after "
             "| F change |", "|---|---|---|---|"]
    for n in names:
        b, a = report[n]["before"], report[n]["after"]
        e = (f"{b['energy_mae_meV_atom']:.1f} → {a['energy_mae_meV_atom']:.1f}"
             if "energy_mae_meV_atom" in b else "–")
        f = (f"{b['forces_mae_meV_A']:.1f} → {a['forces_mae_meV_A']:.1f}"
             if "forces_mae_meV_A" in b else "–")
        change = (f"{100 * (a['forces_mae_meV_A'] / b['forces_mae_meV_A'] - 1):+.0f} %"
                  if "forces_mae_meV_A" in b else "–")
        lines.append(f"| {n} | {e} | {f} | {change} |")
    return report, "\n".join(lines), notes


def results_table(table: list[dict], start: dict, end: dict) -> str:
    """Markdown: each trained dataset's validation error at the start and the end."""
    keys = (("energy_mae_meV_atom", "E MAE meV/atom"), ("forces_mae_meV_A", "F MAE meV/Å"),
            ("property_mae", "MAE"), ("property_rmse", "RMSE"), ("accuracy", "accuracy"),
            ("roc_auc", "ROC-AUC"))
    lines = ["| dataset | task | metric | start | end |", "|---|---|---|---|---|"]
    for d in table:
        s, e = start.get(d["name"], {}), end.get(d["name"], {})
        for key, label in keys:
            if key in e:
                sv = s.get(key, float("nan"))
                lines.append(f"| {d['name']} | {d.get('task', 'energy')} | {label} | "
                             f"{sv:.4g} | {e[key]:.4g} |")
    return "\n".join(lines)


