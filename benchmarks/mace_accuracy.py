"""Accuracy of our MACE against mace-torch's at mace-torch's settings, on the demo's EMT alloys.

    /tmp/peers/bin/python benchmarks/mace_accuracy.py --steps 600 --eval-every 100   # both + table
    .venv/bin/python benchmarks/mace_accuracy.py --framework ours --steps 600 ...     # one side
    /tmp/peers/bin/python benchmarks/mace_accuracy.py --framework macetorch ...       # other side
    python benchmarks/mace_accuracy.py --framework compare                            # table only

Our MACE needs e3nn >= 0.6 (the project venv); mace-torch 0.3.16 pins e3nn 0.4.4 (the peer venv,
``../shared/PEERS.md``). So each side trains in its own interpreter and writes its learning curve
to ``<out>/<framework>.json``; the driver (``--framework both``) runs the two, in parallel with
one thread each by default (``--sequential`` for one after the other), then compares.

Both sides share everything but the model, from this file and our data layer:
- data: ``demo_data/alloy_emt.extxyz`` (ASE EMT labels), our content-hash split (1,350 / 150);
- per-element reference energies E0: our least-squares fit on the training split
  (``data.references``), given to both (our head's references; mace-torch's ``atomic_energies``);
- scale and shift: RMS of training force components and mean per-atom residual energy
  (mace-torch's ScaleShiftMACE; our head multiplies by the same force RMS);
- avg_num_neighbors: the mean degree of the training graphs at 5 Å (ours, given to both);
- model: 128x0e hidden, max ℓ 3, correlation 3, 2 interactions, 5 Å cutoff, 8 Bessel, polynomial
  envelope p = 5, radial MLP [64, 64, 64] (mace-torch: residual interaction blocks, MLP 16x0e);
- batches: the same structures in the same order (epoch permutations from ``--seed``), built
  once per side from the same records (ours: our graphs; mace-torch: ``config_from_atoms`` →
  ``AtomicData.from_config`` → its ``Batch``);
- loss: mace-torch's weighted loss, w_E·mean(((E−Ê)/N)²) + w_F·mean((F−F̂)²), defaults 1 and 100;
- optimiser: Adam (amsgrad), lr 0.01, no weight decay, gradient norm clipped at 10 (mace-torch's
  defaults, weight decay left out), linear warm-up then cosine to 1 % of the peak;
- EMA of the weights, decay 0.99 with torch_ema's warm-up (mace-torch's), used for every
  evaluation; fp32.

Prints and stores, per evaluation: validation energy MAE (meV/atom) and force MAE (meV/Å, per
component); the comparison gives the ratio ours / mace-torch and draws the learning curves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CUTOFF = 5.0
FRAMEWORKS = ("ours", "macetorch")


# --------------------------------------------------------------------------- shared by both sides
def load_split(path: Path, split_seed: int = 0):
    """(train, val, normalization) Structures of the alloy file, our content-hash split."""
    from atomgfm.config.schema import DataConfig, DatasetConfig
    from atomgfm.data.sources import load_datasets

    cfg = DataConfig(datasets=[DatasetConfig(name="alloy_emt", path=path.name,
                                             level_of_theory="EMT")],
                     root=str(path.parent), val_fraction=0.1, split_seed=split_seed)
    (ds,) = load_datasets(cfg)
    return ds


def shared_constants(ds) -> dict:
    """E0s (eV, by Z), scale (eV/Å), shift (eV/atom) and avg_num_neighbors from the train split."""
    from atomgfm.data.graph import structure_to_graph
    from atomgfm.data.stats import graph_stats

    norm = ds.normalization
    e0 = norm.element_energy
    shift = float(np.mean([(s.energy - e0[s.numbers].sum()) / len(s.numbers) for s in ds.train]))
    stats = graph_stats(structure_to_graph(s, CUTOFF, 0) for s in ds.train)
    elements = sorted({int(z) for s in ds.train for z in s.numbers})
    return {"elements": elements, "e0": {z: float(e0[z]) for z in elements},
            "scale": float(norm.force_rms), "shift": shift,
            "avg_num_neighbors": float(stats.avg_num_neighbors)}


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """Index arrays of ``steps`` batches: one permutation per epoch, the last partial batch
    dropped (same rule on both sides)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    per_epoch = n // batch_size
    while len(out) < steps:
        perm = rng.permutation(n)
        out += [perm[k * batch_size:(k + 1) * batch_size] for k in range(per_epoch)]
    return out[:steps]


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(steps - warmup, 1)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


class EMA:
    """Exponential moving average of parameters, as torch_ema's (which mace-torch uses): the decay
    after n updates is min(decay, (1 + n) / (10 + n)). ``swap()`` exchanges live and averaged."""

    def __init__(self, params, decay: float) -> None:
        import torch

        self.params, self.decay, self.n = list(params), decay, 0
        self.shadow = [p.detach().clone() for p in self.params]
        self.torch = torch

    def update(self) -> None:
        self.n += 1
        decay = min(self.decay, (1 + self.n) / (10 + self.n))
        with self.torch.no_grad():
            for s, p in zip(self.shadow, self.params, strict=True):
                s.lerp_(p.detach(), 1.0 - decay)

    def swap(self) -> None:
        with self.torch.no_grad():
            for s, p in zip(self.shadow, self.params, strict=True):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)


# --------------------------------------------------------------------------- the two models
def build_ours(ds, const: dict, seed: int):
    """Our ForceField (MACE preset M: mace-torch's settings) and predict(indices, split, train)."""
    from atomgfm import keys as K
    from atomgfm.data.graph import collate, structure_to_graph
    from atomgfm.data.stats import graph_stats
    from atomgfm.models.build import build_model

    graphs = {"train": [structure_to_graph(s, CUTOFF, 0) for s in ds.train],
              "val": [structure_to_graph(s, CUTOFF, 0) for s in ds.val]}
    stats = graph_stats(iter(graphs["train"]))
    entry = ds.registry_entry()
    e0 = np.zeros(len(entry["normalization"]["element_energy"]))
    for z, v in const["e0"].items():
        e0[int(z)] = v
    entry["normalization"] = dict(entry["normalization"], element_energy=e0.tolist(),
                                  scale=const["scale"])
    cfg = {"backbone": "mace", "preset": "M",
           "backbone_kwargs": {"cutoff": CUTOFF, "num_poly_cutoff": 5, "num_bessel": 8,
                               "radial_mlp": 64}}
    model = build_model(cfg, [entry], stats, seed=seed)

    def predict(idx, split: str, train: bool):
        batch = collate([graphs[split][i] for i in idx])
        out = model(batch, forces=True, create_graph=train)
        return (out[K.ENERGY], out[K.FORCES], batch[K.ENERGY], batch[K.FORCES],
                batch[K.N_ATOMS])

    return model, predict


def build_macetorch(ds, const: dict, seed: int):
    """mace-torch's ScaleShiftMACE at its own settings and a predict(indices, split, train)."""
    import ase
    import mace  # noqa: F401  (sets what e3nn 0.4.4 needs to load its constants)
    import torch
    from e3nn import o3
    from mace import data as mdata
    from mace import modules
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    z_table = AtomicNumberTable(const["elements"])
    keyspec = mdata.KeySpecification(info_keys={"energy": "REF_energy"},
                                     arrays_keys={"forces": "REF_forces"})

    def to_data(s):
        atoms = ase.Atoms(numbers=s.numbers, positions=s.positions,
                          cell=s.cell if s.cell is not None else None, pbc=s.pbc)
        atoms.info["REF_energy"] = float(s.energy)
        atoms.arrays["REF_forces"] = np.asarray(s.forces, dtype=np.float64)
        config = mdata.config_from_atoms(atoms, key_specification=keyspec)
        return mdata.AtomicData.from_config(config, z_table=z_table, cutoff=CUTOFF)

    data = {"train": [to_data(s) for s in ds.train], "val": [to_data(s) for s in ds.val]}
    torch.manual_seed(seed)
    ri = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=ri, interaction_cls_first=ri, num_interactions=2,
        num_elements=len(z_table), hidden_irreps=o3.Irreps("128x0e"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([const["e0"][z] for z in z_table.zs]),
        avg_num_neighbors=const["avg_num_neighbors"], atomic_numbers=z_table.zs,
        correlation=3, gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64],
        atomic_inter_scale=const["scale"], atomic_inter_shift=const["shift"])

    def predict(idx, split: str, train: bool):
        batch = torch_geometric.Batch.from_data_list([data[split][i] for i in idx])
        out = model(batch.to_dict(), training=train, compute_force=True)
        n = batch.ptr[1:] - batch.ptr[:-1]
        return out["energy"], out["forces"], batch["energy"], batch["forces"], n

    return model, predict


# --------------------------------------------------------------------------- one side's training
def evaluate(predict, n_val: int, batch_size: int) -> dict:
    e_err, f_err, n_comp = [], 0.0, 0
    for start in range(0, n_val, batch_size):
        idx = list(range(start, min(start + batch_size, n_val)))
        e, f, e_ref, f_ref, n = predict(idx, "val", False)
        e_err.append(((e.detach().double() - e_ref.double()) / n.double()).abs())
        f_err += float((f.detach().double() - f_ref.double()).abs().sum())
        n_comp += f_ref.numel()
    import torch

    return {"energy_mae_meV_atom": 1000 * float(torch.cat(e_err).mean()),
            "forces_mae_meV_A": 1000 * f_err / n_comp}


def train_one(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    ds = load_split(Path(args.data))
    const = shared_constants(ds)
    build = build_ours if args.framework == "ours" else build_macetorch
    model, predict = build(ds, const, args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=args.lr, amsgrad=True)
    ema = EMA(params, args.ema_decay)
    order = batch_order(len(ds.train), args.batch_size, args.steps, args.seed)
    print(f"[{args.framework}] {len(ds.train)} train / {len(ds.val)} val, {n_params:,} "
          f"parameters, avg_num_neighbors {const['avg_num_neighbors']:.3f}, scale "
          f"{const['scale']:.4f} eV/Å, shift {const['shift']:.5f} eV/atom, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    curve, t_train, losses = [], 0.0, []

    def record(step: int) -> None:
        model.eval()
        ema.swap()
        m = evaluate(predict, len(ds.val), args.batch_size)
        ema.swap()
        model.train()
        m.update(step=step, train_loss=float(np.mean(losses)) if losses else float("nan"),
                 train_seconds=t_train)
        curve.append(m)
        losses.clear()
        print(f"[{args.framework}] step {step:5d}  E {m['energy_mae_meV_atom']:7.2f} meV/atom  "
              f"F {m['forces_mae_meV_A']:7.1f} meV/Å  loss {m['train_loss']:.4g}  "
              f"({t_train:.0f} s training)", flush=True)

    model.train()
    for step, idx in enumerate(order):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        e, f, e_ref, f_ref, n = predict(idx.tolist(), "train", True)
        loss_e = (((e - e_ref.to(e.dtype)) / n.to(e.dtype)) ** 2).mean()
        loss_f = ((f - f_ref.to(f.dtype)) ** 2).mean()
        loss = args.energy_weight * loss_e.to(f.dtype) + args.forces_weight * loss_f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        ema.update()
        t_train += time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise SystemExit(f"[{args.framework}] non-finite loss at step {step}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            record(step + 1)
    out = Path(args.out) / f"{args.framework}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "framework": args.framework, "n_params": n_params, "n_train": len(ds.train),
        "n_val": len(ds.val), "constants": {k: v for k, v in const.items() if k != "e0"},
        "e0": {str(z): v for z, v in const["e0"].items()},
        "settings": {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "warmup",
                                                   "energy_weight", "forces_weight",
                                                   "ema_decay", "clip", "seed", "threads")},
        "ms_per_step": 1000 * t_train / args.steps, "curve": curve,
        "load_average": os.getloadavg()[0]}, indent=1))
    print(f"[{args.framework}] {1000 * t_train / args.steps:.0f} ms/step; wrote {out}",
          flush=True)


# --------------------------------------------------------------------------- driver and table
def compare(out: Path, figure: Path | None) -> None:
    res = {}
    for fw in FRAMEWORKS:
        path = out / f"{fw}.json"
        if not path.exists():
            raise SystemExit(f"{path}: missing; run --framework {fw} first")
        res[fw] = json.loads(path.read_text())
    o, m = res["ours"], res["macetorch"]
    if o["settings"]["steps"] != m["settings"]["steps"] or o["e0"] != m["e0"]:
        raise SystemExit(f"{out}: the two runs used different steps or E0s; rerun both")
    print(f"\n# alloy_emt {o['n_train']} / {o['n_val']}, {o['settings']}")
    print("\n| step | ours E | mace-torch E | ours F | mace-torch F | F ratio ours/mace-torch |")
    print("|---|---|---|---|---|---|")
    for a, b in zip(o["curve"], m["curve"], strict=True):
        print(f"| {a['step']} | {a['energy_mae_meV_atom']:.2f} | {b['energy_mae_meV_atom']:.2f} "
              f"| {a['forces_mae_meV_A']:.1f} | {b['forces_mae_meV_A']:.1f} "
              f"| {a['forces_mae_meV_A'] / b['forces_mae_meV_A']:.3f} |")
    a, b = o["curve"][-1], m["curve"][-1]
    print("\n| model | parameters | ms/step | val E MAE meV/atom | val F MAE meV/Å |")
    print("|---|---|---|---|---|")
    for name, r in (("atomgfm MACE", o), ("mace-torch 0.3.16 ScaleShiftMACE", m)):
        c = r["curve"][-1]
        print(f"| {name} | {r['n_params']:,} | {r['ms_per_step']:.0f} | "
              f"{c['energy_mae_meV_atom']:.2f} | {c['forces_mae_meV_A']:.1f} |")
    print(f"\nratio ours / mace-torch at step {a['step']}: energy "
          f"{a['energy_mae_meV_atom'] / b['energy_mae_meV_atom']:.3f}, forces "
          f"{a['forces_mae_meV_A'] / b['forces_mae_meV_A']:.3f} (target forces <= 1.1)")
    if figure is None:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no figure)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax, unit in (("energy_mae_meV_atom", axes[0], "E MAE (meV/atom)"),
                          ("forces_mae_meV_A", axes[1], "F MAE (meV/Å)")):
        for name, r in (("atomgfm MACE", o), ("mace-torch", m)):
            ax.plot([c["step"] for c in r["curve"]], [c[key] for c in r["curve"]], "o-",
                    label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {unit}")
        ax.set_yscale("log")
        ax.legend()
    fig.suptitle(f"MACE 128x0e, ℓ≤3, ν=3, 2 layers on EMT alloys ({o['n_train']:,} / "
                 f"{o['n_val']}), seed {o['settings']['seed']}")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)
    print(f"figure: {figure}")


def drive(args, argv: list[str]) -> None:
    passthrough = [a for a in argv if not a.startswith("--framework")]
    pythons = {"ours": args.ours_python, "macetorch": args.peer_python}
    procs = []
    for fw in FRAMEWORKS:
        cmd = [pythons[fw], __file__, "--framework", fw, *passthrough]
        print("$", " ".join(cmd), flush=True)
        p = subprocess.Popen(cmd)
        if args.sequential:
            p.wait()
        procs.append((fw, p))
    for fw, p in procs:
        if p.wait() != 0:
            raise SystemExit(f"the {fw} run failed (exit {p.returncode})")
    compare(Path(args.out), Path(args.figure) if args.figure else None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--framework", choices=[*FRAMEWORKS, "both", "compare"], default="both")
    p.add_argument("--data", default=str(ROOT / "demo_data" / "alloy_emt.extxyz"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--forces-weight", type=float, default=100.0)
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--clip", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/tmp/mace_accuracy")
    p.add_argument("--figure", default=str(ROOT / "benchmarks" / "figures" / "mace_accuracy.png"))
    p.add_argument("--ours-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument("--peer-python", default="/tmp/peers/bin/python")
    p.add_argument("--sequential", action="store_true",
                   help="run the two sides one after the other (default: in parallel)")
    args = p.parse_args()
    if args.framework in FRAMEWORKS:
        train_one(args)
    elif args.framework == "compare":
        compare(Path(args.out), Path(args.figure) if args.figure else None)
    else:
        argv = sys.argv[1:]
        if "--framework" in argv:  # drop "--framework both" and its value
            k = argv.index("--framework")
            argv = argv[:k] + argv[k + 2:]
        drive(args, argv)


if __name__ == "__main__":
    main()
