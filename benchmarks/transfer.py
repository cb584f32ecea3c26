"""Transfer: downstream error against training-set size for the three fine-tuning regimes.

Run from the repository root, after ``make demo`` (the pretrained model):

    .venv/bin/python benchmarks/transfer.py                       # sizes 10 30 100 300
    .venv/bin/python benchmarks/transfer.py --quick               # smoke test (minutes)

Per downstream task (``atomgfm.demo.downstream``: generated into --data when absent) and per
training-set size n (the first n records of the task's training split, references or property
offset/scale refitted on them), one fit per regime with the same budget (--steps optimiser
steps, batches of --max-atoms atoms): ``scratch`` (the demo architecture, fresh weights),
``frozen`` (demo backbone frozen, new head copied from the closest demo head) and ``full``
(everything trains, backbone lr × --backbone-lr with a --backbone-warmup step ramp). Errors are on
the task's fixed validation split (--n-val records). Prints per task a table (E/F tasks: force
MAE meV/Å and energy MAE meV/atom; regression: RMSE; classification: ROC-AUC and accuracy), the
full/scratch error ratio per size, and the forgetting table (every demo head's validation error
before and after full fine-tuning at the largest size, without and with replay); writes
``--out``/results.json and ``--out``/learning_curves.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import yaml

from atomgfm.config.schema import Config, DataConfig, DatasetConfig, FinetuneConfig, TrainConfig
from atomgfm.finetune import finetune
from atomgfm.finetune.data import load_new_datasets, load_pretraining_datasets, subset
from atomgfm.finetune.run import forgetting_report
from atomgfm.models.checkpoint import load_model

EF_TASKS = ("mol_ipea1", "mol_new_gfn2", "alloy_new_emt")
PROPERTY_TASKS = ("mol_dipole", "alloy_stable")
REGIMES = ("scratch", "frozen", "full")


def _config(args, dc: DatasetConfig, regime: str, out: Path, replay: float = 0.0) -> Config:
    lr = args.scratch_lr if regime == "scratch" else args.lr
    return Config(
        data=DataConfig(datasets=[dc], max_atoms_per_batch=args.max_atoms,
                        max_structures_per_batch=32),
        train=TrainConfig(out_dir=str(out), max_steps=args.steps, lr=lr, warmup_steps=10,
                          ema_decay=args.ema, eval_every=args.steps, log_every=10,
                          progress=False, seed=0),
        finetune=FinetuneConfig(checkpoint=str(args.pretrained), regime=regime, replay=replay,
                                backbone_lr_multiplier=args.backbone_lr,
                                backbone_warmup_steps=args.backbone_warmup))


def _score(task: str, m: dict) -> dict:
    if "forces_mae_meV_A" in m:
        return {"F": m["forces_mae_meV_A"], "E": m["energy_mae_meV_atom"]}
    if "property_rmse" in m:
        return {"RMSE": m["property_rmse"], "MAE": m["property_mae"]}
    return {"AUC": m.get("roc_auc", math.nan), "acc": m.get("accuracy", math.nan)}


def run_task(args, d, pre, workdir: Path, results: dict) -> dict:
    """Every size and regime of one task; returns {size: {regime: scores}}."""
    table: dict = {}
    for n in args.sizes:
        if n > len(d.train):
            print(f"  {d.name}: only {len(d.train)} training records, size {n} skipped")
            continue
        table[n] = {}
        for regime in REGIMES:
            t0 = time.perf_counter()
            out = workdir / f"{d.name}_{n}_{regime}"
            res = finetune(_config(args, d.config, regime, out), resume=False,
                           datasets=[subset(d, n)], pretrained=pre, report_forgetting=False,
                           measure_start=False)
            scores = _score(d.name, res.metrics[d.name])
            scores["from"] = res.head_init.get(d.name, {}).get("from")
            scores["seconds"] = time.perf_counter() - t0
            table[n][regime] = scores
            results["fits"].append({"task": d.name, "size": n, "regime": regime, **scores,
                                    "checkpoint": str(res.checkpoint)})
            print(f"  {d.name:<14} n={n:<4} {regime:<8} "
                  + " ".join(f"{k}={v:.4g}" for k, v in scores.items()
                             if isinstance(v, float) and k != "seconds")
                  + f"  ({scores['seconds']:.0f} s)", flush=True)
    return table


def print_table(name: str, table: dict) -> None:
    keys = [k for k in next(iter(next(iter(table.values())).values())) if k in
            ("F", "E", "RMSE", "MAE", "AUC", "acc")]
    ef = "F" in keys
    head = (f"| {name} n | " + " | ".join(f"{k} {r}" for k in keys for r in REGIMES)
            + (" | F full/scratch | E full/scratch |" if ef else " |"))
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n, row in table.items():
        cells = [f"{row[r][k]:.4g}" for k in keys for r in REGIMES]
        if ef:
            cells += [f"{row['full']['F'] / row['scratch']['F']:.3f}",
                      f"{row['full']['E'] / row['scratch']['E']:.3f}"]
        print(f"| {n} | " + " | ".join(cells) + " |")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.4), squeeze=False)
    for ax, (name, table) in zip(axes[0], curves.items(), strict=True):
        sizes = list(table)
        key = next(k for k in ("F", "RMSE", "AUC") if k in table[sizes[0]]["full"])
        for regime in REGIMES:
            ax.plot(sizes, [table[n][regime][key] for n in sizes], "o-", label=regime)
        ax.set_xscale("log")
        if key != "AUC":
            ax.set_yscale("log")
        ax.set_xlabel("training structures")
        ax.set_ylabel({"F": "force MAE (meV/Å)", "RMSE": "RMSE", "AUC": "ROC-AUC"}[key])
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrained", type=Path, default=Path("runs/demo/best.pt"))
    p.add_argument("--data", type=Path, default=Path("downstream_data"))
    p.add_argument("--n-generate", type=int, default=400, help="records per task if generated")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100, 300])
    p.add_argument("--tasks", nargs="+", default=list(EF_TASKS + PROPERTY_TASKS))
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--scratch-lr", type=float, default=3e-3)
    p.add_argument("--backbone-lr", type=float, default=0.3)
    p.add_argument("--backbone-warmup", type=int, default=20)
    p.add_argument("--ema", type=float, default=0.9)
    p.add_argument("--max-atoms", type=int, default=96)
    p.add_argument("--threads", type=int, default=1, help="torch threads (per process)")
    p.add_argument("--replay", type=float, default=0.2)
    p.add_argument("--out", type=Path, default=Path("runs/transfer"))
    p.add_argument("--quick", action="store_true", help="sizes 10 30, 20 steps, two tasks")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.steps, args.tasks = [10, 30], 20, ["alloy_new_emt", "alloy_stable"]
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    if not (args.data / "datasets.yaml").exists():
        from atomgfm.demo.downstream import generate_downstream

        print(f"generating the downstream tasks into {args.data} ({args.n_generate} each)")
        generate_downstream(args.data, args.n_generate, progress=False)
    raw = yaml.safe_load((args.data / "datasets.yaml").read_text())
    specs = {s["name"]: s for s in raw["datasets"]}
    pre = load_model(args.pretrained)
    print(f"pretrained: {args.pretrained} (step {pre[1].get('step')}, heads "
          f"{[d['name'] for d in pre[1]['datasets']]})")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "fits": []}
    curves = {}
    with tempfile.TemporaryDirectory(prefix="transfer_") as tmp:
        workdir = Path(tmp)
        loaded = {}
        for name in args.tasks:
            s = specs[name]
            dc = DatasetConfig(name=name, path=str((args.data / s["path"]).resolve()),
                               level_of_theory=s["level_of_theory"], task=s["task"],
                               property_key=s.get("property_key"))
            n_total = s["n_structures"]
            cfg = DataConfig(datasets=[dc], val_fraction=args.n_val / n_total)
            (d,) = load_new_datasets(cfg)
            loaded[name] = d
            print(f"task {name}: {s['task']}, {s['level_of_theory']}, train {len(d.train)}, "
                  f"val {len(d.val)}", flush=True)
            curves[name] = run_task(args, d, pre, workdir, results)
        print()
        for name, table in curves.items():
            print_table(name, table)
            print()
        # forgetting: full fine-tuning at the largest size, without and with replay
        state = pre[1]
        old = load_pretraining_datasets(state, [d["name"] for d in state["datasets"]])
        forgetting = {}
        tc = TrainConfig(progress=False)
        for name in [t for t in args.tasks if t in EF_TASKS]:
            n = max(curves[name])
            fit = next(f for f in results["fits"] if f["task"] == name and f["size"] == n
                       and f["regime"] == "full")
            final, _ = load_model(fit["checkpoint"])
            rep, table, _ = forgetting_report(pre[0], final, state, old, tc)
            forgetting[f"{name} n={n} full"] = rep
            print(f"forgetting after full fine-tuning on {name} (n={n}), no replay:\n{table}\n")
        name = next((t for t in ("alloy_new_emt", *EF_TASKS) if t in args.tasks), None)
        if name is not None and args.replay > 0:
            n = max(curves[name])
            d = loaded[name]
            res = finetune(_config(args, d.config, "full", workdir / f"{name}_replay",
                                   replay=args.replay), resume=False,
                           datasets=[subset(d, n)], pretrained=pre,
                           pretraining=[dataclasses.replace(o) for o in old])
            forgetting[f"{name} n={n} full replay={args.replay}"] = res.forgetting
            print(f"forgetting after full fine-tuning on {name} (n={n}) with replay "
                  f"{args.replay}: {name} F MAE {res.metrics[name]['forces_mae_meV_A']:.1f} meV/Å"
                  f"\n{res.forgetting_table}\n")
        results["curves"] = {k: {str(n): v for n, v in t.items()} for k, t in curves.items()}
        results["forgetting"] = forgetting
    for f in results["fits"]:
        f.pop("checkpoint", None)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    plot(curves, args.out / "learning_curves.png")
    ok = all(t[n]["full"]["F"] < t[n]["scratch"]["F"] and t[n]["full"]["E"] < t[n]["scratch"]["E"]
             for name, t in curves.items() if name in EF_TASKS for n in t)
    print(f"full beats scratch on every E/F task and size (F and E): {ok}")
    print(f"wrote {args.out / 'results.json'}, {args.out / 'learning_curves.png'}; total "
          f"{time.perf_counter() - t_start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

