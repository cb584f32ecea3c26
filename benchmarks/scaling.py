"""Strong and weak scaling of data-parallel training over 1, 2, ... local processes.

    .venv/bin/python benchmarks/scaling.py                                   # demo model, 1 and 2
    .venv/bin/python benchmarks/scaling.py --ranks 1 2 4 --steps 40 --grad-sync ddp flat
    .venv/bin/python benchmarks/scaling.py --quick                           # smoke test

Each point starts W processes (torch.multiprocessing, a gloo process group on CPU; NCCL with one
process per GPU when ``--device cuda``), one thread each on CPU (``--threads``), and runs the
Trainer's own ``train_step`` (sample, collate, forward, E+F(+stress) loss, backward, gradient
all-reduce, clip, AdamW) on the demo config's data and model (``--config``):

- weak scaling: every rank packs batches of ``--atoms-per-rank`` atoms (the work per rank is
  fixed, the global batch grows with W); efficiency = throughput(W) / (W · throughput(1));
- strong scaling: the global batch is fixed at ``--global-atoms`` atoms, each rank packs
  global/W; efficiency = step time(1) / (W · step time(W)).

After ``--warmup`` steps, ``--steps`` steps are timed between two barriers. Throughput is the
structures (atoms) all ranks processed divided by the wall time. The phase breakdown is each
rank's mean ms per step in data, forward, backward, all-reduce (``flat``; with ``ddp`` it
overlaps the backward and is inside it), optimizer. Prints a markdown table and writes
``scaling.json`` and ``scaling.png`` (efficiency and phase breakdown) to ``--out``. Figures need a
quiet machine: on a shared one, other jobs' load lands in them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PHASES = ("data", "forward", "backward", "allreduce", "optimizer")


def _worker(rank: int, world: int, init: str, cfg_dict: dict, data, steps: int, warmup: int,
            threads: int, out: str) -> None:
    from atomgfm.config.schema import config_from_dict
    from atomgfm.models.build import build_model
    from atomgfm.train.loop import Trainer

    torch.set_num_threads(threads)
    cfg = config_from_dict(cfg_dict)
    cuda = cfg.train.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(rank)
        cfg.train.device = f"cuda:{rank}"
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{init}",
                            rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    try:
        model = build_model(cfg.model, data.table, data.stats, seed=cfg.train.seed)
        trainer = Trainer(model, data, cfg, resume=False, rank=rank, world_size=world)
        for _ in range(warmup):
            trainer.train_step()
        trainer.timer.summary(reset=True)
        structures = atoms = 0
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            rec = trainer.train_step()
            structures += rec["structures"]
            atoms += rec["atoms"]
        dist.barrier()
        wall = time.perf_counter() - t0
        phases = {k: 1000 * v / steps for k, v in trainer.timer.summary().items()}
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "wall_s": wall, "structures": structures, "atoms": atoms,
             "phases_ms": phases}))
    finally:
        dist.destroy_process_group()


def run_point(cfg_dict: dict, data, world: int, steps: int, warmup: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), cfg_dict, data, steps, warmup,
                                threads, tmp), nprocs=world, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    wall = max(r["wall_s"] for r in ranks)
    return {"world": world, "step_ms": 1000 * wall / steps,
            "structures_per_s": sum(r["structures"] for r in ranks) / wall,
            "atoms_per_s": sum(r["atoms"] for r in ranks) / wall,
            "phases_ms": {p: float(np.mean([r["phases_ms"].get(p, 0.0) for r in ranks]))
                          for p in PHASES},
            "ranks": ranks}


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    ax_eff, ax_ph = fig.subplots(1, 2)
    labels, bottoms = [], None
    for key in sorted({(r["mode"], r["grad_sync"]) for r in results}):
        pts = [r for r in results if (r["mode"], r["grad_sync"]) == key]
        ax_eff.plot([r["world"] for r in pts], [100 * r["efficiency"] for r in pts],
                    marker="o", label=f"{key[0]} ({key[1]})")
    ax_eff.axhline(100, color="grey", lw=0.5)
    ax_eff.set_xticks(sorted({r["world"] for r in results}))
    ax_eff.set(xlabel="processes", ylabel="parallel efficiency (%)", title="scaling efficiency")
    ax_eff.legend(fontsize=8)
    labels = [f"{r['mode'][0]}{r['world']}\n{r['grad_sync']}" for r in results]
    bottoms = np.zeros(len(results))
    for p in PHASES:
        vals = np.array([r["phases_ms"][p] for r in results])
        if vals.any():
            ax_ph.bar(labels, vals, bottom=bottoms, label=p)
            bottoms += vals
    ax_ph.set(ylabel="ms per step (rank mean)", title="phase breakdown (w = weak, s = strong)")
    ax_ph.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--modes", nargs="+", default=["weak", "strong"], choices=["weak", "strong"])
    p.add_argument("--grad-sync", nargs="+", default=["ddp"], choices=["ddp", "flat"])
    p.add_argument("--atoms-per-rank", type=int, default=256, help="weak scaling batch per rank")
    p.add_argument("--global-atoms", type=int, default=512, help="strong scaling global batch")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default=None, help="override train.precision")
    p.add_argument("--out", default="benchmarks/scaling_out")
    p.add_argument("--quick", action="store_true", help="3 timed steps, 1 warm-up")
    args = p.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 1

    from atomgfm.config.schema import load_config
    from atomgfm.data.sources import prepare_data
    from atomgfm.models.build import backbone_settings
    from atomgfm.registry import get

    cfg = load_config(args.config)
    cfg.train.device, cfg.train.progress, cfg.train.ema_decay = args.device, False, None
    cfg.train.out_dir = tempfile.mkdtemp(prefix="scaling_")
    if args.precision:
        cfg.train.precision = args.precision
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    data = prepare_data(cfg.data, backbone_settings(cfg.model).cutoff,
                        needs=get("backbone", cfg.model.backbone).needs, progress=False)
    print(f"# {args.config}: {cfg.model.backbone} {cfg.model.backbone_kwargs}, "
          f"{cfg.train.precision}, {sum(len(g.n_atoms) for g in data.train)} training "
          f"structures; {args.device}, {args.threads} thread(s) per process, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs; {args.steps} timed steps after "
          f"{args.warmup} warm-up")
    print("| mode | sync | W | atoms/rank batch | step ms | structures/s | atoms/s | efficiency | "
          + " | ".join(f"{p} ms" for p in PHASES) + " |")
    print("|" + "---|" * (8 + len(PHASES)))
    results = []
    for mode in args.modes:
        for sync in args.grad_sync:
            base = None
            for world in args.ranks:
                per_rank = (args.atoms_per_rank if mode == "weak"
                            else max(args.global_atoms // world, 1))
                d = cfg.to_dict()
                d["data"]["max_atoms_per_batch"] = per_rank
                d["data"]["max_structures_per_batch"] = 10**6
                d["train"]["grad_sync"] = sync
                r = run_point(d, data, world, args.steps, args.warmup, args.threads)
                base = base or r
                r["efficiency"] = (r["structures_per_s"] / (world * base["structures_per_s"])
                                   if mode == "weak"
                                   else base["step_ms"] / (world * r["step_ms"]))
                r.update(mode=mode, grad_sync=sync, atoms_per_rank=per_rank)
                results.append(r)
                print(f"| {mode} | {sync} | {world} | {per_rank} | {r['step_ms']:.1f} | "
                      f"{r['structures_per_s']:.1f} | {r['atoms_per_s']:.0f} | "
                      f"{100 * r['efficiency']:.1f}% | "
                      + " | ".join(f"{r['phases_ms'][p]:.1f}" for p in PHASES) + " |",
                      flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "scaling.png")
    print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")


if __name__ == "__main__":
    main()
