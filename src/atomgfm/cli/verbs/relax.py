"""``atomgfm relax STRUCTURE --model CKPT``: relax positions (and with --cell the cell).

    atomgfm relax strained.cif --model runs/demo/best.pt --cell --fmax 0.02
    atomgfm relax mol.xyz --model best.pt --optimizer bfgs --out relaxed

Writes OUT/relax.traj, OUT/relax.jsonl (or --log FILE.csv) and OUT/relaxed.extxyz (the final
structure). Cell relaxation goes through ASE's FrechetCellFilter. Stops with a message when the
uncertainty passes --max-uncertainty or atoms come closer than --min-distance.
"""

from __future__ import annotations

import sys
from pathlib import Path

from atomgfm.cli.verbs.md import add_model_arguments, load_input

HELP = "relax a structure (FIRE/BFGS, optionally the cell) with a trained model"
ORDER = 41


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--optimizer", choices=["fire", "bfgs"], default="fire")
    p.add_argument("--fmax", type=float, default=0.05, help="eV/Å (default 0.05)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--cell", action="store_true", help="relax the cell (FrechetCellFilter)")
    p.add_argument("--pressure", type=float, default=0.0, help="GPa, with --cell")


def run(args) -> int:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from atomgfm.simulate.monitors import StopRules
    from atomgfm.simulate.relax import RelaxSettings, run_relax

    settings = RelaxSettings(optimizer=args.optimizer, fmax=args.fmax, steps=args.steps,
                             cell=args.cell, pressure_GPa=args.pressure,
                             stop=StopRules(args.max_uncertainty, args.min_distance))
    atoms, out = load_input(args)
    traj, log = out / "relax.traj", Path(args.log) if args.log else out / "relax.jsonl"
    result = run_relax(atoms, settings, trajectory=traj, log=log,
                       progress=not args.no_progress, resume=args.resume)
    final = out / "relaxed.extxyz"
    labelled = atoms.copy()  # energy, forces, stress only (not the uncertainty extras)
    labelled.calc = SinglePointCalculator(labelled, **{
        k: atoms.calc.results[k] for k in ("energy", "forces", "stress")
        if k in atoms.calc.results})
    write(str(final), labelled)
    print(f"relax {args.optimizer}{' +cell' if args.cell else ''}: {result.message}")
    print(f"final structure: {final}; trajectory: {traj}; log: {log}")
    if result.stopped:
        print(f"atomgfm relax: {result.stopped}", file=sys.stderr)
        return 3
    return 0 if result.converged else 1
