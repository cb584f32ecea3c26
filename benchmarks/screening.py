"""Screening engine: naive per-head evaluation against the optimised path, FLOP efficiency, and a
streamed run of generated candidates with flat memory.

Run from the repository root (quiet machine):

    .venv/bin/python benchmarks/screening.py                      # 16 heads, both workloads
    .venv/bin/python benchmarks/screening.py --quick              # smoke test
    .venv/bin/python benchmarks/screening.py --stream 1000000     # streamed run, peak RSS

Model: PaiNN 128x3, cutoff 5 Å, 16 heads (untrained weights; speed does not depend on them).
Workloads: ../shared/workload.py (g2 molecules; 108-atom fcc alloys), packed as ``screen run``
packs them with forces (screen.run.batch_limits). Rows:
  naive         every head on its own: its own encoder pass (and backward for forces), then
                blended by the router weights: 16 encodes, 16 backwards.
  blend/all     the screening step (screen.engine.blend): one encode, all 16 heads as one
                stacked product, blend, one backward of the blend; no head skipped.
  blend/router  the same with router-like weights (softmax of 3·N(0,1), fixed seed) and heads
                below 0.01 skipped.
  blend/frozen  blend/all on the screener's inference copy (screen.engine.screening_model:
                weights requires_grad False), eager.
  blend/compiled  blend/frozen with the backbone compiled (torch.compile dynamic=True, inductor),
                what ``screen run --compile on`` uses; one compilation serves every batch size
                (and both workloads): ``first pass`` is the time of the first pass over the
                batches in each mode, compilation included when that mode compiles.
Columns: structures/s, ms per batch, speed-up over naive; then model GFLOP per structure
(torch.utils.flop_counter, the blend/all path) and the fraction of the machine's fp32 matrix
multiply rate (a 1024² matmul loop timed in the same run) that the row reaches (fp64 rows are
measured against the same fp32 rate).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from workload_loader import WORKLOAD, load_workload

from atomgfm import keys as K
from atomgfm.calculators.ase_calculator import atoms_to_structure
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.mixing import packed_batches
from atomgfm.models.build import build_model
from atomgfm.screen.engine import blend, naive, screening_model
from atomgfm.screen.run import batch_limits

CUTOFF = 5.0


def model(n_heads: int, width: int, layers: int):
    cfg = {"backbone": "painn", "backbone_kwargs": {"num_features": width, "num_layers": layers,
                                                    "cutoff": CUTOFF}}
    return build_model(cfg, [f"h{k}" for k in range(n_heads)], seed=0).eval()


def batches_of(atoms, dtype, device):
    graphs = [structure_to_graph(atoms_to_structure(a), CUTOFF) for a in atoms]
    lim = batch_limits(device.type, forces=True)  # the same batches for every row
    packs = packed_batches([len(g[K.ATOMIC_NUMBERS]) for g in graphs], lim["max_atoms"],
                           lim["max_structures"], [g[K.EDGE_INDEX].shape[1] for g in graphs],
                           lim["max_edges"])
    return [collate([graphs[i] for i in p], dtype, device) for p in packs]


def timed(fn, batches, min_seconds: float) -> float:
    """Seconds per pass over ``batches`` (after one warm-up pass)."""
    def one():
        for b in batches:
            fn(b)
        if batches[0][K.POSITIONS].is_cuda:
            torch.cuda.synchronize()

    one()
    n, t0 = 0, time.perf_counter()
    while True:
        one()
        n += 1
        if time.perf_counter() - t0 >= min_seconds:
            return (time.perf_counter() - t0) / n


def matmul_rate(dtype=torch.float32, device="cpu", n=1024, seconds=1.0) -> float:
    """Measured FLOP/s of an n×n matmul."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    if a.is_cuda:
        torch.cuda.synchronize()
    return 2 * n**3 * k / (time.perf_counter() - t0)


def flops(ff, batch, heads, forces: bool) -> int:
    """FLOPs of blend/all on one batch: encode, stacked heads, and (forces) the backward. The
    same computation as ``blend`` with ``.backward()`` in place of ``autograd.grad``, which
    the flop counter's module hooks do not support on leaf inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    from atomgfm.nn.scatter import scatter_sum

    b = dict(batch)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(forces):
        if forces:
            b[K.POSITIONS] = b[K.POSITIONS].detach().requires_grad_(True)
        per_atom = ff.readout(ff.encode(b), b, heads)
        energy = scatter_sum(per_atom, b[K.BATCH], b[K.N_ATOMS].shape[0]).mean(-1)
        if forces:
            energy.sum().backward()
    return counter.get_total_flops()


def compare(args, device) -> None:
    wl = load_workload(args.workload_file)
    workloads = {"molecules": wl.molecules(args.n_molecules), "alloys": wl.alloys(args.n_alloys)}
    rate = matmul_rate(device=device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; "
          f"PaiNN {args.width}x{args.layers}, {args.heads} heads; fp32 matmul "
          f"{rate / 1e9:.1f} GFLOP/s")
    print(f"{'workload':<10}{'prec':<6}{'forces':<8}{'mode':<16}{'struct/s':>10}{'ms/batch':>10}"
          f"{'speed-up':>10}{'GFLOP/str':>11}{'of matmul':>11}")
    heads = [f"h{k}" for k in range(args.heads)]
    gen = torch.Generator().manual_seed(0)
    for precision in args.precisions.split(","):
        dtype = {"fp32": torch.float32, "fp64": torch.float64}[precision]
        ff = model(args.heads, args.width, args.layers).to(device, dtype)
        frozen = screening_model(ff)
        compiled = None if args.no_compile else screening_model(ff, compile=True)
        for wname, atoms in workloads.items():
            batches = batches_of(atoms, dtype, device)
            weights = {id(b): torch.softmax(3 * torch.randn(
                (b[K.N_ATOMS].shape[0], len(heads)), generator=gen, dtype=torch.float64),
                -1).to(device) for b in batches}
            for forces in (True, False):
                def run_naive(b, forces=forces, ff=ff, weights=weights):
                    return naive(ff, b, weights[id(b)], heads, forces=forces)

                def run_all(b, forces=forces, ff=ff, weights=weights):
                    return blend(ff, b, weights[id(b)], heads, 0.0, forces, reference=False)

                def run_router(b, forces=forces, ff=ff, weights=weights):
                    return blend(ff, b, weights[id(b)], heads, 0.01, forces, reference=False)

                t_naive = timed(run_naive, batches, args.min_seconds)
                rows = [("naive", t_naive), ("blend/all", timed(run_all, batches,
                                                                args.min_seconds)),
                        ("blend/router", timed(run_router, batches, args.min_seconds)),
                        ("blend/frozen", timed(partial(run_all, ff=frozen), batches,
                                               args.min_seconds))]
                first_s = None
                if compiled is not None:
                    t0 = time.perf_counter()
                    for b in batches:  # the first pass compiles (once for every batch size)
                        run_all(b, ff=compiled)
                    first_s = time.perf_counter() - t0
                    rows.append(("blend/compiled", timed(partial(run_all, ff=compiled), batches,
                                                         args.min_seconds)))
                fl = sum(flops(ff, b, heads, forces) for b in batches) / len(atoms)
                for mode, dt in rows:
                    sps = len(atoms) / dt
                    extra = ""
                    if mode in ("blend/all", "blend/compiled"):
                        extra = f"{fl / 1e9:>11.3f}{fl * sps / rate:>11.1%}"
                    if mode == "blend/compiled":
                        extra += f"   first pass {first_s:.1f} s"
                    print(f"{wname:<10}{precision:<6}{str(forces):<8}{mode:<16}{sps:>10.1f}"
                          f"{1000 * dt / len(batches):>10.1f}{t_naive / dt:>10.1f}{extra}",
                          flush=True)


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stream(args, device) -> None:
    """A streamed screen of ``args.stream`` generated binary fcc alloy cells (8 atoms: 2x1x1
    conventional cells, 7 elements, composition step 1/8, random decorations, 0.03 Å rattle)."""
    import resource
    import shutil
    import tempfile

    from atomgfm.screen.generate import CandidateGenerator
    from atomgfm.screen.run import GeneratedCandidates, Screener, ScreenSettings

    spec = {"seed": 0, "families": [
        {"kind": "alloy", "lattice": "fcc", "elements": ["Cu", "Ni", "Pd", "Au", "Ag", "Pt", "Al"],
         "components": [2], "supercells": [[2, 1, 1]], "step": 0.125,
         "samples": 1, "rattle": 0.03}]}
    per_sample = len(CandidateGenerator(spec))  # 147 compositions
    spec["families"][0]["samples"] = max(1, -(-args.stream // per_sample))
    gen = CandidateGenerator(spec, "<benchmark spec>")
    ff = model(args.heads, args.width, args.layers)
    names = [f"h{k}" for k in range(args.heads)]
    table = [{"name": h, "id": k, "elements": list(range(1, 84))} for k, h in enumerate(names)]
    settings = ScreenSettings(threshold=0.01, forces=args.forces, precision="fp32",
                              device=str(device), chunk_size=args.chunk_size,
                              workers=args.workers, progress=not args.no_progress,
                              compile="off" if args.no_compile else "auto")
    screener = Screener(ff, table, None, None, settings, "<benchmark>")

    class First:  # the first N candidates of the generator
        def __init__(self, g, n):
            self.g, self.n, self.source, self.digest = g, n, g.source, g.digest

        def __len__(self):
            return min(self.n, len(self.g))

        def __getitem__(self, i):
            return self.g[i]

        def counts(self):
            return [("alloy", len(self))]

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="screen-bench-"))
    samples, times = [], []

    def on_chunk(path):
        samples.append(rss_mib())
        times.append(time.perf_counter())

    n = len(First(gen, args.stream))
    print(f"streaming {n:,} candidates (8-atom binary fcc alloy cells, {args.heads} heads, "
          f"forces={args.forces}, compile={'off' if args.no_compile else 'auto'}, "
          f"{args.workers} workers) into {out}; RSS before {rss_mib():.0f} MiB", flush=True)
    t_start = time.perf_counter()
    s = screener.run(GeneratedCandidates(First(gen, args.stream)), out, on_chunk=on_chunk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    q = np.percentile(samples, [0, 50, 100]) if samples else [float("nan")] * 3
    print(f"{s['scored']:,} scored in {s['seconds']:.1f} s = {s['structures_per_s']:.1f} "
          f"structures/s; {s['chunks']} chunks; RSS after each chunk: first {samples[0]:.0f}, "
          f"median {q[1]:.0f}, last {samples[-1]:.0f}, max {q[2]:.0f} MiB; peak RSS main "
          f"{peak:.0f} MiB, largest worker {child:.0f} MiB")
    if len(times) > 1:  # the first chunk carries the start-up and the compilation
        steady = args.chunk_size * (len(times) - 1) / (times[-1] - times[0])
        print(f"after the first chunk {steady:.1f} structures/s: 1,000,000 candidates would "
              f"take {1e6 / steady / 60:.0f} min (first chunk {times[0] - t_start:.1f} s)")
    if not args.out:
        shutil.rmtree(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--n-molecules", type=int, default=256)
    p.add_argument("--n-alloys", type=int, default=32)
    p.add_argument("--precisions", default="fp32,fp64")
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workload-file", type=Path, default=WORKLOAD)
    p.add_argument("--no-compile", action="store_true",
                   help="leave out blend/compiled (--stream: run eager)")
    p.add_argument("--stream", type=int, default=0, metavar="N",
                   help="instead: a streamed run of N generated candidates")
    p.add_argument("--forces", action="store_true", help="(--stream) with forces")
    p.add_argument("--workers", type=int, default=1, help="(--stream) graph-building processes")
    p.add_argument("--chunk-size", type=int, default=4096, help="(--stream)")
    p.add_argument("--out", help="(--stream) keep the results here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n_molecules, args.n_alloys, args.min_seconds = 64, 4, 0.0
        args.width, args.precisions = 32, "fp32"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.stream:
        stream(args, device)
        return
    compare(args, device)


if __name__ == "__main__":
    main()
