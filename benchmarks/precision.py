"""Error and speed of one checkpoint in fp64, fp32 and bf16 (and TF32 on CUDA), side by side.

    .venv/bin/python benchmarks/precision.py                              # runs/demo/best.pt
    .venv/bin/python benchmarks/precision.py --checkpoint RUN/best.pt --train-steps 20
    .venv/bin/python benchmarks/precision.py --quick                      # smoke test

The same weights (EMA, as evaluated) are cast to each precision; the validation split of the
checkpoint's datasets is evaluated in every mode. Columns:

- E MAE / F MAE: error against the labels (meV/atom, meV/Å), mean over structures/components of
  all datasets together;
- ΔE / ΔF vs fp64: mean and max absolute difference of the predictions from the fp64
  predictions (what the precision itself costs);
- infer structures/s: energy + forces on pre-built graphs (whole split per pass);
- train ms/step: energy + force loss, double backward, AdamW step, on training batches packed as
  in training (mean over ``--train-steps`` steps, after one warm-up step).
Speed is measured in ``--repeats`` rounds that interleave the modes; each mode's best round is
reported (bursts of load from other jobs then hit every mode alike).

Energies are summed in float64 in every mode (heads and references are float64); bf16 runs the
network's products under autocast with float32 master weights.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from atomgfm import keys as K
from atomgfm.config.schema import config_from_dict
from atomgfm.data.graph import collate
from atomgfm.data.mixing import packed_batches
from atomgfm.data.sources import build_graphs, load_datasets
from atomgfm.models.checkpoint import load_model
from atomgfm.precision import autocast, matmul_tf32, param_dtype, resolve_device
from atomgfm.train.losses import multitask_loss


def predict(model, batches, precision, tf32, device):
    """Energies (eV) and forces (eV/Å) for every batch, float64 numpy; and the seconds taken."""
    dtype = param_dtype(precision)
    energies, forces = [], []
    t = time.perf_counter()
    for graphs in batches:
        batch = collate(graphs, dtype, device)
        with autocast(precision, device), matmul_tf32(tf32, device):
            out = model(batch, forces=True)
        energies.append(out[K.ENERGY].detach().double())
        forces.append(out[K.FORCES].detach().double())
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    return (torch.cat(energies).cpu().numpy(), torch.cat(forces).cpu().numpy(), secs)


class TrainTimer:
    """E+F training steps (loss, double backward, AdamW) on this mode's own copy of the model,
    cycling through ``batches``; ``time(steps)`` returns the mean ms per step."""

    def __init__(self, model, batches, precision, tf32, device, scales, weights) -> None:
        self.model = copy.deepcopy(model).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.batches, self.precision, self.tf32, self.device = batches, precision, tf32, device
        self.scales, self.weights, self.i = scales, weights, 0
        self.time(1)  # warm-up

    def time(self, steps: int) -> float:
        dtype = param_dtype(self.precision)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        total = 0.0
        for _ in range(steps):
            batch = collate(self.batches[self.i % len(self.batches)], dtype, self.device)
            self.i += 1
            sync()
            t = time.perf_counter()
            with autocast(self.precision, self.device), matmul_tf32(self.tf32, self.device):
                out = self.model(batch, forces=True, create_graph=True)
                loss, _ = multitask_loss(out, batch, self.scales, self.weights)
            self.opt.zero_grad(set_to_none=True)
            with matmul_tf32(self.tf32, self.device):
                loss.backward()
            self.opt.step()
            sync()
            total += time.perf_counter() - t
        return 1000 * total / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/demo/best.pt")
    p.add_argument("--split", default="val", choices=["val", "train"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--train-steps", type=int, default=5, help="training steps per round")
    p.add_argument("--max-structures", type=int, default=None,
                   help="at most this many structures per dataset (default: the whole split)")
    p.add_argument("--quick", action="store_true", help="5 structures per dataset, 2 steps")
    args = p.parse_args()
    if args.quick:
        args.max_structures, args.train_steps, args.repeats = 5, 2, 1
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    model, state = load_model(args.checkpoint)
    cfg = config_from_dict(state["config"])
    table = sorted(state["datasets"], key=lambda d: d["id"])
    ids = {d["name"]: d["id"] for d in table}
    datasets = [d for d in load_datasets(cfg.data) if d.name in ids]
    val, train = [], []
    for d in datasets:
        for split, dest in ((args.split, val), ("train", train)):
            structures = d.split(split)[: args.max_structures]
            dest.extend(build_graphs(structures, model.cutoff, ids[d.name],
                                     needs=model.backbone.needs, progress=False))
    n_atoms = np.array([len(g[K.ATOMIC_NUMBERS]) for g in val])
    pack = cfg.data.max_atoms_per_batch, cfg.data.max_structures_per_batch
    val_batches = [[val[i] for i in idx] for idx in packed_batches(n_atoms, *pack)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train))
    train_sizes = np.array([len(train[i][K.ATOMIC_NUMBERS]) for i in order])
    train_batches = [[train[order[i]] for i in idx]
                     for idx in packed_batches(train_sizes, *pack)]
    e_true = np.array([float(torch.as_tensor(g[K.ENERGY]).reshape(-1)[0]) for g in val])
    f_true = np.concatenate([torch.as_tensor(g[K.FORCES]).double().numpy() for g in val])
    scales = torch.tensor([d["normalization"]["scale"] for d in table], dtype=torch.float64,
                          device=device)
    weights = torch.tensor([[d["weights"]["energy"], d["weights"]["forces"], 0.0]
                            for d in table], dtype=torch.float64, device=device)

    modes = [("fp64", False), ("fp32", False), ("bf16", False)]
    if device.type == "cuda":
        modes.insert(2, ("fp32", True))
    print(f"# {args.checkpoint} (step {state.get('step')}), {args.split} split: {len(val)} "
          f"structures, {int(n_atoms.sum())} atoms; device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| precision | E MAE meV/atom | F MAE meV/Å | ΔE vs fp64 meV/atom (mean, max abs) | "
          "ΔF vs fp64 meV/Å (mean, max abs) | infer structures/s | train ms/step |")
    print("|---|---|---|---|---|---|---|")
    # Errors: one pass per mode. Speed: rounds that interleave the modes (so a burst of load
    # from other jobs hits every mode alike); the best round of each mode is reported.
    rows, models, trainers = [], {}, {}
    for precision, tf32 in modes:
        m = copy.deepcopy(model).to(device, param_dtype(precision))
        models[precision, tf32] = m
        e, f, _ = predict(m, val_batches, precision, tf32, device)
        rows.append((precision, tf32, e, f))
        trainers[precision, tf32] = TrainTimer(m, train_batches, precision, tf32, device, scales,
                                               weights)
    infer = {k: float("inf") for k in models}
    train = {k: float("inf") for k in models}
    for _ in range(args.repeats):
        for key, m in models.items():
            infer[key] = min(infer[key], predict(m, val_batches, *key, device)[2])
            train[key] = min(train[key], trainers[key].time(args.train_steps))
    e_ref, f_ref = rows[0][2], rows[0][3]
    for precision, tf32, e, f in rows:
        e_err, f_err = np.abs(e - e_true) / n_atoms, np.abs(f - f_true)
        de, df = np.abs(e - e_ref) / n_atoms, np.abs(f - f_ref)
        name = precision + (" + TF32" if tf32 else "")
        print(f"| {name} | {1000 * e_err.mean():.2f} | {1000 * f_err.mean():.2f} | "
              f"{1000 * de.mean():.2g} / {1000 * de.max():.2g} | "
              f"{1000 * df.mean():.2g} / {1000 * df.max():.2g} | "
              f"{len(val) / infer[precision, tf32]:.1f} | {train[precision, tf32]:.1f} |")

if __name__ == "__main__":
    main()
