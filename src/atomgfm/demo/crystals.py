"""Random periodic cells for the demo corpus: EMT alloys and small inorganic prototypes."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk

from atomgfm.demo.molecules import snap_positions

# fcc lattice constants (Å) of the EMT elements; bcc cells use the same volume per atom
EMT_FCC_A = {"Al": 4.05, "Cu": 3.61, "Ag": 4.09, "Au": 4.08, "Ni": 3.52, "Pd": 3.89, "Pt": 3.92}
# (lattice, conventional?, repeat) -> 2..32 atoms
_ALLOY_CELLS = [
    ("fcc", False, (2, 1, 1)), ("fcc", False, (2, 2, 1)), ("fcc", False, (2, 2, 2)),
    ("fcc", False, (3, 3, 3)), ("fcc", True, (1, 1, 1)), ("fcc", True, (2, 1, 1)),
    ("fcc", True, (2, 2, 1)), ("fcc", True, (2, 2, 2)), ("bcc", False, (2, 1, 1)),
    ("bcc", False, (2, 2, 2)), ("bcc", False, (3, 3, 3)), ("bcc", True, (1, 1, 1)),
    ("bcc", True, (2, 1, 1)), ("bcc", True, (2, 2, 1)), ("bcc", True, (2, 2, 2)),
    ("bcc", True, (3, 2, 2)),
]


def _strain(atoms: Atoms, rng: np.random.Generator, amount: float) -> None:
    eps = rng.uniform(-amount, amount, (3, 3))
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)


def strain_and_rattle(atoms: Atoms, rng: np.random.Generator, strain: float,
                      sigma: tuple[float, float], spin: int, config_type: str) -> Atoms:
    """The last steps of every random cell: a random symmetric strain of up to ``strain``, a
    Gaussian rattle with a standard deviation drawn from ``sigma`` (Å), positions wrapped into the
    cell and snapped; ``atoms.info`` neutral, ``spin`` and ``config_type``."""
    _strain(atoms, rng, strain)
    atoms.positions += rng.normal(0.0, rng.uniform(*sigma), atoms.positions.shape)
    atoms.wrap()
    atoms.info = {"charge": 0, "spin": spin, "config_type": config_type}
    return snap_positions(atoms)


def random_alloy(rng: np.random.Generator, lattice_jitter: float = 0.04,
                 strain: float = 0.02, sigma: tuple[float, float] = (0.05, 0.1)) -> Atoms:
    """A random fcc or bcc alloy of 1-3 EMT elements with 2-32 atoms.

    The lattice constant is the composition-weighted (Vegard) value scaled by
    1 +- ``lattice_jitter``, the cell gets a random symmetric strain of up to ``strain`` and the
    positions a Gaussian rattle with a standard deviation drawn from ``sigma`` (Å).
    """
    symbols = sorted(EMT_FCC_A)
    lattice, cubic, rep = _ALLOY_CELLS[rng.integers(len(_ALLOY_CELLS))]
    atoms = bulk("Cu", lattice, a=1.0, cubic=cubic) * rep
    n_el = int(rng.choice([1, 2, 2, 2, 3]))
    elements = [symbols[i] for i in rng.choice(len(symbols), n_el, replace=False)]
    weights = rng.dirichlet(np.ones(n_el))
    chosen = [elements[i] for i in rng.choice(n_el, len(atoms), p=weights)]
    atoms.set_chemical_symbols(chosen)
    a_fcc = np.mean([EMT_FCC_A[s] for s in chosen])
    a = a_fcc if lattice == "fcc" else a_fcc * 0.5 ** (1 / 3)
    atoms.set_cell(atoms.cell[:] * a * rng.uniform(1 - lattice_jitter, 1 + lattice_jitter),
                   scale_atoms=True)
    return strain_and_rattle(atoms, rng, strain, sigma, spin=0,
                             config_type=f"{lattice}{len(atoms)}")


def _perovskite(a_site: str, b_site: str, a: float) -> Atoms:
    return Atoms(a_site + b_site + "O3", cell=[a, a, a], pbc=True,
                 scaled_positions=[[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


# name -> (builder of the cell at scale s, cell repeats to choose from). Lattice constants are the
# experimental ones times a factor that brings the Γ-point GFN1-xTB pressure of the 8-12 atom cell
# near zero (measured once: GFN1 over-binds the light ionic and covalent solids by 3-9 %).
INORGANIC = {
    "NaCl": (lambda s: bulk("NaCl", "rocksalt", a=5.64 * s, cubic=True), [(1, 1, 1)]),
    "KCl": (lambda s: bulk("KCl", "rocksalt", a=6.29 * s, cubic=True), [(1, 1, 1)]),
    "LiF": (lambda s: bulk("LiF", "rocksalt", a=4.03 * 1.08 * s, cubic=True), [(1, 1, 1)]),
    "MgO": (lambda s: bulk("MgO", "rocksalt", a=4.21 * 1.08 * s, cubic=True), [(1, 1, 1)]),
    "CaF2": (lambda s: bulk("CaF2", "fluorite", a=5.46 * 1.02 * s, cubic=True), [(1, 1, 1)]),
    "Si": (lambda s: bulk("Si", "diamond", a=5.43 * 1.045 * s, cubic=True), [(1, 1, 1)]),
    "SiC": (lambda s: bulk("SiC", "zincblende", a=4.36 * 1.04 * s, cubic=True), [(1, 1, 1)]),
    "ZnS": (lambda s: bulk("ZnS", "zincblende", a=5.41 * 1.06 * s, cubic=True), [(1, 1, 1)]),
    "ZnO": (lambda s: bulk("ZnO", "wurtzite", a=3.25 * 1.08 * s, c=5.21 * 1.08 * s),
            [(2, 1, 1), (1, 1, 2)]),
    "GaN": (lambda s: bulk("GaN", "wurtzite", a=3.19 * 1.05 * s, c=5.19 * 1.05 * s),
            [(2, 1, 1), (1, 1, 2)]),
}


def random_inorganic(rng: np.random.Generator, lattice_jitter: float = 0.03,
                     strain: float = 0.015, sigma: tuple[float, float] = (0.03, 0.08)) -> Atoms:
    """A rattled, strained 8-12 atom cell of a random prototype from ``INORGANIC``."""
    names = sorted(INORGANIC)
    name = names[rng.integers(len(names))]
    build, repeats = INORGANIC[name]
    atoms = build(rng.uniform(1 - lattice_jitter, 1 + lattice_jitter))
    atoms = atoms * repeats[rng.integers(len(repeats))]
    return strain_and_rattle(atoms, rng, strain, sigma, spin=1,  # closed-shell xTB singlet
                             config_type=name)
