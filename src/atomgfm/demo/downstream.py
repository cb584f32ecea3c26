"""Downstream tasks absent from the demo corpus, labelled by real calculators.

``generate_downstream(out_dir)`` writes one extxyz file per task plus ``datasets.yaml``:

- ``mol_ipea1``: small organic molecules (the demo's G2 chemistry, neutral and ions) at a level
  of theory the demo lacks, IPEA1-xTB via tblite (energy, forces).
- ``mol_new_gfn2``: molecules the demo lacks (the G2 molecules over 12 atoms and the S22
  dimers, 6-30 atoms) at GFN2-xTB (energy, forces).
- ``alloy_new_emt``: EMT crystals the demo lacks: hcp, L1₂ (Cu₃Au type), B2 (CsCl type) and
  fcc with vacancies, strained and rattled (energy, forces, stress).
- ``mol_dipole``: a structure-level scalar, the GFN2-xTB dipole moment magnitude |μ| (e·Å,
  ``info["dipole_norm"]``) of small neutral molecules.
- ``alloy_stable``: binary classification, ``info["stable"]`` = 1 when the EMT formation
  energy of the new (strained, rattled) crystals, against the elements' relaxed fcc EMT
  energies, is below ``STABLE_BELOW`` (70 meV/atom: the rattle alone costs ~50; about half the
  cells pass), ``info["formation_energy"]`` in eV/atom.

Every random choice comes from ``numpy.random.default_rng`` streams derived from ``seed``.
Run as ``python -m atomgfm.demo.downstream --out downstream_data [--n 400]``.
"""

from __future__ import annotations

import argparse
import logging
from functools import cache
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms
from ase.build import bulk, molecule
from ase.collections import g2, s22
from ase.io import write

from atomgfm.demo.corpus import _emt_label, _generate, _openmp_threads, _xtb_label
from atomgfm.demo.crystals import EMT_FCC_A, strain_and_rattle
from atomgfm.demo.molecules import (
    ORGANIC,
    attach_labels,
    molecule_pool,
    perturb_molecule,
    random_geometry,
    sample_species,
    snap_positions,
    species_catalogue,
)

log = logging.getLogger(__name__)

# name -> (level of theory, task, property key or None, periodic)
TASKS = {
    "mol_ipea1": ("IPEA1-xTB", "energy", None, False),
    "mol_new_gfn2": ("GFN2-xTB", "energy", None, False),
    "alloy_new_emt": ("EMT", "energy", None, True),
    "mol_dipole": ("GFN2-xTB dipole |μ| (e·Å)", "regression", "dipole_norm", False),
    "alloy_stable": ("EMT formation energy < 70 meV/atom", "classification", "stable", True),
}
STABLE_BELOW = 0.070  # eV/atom
NEW_MOLECULES = tuple(sorted(n for n in g2.names if len(molecule(n)) > 12
                             and set(molecule(n).get_chemical_symbols()) <= ORGANIC))


def _rattled_molecule(atoms: Atoms, rng: np.random.Generator,
                      sigma: tuple[float, float] = (0.03, 0.08)) -> Atoms:
    """±3 % breathing, a rattle and a random rotation (no atoms closer than 0.7 Å)."""
    for _ in range(20):
        a = atoms.copy()
        if perturb_molecule(a, rng, sigma):
            return snap_positions(a)
    raise RuntimeError(f"could not build a sane geometry for {atoms.get_chemical_formula()}")


def new_molecule(rng: np.random.Generator) -> Atoms:
    """A G2 molecule over 12 atoms or an S22 dimer, perturbed; neutral, lowest multiplicity."""
    names = [("g2", n) for n in NEW_MOLECULES] + [("s22", n) for n in s22.names]
    source, name = names[rng.integers(len(names))]
    atoms = molecule(name) if source == "g2" else s22[name]
    atoms = Atoms(atoms.numbers, atoms.positions)
    atoms = _rattled_molecule(atoms, rng)
    spin = 1 if int(atoms.numbers.sum()) % 2 == 0 else 2  # C4H9 (G2 "C3H9C") is a radical
    atoms.info = {"charge": 0, "spin": spin, "config_type": name}
    return atoms


def new_crystal(rng: np.random.Generator, lattice_jitter: float = 0.03, strain: float = 0.02,
                sigma: tuple[float, float] = (0.04, 0.09)) -> Atoms:
    """hcp, L1₂, B2 or fcc-with-vacancies cells of the EMT elements (4-27 atoms)."""
    symbols = sorted(EMT_FCC_A)
    kind = ("hcp", "L12", "B2", "vacancy")[rng.integers(4)]
    a_el, b_el = (symbols[i] for i in rng.choice(len(symbols), 2, replace=False))
    if kind == "hcp":
        atoms = bulk("Cu", "hcp", a=1.0, c=np.sqrt(8 / 3)) * [(2, 2, 1), (2, 1, 2), (2, 2, 2)][
            rng.integers(3)]
        chosen = rng.choice([a_el, b_el], len(atoms), p=[0.7, 0.3])
        atoms.set_chemical_symbols(chosen)
        a0 = np.mean([EMT_FCC_A[s] for s in chosen]) / np.sqrt(2)  # same nearest neighbour
    elif kind == "L12":
        atoms = Atoms([b_el, a_el, a_el, a_el], cell=np.eye(3), pbc=True,
                      scaled_positions=[[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
        atoms = atoms * [(1, 1, 1), (2, 1, 1), (2, 2, 1)][rng.integers(3)]
        a0 = 0.75 * EMT_FCC_A[a_el] + 0.25 * EMT_FCC_A[b_el]
    elif kind == "B2":
        atoms = Atoms([a_el, b_el], cell=np.eye(3), pbc=True,
                      scaled_positions=[[0, 0, 0], [.5, .5, .5]])
        atoms = atoms * [(2, 2, 2), (3, 2, 2), (3, 3, 3)][rng.integers(3)]
        a0 = 0.5 * (EMT_FCC_A[a_el] + EMT_FCC_A[b_el]) * 0.5 ** (1 / 3)
    else:
        atoms = bulk("Cu", "fcc", a=1.0, cubic=True) * (2, 2, 2)
        chosen = rng.choice([a_el, b_el], len(atoms), p=[0.8, 0.2])
        atoms.set_chemical_symbols(chosen)
        del atoms[sorted(rng.choice(len(atoms), int(rng.integers(1, 3)), replace=False),
                         reverse=True)]
        a0 = np.mean([EMT_FCC_A[s] for s in atoms.get_chemical_symbols()])
    atoms.set_cell(atoms.cell[:] * a0 * rng.uniform(1 - lattice_jitter, 1 + lattice_jitter),
                   scale_atoms=True)
    return strain_and_rattle(atoms, rng, strain, sigma, spin=0, config_type=f"{kind}{len(atoms)}")


@cache
def elemental_emt_energy(symbol: str) -> float:
    """EMT energy per atom of the element's fcc crystal at its EMT equilibrium volume, eV."""
    from ase.calculators.emt import EMT
    from scipy.optimize import minimize_scalar

    def energy(a: float) -> float:
        atoms = bulk(symbol, "fcc", a=a)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    a0 = EMT_FCC_A[symbol]
    res = minimize_scalar(energy, bounds=(0.9 * a0, 1.1 * a0), method="bounded",
                          options={"xatol": 1e-5})
    return float(res.fun)


def _stability_label(atoms: Atoms) -> Atoms:
    atoms = _emt_label(atoms)
    e = atoms.get_potential_energy()
    ref = sum(elemental_emt_energy(s) for s in atoms.get_chemical_symbols())
    e_form = (e - ref) / len(atoms)
    atoms.info["formation_energy"] = float(e_form)
    atoms.info["stable"] = int(e_form < STABLE_BELOW)
    return atoms


def _dipole_label(atoms: Atoms) -> Atoms:
    from tblite.ase import TBLite

    atoms.calc = TBLite(method="GFN2-xTB", charge=float(atoms.info.get("charge", 0)),
                        multiplicity=int(atoms.info.get("spin", 1)) or 1, verbosity=0)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    dipole = atoms.calc.get_property("dipole", atoms)  # e·Å
    labelled = attach_labels(atoms, energy, forces)
    labelled.info["dipole_norm"] = float(np.linalg.norm(dipole))
    return labelled


def generate_downstream(out_dir: str | Path, n: int = 400, seed: int = 1,
                        progress: bool = True, tasks: tuple[str, ...] | None = None) -> list[dict]:
    """Write the downstream tasks (``n`` structures each) into ``out_dir``; returns their specs
    (``name``, ``path``, ``level_of_theory``, ``task``, ``property_key``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = np.random.SeedSequence(seed).spawn(len(TASKS))
    rngs = {name: np.random.default_rng(s) for name, s in zip(TASKS, streams, strict=True)}
    tasks = tasks or tuple(TASKS)
    catalogue = species_catalogue(molecule_pool(max_atoms=12))
    makers = {
        "mol_ipea1": (lambda rng: _species_maker(sample_species(rng, n, catalogue)),
                      lambda atoms: _xtb_label(atoms, "IPEA1-xTB")),
        "mol_new_gfn2": (lambda rng: (lambda r, i: new_molecule(r)),
                         lambda atoms: _xtb_label(atoms, "GFN2-xTB")),
        "alloy_new_emt": (lambda rng: (lambda r, i: new_crystal(r)), _emt_label),
        "mol_dipole": (lambda rng: _species_maker(sample_species(rng, n, catalogue, {})),
                       _dipole_label),
        "alloy_stable": (lambda rng: (lambda r, i: new_crystal(r)), _stability_label),
    }
    specs = []
    with _openmp_threads(1):
        for name in tasks:
            level, task, key, periodic = TASKS[name]
            rng = rngs[name]
            make, label = makers[name]
            records, failures = _generate(name, n, make(rng), label, rng, progress)
            if failures:
                log.info("%s: %d failed calculations retried with a new geometry", name, failures)
            write(out / f"{name}.extxyz", records, format="extxyz")
            spec = {"name": name, "path": f"{name}.extxyz", "level_of_theory": level,
                    "task": task, "n_structures": len(records)}
            if key:
                spec["property_key"] = key
            specs.append(spec)
    with open(out / "datasets.yaml", "w", encoding="utf-8") as fh:
        yaml.safe_dump({"datasets": specs}, fh, sort_keys=False, allow_unicode=True)
    return specs


def _species_maker(species):
    return lambda rng, i: random_geometry(species[i], rng)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="downstream_data")
    p.add_argument("--n", type=int, default=400, help="structures per task")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for spec in generate_downstream(args.out, args.n, args.seed):
        log.info("%-15s %-15s %5d  %s", spec["name"], spec["task"], spec["n_structures"],
                 spec["level_of_theory"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
