"""Training step time of the demo model on the demo corpus, per precision.

    .venv/bin/python benchmarks/train_step.py                 # fp32, 60 timed steps
    .venv/bin/python benchmarks/train_step.py --precision fp64,fp32,bf16 --steps 40

Needs the demo corpus (``make demo`` or ``atomgfm data demo --out demo_data``). Prints mean step
time (forward + double backward + optimiser, batches packed to the config's max atoms), atoms/s,
structures/s, the phase split, and peak memory (CUDA: max allocated; CPU: process max RSS).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from atomgfm.config.schema import load_config
from atomgfm.data.sources import load_datasets
from atomgfm.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--precision", default="fp32", help="comma-separated: fp64,fp32,bf16")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    cfg = load_config(args.config)
    datasets = load_datasets(cfg.data)
    print(f"{'precision':<10}{'ms/step':>10}{'±':>7}{'atoms/s':>10}{'structs/s':>11}"
          f"{'peak MiB':>10}  phases (s over the timed steps)")
    for precision in args.precision.split(","):
        cfg.train.precision, cfg.train.device, cfg.train.progress = precision, args.device, False
        with tempfile.TemporaryDirectory() as tmp:
            cfg.train.out_dir = tmp
            trainer = Trainer.from_config(cfg, datasets, resume=False)
            for _ in range(args.warmup):
                trainer.train_step()
            trainer.timer.summary(reset=True)
            if trainer.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times, atoms, structs = [], 0, 0
            for _ in range(args.steps):
                t = time.perf_counter()
                rec = trainer.train_step()
                times.append(time.perf_counter() - t)
                atoms += rec["atoms"]
                structs += rec["structures"]
            total = sum(times)
            peak = (torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            print(f"{precision:<10}{1000 * total / len(times):>10.1f}"
                  f"{1000 * statistics.stdev(times):>7.1f}{atoms / total:>10.0f}"
                  f"{structs / total:>11.1f}{peak:>10.0f}  {trainer.timer.summary()}")


if __name__ == "__main__":
    main()
