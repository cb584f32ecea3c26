"""``ase.Atoms`` -> validated :class:`~atomgfm.data.structure.Structure`: label lookup, units,
total charge and multiplicity.

Labels come from a :class:`SinglePointCalculator`'s results, then ``atoms.info`` (energy, stress)
or ``atoms.arrays`` / ``atoms.info`` (forces). A calculator is never run.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from atomgfm.data.structure import Structure, StructureError, _where

# Label names accepted when the caller names no key. More than one present in a record is an
# error (ambiguous), never a silent choice.
ENERGY_KEYS = ("energy", "REF_energy", "total_energy")
FORCES_KEYS = ("forces", "REF_forces")
STRESS_KEYS = ("stress", "REF_stress")
# Total charge (e) and spin multiplicity 2S+1, as fairchem/OMol25 name them in ``atoms.info``.
CHARGE_KEYS = ("charge", "total_charge")
SPIN_KEYS = ("spin", "multiplicity")


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
    at = _where(source, index)
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
            f"{at}: ambiguous {what}: found {sorted(found)}; pass {what}_key= to choose one",
            "ambiguous label")
    return next(iter(found.values()), None)


def _scalar_info(at: str, info: dict, names: tuple[str, ...]) -> float | None:
    found = {n: info[n] for n in names if n in info and info[n] is not None}
    values = {}
    for name, value in found.items():
        a = _numeric(at, name, value)
        if a.size != 1:
            raise StructureError(f"{at}: {name} must be a scalar, got shape {a.shape}",
                                 "charge/spin")
        values[name] = float(a.reshape(-1)[0])
    if len(set(values.values())) > 1:
        raise StructureError(f"{at}: ambiguous {names[0]}: {values} disagree", "ambiguous label")
    return next(iter(values.values()), None)


def _numeric(at: str, what: str, value) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StructureError(f"{at}: {what} is not numeric ({exc})", "non-numeric label") from None
