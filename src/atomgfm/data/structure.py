"""``Structure``: the framework-free record every reader returns.

The constructor validates everything a model would trip over later, and every error names the
source file and record index so a user can find the bad record. Total charge and multiplicity
must describe a possible electronic state (whole numbers, N_e = ΣZ − charge ≥ 0, and M − 1
unpaired electrons of the same parity as N_e, at most N_e). Overlapping atoms need a neighbour
list, so they are checked by :meth:`Structure.check_overlapping_atoms`, which every reader calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_Z = 118
MIN_DISTANCE = 0.1  # Å; closer pairs are overlapping atoms (a broken record), not chemistry
INTEGER_TOLERANCE = 1e-6  # how far charge and multiplicity may sit from a whole number


class StructureError(ValueError):
    """A record failed validation; the message names file, record index and the problem.

    ``reason`` is the short key a skip report counts it under (e.g. ``"charge/spin"``).
    """

    def __init__(self, message: str, reason: str = "invalid structure") -> None:
        super().__init__(message)
        self.reason = reason


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

        def fail(problem: str, reason: str) -> None:
            raise StructureError(f"{where}: {problem}", reason)

        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        n = len(self.numbers)
        if n == 0:
            fail("structure has no atoms", "no atoms")
        bad = (self.numbers < 1) | (self.numbers > MAX_Z)
        if bad.any():
            fail(f"unknown element (atomic number {int(self.numbers[bad][0])}) at atom "
                 f"{int(np.flatnonzero(bad)[0])}", "unknown element")
        self.positions = _array(self.positions, (n, 3), "positions", fail)
        self.pbc = (np.zeros(3, bool) if self.pbc is None
                    else np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy())
        self.cell = (np.zeros((3, 3)) if self.cell is None
                     else _array(self.cell, (3, 3), "cell", fail))
        if self.pbc.any():
            periodic = self.cell[self.pbc]
            if np.any(np.linalg.norm(periodic, axis=1) < 1e-8):
                fail(f"pbc={self.pbc.tolist()} but the cell has a zero lattice vector "
                     "along a periodic direction (missing cell?)", "missing cell")
            if self.pbc.all() and abs(np.linalg.det(self.cell)) < 1e-8:
                fail("pbc is set but the cell has zero volume", "missing cell")
        if self.energy is not None:
            e = np.asarray(self.energy, dtype=np.float64)
            if e.size != 1:
                fail(f"energy must be a scalar, got shape {e.shape}", "energy shape")
            if not np.isfinite(e).all():
                fail(f"non-finite energy ({float(e.reshape(-1)[0])})", "non-finite energy")
            self.energy = float(e.reshape(-1)[0])
        if self.forces is not None:
            self.forces = _array(self.forces, (n, 3), "forces", fail)
        if self.stress is not None:
            self.stress = _stress_3x3(self.stress, fail)
            if not self.pbc.all():
                fail("stress given for a structure that is not periodic in all directions",
                     "stress")
        self.charge, self.spin = _electronic_state(self.charge, self.spin,
                                                   int(self.numbers.sum()), fail)

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell))) if self.pbc.all() else 0.0

    def check_overlapping_atoms(self, min_distance: float = MIN_DISTANCE) -> None:
        """Raise :class:`StructureError` (reason ``"overlapping atoms"``) when two atoms, periodic
        images included, are closer than ``min_distance`` Å; the message names both atoms."""
        from atomgfm.data.neighbors import closest_pair  # vesin; the record itself is NumPy only

        pair = closest_pair(self.positions, self.cell, self.pbc, min_distance)
        if pair is None:
            return
        i, j, d = pair
        who = f"atom {i} and its periodic image are" if i == j else f"atoms {i} and {j} are"
        raise StructureError(f"{_where(self.source, self.index)}: {who} {d:.3g} Å apart "
                             f"(< {min_distance} Å): overlapping atoms", "overlapping atoms")


def _electronic_state(charge, spin, n_protons: int, fail) -> tuple[float, float]:
    """Whole-number charge and multiplicity of a possible state; returns them as floats."""
    values = {}
    for name, value in (("charge", charge), ("spin", spin)):
        try:
            v = float(value)
        except (TypeError, ValueError):
            fail(f"{name} is not a number ({value!r})", "charge/spin")
        if not np.isfinite(v):
            fail(f"non-finite {name}", "charge/spin")
        values[name] = v
    charge, spin = values["charge"], values["spin"]
    if spin < 0:
        fail(f"spin multiplicity must be >= 1 (or 0 for not given), got {spin}", "charge/spin")
    q, m = round(charge), round(spin)
    if abs(charge - q) > INTEGER_TOLERANCE:
        fail(f"charge must be a whole number of e, got {charge:.8g}", "charge/spin")
    if abs(spin - m) > INTEGER_TOLERANCE:
        fail(f"spin multiplicity must be a whole number, got {spin:.8g}", "charge/spin")
    n_electrons = n_protons - q
    if n_electrons < 0:
        fail(f"charge {q} exceeds the nuclear charge {n_protons} (negative electron count)",
             "charge/spin")
    if m > 0:  # 0 = not given (periodic solids, EMT)
        unpaired = m - 1
        if unpaired > n_electrons:
            fail(f"spin multiplicity {m} needs {unpaired} unpaired electrons but there are only "
                 f"{n_electrons} electrons (charge {q})", "charge/spin")
        if (n_electrons - unpaired) % 2:
            fail(f"spin multiplicity {m} is impossible with {n_electrons} electrons (charge {q}):"
                 f" {unpaired} unpaired electrons need an electron count of the same parity",
                 "charge/spin")
    return float(q), float(m)


_REASONS = {  # array name -> (not numeric, wrong shape, non-finite) skip-report reasons
    "forces": ("non-numeric label", "forces shape", "non-finite forces"),
}


def _array(value, shape, name, fail) -> np.ndarray:
    not_numeric, bad_shape, not_finite = _REASONS.get(name, (name, name, name))
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        fail(f"{name} is not numeric ({exc})", not_numeric)
    if a.shape != shape:
        fail(f"{name} has shape {a.shape}, expected {shape}", bad_shape)
    if not np.isfinite(a).all():
        fail(f"non-finite value in {name}", not_finite)
    return a


def _stress_3x3(value, fail) -> np.ndarray:
    """Accept a 3x3 stress or ASE's Voigt order (xx, yy, zz, yz, xz, xy)."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        fail(f"stress is not numeric ({exc})", "non-numeric label")
    if a.shape == (6,):
        xx, yy, zz, yz, xz, xy = a
        a = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    elif a.shape == (9,):
        a = a.reshape(3, 3)
    if a.shape != (3, 3):
        fail(f"stress has shape {a.shape}, expected (3, 3) or Voigt (6,)", "stress")
    if not np.isfinite(a).all():
        fail("non-finite value in stress", "stress")
    return a
