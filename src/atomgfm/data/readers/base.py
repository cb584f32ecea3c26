"""Shared pieces of every reader: results, skip reports, errors and ``atoms_to_structure``.

A reader turns a file into ``(index, build)`` pairs, where ``build()`` parses and converts one
record into a validated :class:`~atomgfm.data.structure.Structure`. :func:`collect` runs them,
re-raising or counting failures according to ``on_error``. Errors that make the *rest* of a file
unreadable (lost frame boundaries, a dead ASE iterator) are :class:`ReaderError` raised by the
reader itself and are never skipped: skipping must not silently drop good records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from atomgfm.data.structure import Structure, StructureError, _where

ON_ERROR = ("raise", "skip")

# Label names accepted when the caller names no key. More than one present in a record is an
# error (ambiguous), never a silent choice.
ENERGY_KEYS = ("energy", "REF_energy", "total_energy")
FORCES_KEYS = ("forces", "REF_forces")
STRESS_KEYS = ("stress", "REF_stress")
CHARGE_KEYS = ("charge", "total_charge")
SPIN_KEYS = ("spin", "multiplicity")

# Substring of a StructureError message -> short reason used in skip reports (first match wins).
_REASONS = (
    ("ambiguous", "ambiguous label"),
    ("not numeric", "non-numeric label"),
    ("unknown element", "unknown element"),
    ("no atoms", "no atoms"),
    ("non-finite energy", "non-finite energy"),
    ("non-finite value in forces", "non-finite forces"),
    ("forces has shape", "forces shape"),
    ("missing cell", "missing cell"),
    ("zero volume", "missing cell"),
    ("stress", "stress"),
    ("positions", "positions"),
    ("energy must be a scalar", "energy shape"),
)


class ReaderError(ValueError):
    """A file (or a record in it) could not be read; the message names the file."""


class RecordError(ReaderError):
    """One record could not be parsed; skippable. ``reason`` is the short skip-report key."""

    def __init__(self, message: str, reason: str = "parse error") -> None:
        super().__init__(message)
        self.reason = reason


where = _where  # the location prefix every per-record message starts with (Structure's own)


def reason_for(exc: Exception) -> str:
    if isinstance(exc, RecordError):
        return exc.reason
    msg = str(exc)
    for needle, reason in _REASONS:
        if needle in msg:
            return reason
    return "invalid structure"


@dataclass
class SkipReport:
    """What a reader skipped: counts per reason and the first few examples."""

    source: str = ""
    n_records: int = 0  # records seen, good and skipped
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, int, str]] = field(default_factory=list)  # (file, index, message)
    max_examples: int = 5

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, index: int, reason: str, message: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append((self.source, index, message))

    def __str__(self) -> str:
        head = f"skipped {self.total} of {self.n_records} records in {self.source or '<memory>'}"
        if not self.counts:
            return head
        parts = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return head + ": " + ", ".join(f"{n} {reason}" for reason, n in parts)


@dataclass
class ReadResult:
    structures: list[Structure]
    skipped: SkipReport

    def __len__(self) -> int:
        return len(self.structures)


@dataclass(frozen=True)
class ReadOptions:
    """Everything a registered reader needs besides the path (factors convert to eV / Å)."""

    dataset: str = ""
    energy_factor: float = 1.0
    length_factor: float = 1.0
    on_error: str = "raise"
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")

    def convert(self, atoms: Atoms, source: str, index: int) -> Structure:
        return atoms_to_structure(
            atoms, dataset=self.dataset, source=source, index=index,
            energy_factor=self.energy_factor, length_factor=self.length_factor,
            energy_key=self.energy_key, forces_key=self.forces_key, stress_key=self.stress_key,
        )


def collect(
    source: str, records: Iterable[tuple[int, Callable[[], Structure]]], on_error: str
) -> ReadResult:
    """Build every record; re-raise or count failures; refuse empty or fully skipped files."""
    report = SkipReport(source=source)
    out: list[Structure] = []
    for index, build in records:
        report.n_records += 1
        try:
            out.append(build())
        except (StructureError, RecordError) as exc:
            if on_error == "raise":
                raise
            report.add(index, reason_for(exc), str(exc))
    if report.n_records == 0:
        raise ReaderError(f"{source}: empty file, no records (nothing the reader recognises as a "
                          "structure; wrong format?)")
    if not out:
        examples = "; ".join(msg for _, _, msg in report.examples)
        raise ReaderError(f"{source}: every record was skipped ({report}). First: {examples}")
    return ReadResult(out, report)


# --- Atoms -> Structure ---------------------------------------------------------------------


def atoms_to_structure(
    atoms: Atoms,
    *,
    dataset: str = "",
    source: str = "",
    index: int = 0,
    energy_factor: float = 1.0,
    length_factor: float = 1.0,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> Structure:
    """Convert one ``ase.Atoms`` into a validated :class:`Structure` in eV / Å / e.

    Labels come from a :class:`SinglePointCalculator`'s results, then ``atoms.info`` (energy,
    stress) or ``atoms.arrays`` / ``atoms.info`` (forces). With no key given, the names in
    ``ENERGY_KEYS`` / ``FORCES_KEYS`` / ``STRESS_KEYS`` are tried and more than one present is an
    error. Never calls a calculator (no ``get_potential_energy``).
    """
    at = where(source, index)
    results = atoms.calc.results if isinstance(atoms.calc, SinglePointCalculator) else {}
    ef, lf = float(energy_factor), float(length_factor)

    energy = _label(at, "energy", energy_key, ENERGY_KEYS, (results, atoms.info))
    forces = _label(at, "forces", forces_key, FORCES_KEYS, (results, atoms.arrays, atoms.info))
    stress = _label(at, "stress", stress_key, STRESS_KEYS, (results, atoms.info))
    charge, spin = charge_and_spin(atoms, at)

    used = {energy_key, forces_key, stress_key, *ENERGY_KEYS, *FORCES_KEYS, *STRESS_KEYS,
            *CHARGE_KEYS, *SPIN_KEYS}
    return Structure(
        numbers=atoms.numbers.copy(),
        positions=np.asarray(atoms.positions, dtype=np.float64) * lf,
        cell=np.asarray(atoms.cell.array, dtype=np.float64) * lf,
        pbc=atoms.pbc.copy(),
        energy=None if energy is None else _numeric(at, "energy", energy) * ef,
        forces=None if forces is None else _numeric(at, "forces", forces) * (ef / lf),
        stress=None if stress is None else _numeric(at, "stress", stress) * (ef / lf**3),
        charge=charge,
        spin=spin,
        dataset=dataset,
        source=source,
        index=index,
        info={k: v for k, v in atoms.info.items() if k not in used},
    )


def charge_and_spin(atoms: Atoms, at: str = "<atoms>") -> tuple[float, float]:
    """Total charge (``info`` charge/total_charge, else Σ initial_charges, else 0) and spin
    multiplicity (``info`` spin/multiplicity, else 0 = not given)."""
    charge = _scalar_info(at, atoms.info, CHARGE_KEYS)
    if charge is None:
        initial = atoms.arrays.get("initial_charges")
        charge = float(np.sum(initial)) if initial is not None else 0.0
    spin = _scalar_info(at, atoms.info, SPIN_KEYS)
    return charge, 0.0 if spin is None else spin


def _label(at: str, what: str, key: str | None, defaults: tuple[str, ...], sources):
    """First value of ``key`` across ``sources``; without a key, exactly one default name."""
    if key is not None:
        return next((s[key] for s in sources if key in s), None)
    found = {}
    for name in defaults:
        for s in sources:
            if name in s:
                found.setdefault(name, s[name])
    if len(found) > 1:
        raise StructureError(
            f"{at}: ambiguous {what}: found {sorted(found)}; pass {what}_key= to choose one")
    return next(iter(found.values()), None)


def _scalar_info(at: str, info: dict, names: tuple[str, ...]) -> float | None:
    found = {n: info[n] for n in names if n in info and info[n] is not None}
    values = {}
    for name, value in found.items():
        a = _numeric(at, name, value)
        if a.size != 1:
            raise StructureError(f"{at}: {name} must be a scalar, got shape {a.shape}")
        values[name] = float(a.reshape(-1)[0])
    if len(set(values.values())) > 1:
        raise StructureError(f"{at}: ambiguous {names[0]}: {values} disagree")
    return next(iter(values.values()), None)


def _numeric(at: str, what: str, value) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StructureError(f"{at}: {what} is not numeric ({exc})") from None
