"""Per-dataset reference energies and scales, fitted on the training split only.

E ≈ Σ_Z n_Z e_Z + e₊ q⁺ + e₋ q⁻ + e_u u by float64 least squares (minimum-norm solution when
columns are collinear, e.g. a set of stoichiometric salts), where q⁺ = max(Q, 0), q⁻ = max(-Q, 0)
and u = max(M - 1, 0) unpaired electrons from the total charge Q and multiplicity M. The state
columns enter only when the training split has charged or open-shell records. They give the model
the dataset's mean ionisation/affinity/spin energies as a per-structure constant, which a sum of
local atomic energies cannot produce (each atom would need to know the molecule's size).
The scale is the RMS of force components when the dataset has forces, otherwise the RMS of residual
energy per atom.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from atomgfm.data.structure import MAX_Z, Structure


@dataclass
class Normalization:
    """Stored in the checkpoint and applied inside the model (heads)."""

    element_energy: np.ndarray  # (MAX_Z + 1,) float64, eV per atom; index = Z
    scale: float  # eV (per atom for energies, per component for forces)
    energy_rms: float  # RMS of residual energy per atom after the fit, eV/atom
    force_rms: float  # RMS of force components, eV/Å (nan if no forces)
    n_structures: int
    state_energy: np.ndarray = field(default_factory=lambda: np.zeros(3))  # e₊, e₋, e_u (eV)

    def reference_energy(self, s: Structure) -> float:
        """The baseline prediction for ``s``: element references plus state energies (eV)."""
        return self.reference(s.numbers, s.charge, s.spin)

    def reference(self, numbers: np.ndarray, charge: float, spin: float) -> float:
        """The baseline prediction (eV) for these atomic numbers, total charge and multiplicity."""
        return float(self.element_energy[numbers].sum()
                     + np.dot(self.state_energy, state_features(charge, spin)))

    def to_dict(self) -> dict:
        return {"element_energy": self.element_energy.tolist(), "scale": self.scale,
                "energy_rms": self.energy_rms, "force_rms": self.force_rms,
                "n_structures": self.n_structures, "state_energy": self.state_energy.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(np.asarray(d["element_energy"], dtype=np.float64), float(d["scale"]),
                   float(d["energy_rms"]), float(d["force_rms"]), int(d["n_structures"]),
                   np.asarray(d.get("state_energy", np.zeros(3)), dtype=np.float64))


def state_features(charge, spin) -> tuple:
    """(q⁺, q⁻, unpaired electrons) from total charge and multiplicity (0 = not given).

    Works elementwise on floats, NumPy arrays and torch tensors alike.
    """
    unpaired = spin - 1
    return (abs(charge) + charge) / 2, (abs(charge) - charge) / 2, (abs(unpaired) + unpaired) / 2


def fit_references(structures: list[Structure], name: str = "") -> Normalization:
    """Fit element energies and the scale on ``structures`` (the training split)."""
    labelled = [s for s in structures if s.energy is not None]
    forces = [s.forces for s in structures if s.forces is not None]
    if not labelled and not forces:
        raise ValueError(f"dataset {name!r}: no structure with an energy or forces label")
    force_rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else float("nan")
    if not labelled:  # forces only: nothing to reference, energies are relative
        return Normalization(np.zeros(MAX_Z + 1), force_rms if force_rms > 1e-9 else 1.0,
                             float("nan"), force_rms, len(structures))
    counts = np.zeros((len(labelled), MAX_Z + 1))
    for row, s in enumerate(labelled):
        np.add.at(counts[row], s.numbers, 1.0)
    energies = np.array([s.energy for s in labelled], dtype=np.float64)
    states = np.array([state_features(s.charge, s.spin) for s in labelled], dtype=np.float64)
    present = counts.any(axis=0)
    used = states.any(axis=0)
    coef, *_ = np.linalg.lstsq(np.hstack([counts[:, present], states[:, used]]), energies,
                               rcond=None)
    element_energy = np.zeros(MAX_Z + 1)
    element_energy[present] = coef[: present.sum()]
    state_energy = np.zeros(3)
    state_energy[used] = coef[present.sum():]
    n_atoms = counts.sum(axis=1)
    residual = (energies - counts @ element_energy - states @ state_energy) / n_atoms
    energy_rms = float(np.sqrt(np.mean(residual**2)))
    scale = force_rms if forces and force_rms > 1e-6 else energy_rms
    if not scale > 1e-9:
        scale = 1.0  # every label exactly explained by composition: nothing to scale
    return Normalization(element_energy, scale, energy_rms, force_rms, len(structures),
                         state_energy)
