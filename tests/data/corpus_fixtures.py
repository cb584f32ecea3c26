"""Real-chemistry helpers for the corpus-reader tests: small molecules labelled by GFN2-xTB
(tblite) and metals by ASE's EMT, in eV / Å, cached for the session; each test converts them to
its corpus's units by hand-typed CODATA constants (independent of ``ase.units``)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import molecule

# CODATA 2018, typed here so the tests do not check ase.units against itself.
HARTREE_EV = 27.211386245988
BOHR_A = 0.529177210903
KCAL_MOL_EV = 4.184 / 96.48533212  # kJ/mol per kcal/mol over kJ/mol per eV
GPA_EV_A3 = 1 / 160.21766208


def acetate() -> Atoms:
    """CH3COO- in the order C(carboxyl), O, O, C(methyl), H, H, H."""
    a = molecule("CH3COOH")
    del a[3]  # the acidic proton
    return a


def ammonium() -> Atoms:
    a = molecule("NH3")
    n = a.positions[0]
    a.append("H")
    a.positions[-1] = n + np.array([0.0, 0.0, 1.02])
    return a


def xtb(atoms: Atoms, charge: int = 0, multiplicity: int = 1) -> tuple[float, np.ndarray]:
    """GFN2-xTB energy (eV) and forces (eV/Å)."""
    from tblite.ase import TBLite

    a = atoms.copy()
    a.calc = TBLite(method="GFN2-xTB", charge=charge, multiplicity=multiplicity, verbosity=0)
    return float(a.get_potential_energy()), np.array(a.get_forces())


def displaced(atoms: Atoms, n: int, amplitude: float = 0.05, seed: int = 0) -> list[Atoms]:
    """``n`` conformers: the geometry and thermal-size displacements of it (Å)."""
    rng = np.random.default_rng(seed)
    out = [atoms.copy()]
    for _ in range(n - 1):
        a = atoms.copy()
        a.positions += rng.normal(scale=amplitude, size=a.positions.shape)
        out.append(a)
    return out
