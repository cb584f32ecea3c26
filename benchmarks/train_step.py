"""Training step time: the demo model per precision, or PaiNN 128×3 against SchNetPack's PaiNN.

    .venv/bin/python benchmarks/train_step.py                 # demo model, fp32, 60 timed steps
    .venv/bin/python benchmarks/train_step.py --precision fp64,fp32,bf16 --steps 40
    /tmp/peers/bin/python benchmarks/train_step.py --vs-schnetpack           # the peer comparison
    .venv/bin/python benchmarks/train_step.py --vs-schnetpack --no-peer --profile  # ours, phases

Demo mode needs the demo corpus (``make demo`` or ``atomgfm data demo --out demo_data``). It prints
mean step time (forward + double backward + optimiser, batches packed to the config's max atoms),
atoms/s, structures/s, the phase split, and peak memory (CUDA: max allocated; CPU: process max RSS).

``--vs-schnetpack`` times one training step (energy + force loss, the backward through the
create_graph forces, the optimiser step) of atomgfm's PaiNN F=128, 3 layers, 20 radial functions,
cutoff 5 Å, and of SchNetPack's PaiNN of the same size (``../shared/PEERS.md``), model only (graphs
and neighbour lists built beforehand), fp32, on the shared workloads (``../shared/workload.py``):
batches of 32 molecules (the g2 molecules made of H, C, N, O) or 4 alloy cells (108 atoms), labelled
by ASE's EMT. Each model trains with its own stack's optimiser: ours ``train.optim.build_optimizer``
(AdamW), SchNetPack's ``AtomisticTask`` default (Adam). Neither clips gradients or keeps an EMA.
The two models alternate in ``--rounds`` rounds (the order flips every round) of ``--steps`` timed
steps each, after one untimed step; printed: median and min–max of the rounds' mean ms/step, and
the median and range of the per-round ratio SchNetPack / atomgfm, for wall-clock time and for
the process's CPU time (on a machine shared with other jobs, CPU time with ``--threads 1`` is the
steadier measure; wall-clock time with 2 threads is the figure to quote from a quiet machine).
SchNetPack runs in the peer venv (``/tmp/peers``, PEERS.md); ``--no-peer`` times ours alone from
the project venv. ``--profile``
adds our step's phases: forward (energy), the create_graph force backward, the loss, the loss
backward (the double backward) and the optimiser step (median CPU ms over ``--steps`` steps).
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from workload_loader import WORKLOAD, load_workload

ROOT = Path(__file__).resolve().parents[1]
EMT_MOLECULE_ELEMENTS = {1, 6, 7, 8}
BATCH_SIZE = {"molecules": 32, "alloys": 4}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--precision", default="fp32", help="comma-separated: fp64,fp32,bf16")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps (demo: 60; --vs-schnetpack: per model per round, 6)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--vs-schnetpack", action="store_true",
                   help="PaiNN 128x3 against SchNetPack's PaiNN on the shared workloads")
    p.add_argument("--no-peer", action="store_true", help="with --vs-schnetpack: ours only")
    p.add_argument("--workloads", default="molecules,alloys")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="our step's phases (ms)")
    p.add_argument("--workload-file", default=str(WORKLOAD))
    args = p.parse_args()
    if args.vs_schnetpack:
        versus(args)
    else:
        demo(args)


def demo(args) -> None:
    from atomgfm.config.schema import load_config
    from atomgfm.data.sources import load_datasets
    from atomgfm.train.loop import Trainer

    steps = args.steps or 60
    cfg = load_config(args.config)
    datasets = load_datasets(cfg.data)
    print(f"{'precision':<10}{'ms/step':>10}{'±':>7}{'atoms/s':>10}{'structs/s':>11}"
          f"{'peak MiB':>10}  phases (s over the timed steps)")
    for precision in args.precision.split(","):
        cfg.train.precision, cfg.train.device, cfg.train.progress = precision, args.device, False
        with tempfile.TemporaryDirectory() as tmp:
            cfg.train.out_dir = tmp
            trainer = Trainer.from_config(cfg, datasets, resume=False)
            for _ in range(args.warmup):
                trainer.train_step()
            trainer.timer.summary(reset=True)
            if trainer.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times, atoms, structs = [], 0, 0
            for _ in range(steps):
                t = time.perf_counter()
                rec = trainer.train_step()
                times.append(time.perf_counter() - t)
                atoms += rec["atoms"]
                structs += rec["structures"]
            total = sum(times)
            peak = (torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            print(f"{precision:<10}{1000 * total / len(times):>10.1f}"
                  f"{1000 * statistics.stdev(times):>7.1f}{atoms / total:>10.0f}"
                  f"{structs / total:>11.1f}{peak:>10.0f}  {trainer.timer.summary()}")


# ---------------------------------------------------------------- atomgfm vs SchNetPack PaiNN


def labelled_atoms(name: str, wl) -> list:
    """The workload's structures with EMT energies (eV) and forces (eV/Å) attached."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    if name == "molecules":
        atoms = [a for a in wl.molecules(128) if set(a.numbers.tolist()) <= EMT_MOLECULE_ELEMENTS]
        atoms = atoms[:64]
    elif name == "alloys":
        atoms = wl.alloys(8)
    else:
        raise ValueError(f"unknown workload {name!r} (molecules, alloys)")
    out = []
    for a in atoms:
        a = a.copy()
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        out.append(a)
    return out


class Ours:
    """atomgfm PaiNN F=128 x 3 layers, 20 radial functions, 5 Å, one energy head, our AdamW."""

    name = "atomgfm"

    def __init__(self, atoms: list, batch_size: int) -> None:
        from atomgfm.calculators.ase_calculator import atoms_to_structure
        from atomgfm.config.schema import TrainConfig
        from atomgfm.data.graph import collate, structure_to_graph
        from atomgfm.models.build import build_model
        from atomgfm.train.losses import multitask_loss
        from atomgfm.train.optim import build_optimizer

        self.model = build_model({"backbone": "painn", "backbone_kwargs": {
            "num_features": 128, "num_layers": 3, "num_rbf": 20, "cutoff": 5.0}}, ["bench"], seed=0)
        self.optimizer, _ = build_optimizer(self.model, TrainConfig(lr=1e-4))
        self.loss_fn = multitask_loss
        self.scales = torch.ones(1, dtype=torch.float64)
        self.weights = torch.tensor([[10.0, 10.0, 0.0]], dtype=torch.float64)
        graphs = []
        for a in atoms:
            s = atoms_to_structure(a)
            s.energy, s.forces = a.get_potential_energy(), a.get_forces()
            graphs.append(structure_to_graph(s, 5.0, 0))
        self.batches = [collate(graphs[k:k + batch_size])
                        for k in range(0, len(graphs), batch_size)]
        self.model.train()

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def step(self, b) -> None:
        out = self.model(b, forces=True, create_graph=True)
        loss, _ = self.loss_fn(out, b, self.scales, self.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def phases(self, b) -> dict[str, float]:
        """The same step cut into phases (ForceField's forces-only path, spelled out)."""
        from atomgfm import keys as K

        clock = time.process_time  # CPU time: steadier than wall clock on a shared machine
        t = [clock()]
        batch = dict(b)
        pos = batch[K.POSITIONS].detach().requires_grad_(True)
        batch[K.POSITIONS] = pos
        out = dict(self.model.model(batch))
        t.append(clock())
        (g,) = torch.autograd.grad(out[K.ENERGY].sum(), [pos], create_graph=True)
        out[K.FORCES] = -g
        t.append(clock())
        loss, _ = self.loss_fn(out, b, self.scales, self.weights)
        t.append(clock())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.append(clock())
        self.optimizer.step()
        t.append(clock())
        names = ["forward", "force backward", "loss", "loss backward", "optimizer"]
        return {n: 1000 * (t[k + 1] - t[k]) for k, n in enumerate(names)}


class SchNetPackPaiNN:
    """SchNetPack's PaiNN as PEERS.md sets it up, its Adam, loss = 0.01 MSE(E) + 0.99 MSE(F)."""

    name = "schnetpack"

    def __init__(self, atoms: list, batch_size: int) -> None:
        import typing

        import torch.utils.data.dataloader as dl

        dl.T_co = typing.TypeVar("T_co", covariant=True)  # SchNetPack 2.x needs it (PEERS.md)
        try:
            import schnetpack as spk
        except ImportError:
            raise SystemExit("SchNetPack is not installed here: run this with the peer venv "
                             "(/tmp/peers/bin/python, see ../shared/PEERS.md) or pass "
                             "--no-peer") from None
        torch.manual_seed(0)
        rep = spk.representation.PaiNN(n_atom_basis=128, n_interactions=3,
                                       radial_basis=spk.nn.GaussianRBF(20, 5.0),
                                       cutoff_fn=spk.nn.CosineCutoff(5.0))
        self.model = spk.model.NeuralNetworkPotential(
            representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
            output_modules=[spk.atomistic.Atomwise(n_in=128, output_key="energy"),
                            spk.atomistic.Forces(energy_key="energy", force_key="forces")])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        converter = spk.interfaces.AtomsConverter(
            neighbor_list=spk.transform.MatScipyNeighborList(cutoff=5.0), dtype=torch.float32)
        self.batches = []
        for k in range(0, len(atoms), batch_size):
            chunk = atoms[k:k + batch_size]
            b = converter(chunk)
            b["energy_ref"] = torch.tensor([a.get_potential_energy() for a in chunk],
                                           dtype=torch.float32)
            b["forces_ref"] = torch.cat([torch.as_tensor(a.get_forces(), dtype=torch.float32)
                                         for a in chunk])
            self.batches.append(b)
        self.model.train()

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def step(self, b) -> None:
        pred = self.model(dict(b))
        mse = torch.nn.functional.mse_loss
        loss = (0.01 * mse(pred["energy"], b["energy_ref"])
                + 0.99 * mse(pred["forces"], b["forces_ref"]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def run_block(model, steps: int) -> tuple[float, float]:
    """One untimed step, then ``steps`` timed ones cycling through the batches: mean ms/step of
    wall-clock time and of this process's CPU time (all threads)."""
    model.step(model.batches[0])
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(steps):
        model.step(model.batches[k % len(model.batches)])
    return (1000 * (time.perf_counter() - t0) / steps,
            1000 * (time.process_time() - c0) / steps)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}–{max(values):.1f})"


def versus(args) -> None:
    import os
    import platform

    if importlib.util.find_spec("mace") is not None:
        # The peer venv's e3nn 0.4.4 (pinned by mace-torch) loads its constants under torch 2.13
        # only after ``import mace`` (PEERS.md); our backbone registry imports e3nn.
        import mace  # noqa: F401
    torch.set_num_threads(args.threads)
    steps = args.steps or 6
    wl = load_workload(args.workload_file)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu "
          f"({platform.processor() or platform.machine()}), fp32, {args.rounds} rounds x {steps} "
          f"steps per model, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name in args.workloads.split(","):
        atoms = labelled_atoms(name, wl)
        bs = BATCH_SIZE[name]
        models = [Ours(atoms, bs)] + ([] if args.no_peer else [SchNetPackPaiNN(atoms, bs)])
        n_atoms = sum(len(a) for a in atoms) / len(atoms) * bs
        print(f"\n{name}: batches of {bs} ({n_atoms:.0f} atoms), "
              + ", ".join(f"{m.name} {m.n_params():,} parameters" for m in models))
        times: dict[str, list[tuple[float, float]]] = {m.name: [] for m in models}
        for r in range(args.rounds):
            for m in models if r % 2 == 0 else models[::-1]:
                times[m.name].append(run_block(m, steps))
        for kind, col in (("wall", 0), ("CPU", 1)):
            for m in models:
                print(f"  {m.name:<11} {kind:>4} ms/step median (min–max over rounds) "
                      f"{spread([t[col] for t in times[m.name]])}")
            if len(models) == 2:
                ratios = [p[col] / o[col] for o, p in
                          zip(times["atomgfm"], times["schnetpack"], strict=True)]
                print(f"  {kind} ratio schnetpack/atomgfm per round: median "
                      f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})")
        if args.profile:
            ours = models[0]
            rows = [ours.phases(ours.batches[k % len(ours.batches)]) for k in range(steps + 1)][1:]
            print("  atomgfm phases, median CPU ms: " + ", ".join(
                f"{k} {statistics.median(r[k] for r in rows):.1f}" for k in rows[0]))
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
