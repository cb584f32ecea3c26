"""ASE calculator over ``Predictor``: energy, forces and stress from a checkpoint and a head."""

from __future__ import annotations

import warnings

from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes

from atomgfm.data.readers.base import charge_and_spin
from atomgfm.data.structure import Structure, StructureError, _where
from atomgfm.inference.spread import SpreadPredictor


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
        head: dataset (level of theory) whose head to use, or ``"auto"``: the head chosen per
            structure (:mod:`atomgfm.inference.head_choice`: the checkpoint's router when it has
            one, else the head whose training elements cover the structure, ties broken by fixed
            rules and logged). Required when the model has several heads.
        device: auto | cpu | cuda.
        precision: override the checkpoint's precision (e.g. "fp64" for tight relaxations).
        ensemble: more checkpoints with the same heads; energy and forces are then the mean of
            all models and their spread enters the uncertainty.
        uncertainty: compute the head (and ensemble) spread: every head covering the structure
            is read out from one encode and differentiated (one backward per head on CPU).

    Results beyond energy, forces and stress (:mod:`atomgfm.inference.spread`): ``head`` (the
    head used), ``uncertainty`` (eV/Å, the largest atomic force spread), ``spread_heads``,
    ``energy_spread_heads`` (eV/atom), ``forces_spread_heads`` ((n,) eV/Å) and the same for
    ``_ensemble``. ``calculate_batch(images)`` evaluates many Atoms in packed forwards.

    Total charge and spin multiplicity come from ``atoms.info["charge"]`` and
    ``atoms.info["spin"]`` (multiplicity 2S+1), as in OMol25-style files. When the head's
    training split never had that (charge, multiplicity) state, an
    :class:`UntrainedStateWarning` is issued, once per head and state.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "uncertainty"]

    def __init__(self, checkpoint: str, head: str | None = None, device: str = "auto",
                 precision: str | None = None, ensemble: list[str] | tuple[str, ...] = (),
                 uncertainty: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spread = SpreadPredictor.from_checkpoints([checkpoint, *ensemble], device, precision)
        self.predictor = self.spread.main
        if head is None:
            if len(self.predictor.heads) != 1:
                raise ValueError(f"choose a head (a name or 'auto'): this model has "
                                 f"{self.predictor.heads}")
            head = self.predictor.heads[0]
        if head != "auto":
            self.predictor.head_id(head)  # validates the name
        self.head = head
        self.uncertainty = uncertainty
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
        self.results = self.calculate_batch([self.atoms], properties)[0]

    def calculate_batch(self, images, properties=("energy", "forces"), **limits) -> list[dict]:
        """Results for many ``Atoms`` at once (e.g. NEB images, many relaxations): graphs packed
        into batches under the device's limits, one forward (and backward) per batch, each image
        with its own head when ``head="auto"``. Returns one ``calc.results``-style dict per
        image, in order; the images and this calculator's cache are left untouched.

        Stress is computed for fully periodic images (asking for it with a non-periodic image is
        an error). ``limits`` override the batch limits (max_atoms, max_edges, max_structures)."""
        structures = [self._structure(a) for a in images]
        want_stress = "stress" in properties
        if want_stress:
            for a in images:
                if not a.pbc.all():
                    raise ValueError(f"{describe_atoms(a)}: stress needs a structure periodic "
                                     "in all three directions")
        names = []
        for a, s in zip(images, structures, strict=True):
            try:
                names.append(self.spread.heads_for([s], self.head)[0])
            except ValueError as exc:  # unknown elements: name the Atoms, not "<input>, record 0"
                raise _renamed(exc, describe_atoms(a, s.charge, s.spin),
                               f"{s.source or '<input>'}, record {s.index}") from None
        for a, s, name in zip(images, structures, names, strict=True):
            self._warn_untrained_state(s, name, a)
        # Fully periodic structures always get their stress (it costs little beside the forces
        # and spares ASE a second call when a cell filter asks for it next).
        rs = self.spread.predict(structures, names, forces=True,
                                 stress=True if want_stress else None,
                                 uncertainty=self.uncertainty, **limits)
        out = []
        for r in rs:
            res = dict(r)
            res["free_energy"] = r["energy"]
            if "stress" in r:
                res["stress"] = r["stress"][[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt
            res.setdefault("uncertainty", 0.0)
            out.append(res)
        return out

    def _structure(self, atoms) -> Structure:
        return atoms_to_structure(atoms, self.head if self.head != "auto" else "")

    def _warn_untrained_state(self, s: Structure, head: str, atoms) -> None:
        """Warn once per (head, state) when the head never saw this (charge, multiplicity)."""
        states = self.predictor.datasets[head].get("states")
        if states is None:  # a checkpoint written before states were recorded
            return
        state = (int(round(s.charge)), int(round(s.spin)))
        if (head, state) in self._warned:
            return
        seen = sorted({(int(q), int(m)) for q, m in states})
        if state in seen:
            return
        self._warned.add((head, state))
        warnings.warn(f"head {head!r} never trained on charge {state[0]}, multiplicity "
                      f"{state[1]} (its training states (charge, multiplicity): {seen}); "
                      f"{describe_atoms(atoms)} is predicted by extrapolation",
                      UntrainedStateWarning, stacklevel=3)
