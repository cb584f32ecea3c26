"""Accuracy per compute: every registered backbone trained on the demo corpus for the same wall
time, one plain recipe, then its validation table (EMA weights).

    python benchmarks/accuracy_per_compute.py --minutes 1.5 [--backbones painn,schnet] [--preset S]

Same data, splits, batches (demo limits), cutoff (4.5 Å, the demo's), learning rate, warm-up,
EMA and loss weights for every backbone; the preset sets the size. The learning rate stays
near its peak (cosine over a horizon far past what fits the budget), so the steps each backbone
gets are the only difference its speed makes. Prints steps, ms/step and per-dataset errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from atomgfm.config.schema import load_config  # noqa: E402
from atomgfm.data.sources import load_datasets, prepare_data  # noqa: E402
from atomgfm.models.build import backbone_settings, build_model  # noqa: E402
from atomgfm.registry import get, names  # noqa: E402
from atomgfm.train.loop import Trainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--backbones", default=",".join(names("backbone")))
    p.add_argument("--preset", default="S")
    p.add_argument("--minutes", type=float, default=1.5)
    p.add_argument("--cutoff", type=float, default=4.5)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(args.config)
    datasets = load_datasets(base.data)
    prepared: dict = {}
    rows = []
    print(f"# {args.config}, preset {args.preset}, cutoff {args.cutoff} Å, {args.minutes} min of "
          f"training each, torch {torch.__version__}, {torch.get_num_threads()} threads, load "
          f"average {os.getloadavg()[0]:.2f}", flush=True)
    for name in args.backbones.split(","):
        cfg = dataclasses.replace(base)
        cfg.model = dataclasses.replace(base.model, backbone=name, preset=args.preset,
                                        backbone_kwargs={"cutoff": args.cutoff})
        cfg.train = dataclasses.replace(base.train, out_dir=tempfile.mkdtemp(),
                                        max_steps=10**6, progress=False)
        needs = get("backbone", name).needs
        cutoff = backbone_settings(cfg.model).cutoff
        if needs not in prepared:
            prepared[needs] = prepare_data(cfg.data, cutoff, datasets, progress=False,
                                           needs=needs)
        data = prepared[needs]
        model = build_model(cfg.model, data.table, data.stats, seed=cfg.train.seed)
        trainer = Trainer(model, data, cfg, resume=False)
        n_params = sum(q.numel() for q in model.parameters())
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 60 * args.minutes:
            trainer.train_step()
        dt = time.perf_counter() - t0
        metrics = trainer.evaluate().compute()
        rows.append((name, n_params, trainer.step, 1000 * dt / trainer.step, metrics))
        print(f"  {name}: {trainer.step} steps, {1000 * dt / trainer.step:.0f} ms/step",
              flush=True)
    sets = [d.name for d in base.data.datasets]
    print("\n| backbone | parameters | steps | ms/step | "
          + " | ".join(f"{s} E / F MAE" for s in sets) + " |")
    print("|---|---|---|---|" + "---|" * len(sets))
    for name, n_params, steps, ms, m in rows:
        cells = [f"{m[s].get('energy_mae_meV_atom', float('nan')):.1f} / "
                 f"{m[s].get('forces_mae_meV_A', float('nan')):.0f}" for s in sets]
        print(f"| {name} | {n_params:,} | {steps} | {ms:.0f} | " + " | ".join(cells) + " |")
    print("\n(E MAE meV/atom / F MAE meV/Å on the validation split, EMA weights)")


if __name__ == "__main__":
    main()
