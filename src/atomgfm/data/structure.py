"""``Structure``: the framework-free record every reader returns.

The constructor validates everything a model would trip over later, and every error names the
source file and record index so a user can find the bad record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_Z = 118


class StructureError(ValueError):
    """A record failed validation; the message names file, record index and the problem."""


def _where(source: str, index: int) -> str:
    return f"{source or '<memory>'}, record {index}"


@dataclass
class Structure:
    """One labelled (or unlabelled) atomic structure in eV / Å / e.

    Attributes:
        numbers: (n,) int64 atomic numbers, 1..118.
        positions: (n, 3) float64 Cartesian positions in Å.
        cell: (3, 3) float64 lattice vectors as rows in Å (zeros when no direction is periodic).
        pbc: (3,) bool periodicity along each lattice vector.
        energy: total energy in eV, or None.
        forces: (n, 3) float64 forces in eV/Å, or None.
        stress: (3, 3) float64 stress (1/V) dE/dε in eV/Å³ (ASE sign convention), or None.
        charge: total charge in e.
        spin: spin multiplicity 2S+1; 0 means not given.
        dataset: name of the dataset (head) this record belongs to.
        source: file it came from; index: record index in that file.
        info: free-form extra metadata (not used by models).
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    charge: float = 0.0
    spin: float = 0.0
    dataset: str = ""
    source: str = ""
    index: int = 0
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = _where(self.source, self.index)

        def fail(problem: str) -> None:
            raise StructureError(f"{where}: {problem}")

        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        n = len(self.numbers)
        if n == 0:
            fail("structure has no atoms")
        bad = (self.numbers < 1) | (self.numbers > MAX_Z)
        if bad.any():
            fail(f"unknown element (atomic number {int(self.numbers[bad][0])}) at atom "
                 f"{int(np.flatnonzero(bad)[0])}")
        self.positions = _array(self.positions, (n, 3), "positions", fail)
        self.pbc = (np.zeros(3, bool) if self.pbc is None
                    else np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy())
        self.cell = (np.zeros((3, 3)) if self.cell is None
                     else _array(self.cell, (3, 3), "cell", fail))
        if self.pbc.any():
            periodic = self.cell[self.pbc]
            if np.any(np.linalg.norm(periodic, axis=1) < 1e-8):
                fail(f"pbc={self.pbc.tolist()} but the cell has a zero lattice vector "
                     "along a periodic direction (missing cell?)")
            if self.pbc.all() and abs(np.linalg.det(self.cell)) < 1e-8:
                fail("pbc is set but the cell has zero volume")
        if self.energy is not None:
            e = np.asarray(self.energy, dtype=np.float64)
            if e.size != 1:
                fail(f"energy must be a scalar, got shape {e.shape}")
            if not np.isfinite(e).all():
                fail(f"non-finite energy ({float(e.reshape(-1)[0])})")
            self.energy = float(e.reshape(-1)[0])
        if self.forces is not None:
            self.forces = _array(self.forces, (n, 3), "forces", fail)
        if self.stress is not None:
            self.stress = _stress_3x3(self.stress, fail)
            if not self.pbc.all():
                fail("stress given for a structure that is not periodic in all directions")
        for name in ("charge", "spin"):
            v = float(getattr(self, name))
            if not np.isfinite(v):
                fail(f"non-finite {name}")
            setattr(self, name, v)
        if self.spin < 0:
            fail(f"spin multiplicity must be >= 1 (or 0 for not given), got {self.spin}")

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell))) if self.pbc.all() else 0.0


def _array(value, shape, name, fail) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        fail(f"{name} is not numeric ({exc})")
    if a.shape != shape:
        fail(f"{name} has shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        fail(f"non-finite value in {name}")
    return a


def _stress_3x3(value, fail) -> np.ndarray:
    """Accept a 3x3 stress or ASE's Voigt order (xx, yy, zz, yz, xz, xy)."""
    a = np.asarray(value, dtype=np.float64)
    if a.shape == (6,):
        xx, yy, zz, yz, xz, xy = a
        a = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    elif a.shape == (9,):
        a = a.reshape(3, 3)
    if a.shape != (3, 3):
        fail(f"stress has shape {a.shape}, expected (3, 3) or Voigt (6,)")
    if not np.isfinite(a).all():
        fail("non-finite value in stress")
    return a
