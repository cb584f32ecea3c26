"""``atomgfm md STRUCTURE --model CKPT``: molecular dynamics (NVE, NVT Langevin, NPT MTK).

    atomgfm md cell.cif --model runs/demo/best.pt --ensemble nvt --temperature 600 --steps 2000
    atomgfm md mol.xyz --model best.pt --head auto --max-uncertainty 0.5 --out md_run

Writes OUT/md.traj (ASE trajectory) and OUT/md.jsonl (or --log FILE.csv): per logged step the
energies, temperature, total-energy change (meV/atom), uncertainty (eV/Å) and shortest distance.
Stops with a message when the uncertainty passes --max-uncertainty or atoms come closer than
--min-distance; --resume continues from the trajectory's last frame.
"""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "molecular dynamics (nve, nvt, npt) with a trained model"
ORDER = 40


def add_model_arguments(p) -> None:
    """Input, model and stop options shared by ``md`` and ``relax``."""
    p.add_argument("structure", help="structure file ase.io reads (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default="-1", help="frame of a multi-frame file (default: last)")
    p.add_argument("--model", required=True, help="atomgfm checkpoint")
    p.add_argument("--head", default="auto", help="head (level of theory) or 'auto'")
    p.add_argument("--ensemble-models", nargs="*", default=[], metavar="CKPT",
                   help="more checkpoints: predictions are averaged, their spread enters "
                        "the uncertainty")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp64", "fp32", "bf16"],
                   help="override the checkpoint's precision")
    p.add_argument("--max-uncertainty", type=float, help="stop above this uncertainty, eV/Å")
    p.add_argument("--min-distance", type=float, default=0.5,
                   help="stop when two atoms come closer, Å (default 0.5)")
    p.add_argument("--out", default=None, help="output folder (default: beside the structure)")
    p.add_argument("--log", help="log file, .jsonl or .csv (default OUT/<verb>.jsonl)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the trajectory's last frame")
    p.add_argument("--no-progress", action="store_true")


def load_input(args):
    """(atoms with the calculator set, output folder) from the shared options."""
    from ase.io import read

    from atomgfm.calculators.ase_calculator import Calculator

    path = Path(args.structure)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        atoms = read(str(path), index=int(args.index))
    except Exception as exc:  # ase.io raises many types; name the file and the cause
        raise ValueError(f"{path}: cannot read a structure ({type(exc).__name__}: {exc})") from None
    atoms.calc = Calculator(args.model, head=args.head, device=args.device,
                            precision=args.precision, ensemble=args.ensemble_models)
    out = Path(args.out) if args.out else path.parent / f"{path.stem}_{args.verb}"
    return atoms, out


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nve")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="initial and thermostat temperature, K (default 300)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--pressure", type=float, default=0.0, help="NPT pressure, GPa")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--traj-every", type=int, default=10)


def run(args) -> int:
    from atomgfm.simulate.md import MDSettings, run_md
    from atomgfm.simulate.monitors import StopRules

    settings = MDSettings(ensemble=args.ensemble, steps=args.steps, timestep_fs=args.timestep,
                          temperature_K=args.temperature, friction_per_fs=args.friction,
                          pressure_GPa=args.pressure, seed=args.seed, log_every=args.log_every,
                          traj_every=args.traj_every,
                          stop=StopRules(args.max_uncertainty, args.min_distance))
    atoms, out = load_input(args)
    traj, log = out / "md.traj", Path(args.log) if args.log else out / "md.jsonl"
    result = run_md(atoms, settings, trajectory=traj, log=log, progress=not args.no_progress,
                    resume=args.resume)
    print(f"md {args.ensemble}: {result.message}")
    print(f"trajectory: {traj}; log: {log}")
    if result.stopped:
        print(f"atomgfm md: {result.stopped}", file=sys.stderr)
        return 3
    return 0
