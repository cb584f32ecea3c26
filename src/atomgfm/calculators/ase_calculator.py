"""ASE calculator over ``Predictor``: energy, forces and stress from a checkpoint and a head."""

from __future__ import annotations

import warnings

from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes

from atomgfm.data.readers.base import charge_and_spin
from atomgfm.data.structure import Structure, StructureError, _where
from atomgfm.inference.predictor import Predictor


class UntrainedStateWarning(UserWarning):
    """A head is asked about a (charge, multiplicity) state absent from its training split."""


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def describe_atoms(atoms, charge: float | None = None, spin: float | None = None) -> str:
    """``Atoms(H2O, charge 0, multiplicity 2)``: how errors about an input name it."""
    formula = atoms.get_chemical_formula() or "no atoms"
    if charge is None:
        return f"Atoms({formula})"
    return f"Atoms({formula}, charge {_number(charge)}, multiplicity {_number(spin)})"


def _renamed(exc: ValueError, label: str, *prefixes: str) -> ValueError:
    """``exc`` with its location prefix (e.g. ``<memory>, record 0: ``) replaced by ``label``."""
    msg = str(exc)
    for prefix in prefixes:
        if msg.startswith(prefix + ": "):
            msg = msg[len(prefix) + 2:]
            break
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)  # e.g. StructureError.reason
    new.args = (f"{label}: {msg}",)
    return new


def atoms_to_structure(atoms, dataset: str = "") -> Structure:
    """Geometry, total charge and spin of ``atoms`` (labels are not read: this is for input).

    Invalid input (e.g. a multiplicity impossible for the electron count) raises
    :class:`StructureError` naming the Atoms: ``Atoms(H2O, charge 0, multiplicity 2): ...``.
    """
    charge, spin = charge_and_spin(atoms, describe_atoms(atoms))
    try:
        return Structure(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                         charge=charge, spin=spin, dataset=dataset)
    except StructureError as exc:
        raise _renamed(exc, describe_atoms(atoms, charge, spin), _where("", 0)) from None


class Calculator(_AseCalculator):
    """``atomgfm.Calculator("best.pt", head="mol_dft")``.

    Args:
        checkpoint: path to an atomgfm checkpoint.
        head: dataset (level of theory) whose head to use; required when the model has several.
        device: auto | cpu | cuda.
        precision: override the checkpoint's precision (e.g. "fp64" for tight relaxations).

    Total charge and spin multiplicity come from ``atoms.info["charge"]`` and
    ``atoms.info["spin"]`` (multiplicity 2S+1), as in OMol25-style files. When the head's
    training split never had that (charge, multiplicity) state, an
    :class:`UntrainedStateWarning` is issued, once per head and state.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, checkpoint: str, head: str | None = None, device: str = "auto",
                 precision: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.predictor = Predictor.from_checkpoint(checkpoint, device, precision)
        if head is None:
            if len(self.predictor.heads) != 1:
                raise ValueError(f"choose a head: this model has {self.predictor.heads}")
            head = self.predictor.heads[0]
        self.predictor.head_id(head)  # validates the name
        self.head = head
        self._warned: set[tuple[str, tuple[int, int]]] = set()

    def check_state(self, atoms, tol=1e-15):
        # ASE compares positions, cell, numbers... but not info: a new charge or spin must also
        # invalidate cached results.
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and charge_and_spin(atoms) != charge_and_spin(self.atoms):
            changes.append("charge_spin")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        s = atoms_to_structure(self.atoms, self.head)
        try:
            self.predictor.check(s, self.head)
        except ValueError as exc:  # unknown elements: name the Atoms, not "<input>, record 0"
            raise _renamed(exc, describe_atoms(self.atoms, s.charge, s.spin),
                           f"{s.source or '<input>'}, record {s.index}") from None
        self._warn_untrained_state(s)
        want_stress = "stress" in properties
        if want_stress and not self.atoms.pbc.all():
            raise ValueError("stress needs a structure periodic in all three directions")
        r = self.predictor.predict([s], head=self.head, forces=True, stress=want_stress)[0]
        self.results["energy"] = self.results["free_energy"] = r["energy"]
        self.results["forces"] = r["forces"]
        if want_stress:
            st = r["stress"]
            self.results["stress"] = st[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt

    def _warn_untrained_state(self, s: Structure) -> None:
        """Warn once per (head, state) when the head never saw this (charge, multiplicity)."""
        states = self.predictor.datasets[self.head].get("states")
        if states is None:  # a checkpoint written before states were recorded
            return
        state = (int(round(s.charge)), int(round(s.spin)))
        if (self.head, state) in self._warned:
            return
        seen = sorted({(int(q), int(m)) for q, m in states})
        if state in seen:
            return
        self._warned.add((self.head, state))
        warnings.warn(f"head {self.head!r} never trained on charge {state[0]}, multiplicity "
                      f"{state[1]} (its training states (charge, multiplicity): {seen}); "
                      f"{describe_atoms(self.atoms)} is predicted by extrapolation",
                      UntrainedStateWarning, stacklevel=3)
