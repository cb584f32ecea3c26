"""PaiNN energy+force throughput on the shared screening workloads (../shared/workload.py).

Run from the repository root (on a quiet machine; other jobs distort every number):

    .venv/bin/python benchmarks/throughput.py                      # demo and w128, both workloads
    .venv/bin/python benchmarks/throughput.py --quick              # smoke test, a few seconds
    .venv/bin/python benchmarks/throughput.py --device cuda --precision bf16 --json bench.json

--threads N sets torch's CPU threads (default: torch's choice, one per core). With another job on
the cores, multi-threaded CPU timings collapse (spinning threads); use --threads 1 there.

Models (untrained weights; speed does not depend on their values): ``demo`` = the model section of
configs/demo.yaml if present, else PaiNN F=64, 3 layers, cutoff 5 Å; ``w128`` = F=128, 3 layers,
cutoff 5 Å (the size of SchNetPack's PaiNN reference: ~1,350 molecules/s and 4.4 alloy cells/s,
model only, batch 32, 2 CPU cores).

Rows per (model, workload):
  model      graphs built and collated beforehand, --batch-size structures per batch; only
             ``ff(batch, forces=True)`` is timed (2 warm-up batches, then at least every batch once
             and at least --min-seconds). ``model+stress`` (alloys only) also computes the stress.
  end2end    ASE Atoms -> Structure -> neighbour lists (vesin) -> size-packed collation -> model ->
             numpy results through ``Predictor.predict`` (forces, no stress), repeated whole.
Columns: structures/s and atoms/s over the timed work, mean ms per batch, and peak memory: on CUDA
``torch.cuda.max_memory_allocated`` during the row; on CPU the growth of the process's max RSS
(``ru_maxrss``) during the row, which reads 0 when the row stayed below an earlier peak.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from functools import partial
from pathlib import Path

import torch
from workload_loader import WORKLOAD, load_workload

from atomgfm import keys as K
from atomgfm.calculators.ase_calculator import atoms_to_structure
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.inference.predictor import Predictor
from atomgfm.models.build import build_model
from atomgfm.precision import autocast, param_dtype, resolve_device

ROOT = Path(__file__).resolve().parents[1]
PAINN = {"demo": {"num_features": 64, "num_layers": 3, "cutoff": 5.0},
         "w128": {"num_features": 128, "num_layers": 3, "cutoff": 5.0}}


def model_config(name: str) -> dict:
    cfg = {"backbone": "painn", "backbone_kwargs": dict(PAINN[name])}
    demo_yaml = ROOT / "configs" / "demo.yaml"
    if name == "demo" and demo_yaml.exists():
        import yaml

        section = (yaml.safe_load(demo_yaml.read_text()) or {}).get("model") or {}
        if section.get("backbone", "painn") == "painn":
            cfg["backbone_kwargs"].update(section.get("backbone_kwargs") or {})
            cfg["head_hidden"] = section.get("head_hidden")
    return cfg


class Meter:
    """Peak memory of one row: CUDA max allocated, or growth of the process max RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self) -> Meter:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss0) / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_only(ff, batches, device, precision, stress, min_seconds) -> dict:
    def step(b):
        with autocast(precision, device):
            out = ff(b, forces=True, stress=stress)
        sync(device)
        return out

    for k in range(2):  # warm-up
        step(batches[k % len(batches)])
    n_done = n_structs = n_atoms = 0
    with Meter(device) as mem:
        t0 = time.perf_counter()
        while n_done < len(batches) or time.perf_counter() - t0 < min_seconds:
            b = batches[n_done % len(batches)]
            step(b)
            n_done += 1
            n_structs += b[K.N_ATOMS].numel()
            n_atoms += b[K.POSITIONS].shape[0]
        seconds = time.perf_counter() - t0
    return {"batches": n_done, "structures": n_structs, "atoms": n_atoms, "seconds": seconds,
            "peak_mib": mem.mib}


def end_to_end(pred, atoms_list, device, batch_size, min_seconds) -> dict:
    pred.predict([atoms_to_structure(a) for a in atoms_list[:batch_size]], head="bench",
                 stress=False)  # warm-up
    sizes = [len(a) for a in atoms_list]
    graphs = [structure_to_graph(atoms_to_structure(a), pred.cutoff, 0) for a in atoms_list]
    per_pass = len(pred.pack(graphs))  # the batches Predictor.predict runs
    passes = 0
    with Meter(device) as mem:
        t0 = time.perf_counter()
        while passes == 0 or time.perf_counter() - t0 < min_seconds:
            structures = [atoms_to_structure(a) for a in atoms_list]
            pred.predict(structures, head="bench", stress=False)
            sync(device)
            passes += 1
        seconds = time.perf_counter() - t0
    return {"batches": passes * per_pass, "structures": passes * len(sizes),
            "atoms": passes * sum(sizes), "seconds": seconds, "peak_mib": mem.mib}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="demo,w128")
    p.add_argument("--workloads", default="molecules,alloys")
    p.add_argument("--n-molecules", type=int, default=1000)
    p.add_argument("--n-alloys", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--precision", default="fp32", choices=["fp64", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--workload-file", type=Path, default=WORKLOAD)
    p.add_argument("--json", type=Path, help="write the rows and the environment here")
    p.add_argument("--quick", action="store_true", help="tiny sizes, no minimum time (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_molecules, args.n_alloys, args.min_seconds = 40, 4, 0.0

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = param_dtype(args.precision)
    workload = load_workload(args.workload_file)
    sizes = {"molecules": args.n_molecules, "alloys": args.n_alloys}
    env = {"device": str(device) + (f" ({torch.cuda.get_device_name(device)})"
                                    if device.type == "cuda" else ""),
           "cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "precision": args.precision, "batch_size": args.batch_size,
           "peak_memory": "cuda max_memory_allocated" if device.type == "cuda"
           else "CPU max RSS growth during the row"}
    print("  ".join(f"{k}: {v}" for k, v in env.items()))

    rows = []
    header = (f"{'model':<6} {'workload':<10} {'mode':<13} {'batches':>7} {'structs':>8} "
              f"{'atoms':>9} {'s':>7} {'struct/s':>10} {'atoms/s':>10} {'ms/batch':>9} "
              f"{'peak MiB':>9}")
    print(header + "\n" + "-" * len(header))
    for model_name in args.models.split(","):
        cfg = model_config(model_name)
        for wl in args.workloads.split(","):
            atoms_list = getattr(workload, wl)(sizes[wl])
            ff = build_model(cfg, ["bench"]).to(device, dtype).eval()
            cutoff = ff.cutoff
            graphs = [structure_to_graph(atoms_to_structure(a), cutoff) for a in atoms_list]
            batches = [collate(graphs[i:i + args.batch_size], dtype, device)
                       for i in range(0, len(graphs), args.batch_size)]
            runs = [("model", partial(model_only, ff, batches, device, args.precision, False,
                                      args.min_seconds))]
            if wl == "alloys":
                runs.append(("model+stress", partial(model_only, ff, batches, device,
                                                     args.precision, True, args.min_seconds)))
            pred = Predictor(ff, datasets=[{"name": "bench", "id": 0}],
                             elements=list(range(1, 119)), device=device,
                             precision=args.precision)
            runs.append(("end2end", partial(end_to_end, pred, atoms_list, device,
                                            args.batch_size, args.min_seconds)))
            for mode, run in runs:
                r = run()
                row = {"model": model_name, "workload": wl, "mode": mode, **r,
                       "structures_per_s": r["structures"] / r["seconds"],
                       "atoms_per_s": r["atoms"] / r["seconds"],
                       "ms_per_batch": 1e3 * r["seconds"] / r["batches"],
                       "backbone_kwargs": cfg["backbone_kwargs"]}
                rows.append(row)
                print(f"{model_name:<6} {wl:<10} {mode:<13} {r['batches']:>7} "
                      f"{r['structures']:>8} {r['atoms']:>9} {r['seconds']:>7.2f} "
                      f"{row['structures_per_s']:>10.1f} {row['atoms_per_s']:>10.0f} "
                      f"{row['ms_per_batch']:>9.1f} {r['peak_mib']:>9.1f}", flush=True)
            del batches, graphs, pred, ff
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
