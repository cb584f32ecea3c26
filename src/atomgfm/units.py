"""Unit conversion into atomgfm's internal units: eV, Å, e.

A dataset declares its source units; readers convert once, on the way in.
"""

from __future__ import annotations

from ase import units as _u

ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": _u.Hartree,
    "Ha": _u.Hartree,
    "kcal/mol": _u.kcal / _u.mol,
    "kJ/mol": _u.kJ / _u.mol,
    "Ry": _u.Rydberg,
}
LENGTH_UNITS: dict[str, float] = {"Å": 1.0, "Angstrom": 1.0, "A": 1.0, "Bohr": _u.Bohr, "nm": 10.0}


def energy_factor(unit: str) -> float:
    """Factor that converts an energy in ``unit`` to eV."""
    try:
        return ENERGY_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown energy unit {unit!r}; known: {sorted(ENERGY_UNITS)}") from None


def length_factor(unit: str) -> float:
    """Factor that converts a length in ``unit`` to Å."""
    try:
        return LENGTH_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown length unit {unit!r}; known: {sorted(LENGTH_UNITS)}") from None
