"""ASE calculator over ``Predictor``: energy, forces and stress from a checkpoint and a head."""

from __future__ import annotations

from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes

from atomgfm.data.readers.base import charge_and_spin
from atomgfm.data.structure import Structure
from atomgfm.inference.predictor import Predictor


def atoms_to_structure(atoms, dataset: str = "") -> Structure:
    """Geometry, total charge and spin of ``atoms`` (labels are not read: this is for input)."""
    charge, spin = charge_and_spin(atoms)
    return Structure(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                     charge=charge, spin=spin, dataset=dataset)


class Calculator(_AseCalculator):
    """``atomgfm.Calculator("best.pt", head="mol_dft")``.

    Args:
        checkpoint: path to an atomgfm checkpoint.
        head: dataset (level of theory) whose head to use; required when the model has several.
        device: auto | cpu | cuda.
        precision: override the checkpoint's precision (e.g. "fp64" for tight relaxations).

    Total charge and spin multiplicity come from ``atoms.info["charge"]`` and
    ``atoms.info["spin"]`` (multiplicity 2S+1), as in OMol25-style files.
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
        want_stress = "stress" in properties
        if want_stress and not self.atoms.pbc.all():
            raise ValueError("stress needs a structure periodic in all three directions")
        r = self.predictor.predict([s], head=self.head, forces=True, stress=want_stress)[0]
        self.results["energy"] = self.results["free_energy"] = r["energy"]
        self.results["forces"] = r["forces"]
        if want_stress:
            st = r["stress"]
            self.results["stress"] = st[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt
