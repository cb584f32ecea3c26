"""Every registered backbone at its S and M presets: size, speed and memory, side by side.

    .venv/bin/python benchmarks/backbones.py                       # all backbones, S and M
    .venv/bin/python benchmarks/backbones.py --backbones painn --presets M --min-seconds 5
    .venv/bin/python benchmarks/backbones.py --quick               # smoke test

Workloads from ../shared/workload.py (``molecules``: batches of 32; ``alloys``: 108-atom fcc cells,
batches of 4), cutoff 5 Å, fp32, untrained weights (speed does not depend on their values).
Columns: parameters; energy+forces structures/s (model only, graphs built beforehand); training
step time (energy + force loss, double backward, AdamW) on the same batches labelled by ASE's EMT
(alloys, and the g2 molecules made of H, C, N, O only); peak memory (growth of the process max RSS
during the row on CPU, which reads 0 below an earlier peak; CUDA max allocated).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from ase.calculators.emt import EMT
from workload_loader import WORKLOAD, load_workload

from atomgfm import keys as K
from atomgfm.calculators.ase_calculator import atoms_to_structure
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.structure import Structure
from atomgfm.models.build import build_model
from atomgfm.registry import get, names
from atomgfm.train.losses import multitask_loss

EMT_ELEMENTS = {1, 6, 7, 8, 13, 28, 29, 46, 47, 78, 79}


def labelled(atoms) -> Structure:
    atoms = atoms.copy()
    atoms.calc = EMT()
    s = atoms_to_structure(atoms)
    s.energy, s.forces = float(atoms.get_potential_energy()), atoms.get_forces()
    return s


def timed(fn, batches, min_seconds: float) -> float:
    """Seconds per batch, after two warm-up batches."""
    for b in batches[:2]:
        fn(b)
    n, t0 = 0, time.perf_counter()
    while n < len(batches) or time.perf_counter() - t0 < min_seconds:
        fn(batches[n % len(batches)])
        n += 1
    return (time.perf_counter() - t0) / n


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", default=",".join(names("backbone")))
    p.add_argument("--presets", default="S,M")
    p.add_argument("--n-molecules", type=int, default=256)
    p.add_argument("--n-alloys", type=int, default=16)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--precision-errors", action="store_true",
                   help="only the fp32 and bf16 errors against fp64 (same weights), per backbone")
    args = p.parse_args()
    if args.quick:
        args.n_molecules, args.n_alloys, args.min_seconds = 64, 4, 0.0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision_errors:
        precision_table(args)
        return
    wl = load_workload(WORKLOAD)
    mols, cells = wl.molecules(args.n_molecules), wl.alloys(args.n_alloys)
    emt_mols = [m for m in mols if set(m.numbers.tolist()) <= EMT_ELEMENTS]
    data = {  # workload -> (structures to predict, EMT-labelled training set, batch size)
        "molecules": ([atoms_to_structure(a) for a in mols], [labelled(a) for a in emt_mols], 32),
        "alloys": ([atoms_to_structure(a) for a in cells], [labelled(a) for a in cells], 4)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, fp32, cutoff 5 Å")
    print(f"{'backbone':<9}{'preset':<7}{'params':>9}  {'workload':<10}{'E+F struct/s':>13}"
          f"{'train ms/step':>14}{'peak MiB':>10}")
    for name in args.backbones.split(","):
        get("backbone", name)
        for preset in args.presets.split(","):
            cfg = {"backbone": name, "preset": preset, "backbone_kwargs": {"cutoff": 5.0}}
            ff = build_model(cfg, ["bench"], seed=0)
            n_params = sum(p.numel() for p in ff.parameters() if p.requires_grad)
            opt = torch.optim.AdamW(ff.parameters(), lr=1e-4)
            scales = torch.ones(1, dtype=torch.float64)
            weights = torch.tensor([[1.0, 10.0, 0.0]], dtype=torch.float64)
            needs = ff.backbone.needs
            for wname, (structures, train_set, bs) in data.items():
                graphs = [structure_to_graph(s, 5.0, 0, needs) for s in structures]
                batches = [collate(graphs[i:i + bs]) for i in range(0, len(graphs), bs)]
                per_batch = sum(int(b[K.N_ATOMS].shape[0]) for b in batches) / len(batches)
                rss0 = rss_mib()
                ff.eval()
                infer = timed(lambda b, ff=ff: ff(b, forces=True), batches, args.min_seconds)
                tgraphs = [structure_to_graph(s, 5.0, 0, needs) for s in train_set]
                tbatches = [collate(tgraphs[i:i + bs]) for i in range(0, len(tgraphs), bs)]

                def step(b, ff=ff, opt=opt, scales=scales, weights=weights):
                    ff.train()
                    out = ff(b, forces=True, create_graph=True)
                    loss, _ = multitask_loss(out, b, scales, weights)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                train = timed(step, tbatches, args.min_seconds)
                print(f"{name:<9}{preset:<7}{n_params:>9}  {wname:<10}"
                      f"{per_batch / infer:>13.1f}{1000 * train:>14.1f}"
                      f"{rss_mib() - rss0:>10.0f}")


def precision_table(args) -> None:
    """Max |E − E_fp64| per atom and |F − F_fp64| of the same weights in fp32 and under bf16
    autocast, on 8 g2 molecules and 2 alloy cells (untrained weights, heads with unit scale)."""
    from atomgfm.testing.physics import precision_errors

    wl = load_workload(WORKLOAD)
    structures = ([atoms_to_structure(a) for a in wl.molecules(8)]
                  + [atoms_to_structure(a) for a in wl.alloys(2)])
    print(f"{'backbone':<9}{'preset':<7}{'fp32 E meV/atom':>16}{'fp32 F meV/Å':>14}"
          f"{'bf16 E meV/atom':>16}{'bf16 F meV/Å':>14}{'max |F| eV/Å':>14}")
    for name in args.backbones.split(","):
        for preset in args.presets.split(","):
            cfg = {"backbone": name, "preset": preset, "backbone_kwargs": {"cutoff": 5.0}}
            ff = build_model(cfg, ["bench"], seed=0).double().eval()
            err = precision_errors(ff, structures, [0] * len(structures))
            fmax = float(ff(collate([structure_to_graph(s, 5.0, 0, ff.backbone.needs)
                                     for s in structures], torch.float64))[K.FORCES]
                         .detach().abs().max())
            print(f"{name:<9}{preset:<7}{1000 * err['fp32_energy_eV_atom']:>16.2e}"
                  f"{1000 * err['fp32_forces_eV_A']:>14.2e}"
                  f"{1000 * err['bf16_energy_eV_atom']:>16.2f}"
                  f"{1000 * err['bf16_forces_eV_A']:>14.1f}{fmax:>14.2f}")


if __name__ == "__main__":
    main()
