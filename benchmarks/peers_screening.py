"""End-to-end screening against SchNetPack's PaiNN of the same width, in the same run.

Run with the peer venv (../shared/PEERS.md; our package installed there with
``pip install --no-deps -e .``), from the repository root:

    /tmp/peers/bin/python benchmarks/peers_screening.py                 # both workloads
    /tmp/peers/bin/python benchmarks/peers_screening.py --quick         # smoke test
    /tmp/peers/bin/python benchmarks/peers_screening.py --threads 1     # on a loaded machine
    /tmp/peers/bin/python benchmarks/peers_screening.py --threads 2 --procs 2   # whole machine

Both start from the same ASE Atoms (../shared/workload.py: g2 molecules, 108-atom fcc alloys)
and end with energies and forces in NumPy, neighbour lists included; fp32, untrained weights.
  schnetpack   PaiNN 128x3 as PEERS.md sets it up (GaussianRBF(20, 5 Å), CosineCutoff(5 Å),
               Atomwise, Forces), ``AtomsConverter(MatScipyNeighborList(5 Å))``, batches of 32,
               ``model(inputs)`` in eval mode, energy and forces to NumPy.
  atomgfm      PaiNN 128x3 (cutoff 5 Å, --heads heads) through ``Screener.run`` on the Atoms
               (screen.run.AtomsCandidates): graphs built in --workers processes (0: in the main
               process, like SchNetPack), packed by screen.run.batch_limits, the blend of every
               head, forces from one backward, Parquet chunks written to a temporary folder.
               ``compiled``: the backbone compiled (torch.compile, ``--compile on``); the
               compilation happens in an untimed warm-up run.
``--procs N`` adds rows of N processes with one torch thread each, both models: every process
holds its own copy of the model and scores its share of the same Atoms at the same time
(atomgfm: ``Screener.run`` with rank/world, as ``torchrun --nproc-per-node N atomgfm screen run``
shares a run; SchNetPack: a contiguous share each); a round's time is from the common start to
the last process's end.
Repeats interleave the models; each row gives the median and range of structures/s over the
repeats and the ratio of medians to SchNetPack. The last column is the fraction of the fp32
matmul rate (1024² matmuls timed in the same run) that the atomgfm row reaches with the model
FLOPs (torch.utils.flop_counter, energy + forces, per structure) it performs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import typing

import torch
from workload_loader import WORKLOAD, load_workload

CUTOFF = 5.0


class SchNetPack:
    """SchNetPack's PaiNN as PEERS.md sets it up, end to end from Atoms in batches of 32."""

    name = "schnetpack"

    def __init__(self, width: int, layers: int, batch_size: int = 32) -> None:
        import torch.utils.data.dataloader as dl

        dl.T_co = typing.TypeVar("T_co", covariant=True)  # SchNetPack 2.x needs it (PEERS.md)
        try:
            import schnetpack as spk
        except ImportError:
            raise SystemExit("SchNetPack is not installed here: run this with the peer venv "
                             "(/tmp/peers/bin/python, see ../shared/PEERS.md)") from None
        torch.manual_seed(0)
        rep = spk.representation.PaiNN(n_atom_basis=width, n_interactions=layers,
                                       radial_basis=spk.nn.GaussianRBF(20, CUTOFF),
                                       cutoff_fn=spk.nn.CosineCutoff(CUTOFF))
        self.model = spk.model.NeuralNetworkPotential(
            representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
            output_modules=[spk.atomistic.Atomwise(n_in=width, output_key="energy"),
                            spk.atomistic.Forces(energy_key="energy", force_key="forces")]).eval()
        self.converter = spk.interfaces.AtomsConverter(
            neighbor_list=spk.transform.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32)
        self.batch_size = batch_size

    def warm_up(self, atoms) -> None:
        self(atoms[:self.batch_size])

    def __call__(self, atoms) -> int:
        n = 0
        for k in range(0, len(atoms), self.batch_size):
            out = self.model(self.converter(atoms[k:k + self.batch_size]))
            e, f = out["energy"].detach().numpy(), out["forces"].detach().numpy()
            n += len(e)
            assert f.shape[1] == 3
        return n


class Ours:
    """atomgfm's ``screen run`` path (Screener.run on AtomsCandidates) into a temp folder."""

    def __init__(self, width: int, layers: int, heads: int, workers: int, compile: bool,
                 chunk_size: int, rank: int = 0, world: int = 1) -> None:
        from atomgfm.models.build import build_model
        from atomgfm.screen.run import Screener, ScreenSettings

        names = [f"h{k}" for k in range(heads)]
        cfg = {"backbone": "painn", "backbone_kwargs": {"num_features": width,
                                                        "num_layers": layers, "cutoff": CUTOFF}}
        self.ff = build_model(cfg, names, seed=0).eval()
        table = [{"name": h, "id": k, "elements": list(range(1, 84))}
                 for k, h in enumerate(names)]
        settings = ScreenSettings(threshold=0.01, forces=True, precision="fp32", device="cpu",
                                  chunk_size=chunk_size, workers=workers,
                                  compile="on" if compile else "off", progress=False)
        self.screener = Screener(self.ff, table, None, None, settings, "<benchmark>")
        self.rank, self.world = rank, world
        self.name = (f"atomgfm{' compiled' if compile else ''}, {heads} head"
                     f"{'s' if heads > 1 else ''}, {workers} worker{'s' if workers != 1 else ''}")

    def warm_up(self, atoms) -> None:
        self(atoms)  # compiles when asked (one compilation serves every batch size)

    def __call__(self, atoms) -> int:
        out = tempfile.mkdtemp(prefix="peers-screen-")
        try:
            s = self.screener.run(atoms, out, rank=self.rank, world=self.world)
        finally:
            shutil.rmtree(out)
        if s["errors"]:
            raise RuntimeError(f"{s['errors']} candidates could not be scored")
        return s["scored"]

    def flops_per_structure(self, atoms) -> float:
        """Model FLOPs (encode, all heads, force backward) per structure, on batches packed as
        ``screen run`` packs them."""
        from screening import batches_of, flops

        heads = list(self.ff.model.dataset_names)
        batches = batches_of(atoms, torch.float32, torch.device("cpu"))
        return sum(flops(self.ff, b, heads, True) for b in batches) / len(atoms)


def _atoms(workloads: dict) -> dict:
    """The workloads' Atoms from their file and counts: {"molecules": [...], "alloys": [...]}."""
    wl = load_workload(workloads["file"])
    return {"molecules": wl.molecules(workloads["molecules"]),
            "alloys": wl.alloys(workloads["alloys"])}


def _process(conn, barrier, spec: dict, rank: int, world: int, workloads: dict) -> None:
    """One of ``Processes``: builds its model on one torch thread, then answers ("warm"|"run",
    workload) with (structures scored, start, end) on the system-wide monotonic clock."""
    _peer_imports()
    torch.set_num_threads(1)
    atoms = _atoms(workloads)
    if spec["kind"] == "schnetpack":
        model = SchNetPack(spec["width"], spec["layers"])

        def share(a):  # a contiguous share of the same Atoms
            lo, hi = len(a) * rank // world, len(a) * (rank + 1) // world
            return a[lo:hi]
    else:
        model = Ours(spec["width"], spec["layers"], spec["heads"], spec["workers"],
                     spec["compile"], spec["chunk_size"], rank, world)

        def share(a):  # Screener.run picks this rank's blocks itself
            return a
    while True:
        msg = conn.recv()
        if msg is None:
            return
        what, wname = msg
        a = share(atoms[wname])
        if what == "warm":
            model.warm_up(a)
            conn.send(None)
            continue
        barrier.wait()
        t0 = time.monotonic()
        n = model(a)
        conn.send((n, t0, time.monotonic()))


class Processes:
    """``procs`` processes of one torch thread each, each with its own copy of the model,
    scoring their shares of the same Atoms at the same time (spawned, so nothing is shared)."""

    def __init__(self, spec: dict, procs: int, workloads: dict, name: str) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.barrier = barrier = ctx.Barrier(procs)  # kept: the children attach to it
        self.spec, self.name = spec, f"{name}, {procs} processes x 1 thread"
        self.conns, self.procs = [], []
        for r in range(procs):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_process, args=(theirs, barrier, spec, r, procs, workloads),
                            daemon=True)
            p.start()
            self.conns.append(mine)
            self.procs.append(p)

    def _ask(self, msg) -> list:
        for c in self.conns:
            c.send(msg)
        return [c.recv() for c in self.conns]

    def warm_up(self, wname: str) -> None:
        self._ask(("warm", wname))

    def __call__(self, wname: str) -> tuple[int, float]:
        """(structures scored by all processes, seconds from the common start to the last
        end)."""
        res = self._ask(("run", wname))
        return sum(n for n, _, _ in res), max(e for _, _, e in res) - min(s for _, s, _ in res)

    def close(self) -> None:
        for c in self.conns:
            c.send(None)
        for p in self.procs:
            p.join(timeout=30)


def _peer_imports() -> None:
    """mace-torch in the peer venv pins e3nn 0.4.4, which loads its constants under torch 2.13
    only once ``import mace`` has set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (PEERS.md); our package
    imports e3nn with its MACE backbone (unused here). Benchmark process only: no checkpoint is
    loaded in it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        old = int(version("e3nn").split(".")[1]) < 6
    except PackageNotFoundError:
        return
    if old:
        import mace  # noqa: F401


def main() -> None:
    _peer_imports()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-molecules", type=int, default=2048)
    p.add_argument("--n-alloys", type=int, default=32)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", default="1", help="comma-separated head counts for atomgfm rows")
    p.add_argument("--workers", default="0,1",
                   help="comma-separated graph-building process counts for atomgfm rows")
    p.add_argument("--no-eager", action="store_true", help="leave out uncompiled atomgfm rows")
    p.add_argument("--chunk-size", type=int, default=256,
                   help="candidates per block (a worker builds the next block meanwhile)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--procs", type=int, default=0,
                   help="also rows of this many one-thread processes (each model, atomgfm "
                        "compiled with 0 workers)")
    p.add_argument("--workload-file", default=WORKLOAD)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n_molecules, args.n_alloys, args.repeats, args.width = 128, 4, 1, 32
    if args.threads:
        torch.set_num_threads(args.threads)
    from screening import matmul_rate

    shared = {"file": str(args.workload_file), "molecules": args.n_molecules,
              "alloys": args.n_alloys}
    workloads = _atoms(shared)
    models = [SchNetPack(args.width, args.layers)]
    for h in (int(x) for x in args.heads.split(",")):
        for w in (int(x) for x in args.workers.split(",")):
            for compiled in ((True,) if args.no_eager else (False, True)):
                models.append(Ours(args.width, args.layers, h, w, compiled, args.chunk_size))
    rate = matmul_rate()
    if args.procs:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        rate1 = matmul_rate()  # a process of the --procs rows: one thread
        torch.set_num_threads(threads)
        base = {"width": args.width, "layers": args.layers}
        ours = {**base, "kind": "atomgfm", "heads": 1, "workers": 0, "compile": True,
                "chunk_size": args.chunk_size}
        models += [Processes({**base, "kind": "schnetpack"}, args.procs, shared, "schnetpack"),
                   Processes(ours, args.procs, shared, "atomgfm compiled, 1 head, 0 workers")]
        flop_model = Ours(args.width, args.layers, 1, 0, False, args.chunk_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; PaiNN {args.width}x"
          f"{args.layers}, energy + forces, fp32; {len(workloads['molecules'])} molecules, "
          f"{len(workloads['alloys'])} alloy cells; fp32 matmul {rate / 1e9:.1f} GFLOP/s",
          flush=True)
    for wname, atoms in workloads.items():
        for m in models:
            t0 = time.perf_counter()
            m.warm_up(wname if isinstance(m, Processes) else atoms)
            print(f"warm-up {wname:<9} {m.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    speeds = {(w, m.name): [] for w in workloads for m in models}
    for r in range(args.repeats):
        for wname, atoms in workloads.items():
            for m in models:
                if isinstance(m, Processes):
                    n, dt = m(wname)
                else:
                    t0 = time.perf_counter()
                    n = m(atoms)
                    dt = time.perf_counter() - t0
                sps = n / dt
                speeds[(wname, m.name)].append(sps)
                print(f"repeat {r + 1} {wname:<9} {m.name:<62} {sps:9.1f} structures/s",
                      flush=True)
    print(f"\n{'workload':<10}{'model':<62}{'structures/s (range)':>26}{'x SchNetPack':>14}"
          f"{'GFLOP/str':>11}{'of matmul':>11}")
    for wname, atoms in workloads.items():
        ref = statistics.median(speeds[(wname, "schnetpack")])
        best = {}
        for m in models:
            v = speeds[(wname, m.name)]
            med = statistics.median(v)
            kind = "schnetpack" if m.name.startswith("schnetpack") else "atomgfm"
            if med > best.get(kind, ("", 0.0))[1]:
                best[kind] = (m.name, med)
            extra = ""
            if isinstance(m, Ours):
                fl = m.flops_per_structure(atoms)
                extra = f"{fl / 1e9:>11.3f}{fl * med / rate:>11.1%}"
            elif isinstance(m, Processes) and m.spec["kind"] == "atomgfm":
                fl = flop_model.flops_per_structure(atoms)
                extra = f"{fl / 1e9:>11.3f}{fl * med / (rate1 * args.procs):>11.1%}"
            print(f"{wname:<10}{m.name:<62}{med:>10.1f} ({min(v):.1f}-{max(v):.1f}){'':>3}"
                  f"{med / ref:>13.2f}x{extra}", flush=True)
        print(f"{wname:<10}best vs best: {best['atomgfm'][0]} / {best['schnetpack'][0]} = "
              f"{best['atomgfm'][1] / best['schnetpack'][1]:.2f}x")
    for m in models:
        if isinstance(m, Processes):
            m.close()


if __name__ == "__main__":
    main()
