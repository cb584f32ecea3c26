"""The training loop: sample, forward, masked multi-task loss, backward, step, evaluate, save.

    trainer = Trainer(load_config("demo.yaml"))
    summary = trainer.fit()

Writes ``out_dir/{config.yaml, log.jsonl, last.pt, best.pt}``. ``last.pt`` holds everything for
an exact resume (model, EMA, optimiser, scheduler, sampler position, RNG states); a new Trainer on
the same ``out_dir`` resumes from it.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from atomgfm import keys as K
from atomgfm.config.schema import Config
from atomgfm.data.graph import collate
from atomgfm.data.mixing import MixedBatchSampler, mixing_probabilities, oversampling
from atomgfm.data.sources import LoadedDataset, build_graphs, load_datasets
from atomgfm.inference.evaluate import evaluate_graphs
from atomgfm.models.build import build_model
from atomgfm.models.checkpoint import read_checkpoint, save_checkpoint
from atomgfm.telemetry.curves import plot_curves
from atomgfm.telemetry.timers import PhaseTimer
from atomgfm.train.losses import multitask_loss
from atomgfm.inference.metrics import MetricAccumulator
from atomgfm.train.optim import build_optimizer
from atomgfm.precision import autocast, param_dtype, resolve_device


def elements_of(datasets: list[LoadedDataset]) -> list[int]:
    """Elements of the training splits (the ones with fitted reference energies)."""
    return sorted({int(z) for d in datasets for s in d.train for z in s.numbers})


class Trainer:
    """Owns one run. ``datasets`` may be passed in (already loaded) to skip reading files."""

    def __init__(self, cfg: Config, datasets: list[LoadedDataset] | None = None,
                 resume: bool = True) -> None:
        self.cfg = cfg
        tc = cfg.train
        self.out_dir = Path(tc.out_dir)
        self.device = resolve_device(tc.device)
        self.dtype = param_dtype(tc.precision)
        _seed_everything(tc.seed)
        self.datasets = datasets if datasets is not None else load_datasets(cfg.data)
        self.names = [d.name for d in self.datasets]
        self.elements = elements_of(self.datasets)
        model = build_model(vars(cfg.model), self.names)
        for d in self.datasets:
            head = model.model.heads[d.name]
            head.set_normalization(d.normalization.element_energy, d.normalization.scale,
                                   d.normalization.state_energy)
        self.model = model.to(self.device, self.dtype)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay),
                                  use_buffers=True) if tc.ema_decay else None)
        _check_charge_spin(self.datasets, model.model.backbone)
        cutoff = model.model.backbone.cutoff
        self.train_sets = [build_graphs(d.train, cutoff, d.id, f"graphs {d.name}/train",
                                        tc.progress) for d in self.datasets]
        self.val_sets = [build_graphs(d.val, cutoff, d.id, f"graphs {d.name}/val", tc.progress)
                         for d in self.datasets]
        sizes = {d.name: len(d.train) for d in self.datasets}
        self.probs = mixing_probabilities(sizes, cfg.data.mixing, cfg.data.temperature,
                                          cfg.data.ratios)
        self.sampler = MixedBatchSampler([g.n_atoms for g in self.train_sets],
                                         [self.probs[n] for n in self.names],
                                         cfg.data.max_atoms_per_batch,
                                         cfg.data.max_structures_per_batch, seed=tc.seed)
        self.data_summary = self._data_summary(sizes)
        self.optimizer, self.scheduler = build_optimizer(self.model, tc)
        self.scales = torch.tensor([d.normalization.scale for d in self.datasets],
                                   dtype=torch.float64, device=self.device)
        self.weights = torch.tensor([[d.config.energy_weight, d.config.forces_weight,
                                      d.config.stress_weight] for d in self.datasets],
                                    dtype=torch.float64, device=self.device)
        self.need_stress = any(d.registry_entry()["labels"]["stress"] for d in self.datasets)
        self.step = 0
        self.skipped_steps = 0
        self.best = float("inf")
        self.timer = PhaseTimer(self.device)
        if resume and (self.out_dir / "last.pt").exists():
            self._resume(self.out_dir / "last.pt")

    def _data_summary(self, sizes: dict[str, int]) -> list[dict]:
        """One row per dataset: sizes, mixing probability, oversampling, isolated atoms, skips."""
        over = oversampling(sizes, self.probs)
        rows = []
        for d, tr, va in zip(self.datasets, self.train_sets, self.val_sets, strict=True):
            rows.append({"dataset": d.name, "level_of_theory": d.config.level_of_theory,
                         "train": len(d.train), "val": len(d.val),
                         "train_atoms": int(tr.n_atoms.sum()),
                         "p_mix": round(self.probs[d.name], 4),
                         "oversampling": round(over[d.name], 2),
                         "isolated_atoms": tr.n_isolated_atoms + va.n_isolated_atoms,
                         "skipped": "; ".join(d.skipped) or "0"})
        if self.cfg.train.progress:
            print(f"{'dataset':<14}{'level of theory':<24}{'train':>7}{'val':>6}{'atoms':>9}"
                  f"{'p_mix':>8}{'x over':>8}{'isolated':>10}  skipped")
            for r in rows:
                print(f"{r['dataset']:<14}{r['level_of_theory'][:23]:<24}{r['train']:>7}"
                      f"{r['val']:>6}{r['train_atoms']:>9}{r['p_mix']:>8.3f}"
                      f"{r['oversampling']:>8.2f}{r['isolated_atoms']:>10}  {r['skipped']}")
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
    def state(self, metrics: dict | None = None) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_n_averaged": int(self.ema.n_averaged) if self.ema else 0,
            "config": self.cfg.to_dict(),
            "datasets": [d.registry_entry() for d in self.datasets],
            "elements": self.elements,
            "mixing": self.probs,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
            "step": self.step,
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
        self.sampler.load_state_dict(st["sampler"])
        torch.set_rng_state(st["rng"]["torch"].cpu())
        np.random.set_state(st["rng"]["numpy"])
        random.setstate(st["rng"]["python"])
        self.step, self.best = st["step"], st["best"]
        print(f"[atomgfm] resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ loop
    def train_step(self) -> dict:
        tc = self.cfg.train
        self.model.train()
        with self.timer("data"):
            items = self.sampler.next_batch()
            graphs = [self.train_sets[d].graphs[i] for d, i in items]
            batch = collate(graphs, self.dtype, self.device)
        with self.timer("forward"), autocast(tc.precision, self.device):
            stress = self.need_stress and bool(batch[K.HAS_STRESS].any())
            out = self.model(batch, forces=True, stress=stress, create_graph=True)
            loss, parts = multitask_loss(out, batch, self.scales, self.weights)
        with self.timer("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with self.timer("optimizer"):
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            if torch.isfinite(loss) and torch.isfinite(gnorm):
                self.optimizer.step()
                if self.ema:
                    self.ema.update_parameters(self.model)
            else:  # never let one bad batch turn the weights into NaN; counted and logged
                self.skipped_steps += 1
                print(f"[atomgfm] step {self.step + 1}: non-finite loss or gradient, update "
                      f"skipped (batch: {items[:8]}{'...' if len(items) > 8 else ''})")
            self.scheduler.step()
        self.step += 1
        return {"loss": float(loss.detach()), **parts, "grad_norm": float(gnorm),
                "lr": self.scheduler.get_last_lr()[0], "atoms": int(batch[K.N_ATOMS].sum()),
                "structures": len(items), "skipped_steps": self.skipped_steps}

    def evaluate(self, keep_values: bool = False) -> MetricAccumulator:
        """Validation errors per dataset, with the EMA weights when EMA is on."""
        return evaluate_graphs(self.ema.module if self.ema else self.model, self.val_sets,
                               self.names, precision=self.cfg.train.precision,
                               device=self.device, dtype=self.dtype,
                               max_atoms=self.cfg.data.max_atoms_per_batch,
                               max_structures=self.cfg.data.max_structures_per_batch,
                               keep_values=keep_values)

    def fit(self, stop_at: int | None = None) -> dict:
        """Train until ``max_steps`` (or ``stop_at``, for time-sliced jobs); returns the last
        validation metrics per dataset. ``last.pt`` is always written on the way out."""
        tc = self.cfg.train
        stop = min(stop_at or tc.max_steps, tc.max_steps)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict()))
        log = self._open_log()
        log.write(json.dumps({"kind": "data", "step": self.step, "datasets": self.data_summary})
                  + "\n")
        metrics: dict = {}
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", disable=not tc.progress)
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
                t0, window = time.perf_counter(), []
                log.write(json.dumps({"kind": "train", **rec}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.1e}")
            if self.step % tc.eval_every == 0 or self.step == stop:
                metrics = self.evaluate().compute()
                score = _score(metrics, self.datasets)
                log.write(json.dumps({"kind": "val", "step": self.step, "score": score,
                                      "metrics": metrics}) + "\n")
                log.flush()
                if score <= self.best or not (self.out_dir / "best.pt").exists():
                    self.best = score
                    save_checkpoint(self.out_dir / "best.pt", self.state(metrics))
                save_checkpoint(self.out_dir / "last.pt", self.state(metrics))
                t0 = time.perf_counter()  # evaluation time is not training throughput
        bar.close()
        log.close()
        if not metrics:  # nothing left to train (resumed at max_steps): report, do not retrain
            print(f"[atomgfm] {self.out_dir} is already trained to step {self.step}; "
                  "use --restart to start over or --max-steps to continue")
            metrics = self.evaluate().compute()
        plot_curves(self.out_dir / "log.jsonl")
        return metrics


def _check_charge_spin(datasets: list[LoadedDataset], backbone) -> None:
    """Fail at load time, naming the record, when a charge or multiplicity is outside the range
    the backbone embeds (instead of mid-training)."""
    emb = getattr(backbone, "embedding", None)
    if emb is None:
        return
    for d in datasets:
        for s in d.train + d.val:
            if abs(round(s.charge)) > emb.max_charge or not 0 <= round(s.spin) <= emb.max_spin:
                raise ValueError(
                    f"{s.source}, record {s.index} (dataset {d.name}): charge {s.charge:g} / "
                    f"multiplicity {s.spin:g} outside the model's range ±{emb.max_charge} / "
                    f"0..{emb.max_spin} (backbone_kwargs max_charge, max_spin)")


def _window_means(window: list[dict]) -> dict:
    """Mean of each loss part over a log interval; atoms and structures summed."""
    out = {"atoms": sum(r["atoms"] for r in window),
           "structures": sum(r["structures"] for r in window)}
    for key in ("loss", "energy", "forces", "stress", "grad_norm"):
        vals = [r[key] for r in window if key in r]
        if vals:
            out[key] = float(np.mean(vals))
    return out


def _score(metrics: dict, datasets: list[LoadedDataset]) -> float:
    """Model selection score: mean over datasets of force MAE / force RMS (energy if no forces)."""
    vals = []
    for d in datasets:
        m, norm = metrics.get(d.name, {}), d.normalization
        if "forces_mae_meV_A" in m and np.isfinite(norm.force_rms) and norm.force_rms > 1e-9:
            vals.append(m["forces_mae_meV_A"] / 1000 / norm.force_rms)
        elif "energy_mae_meV_atom" in m:
            rms = norm.energy_rms if np.isfinite(norm.energy_rms) else 1.0
            vals.append(m["energy_mae_meV_atom"] / 1000 / max(rms, 1e-9))
    return float(np.mean(vals)) if vals else float("inf")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

