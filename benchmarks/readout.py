"""Multi-head readout: stacked heads vs one head at a time, and encode-once vs one run per head.

Run from the repository root (quiet machine):

    .venv/bin/python benchmarks/readout.py                 # heads 1, 5, 16 on both workloads
    .venv/bin/python benchmarks/readout.py --quick         # smoke test

Rows per (workload, number of heads H), PaiNN F=64, 3 layers, cutoff 5 Å, fp32, untrained:
  own/stacked   each structure's own head (training and evaluation path): all H heads as one
                batched product, combined by one-hot weights; energy + forces.
  own/loop      the same with the heads evaluated one at a time (the protocol's default).
  all/batched   every head's energy and forces (per_head=True): one encode, one backward call
                vectorised over the heads (ForceField.head_backward = "batched").
  all/loop      the same, one encode and one backward per head over the kept graph ("loop").
  all/H runs    the same numbers from H separate own-head evaluations (H encodes, H backwards).
Columns: structures/s and mean ms per batch (batches of --batch-size structures).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from workload_loader import WORKLOAD, load_workload

from atomgfm import keys as K
from atomgfm.calculators.ase_calculator import atoms_to_structure
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.models.build import build_model
from atomgfm.models.heads import EnergyHead, Head

MODEL = {"backbone": "painn",
         "backbone_kwargs": {"num_features": 64, "num_layers": 3, "cutoff": 5.0}}


def timed(fn, batches, min_seconds: float) -> float:
    def run(b):
        fn(b)
        if b[K.POSITIONS].is_cuda:
            torch.cuda.synchronize()

    for b in batches[:2]:
        run(b)
    n, t0 = 0, time.perf_counter()
    while True:
        for b in batches:
            run(b)
            n += 1
        if time.perf_counter() - t0 >= min_seconds:
            return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heads", default="1,5,16")
    p.add_argument("--n-molecules", type=int, default=256)
    p.add_argument("--n-alloys", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--workload-file", type=Path, default=WORKLOAD)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.heads, args.n_molecules, args.n_alloys, args.min_seconds = "1,3", 32, 4, 0.0
    if args.threads:
        torch.set_num_threads(args.threads)
    wl = load_workload(args.workload_file)
    workloads = {"molecules": wl.molecules(args.n_molecules), "alloys": wl.alloys(args.n_alloys)}
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, fp32")
    print(f"{'workload':<10}{'H':>4}  {'mode':<12}{'structures/s':>14}{'ms/batch':>10}")
    stacked = EnergyHead.stacked
    for wname, atoms in workloads.items():
        structures = [atoms_to_structure(a) for a in atoms]
        for H in [int(h) for h in args.heads.split(",")]:
            names = [f"h{k}" for k in range(H)]
            ff = build_model(MODEL, names, seed=0).eval().to(device)
            graphs = [structure_to_graph(s, 5.0, k % H) for k, s in enumerate(structures)]
            bs = args.batch_size if wname == "molecules" else max(args.batch_size // 8, 1)
            batches = [collate(graphs[i:i + bs], device=device)
                       for i in range(0, len(graphs), bs)]
            n_per = sum(int(b[K.N_ATOMS].shape[0]) for b in batches) / len(batches)
            rows = {}
            def own(b, ff=ff):
                return ff(b, forces=True)

            rows["own/stacked"] = timed(own, batches, args.min_seconds)
            EnergyHead.stacked = classmethod(Head.stacked.__func__)
            try:
                rows["own/loop"] = timed(own, batches, args.min_seconds)
            finally:
                EnergyHead.stacked = stacked
            if H > 1:
                def all_heads(b, names=names, ff=ff):
                    w = torch.full((b[K.N_ATOMS].shape[0], len(names)), 1.0 / len(names),
                                   device=b[K.POSITIONS].device)
                    return ff(b, heads=names, weights=w, per_head=True)

                def separate(b, H=H, ff=ff):
                    for k in range(H):
                        bk = dict(b)
                        bk[K.DATASET] = torch.full_like(b[K.DATASET], k)
                        ff(bk, forces=True)

                for mode in ("batched", "loop"):
                    ff.head_backward = mode
                    rows[f"all/{mode}"] = timed(all_heads, batches, args.min_seconds)
                rows["all/H runs"] = timed(separate, batches, args.min_seconds)
            for mode, dt in rows.items():
                print(f"{wname:<10}{H:>4}  {mode:<12}{n_per / dt:>14.1f}{1000 * dt:>10.1f}")


if __name__ == "__main__":
    main()
