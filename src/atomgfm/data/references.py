"""Per-dataset element reference energies and scales, fitted on the training split only.

E ≈ Σ_Z n_Z e_Z by float64 least squares on composition (minimum-norm solution when compositions
are collinear, e.g. a set of stoichiometric salts). The scale is the RMS of force components when
the dataset has forces, otherwise the RMS of residual energy per atom.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def to_dict(self) -> dict:
        return {"element_energy": self.element_energy.tolist(), "scale": self.scale,
                "energy_rms": self.energy_rms, "force_rms": self.force_rms,
                "n_structures": self.n_structures}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(np.asarray(d["element_energy"], dtype=np.float64), float(d["scale"]),
                   float(d["energy_rms"]), float(d["force_rms"]), int(d["n_structures"]))


def fit_references(structures: list[Structure], name: str = "") -> Normalization:
    """Fit element energies and the scale on ``structures`` (the training split)."""
    labelled = [s for s in structures if s.energy is not None]
    if not labelled:
        raise ValueError(f"dataset {name!r}: no structure with an energy label to fit references")
    counts = np.zeros((len(labelled), MAX_Z + 1))
    for row, s in enumerate(labelled):
        np.add.at(counts[row], s.numbers, 1.0)
    energies = np.array([s.energy for s in labelled], dtype=np.float64)
    present = counts.any(axis=0)
    coef, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    element_energy = np.zeros(MAX_Z + 1)
    element_energy[present] = coef
    n_atoms = counts.sum(axis=1)
    residual = (energies - counts @ element_energy) / n_atoms
    energy_rms = float(np.sqrt(np.mean(residual**2)))
    forces = [s.forces for s in structures if s.forces is not None]
    force_rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else float("nan")
    scale = force_rms if forces and force_rms > 1e-6 else energy_rms
    if not scale > 1e-9:
        scale = 1.0  # every label exactly explained by composition: nothing to scale
    return Normalization(element_energy, scale, energy_rms, force_rms, len(structures))
