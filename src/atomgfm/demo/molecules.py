"""Molecular chemistry for the demo corpus: species (charge, spin), random geometries, labels.

Source geometries are the G2 set shipped with ASE. Every species carries a total charge and a
spin multiplicity 2S+1 (the OMol25/fairchem convention); the catalogue derives radicals, cations,
radical anions and deprotonated anions from the neutral G2 entries so charge and spin matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.collections import g2
from ase.data import covalent_radii

ORGANIC = frozenset({"H", "C", "N", "O", "F", "S", "Cl"})
KINDS = ("neutral", "radical", "cation", "anion")
# fractions of the non-neutral kinds; the rest of the records are closed-shell neutral molecules
DEFAULT_FRACTIONS = {"radical": 0.08, "cation": 0.06, "anion": 0.07}


@dataclass(frozen=True)
class Species:
    """A molecule with its electronic state.

    Attributes:
        name: G2 name of the parent neutral molecule.
        charge: total charge in e.
        spin: spin multiplicity 2S+1.
        kind: one of ``KINDS``.
        remove: index of a hydrogen to remove (deprotonated anions), or -1.
    """

    name: str
    charge: int
    spin: int
    kind: str
    remove: int = -1

    def build(self) -> Atoms:
        """Return the reference geometry with ``info["charge"]`` and ``info["spin"]`` set."""
        atoms = molecule(self.name)
        if self.remove >= 0:
            del atoms[self.remove]
        atoms.set_initial_magnetic_moments(None)
        atoms.info = {"charge": self.charge, "spin": self.spin, "config_type": self.kind}
        return atoms


def molecule_pool(max_atoms: int = 12, elements: frozenset[str] = ORGANIC) -> list[str]:
    """G2 names with 2..max_atoms atoms made only of ``elements``, sorted for determinism."""
    names = []
    for name in g2.names:
        atoms = molecule(name)
        if 2 <= len(atoms) <= max_atoms and set(atoms.get_chemical_symbols()) <= elements:
            names.append(name)
    return sorted(names)


def _neutral_multiplicity(atoms: Atoms) -> int:
    return int(round(abs(atoms.get_initial_magnetic_moments().sum()))) + 1


def _ion_multiplicity(atoms: Atoms, charge: int) -> int:
    """Lowest multiplicity for the electron count: singlet if even, doublet if odd."""
    return 1 if (int(atoms.numbers.sum()) - charge) % 2 == 0 else 2


def _bonds(atoms: Atoms, factor: float = 1.2) -> np.ndarray:
    """Boolean adjacency from covalent radii."""
    pos = atoms.positions
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    r = covalent_radii[atoms.numbers]
    adj = d < factor * (r[:, None] + r[None])
    np.fill_diagonal(adj, False)
    return adj


def species_catalogue(names: list[str]) -> dict[str, list[Species]]:
    """All species of each kind derivable from the neutral G2 molecules ``names``."""
    cat: dict[str, list[Species]] = {k: [] for k in KINDS}
    for name in names:
        atoms = molecule(name)
        mult = _neutral_multiplicity(atoms)
        kind = "neutral" if mult == 1 else "radical"
        cat[kind].append(Species(name, 0, mult, kind))
        cat["cation"].append(Species(name, 1, _ion_multiplicity(atoms, 1), "cation"))
        cat["anion"].append(Species(name, -1, _ion_multiplicity(atoms, -1), "anion"))
        if mult == 1:  # deprotonate the first H bound to O, N or S: a closed-shell anion
            adj = _bonds(atoms)
            sym = atoms.get_chemical_symbols()
            acidic = [i for i, s in enumerate(sym) if s == "H"
                      and any(sym[j] in ("O", "N", "S") for j in np.flatnonzero(adj[i]))]
            if acidic and len(atoms) > 2:
                cat["anion"].append(Species(name, -1, 1, "anion", remove=acidic[0]))
    return cat


def sample_species(rng: np.random.Generator, n: int, catalogue: dict[str, list[Species]],
                   fractions: dict[str, float] | None = None) -> list[Species]:
    """Draw ``n`` species: at least one of every non-neutral kind, the rest neutral, shuffled."""
    fractions = DEFAULT_FRACTIONS if fractions is None else fractions
    counts = {k: max(1, int(round(f * n))) for k, f in fractions.items()}
    counts["neutral"] = max(0, n - sum(counts.values()))
    out: list[Species] = []
    for kind in KINDS:
        pool = catalogue[kind]
        out.extend(pool[i] for i in rng.integers(0, len(pool), counts.get(kind, 0)))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _rotate_torsion(atoms: Atoms, rng: np.random.Generator) -> None:
    """Rotate the smaller side of a random rotatable heavy-atom bond by 30-150 degrees."""
    adj = _bonds(atoms)
    heavy = atoms.numbers > 1
    pairs = [(i, j) for i, j in zip(*np.nonzero(np.triu(adj)), strict=True)
             if heavy[i] and heavy[j] and adj[i].sum() > 1 and adj[j].sum() > 1]
    for k in rng.permutation(len(pairs)):
        i, j = pairs[k]
        side, stack = {j}, [j]
        while stack:  # atoms reachable from j without crossing the bond i-j
            a = stack.pop()
            for b in np.flatnonzero(adj[a]):
                if not (a == j and b == i) and b not in side:
                    side.add(int(b))
                    stack.append(int(b))
        if i in side:
            continue  # ring bond
        axis = atoms.positions[j] - atoms.positions[i]
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.uniform(30, 150)) * rng.choice([-1, 1])
        idx = sorted(side)
        v = atoms.positions[idx] - atoms.positions[j]
        rot = (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
               + np.outer(v @ axis, axis) * (1 - np.cos(angle)))
        atoms.positions[idx] = atoms.positions[j] + rot
        return


def random_geometry(species: Species, rng: np.random.Generator,
                    sigma: tuple[float, float] = (0.03, 0.08)) -> Atoms:
    """Perturbed geometry: up to two torsions, a +-3 % breathing, a rattle and a random rotation."""
    for _ in range(20):
        atoms = species.build()
        for _ in range(int(rng.integers(0, 3))):
            _rotate_torsion(atoms, rng)
        if perturb_molecule(atoms, rng, sigma):
            return snap_positions(atoms)
    raise RuntimeError(f"could not build a sane geometry for {species}")


def perturb_molecule(atoms: Atoms, rng: np.random.Generator,
                     sigma: tuple[float, float] = (0.03, 0.08)) -> bool:
    """In place: a +-3 % breathing about the centre, a Gaussian rattle (standard deviation drawn
    from ``sigma``, Å) and a random rotation. Whether the geometry is sane: every two atoms still
    more than 0.7 Å apart."""
    centre = atoms.positions.mean(axis=0)
    atoms.positions = centre + (atoms.positions - centre) * rng.uniform(0.97, 1.03)
    atoms.positions += rng.normal(0.0, rng.uniform(*sigma), atoms.positions.shape)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    atoms.positions = (atoms.positions - atoms.positions.mean(axis=0)) @ q.T
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    return len(atoms) == 1 or d[np.triu_indices(len(atoms), 1)].min() > 0.7


def snap_positions(atoms: Atoms) -> Atoms:
    """Round positions to the 8 decimals extxyz stores, so labels match the written geometry."""
    atoms.positions = np.round(atoms.positions, 8)
    return atoms


def attach_labels(atoms: Atoms, energy: float, forces: np.ndarray,
                  stress: np.ndarray | None = None) -> Atoms:
    """Freeze labels into a SinglePointCalculator so extxyz writes the standard ASE fields."""
    results = {"energy": float(energy), "forces": np.asarray(forces, dtype=float)}
    if stress is not None:
        results["stress"] = np.asarray(stress, dtype=float)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
