"""Accuracy of our PaiNN against SchNetPack's at equal steps, with learning curves (issue 14).

    .venv/bin/python benchmarks/make_molecules.py --out /tmp/painn_acc/mol_gfn2_2400.extxyz
    /tmp/peers/bin/python benchmarks/painn_accuracy.py grid --sets mol2400 mol_demo alloy \\
        --seeds 0 1 --models ours schnetpack --out /tmp/painn_acc/before     # the long grid
    /tmp/peers/bin/python benchmarks/painn_accuracy.py run --set mol_demo --model ours --seed 0
    /tmp/peers/bin/python benchmarks/painn_accuracy.py table --out /tmp/painn_acc/before

Runs in the peer environment (``../shared/PEERS.md``: SchNetPack 2.0.4 and our package, torch
2.13.0), one process per training run (``grid`` starts them one after the other, ``--jobs`` at a
time, and skips runs whose JSON already exists, so a killed grid resumes).

Both models are PaiNN 128×3 at 5 Å and share everything but the model:
- data: ``mol2400``: ≥ 2,000 neutral closed-shell GFN2-xTB molecules (``make_molecules.py``);
  ``mol_demo``: the neutral closed-shell molecules of ``demo_data/mol_gfn2.extxyz`` (284 / 32);
  ``alloy``: ``demo_data/alloy_emt.extxyz`` (1,350 / 150); our content-hash split (10 % val);
- per-element reference energies E0: one least-squares fit on the training split
  (``data.references.fit_references``), inside our head, added to SchNetPack's output;
- batches: the same structures in the same order (one permutation per epoch from the seed);
- loss: mean((E − Ê)² / N²) + 10 · mean((F − F̂)²) (eV/atom, eV/Å);
- optimiser: AdamW (torch defaults: weight decay 0.01), lr 1e-3, 50 warm-up steps then cosine
  to 1 %, gradient norm clipped at 10; EMA of the weights, decay 0.99 with torch_ema's warm-up,
  used for every evaluation; fp32, one thread.
Each side keeps its own output scaling, as a user of either gets it: ours, the head's scale
(RMS of training force components; ``--variant`` changes our model, see ``VARIANTS``);
SchNetPack, per-atom outputs scaled by the standard deviation and shifted by the mean of the
training per-atom residual energies (its ``AddOffsets``/``ScaleShift`` idea).

Every ``--eval-every`` steps: validation and training (a fixed subset of ``--train-eval``
training structures, default 300) energy MAE (meV/atom) and force MAE (meV/Å, per component),
EMA weights. ``table`` prints the final and best-validation figures, mean ± half-range over
seeds, writes ``curves.csv`` and draws ``benchmarks/figures/painn_accuracy_<set>.png``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CUTOFF = 5.0
SETS = {  # name: (file, level of theory, neutral closed-shell only, batch size)
    "mol2400": ("/tmp/painn_acc/mol_gfn2_2400.extxyz", "GFN2-xTB", True, 16),
    "mol_demo": (str(ROOT / "demo_data" / "mol_gfn2.extxyz"), "GFN2-xTB", True, 16),
    "alloy": (str(ROOT / "demo_data" / "alloy_emt.extxyz"), "EMT", False, 4),
}
# our model's variants: backbone_kwargs (and head settings) each hypothesis changes
VARIANTS: dict[str, dict] = {
    "default": {},  # whatever the installed atomgfm's defaults are
    "bessel": {"backbone_kwargs": {"radial": "bessel"}},  # the radial basis before issue 14
    "gauss": {"backbone_kwargs": {"radial": "gaussian"}},  # SchNetPack's radial basis
    # on the Bessel basis: head scale = std of per-atom residual energy, shifted by its mean
    "escale": {"backbone_kwargs": {"radial": "bessel"}, "head": "energy_std"},
    # on the Bessel basis: SchNetPack's Dense init (Xavier-uniform weights, zero biases)
    "xavier": {"backbone_kwargs": {"radial": "bessel"}, "init": "xavier"},
}


def apply_variant(model, ds, variant: str) -> None:
    """The variant's changes to a built model of ours, in place."""
    import torch

    v = VARIANTS[variant]
    if v.get("head") == "energy_std":
        res = residual_per_atom(ds)
        for head in model.heads.values():
            present = torch.as_tensor(np.unique(np.concatenate([s.numbers for s in ds.train])))
            head.element_energy[present] += float(res.mean())
            head.scale.fill_(float(res.std()))
    if v.get("init") == "xavier":
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)


def load_set(name: str, path: str | None = None):
    """The LoadedDataset of ``name``: content-hash split, neutral closed-shell filter, E0 refit."""
    from atomgfm.config.schema import DataConfig, DatasetConfig
    from atomgfm.data.references import fit_references
    from atomgfm.data.sources import load_datasets

    file, level, neutral, _ = SETS[name]
    file = Path(path or file)
    if not file.exists():
        raise SystemExit(f"{file}: missing (make it with benchmarks/make_molecules.py)")
    cfg = DataConfig(datasets=[DatasetConfig(name=name, path=file.name, level_of_theory=level)],
                     root=str(file.parent), val_fraction=0.1, split_seed=0)
    (ds,) = load_datasets(cfg)
    if neutral:
        def keep(s):
            return round(s.charge) == 0 and round(s.spin) in (0, 1)

        train, val = [s for s in ds.train if keep(s)], [s for s in ds.val if keep(s)]
        ds = dataclasses.replace(ds, train=train, val=val,
                                 normalization=fit_references(train, name))
    return ds


def residual_per_atom(ds) -> np.ndarray:
    e0 = ds.normalization.element_energy
    return np.array([(s.energy - e0[s.numbers].sum()) / len(s.numbers) for s in ds.train])


# --------------------------------------------------------------------------- the two models
def build_ours(ds, seed: int, variant: str):
    try:  # the peer venv's e3nn 0.4.4 loads its constants only with what mace sets (PEERS.md)
        import mace  # noqa: F401
    except ImportError:
        pass
    from atomgfm import keys as K
    from atomgfm.data.graph import collate, structure_to_graph
    from atomgfm.data.stats import graph_stats
    from atomgfm.models.build import build_model

    graphs = {"train": [structure_to_graph(s, CUTOFF, 0) for s in ds.train],
              "val": [structure_to_graph(s, CUTOFF, 0) for s in ds.val]}
    stats = graph_stats(iter(graphs["train"]))
    kwargs = {"num_features": 128, "num_layers": 3, "cutoff": CUTOFF, "num_rbf": 20}
    kwargs.update(VARIANTS[variant].get("backbone_kwargs", {}))
    cfg = {"backbone": "painn", "backbone_kwargs": kwargs}
    model = build_model(cfg, [ds.registry_entry()], stats, seed=seed)
    apply_variant(model, ds, variant)

    def predict(idx, split: str, train: bool):
        batch = collate([graphs[split][i] for i in idx])
        out = model(batch, forces=True, create_graph=train)
        return (out[K.ENERGY], out[K.FORCES], batch[K.ENERGY], batch[K.FORCES],
                batch[K.N_ATOMS])

    return model, predict


def build_schnetpack(ds, seed: int, variant: str):
    import typing

    import torch
    import torch.utils.data.dataloader as dl

    dl.T_co = typing.TypeVar("T_co", covariant=True)  # SchNetPack 2.x needs it (PEERS.md)
    import schnetpack as spk
    from schnetpack import properties as P
    from schnetpack.data.loader import _atoms_collate_fn

    e0 = ds.normalization.element_energy
    res = residual_per_atom(ds)
    mean, std = float(res.mean()), float(res.std())
    nl = spk.transform.MatScipyNeighborList(cutoff=CUTOFF)
    cast = spk.transform.CastTo32()

    def inputs(s):
        d = {P.n_atoms: torch.tensor([len(s.numbers)]), P.Z: torch.from_numpy(s.numbers),
             P.R: torch.from_numpy(s.positions.astype(np.float64)),
             P.cell: torch.from_numpy(np.asarray(s.cell if s.cell is not None else np.zeros(
                 (3, 3)), dtype=np.float64)).view(1, 3, 3),
             P.pbc: torch.from_numpy(np.asarray(s.pbc, dtype=bool)).view(1, 3),
             P.idx: torch.tensor([0])}
        d = cast(nl(d))
        d["_e_ref"] = torch.tensor([float(s.energy)], dtype=torch.float64)
        d["_e0"] = torch.tensor([float(e0[s.numbers].sum())], dtype=torch.float64)
        d["_f_ref"] = torch.from_numpy(np.asarray(s.forces, dtype=np.float32))
        return d

    data = {"train": [inputs(s) for s in ds.train], "val": [inputs(s) for s in ds.val]}
    torch.manual_seed(seed)
    rep = spk.representation.PaiNN(n_atom_basis=128, n_interactions=3,
                                   radial_basis=spk.nn.GaussianRBF(20, CUTOFF),
                                   cutoff_fn=spk.nn.CosineCutoff(CUTOFF))
    model = spk.model.NeuralNetworkPotential(
        representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=128, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")])

    def predict(idx, split: str, train: bool):
        b = _atoms_collate_fn([data[split][i] for i in idx])
        n = b[P.n_atoms]
        out = model(b)
        # per-atom outputs scaled by std and shifted by mean, then the E0 sum added back
        e = out["energy"].double() * std + mean * n.double() + b["_e0"]
        return e, out["forces"] * std, b["_e_ref"], b["_f_ref"], n

    return model, predict


# --------------------------------------------------------------------------- one training run
def errors(predict, idx_all, split: str, batch_size: int) -> tuple[float, float]:
    import torch

    e_err, f_err, n_comp = [], 0.0, 0
    for start in range(0, len(idx_all), batch_size):
        idx = idx_all[start:start + batch_size]
        e, f, e_ref, f_ref, n = predict(idx, split, False)
        e_err.append(((e.detach().double() - e_ref.double()) / n.double()).abs())
        f_err += float((f.detach().double() - f_ref.double()).abs().sum())
        n_comp += f_ref.numel()
    return 1000 * float(torch.cat(e_err).mean()), 1000 * f_err / n_comp


def run_one(args) -> None:
    import torch
    from mace_accuracy import EMA, batch_order, lr_at

    torch.set_num_threads(args.threads)
    ds = load_set(args.set, args.data)
    batch_size = args.batch_size or SETS[args.set][3]
    build = build_ours if args.model == "ours" else build_schnetpack
    model, predict = build(ds, args.seed, args.variant)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    ema = EMA(params, args.ema_decay)
    order = batch_order(len(ds.train), batch_size, args.steps, args.seed)
    train_idx = np.random.default_rng(1234).permutation(len(ds.train))[:args.train_eval].tolist()
    tag = f"[{args.set} {args.model}/{args.variant} seed {args.seed}]"
    print(f"{tag} {len(ds.train)} train / {len(ds.val)} val, {n_params:,} parameters, batch "
          f"{batch_size}, {args.steps} steps", flush=True)
    curve, t_train, losses = [], 0.0, []

    def record(step: int) -> None:
        model.eval()
        ema.swap()
        ve, vf = errors(predict, list(range(len(ds.val))), "val", 32)
        te, tf = errors(predict, train_idx, "train", 32)
        ema.swap()
        model.train()
        curve.append({"step": step, "val_E": ve, "val_F": vf, "train_E": te, "train_F": tf,
                      "loss": float(np.mean(losses)) if losses else float("nan"),
                      "train_seconds": t_train})
        losses.clear()
        print(f"{tag} step {step:5d}  val E {ve:7.2f} F {vf:6.1f}  train E {te:7.2f} "
              f"F {tf:6.1f}  ({t_train:.0f} s)", flush=True)

    model.train()
    for step, idx in enumerate(order):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        e, f, e_ref, f_ref, n = predict(idx.tolist(), "train", True)
        loss_e = (((e - e_ref.to(e.dtype)) / n.to(e.dtype)) ** 2).mean()
        loss_f = ((f - f_ref.to(f.dtype)) ** 2).mean()
        loss = loss_e.to(f.dtype) + args.forces_weight * loss_f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        ema.update()
        t_train += time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if not np.isfinite(losses[-1]):
            raise SystemExit(f"{tag} non-finite loss at step {step}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            record(step + 1)
    out = Path(args.out) / f"{args.set}__{args.model}-{args.variant}__{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "set": args.set, "model": args.model, "variant": args.variant, "seed": args.seed,
        "n_params": n_params, "n_train": len(ds.train), "n_val": len(ds.val),
        "batch_size": batch_size, "steps": args.steps, "lr": args.lr,
        "weight_decay": args.weight_decay, "ms_per_step": 1000 * t_train / args.steps,
        "load_average": os.getloadavg()[0], "curve": curve}, indent=1))
    print(f"{tag} {1000 * t_train / args.steps:.0f} ms/step; wrote {out}", flush=True)


# --------------------------------------------------------------------------- grid and table
def grid(args) -> None:
    jobs = []
    for s in args.sets:
        for seed in args.seeds:
            for m in args.models:
                model, _, variant = m.partition("-")
                out = Path(args.out) / f"{s}__{model}-{variant or 'default'}__{seed}.json"
                if out.exists():
                    continue
                cmd = [sys.executable, __file__, "run", "--set", s, "--model", model,
                       "--variant", variant or "default", "--seed", str(seed),
                       "--steps", str(args.steps_for.get(s, args.steps)),
                       "--eval-every", str(args.eval_every), "--out", args.out,
                       "--lr", str(args.lr), "--weight-decay", str(args.weight_decay),
                       "--train-eval", str(args.train_eval)]
                jobs.append(cmd)
    running: list[subprocess.Popen] = []
    for cmd in jobs:
        while len(running) >= args.jobs:
            running = [p for p in running if p.poll() is None]
            time.sleep(1)
        print("$", " ".join(cmd[1:]), flush=True)
        running.append(subprocess.Popen(cmd))
    for p in running:
        p.wait()
    table(args)


def table(args) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(Path(args.out).glob("*.json"))]
    if not runs:
        raise SystemExit(f"{args.out}: no runs")
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["set"], f"{r['model']}-{r['variant']}"), []).append(r)
    with open(Path(args.out) / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "model", "seed", "step", "val_E_meV_atom", "val_F_meV_A",
                    "train_E_meV_atom", "train_F_meV_A"])
        for r in runs:
            for c in r["curve"]:
                w.writerow([r["set"], f"{r['model']}-{r['variant']}", r["seed"], c["step"],
                            f"{c['val_E']:.3f}", f"{c['val_F']:.2f}", f"{c['train_E']:.3f}",
                            f"{c['train_F']:.2f}"])

    def ms(xs):
        xs = np.asarray(xs)
        return f"{xs.mean():.1f} ± {(xs.max() - xs.min()) / 2:.1f}"

    print("\n| set (train/val) | model | seeds | steps | ms/step | val E MAE meV/atom | "
          "val F MAE meV/Å | best-val F (step) | train E MAE meV/atom | train F MAE meV/Å |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (s, m), rs in sorted(groups.items()):
        fin = [r["curve"][-1] for r in rs]
        best = [min(r["curve"], key=lambda c: c["val_F"]) for r in rs]
        print(f"| {s} ({rs[0]['n_train']}/{rs[0]['n_val']}) | {m} | "
              f"{','.join(str(r['seed']) for r in rs)} | {rs[0]['steps']} | "
              f"{np.mean([r['ms_per_step'] for r in rs]):.0f} | "
              f"{ms([c['val_E'] for c in fin])} | {ms([c['val_F'] for c in fin])} | "
              f"{ms([c['val_F'] for c in best])} ({','.join(str(c['step']) for c in best)}) | "
              f"{ms([c['train_E'] for c in fin])} | {ms([c['train_F'] for c in fin])} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no figures)")
        return
    for s in sorted({k[0] for k in groups}):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        colours = {}
        for (s2, m), rs in sorted(groups.items()):
            if s2 != s:
                continue
            col = colours.setdefault(m, f"C{len(colours)}")
            for r in rs:
                st = [c["step"] for c in r["curve"]]
                for ax, key in ((axes[0], "E"), (axes[1], "F")):
                    ax.plot(st, [c[f"val_{key}"] for c in r["curve"]], "-", color=col,
                            label=f"{m} val" if r is rs[0] else None)
                    ax.plot(st, [c[f"train_{key}"] for c in r["curve"]], ":", color=col,
                            label=f"{m} train" if r is rs[0] else None)
        for ax, unit in ((axes[0], "E MAE (meV/atom)"), (axes[1], "F MAE (meV/Å)")):
            ax.set_xlabel("step")
            ax.set_ylabel(unit)
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        fig.suptitle(f"PaiNN 128×3 on {s}: validation (solid) and training (dotted), per seed")
        fig.tight_layout()
        path = Path(args.figures) / f"painn_accuracy_{s}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"figure: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one training run")
    r.add_argument("--set", choices=list(SETS), required=True)
    r.add_argument("--data", help="override the set's file")
    r.add_argument("--model", choices=("ours", "schnetpack"), required=True)
    r.add_argument("--variant", choices=list(VARIANTS), default="default")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=0, help="0: the set's default")
    r.add_argument("--threads", type=int, default=1)
    g = sub.add_parser("grid", help="several runs (resumable), then the table")
    g.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    g.add_argument("--models", nargs="+", default=["ours", "schnetpack"],
                   help="ours, schnetpack, or ours-<variant>")
    g.add_argument("--jobs", type=int, default=1)
    g.add_argument("--steps-for", type=json.loads, default={},
                   help='per-set steps, e.g. \'{"alloy": 600}\'')
    t = sub.add_parser("table", help="table, curves.csv and figures of finished runs")
    for q in (r, g):
        q.add_argument("--steps", type=int, default=1000)
        q.add_argument("--eval-every", type=int, default=100)
        q.add_argument("--lr", type=float, default=1e-3)
        q.add_argument("--warmup", type=int, default=50)
        q.add_argument("--weight-decay", type=float, default=0.01)
        q.add_argument("--forces-weight", type=float, default=10.0)
        q.add_argument("--ema-decay", type=float, default=0.99)
        q.add_argument("--clip", type=float, default=10.0)
        q.add_argument("--train-eval", type=int, default=300,
                       help="training structures whose errors each evaluation records")
    for q in (r, g, t):
        q.add_argument("--out", default="/tmp/painn_acc/runs")
        q.add_argument("--figures", default=str(ROOT / "benchmarks" / "figures"))
    args = p.parse_args()
    {"run": run_one, "grid": grid, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
