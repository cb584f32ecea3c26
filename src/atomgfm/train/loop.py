"""The training loop: sample, forward, masked multi-task loss, backward, step, evaluate, save.

The Trainer receives its parts and assembles nothing itself:

    data = prepare_data(cfg.data, cutoff)                      # dataset table + graph sources
    model = build_model(cfg.model, data.table, data.stats)     # backbone + one head per dataset
    trainer = Trainer(model, data, cfg)
    summary = trainer.fit()

``Trainer.from_config(cfg)`` does exactly that. Fine-tuning and tuning hand it another model or
other data; distributed runs give it a rank. Writes ``out_dir/{config.yaml, log.jsonl, last.pt,
best.pt}``. ``last.pt`` holds everything for an exact resume (model, EMA, optimiser, scheduler,
sampler position); a new Trainer on the same ``out_dir`` resumes from it. The library never seeds
or reads the global RNGs: model initialisation is seeded inside ``build_model`` and the sampler
owns its generator.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from atomgfm import keys as K
from atomgfm.config.schema import Config
from atomgfm.data.mixing import MixedBatchSampler, mixing_probabilities, oversampling
from atomgfm.data.sources import (
    LoadedDataset,
    PreparedData,
    check_charge_spin,
    prepare_data,
)
from atomgfm.data.store.loader import BatchLoader
from atomgfm.inference.evaluate import evaluate_graphs
from atomgfm.inference.metrics import MetricAccumulator
from atomgfm.models.build import backbone_settings, build_model
from atomgfm.models.checkpoint import read_checkpoint, save_checkpoint
from atomgfm.models.derivatives import ForceField
from atomgfm.precision import autocast, matmul_tf32, param_dtype, resolve_device
from atomgfm.registry import get
from atomgfm.telemetry.curves import plot_curves
from atomgfm.telemetry.recorder import Telemetry
from atomgfm.telemetry.timers import PhaseTimer
from atomgfm.train.distributed import all_reduce_sum, average_gradients, data_parallel
from atomgfm.train.losses import multitask_loss
from atomgfm.train.optim import build_optimizer

log = logging.getLogger(__name__)


class Trainer:
    """Owns one run of ``model`` on ``data`` under ``cfg`` (its train section; its data section
    gives mixing and batch limits; the whole config is saved with every checkpoint).

    Args:
        model: a force field whose heads are ``data``'s datasets, in id order.
        data: prepared data (dataset table, graph sources with size manifests, statistics).
        cfg: the resolved config.
        resume: continue from ``out_dir/last.pt`` when it exists.
        rank, world_size: this process's place among data-parallel ranks.
        reduce: sums a tensor over ranks in place (the non-finite-step decision and validation
            metric sums go through it); a no-op in one process.
    """

    def __init__(self, model: ForceField, data: PreparedData, cfg: Config, *,
                 resume: bool = True, rank: int = 0, world_size: int = 1,
                 reduce=all_reduce_sum) -> None:
        self.cfg = cfg
        tc = cfg.train
        if list(model.dataset_names) != data.names:
            raise ValueError(f"the model's heads {model.dataset_names} are not the data's "
                             f"datasets {data.names} (same names, same id order)")
        missing = set(model.backbone.needs) - data.needs
        if missing:
            raise ValueError(f"the backbone needs graph fields {sorted(missing)} that the data "
                             "lacks: prepare_data(..., needs=model.backbone.needs)")
        if abs(model.cutoff - data.cutoff) > 1e-12:
            raise ValueError(f"graphs were built at {data.cutoff} Å but the model's cutoff is "
                             f"{model.cutoff} Å")
        if data.datasets is not None:
            check_charge_spin(data.datasets, *model.backbone.charge_spin_range)
        self.data, self.table = data, data.table
        self.names = data.names
        self.rank, self.world_size, self.reduce = rank, world_size, reduce
        self.out_dir = Path(tc.out_dir)
        self.device = resolve_device(tc.device)
        self.dtype = param_dtype(tc.precision)
        self.elements = data.stats.elements
        self.model = model.to(self.device, self.dtype)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay),
                                  use_buffers=True) if tc.ema_decay else None)
        self.train_sets, self.val_sets = data.train, data.val
        sizes = {d["name"]: d["n_train"] for d in self.table}
        self.probs = mixing_probabilities(sizes, cfg.data.mixing, cfg.data.temperature,
                                          cfg.data.ratios)
        self.sampler = MixedBatchSampler([g.n_atoms for g in self.train_sets],
                                         [self.probs[n] for n in self.names],
                                         cfg.data.max_atoms_per_batch,
                                         cfg.data.max_structures_per_batch, seed=tc.seed,
                                         rank=rank, world_size=world_size,
                                         edges_per_structure=[g.n_edges for g in self.train_sets],
                                         max_edges=cfg.data.max_edges_per_batch)
        self.data_summary = self._data_summary(sizes)
        self.optimizer, self.scheduler = build_optimizer(self.model, tc, cfg.finetune)
        self.scales = torch.tensor([d["normalization"]["scale"] for d in self.table],
                                   dtype=torch.float64, device=self.device)
        self.weights = torch.tensor([[d["weights"]["energy"], d["weights"]["forces"],
                                      d["weights"]["stress"]] for d in self.table],
                                    dtype=torch.float64, device=self.device)
        self.need_stress = any(d["labels"]["stress"] for d in self.table)
        self.step = 0
        self.skipped_steps = 0
        self.best = float("inf")
        self.timer = PhaseTimer(self.device)
        self._loader: BatchLoader | None = None  # started at the first step (see _batches)
        if resume and self._agree_on_resume():
            self._resume(self.out_dir / "last.pt")
        # DDP (bucketed all-reduce during the backward) or one flat all-reduce after it.
        self.ddp = (data_parallel(self.model, self.device)
                    if world_size > 1 and tc.grad_sync == "ddp" else None)

    def _agree_on_resume(self) -> bool:
        """Whether ``last.pt`` exists, decided alike on every rank (or an error)."""
        exists = (self.out_dir / "last.pt").exists()
        if self.world_size > 1:
            votes = self.reduce(torch.tensor([float(exists)], dtype=torch.float64,
                                             device=self.device))
            if 0 < float(votes) < self.world_size:
                raise RuntimeError(f"{self.out_dir / 'last.pt'} is visible to {int(votes)} of "
                                   f"{self.world_size} ranks: out_dir must be on a filesystem "
                                   "every rank shares")
        return exists

    @classmethod
    def from_config(cls, cfg: Config, datasets: list[LoadedDataset] | None = None,
                    **kwargs) -> Trainer:
        """Prepare the data at the backbone's cutoff, build the model with the training
        statistics (seeded by ``train.seed``), and hand both to a Trainer. ``datasets`` may be
        passed in (already loaded) to skip reading files."""
        cutoff = backbone_settings(cfg.model).cutoff
        needs = get("backbone", cfg.model.backbone).needs
        data = prepare_data(cfg.data, cutoff, datasets, progress=cfg.train.progress, needs=needs)
        model = build_model(cfg.model, data.table, data.stats, seed=cfg.train.seed)
        return cls(model, data, cfg, **kwargs)

    @property
    def datasets(self) -> list[LoadedDataset] | None:
        """The loaded records behind the data, when it came from files."""
        return self.data.datasets

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _data_summary(self, sizes: dict[str, int]) -> list[dict]:
        """One row per dataset: sizes, mixing probability, oversampling, isolated atoms, skips."""
        over = oversampling(sizes, self.probs)
        rows = []
        for d, tr, va in zip(self.table, self.train_sets, self.val_sets, strict=True):
            rows.append({"dataset": d["name"], "level_of_theory": d["level_of_theory"],
                         "train": d["n_train"], "val": d["n_val"],
                         "train_atoms": int(np.sum(tr.n_atoms)),
                         "p_mix": round(self.probs[d["name"]], 4),
                         "oversampling": round(over[d["name"]], 2),
                         "isolated_atoms": (getattr(tr, "n_isolated_atoms", 0)
                                            + getattr(va, "n_isolated_atoms", 0)),
                         "skipped": "; ".join(d.get("skipped", [])) or "0"})
        if self.cfg.train.progress and self.is_main:
            lines = [f"{'dataset':<14}{'level of theory':<24}{'train':>7}{'val':>6}{'atoms':>9}"
                     f"{'p_mix':>8}{'x over':>8}{'isolated':>10}  skipped"]
            for r in rows:
                lines.append(f"{r['dataset']:<14}{r['level_of_theory'][:23]:<24}{r['train']:>7}"
                             f"{r['val']:>6}{r['train_atoms']:>9}{r['p_mix']:>8.3f}"
                             f"{r['oversampling']:>8.2f}{r['isolated_atoms']:>10}  {r['skipped']}")
            log.info("training data:\n%s", "\n".join(lines))
        return rows

    def _open_log(self):
        """A new run starts a new log; a resumed run keeps the records up to its checkpoint's
        step and drops the ones a killed run wrote after it (they are about to be redone)."""
        path = self.out_dir / "log.jsonl"
        kept = []
        if self.step > 0 and path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.step]
        path.write_text("".join(line + "\n" for line in kept))
        return open(path, "a")

    # ------------------------------------------------------------------ state
    def sampler_state(self) -> dict:
        """The sampler's state with every rank's (epoch, cursor) in ``ranks``: a collective
        call (every rank must make it), through the reduce function."""
        st = self.sampler.state_dict()
        rows = torch.zeros((self.world_size, 2), dtype=torch.float64, device=self.device)
        rows[self.rank] = torch.tensor([st["epoch"], st["cursor"]], dtype=torch.float64)
        if self.world_size > 1:
            rows = self.reduce(rows)
        st["ranks"] = [[int(e), int(c)] for e, c in rows.tolist()]
        return st

    def state(self, metrics: dict | None = None, sampler: dict | None = None) -> dict:
        """Everything a checkpoint holds: tensors and plain containers only (it is loaded with
        ``weights_only=True``). ``sampler``: from ``sampler_state()`` (all ranks' positions)."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_n_averaged": int(self.ema.n_averaged) if self.ema else 0,
            "config": self.cfg.to_dict(),
            "datasets": self.table,
            "elements": self.elements,
            "stats": self.data.stats.to_dict(),
            "mixing": self.probs,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": sampler if sampler is not None else self.sampler_state(),
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "best": self.best,
            "metrics": metrics or {},
        }

    def _resume(self, path: Path) -> None:
        tc = self.cfg.train
        st = read_checkpoint(path, self.device)
        old = [d["name"] for d in st["datasets"]]
        if old != self.names:
            raise ValueError(f"{path}: checkpoint datasets {old} differ from config {self.names}")
        self.model.load_state_dict(st["model"])
        if self.ema and st["ema"] is not None:
            self.ema.module.load_state_dict(st["ema"])
            self.ema.n_averaged.fill_(st["ema_n_averaged"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        # The schedule follows the current config (a resumed run may extend max_steps).
        self.scheduler.lr_lambdas[0].__init__(tc.warmup_steps, tc.max_steps, tc.min_lr_ratio)
        try:
            self.sampler.load_state_dict(st["sampler"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        self.step, self.best = st["step"], st["best"]
        self.skipped_steps = st.get("skipped_steps", 0)
        log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ loop
    def _batches(self) -> BatchLoader:
        """Batches built by ``data.loader_workers`` workers (or in this process), created at the
        first step so that the workers start at a resumed sampler's position."""
        if self._loader is None:
            self._loader = BatchLoader(self.sampler, self.train_sets, self.dtype, self.device,
                                       self.cfg.data.loader_workers, self.cfg.data.prefetch)
        return self._loader

    def train_step(self) -> dict:
        tc = self.cfg.train
        self.model.train()
        with self.timer("data"):
            items, batch = self._batches().next()
        with (self.timer("forward"), autocast(tc.precision, self.device),
              matmul_tf32(tc.tf32, self.device)):
            stress = self.need_stress and bool(batch[K.HAS_STRESS].any())
            out = (self.ddp or self.model)(batch, forces=True, stress=stress, create_graph=True)
            loss, parts = multitask_loss(out, batch, self.scales, self.weights)
        with self.timer("backward"), matmul_tf32(tc.tf32, self.device):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if self.world_size > 1 and self.ddp is None:
            with self.timer("allreduce"):
                average_gradients(self.model, self.world_size, self.reduce)
        with self.timer("optimizer"):
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            # One decision for all ranks: a step is skipped everywhere if any rank saw NaN/inf.
            bad = torch.tensor([float(not (torch.isfinite(loss) and torch.isfinite(gnorm)))],
                               dtype=torch.float64, device=self.device)
            if float(self.reduce(bad)) == 0.0:
                self.optimizer.step()
                if self.ema:
                    self.ema.update_parameters(self.model)
            else:  # never let one bad batch turn the weights into NaN; counted and logged
                self.skipped_steps += 1
                log.warning("step %d: non-finite loss or gradient, update skipped (batch: %s%s)",
                            self.step + 1, items[:8], "..." if len(items) > 8 else "")
            self.scheduler.step()
        self.step += 1
        return {"loss": float(loss.detach()), **parts, "grad_norm": float(gnorm),
                "lr": self.scheduler.get_last_lr()[0], "atoms": int(batch[K.N_ATOMS].sum()),
                "structures": len(items), "skipped_steps": self.skipped_steps}

    def evaluate(self, keep_values: bool = False) -> MetricAccumulator:
        """Validation errors per dataset (EMA weights when EMA is on), summed over ranks."""
        acc = evaluate_graphs(self.ema.module if self.ema else self.model, self.val_sets,
                              self.names, precision=self.cfg.train.precision,
                              device=self.device, dtype=self.dtype,
                              max_atoms=self.cfg.data.max_atoms_per_batch,
                              max_structures=self.cfg.data.max_structures_per_batch,
                              max_edges=self.cfg.data.max_edges_per_batch,
                              keep_values=keep_values, rank=self.rank,
                              world_size=self.world_size)
        return acc.reduce(self.reduce)

    def fit(self, stop_at: int | None = None, on_eval=None, plot: bool = True) -> dict:
        """Train until ``max_steps`` (or ``stop_at``, for time-sliced jobs); returns the last
        validation metrics per dataset. ``last.pt`` is always written on the way out. Only rank
        0 writes files and shows progress; every rank computes the same metrics.

        ``on_eval(step, score, metrics)``, when given, is called after each evaluation (and its
        checkpoints); a true return value ends training there (early stopping, time budgets:
        ``atomgfm tune``). Under several ranks it must decide alike on every rank. ``plot``:
        draw ``curves.png`` at the end (tuning trials, which plot their own, skip it)."""
        tc = self.cfg.train
        stop = min(stop_at or tc.max_steps, tc.max_steps)
        main = self.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict()))
        logfile = self._open_log() if main else None
        telemetry = Telemetry(self.out_dir / "telemetry.jsonl" if main else None, self.rank,
                              self.world_size, self.device, self.reduce, resume_step=self.step)
        _write(logfile, {"kind": "data", "step": self.step, "datasets": self.data_summary})
        metrics: dict = {}
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train",
                   disable=not (tc.progress and main))
        t0, window = time.perf_counter(), []
        while self.step < stop:
            rec = self.train_step()
            window.append(rec)
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == stop:
                dt = time.perf_counter() - t0
                rec = _window_means(window)  # losses averaged over the log interval
                rec.update(step=self.step, lr=window[-1]["lr"],
                           atoms_per_s=rec["atoms"] / dt, structures_per_s=rec["structures"] / dt,
                           step_s=dt / len(window), phases_s=self.timer.summary(reset=True))
                # Every rank's phases, throughput and memory (collective; rank 0 writes).
                telemetry.record(self.step, steps=len(window), seconds=dt,
                                 structures=rec["structures"], atoms=rec["atoms"],
                                 phases_s=rec["phases_s"], loss=rec["loss"])
                t0, window = time.perf_counter(), []
                _write(logfile, {"kind": "train", **rec})
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.1e}")
            if self.step % tc.eval_every == 0 or self.step == stop:
                metrics = self.evaluate().compute()
                score = _score(metrics, self.table)
                _write(logfile, {"kind": "val", "step": self.step, "score": score,
                                 "metrics": metrics})
                # Decided from the reduced score alone, so every rank agrees.
                improved = score <= self.best
                if improved:
                    self.best = score
                sampler = self.sampler_state()  # collective: every rank takes part
                if main:
                    state = self.state(metrics, sampler)
                    if improved:
                        save_checkpoint(self.out_dir / "best.pt", state)
                    save_checkpoint(self.out_dir / "last.pt", state)
                if on_eval is not None and on_eval(self.step, score, metrics):
                    break
                t0 = time.perf_counter()  # evaluation time is not training throughput
        bar.close()
        telemetry.close()
        if logfile is not None:
            logfile.close()
        if not metrics:  # nothing left to train (resumed at max_steps): report, do not retrain
            log.warning("%s is already trained to step %d; use --restart to start over or "
                        "--max-steps to continue", self.out_dir, self.step)
            metrics = self.evaluate().compute()
        if main and plot:
            plot_curves(self.out_dir / "log.jsonl")
        return metrics


def _write(logfile, record: dict) -> None:
    if logfile is not None:
        logfile.write(json.dumps(record) + "\n")
        logfile.flush()


def _window_means(window: list[dict]) -> dict:
    """Mean of each loss part over a log interval; atoms and structures summed."""
    out = {"atoms": sum(r["atoms"] for r in window),
           "structures": sum(r["structures"] for r in window)}
    for key in ("loss", "energy", "forces", "stress", "property", "grad_norm"):
        vals = [r[key] for r in window if key in r]
        if vals:
            out[key] = float(np.mean(vals))
    return out


def _score(metrics: dict, table: list[dict]) -> float:
    """Model selection score: mean over datasets of force MAE / force RMS (energy if no forces)."""
    vals = []
    for d in table:
        m, norm = metrics.get(d["name"], {}), d["normalization"]
        force_rms, energy_rms = norm["force_rms"], norm["energy_rms"]
        if "forces_mae_meV_A" in m and np.isfinite(force_rms) and force_rms > 1e-9:
            vals.append(m["forces_mae_meV_A"] / 1000 / force_rms)
        elif "energy_mae_meV_atom" in m:
            rms = energy_rms if np.isfinite(energy_rms) else 1.0
            vals.append(m["energy_mae_meV_atom"] / 1000 / max(rms, 1e-9))
        elif "property_rmse" in m:  # fine-tuned property heads (regression, classification)
            vals.append(m["property_rmse"] / max(norm["scale"], 1e-9))
        elif "accuracy" in m:
            vals.append(1.0 - m["accuracy"])
    return float(np.mean(vals)) if vals else float("inf")
