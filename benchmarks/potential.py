"""The demo model as an interatomic potential: NVE drift, relaxation of a lattice the demo lacks,
uncertainty calibration.

    python benchmarks/potential.py --checkpoint runs/demo/best.pt [--steps 500] [--out DIR]

Prints, for an alloy supercell (alloy_emt head) and a molecule (head auto):
total-energy drift (meV/atom/ps, least-squares slope) and the largest |ΔE_tot| (meV/atom) of NVE
at 300 K, 1 fs, in fp64 and fp32, with ms per step; then a rattled, strained hcp NiCu crystal
(the demo's alloys are fcc and bcc only) relaxed with the cell (FIRE + FrechetCellFilter), compared
with the model's own relaxed ideal hcp cell; then the calibration table per dataset on the
validation split, and the calibration PNG in OUT.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk, molecule

from atomgfm.calculators.ase_calculator import Calculator
from atomgfm.inference.evaluate import evaluate_checkpoint
from atomgfm.simulate.md import MDSettings, run_md
from atomgfm.simulate.monitors import StopRules
from atomgfm.simulate.relax import RelaxSettings, run_relax


def _ethanol():
    """Neutral closed-shell ethanol: charge 0, multiplicity 1 (ASE's builder sets neither)."""
    atoms = molecule("CH3CH2OH")
    atoms.info.update(charge=0, spin=1)
    return atoms


def nve(checkpoint: str, steps: int) -> None:
    print(f"NVE, 300 K start, 1 fs, {steps} steps (drift: least-squares slope of E_tot/atom)")
    print("| system | atoms | precision | drift meV/atom/ps | max abs dE_tot meV/atom | "
          "mean T K | ms/step |")
    print("|---|---|---|---|---|---|---|")
    for name, make, head in (
            ("Cu3Au alloy 2x2x2", lambda: _l12(), "alloy_emt"),
            ("ethanol", _ethanol, "auto")):
        for precision in ("fp64", "fp32"):
            atoms = make()
            atoms.calc = Calculator(checkpoint, head=head, precision=precision, device="cpu",
                                    uncertainty=False)
            t = time.perf_counter()
            r = run_md(atoms, MDSettings(steps=steps, temperature_K=300, log_every=5,
                                         stop=StopRules(min_distance=0.5)), progress=False)
            ms = 1000 * (time.perf_counter() - t) / max(r.steps, 1)
            print(f"| {name} | {len(atoms)} | {precision} | {r.drift_meV_atom_ps:.4g} | "
                  f"{r.max_etot_change_meV_atom:.4g} | {r.mean_temperature_K:.0f} | {ms:.1f} |"
                  + (f" stopped: {r.stopped}" if r.stopped else ""))


def _l12():
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
    atoms.symbols[0] = "Au"
    return atoms.repeat((2, 2, 2))


def _hcp():
    atoms = bulk("Ni", "hcp", a=2.55, c=4.16).repeat((2, 2, 2))
    atoms.symbols[::2] = "Cu"
    return atoms


def relax(checkpoint: str) -> None:
    """hcp NiCu: a lattice the demo's fcc/bcc alloys do not contain."""
    calc = Calculator(checkpoint, head="alloy_emt", precision="fp64", device="cpu")
    ideal = _hcp()
    ideal.calc = calc
    r0 = run_relax(ideal, RelaxSettings(fmax=1e-3, cell=True, steps=600), progress=False)
    atoms = ideal.copy()
    atoms.set_cell(atoms.cell.array @ np.diag([1.04, 0.97, 1.02]), scale_atoms=True)
    atoms.rattle(0.05, seed=0)
    atoms.calc = calc
    t = time.perf_counter()
    r = run_relax(atoms, RelaxSettings(fmax=0.01, cell=True, steps=1000), progress=False)
    print(f"\nhcp NiCu 2x2x2 ({len(atoms)} atoms), the model's ideal cell relaxed ({r0.message}): "
          f"lengths {np.round(ideal.cell.lengths(), 4).tolist()} Å, angles "
          f"{np.round(ideal.cell.angles(), 3).tolist()} deg")
    print(f"strained (cell x diag(1.04, 0.97, 1.02)) and rattled (0.05 Å), relaxed with FIRE + "
          f"FrechetCellFilter: {r.message} in {time.perf_counter() - t:.1f} s")
    print(f"relaxed: lengths {np.round(atoms.cell.lengths(), 4).tolist()} Å, angles "
          f"{np.round(atoms.cell.angles(), 3).tolist()} deg, largest |stress| "
          f"{np.abs(atoms.get_stress()).max() / units.GPa:.4f} GPa, energy - ideal "
          f"{1000 * (atoms.get_potential_energy() - ideal.get_potential_energy()) / len(atoms):.3f}"
          f" meV/atom, uncertainty {atoms.calc.results['uncertainty']:.3g} eV/Å")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/demo/best.pt")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", default=None, help="folder for calibration.png (default: beside "
                                               "the checkpoint, eval_potential/)")
    p.add_argument("--ensemble", nargs="*", default=[])
    p.add_argument("--skip", nargs="*", default=[], choices=["nve", "relax", "calibration"])
    args = p.parse_args()
    if "nve" not in args.skip:
        nve(args.checkpoint, args.steps)
    if "relax" not in args.skip:
        relax(args.checkpoint)
    if "calibration" not in args.skip:
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval_potential"
        ev = evaluate_checkpoint(args.checkpoint, out_dir=out, device="cpu", calibration=True,
                                 ensemble=args.ensemble)
        print(f"\ncalibration, {ev.split} split, step {ev.step}:")
        print(ev.calibration)
        print(f"plot: {out / 'calibration.png'}")


if __name__ == "__main__":
    main()
