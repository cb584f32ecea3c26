"""Candidate generation: prototypes × element substitutions, enumerated lazily.

A spec (YAML) lists families; each family is a mixed-radix product of choices (elements per
site, compositions, supercells, decorations), so its size is a product computed without
enumerating, and candidate ``i`` is built from ``i`` alone (random access): ranks and resumed
runs jump straight to their share, and nothing holds a list of candidates. Ids are
deterministic: the global index (int64) and a readable name such as
``perovskite/SrTiO3/1x1x1/0``.

    seed: 0
    families:
      - kind: perovskite          # cubic ABX3: A at the corner, B at the centre, X on the faces
        A: [Sr, Ba, Ca]
        B: [Ti, Zr, Hf]
        X: [O]
        a: auto                   # Å, or auto: 2 (r_B + r_X) from covalent radii
        supercells: [[1, 1, 1], [2, 2, 2]]
        rattle: 0.02              # Å, Gaussian, seeded per candidate
        samples: 1                # rattled copies of each
      - kind: alloy               # binary/ternary decorations of fcc/bcc/hcp supercells
        lattice: fcc
        elements: [Cu, Ni, Pd, Au]
        components: [2, 3]        # binaries and ternaries
        supercells: [[2, 2, 2]]   # repeats of the conventional (cubic) or hcp cell
        step: 0.25                # composition grid (fraction)
        samples: 10               # random decorations per composition
        rattle: 0.03
      - kind: molecule            # substitutions on a molecule skeleton (ase.build.molecule)
        skeleton: C6H6
        sites: [6, 7, 8]          # atom indices to substitute (default: every H)
        substituents: [H, F, Cl]
        rattle: 0.0

Lattice constants: alloys by Vegard's law on the nearest-neighbour distances of the elements'
reference crystal structures (ASE's ``reference_states``; covalent radii where absent);
rattling with ``numpy.random.default_rng([seed, family, i])``, so a candidate does not depend on
which others were made before it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomgfm.data.structure import Structure

KINDS = ("perovskite", "alloy", "molecule")
LATTICES = ("fcc", "bcc", "hcp")


class SpecError(ValueError):
    """A generator spec is invalid; the message names the file and the family."""


def _symbols_to_z(symbols, where: str) -> list[int]:
    from ase.data import atomic_numbers

    if isinstance(symbols, str) or not symbols:
        raise SpecError(f"{where}: expected a non-empty list of element symbols, got {symbols!r}")
    out = []
    for s in symbols:
        if s not in atomic_numbers or atomic_numbers[s] == 0:
            raise SpecError(f"{where}: unknown element {s!r}")
        out.append(atomic_numbers[s])
    return out


def nn_distance(z: int) -> float:
    """Nearest-neighbour distance (Å) of element ``z`` in its reference crystal structure."""
    from ase.data import covalent_radii, reference_states

    ref = reference_states[z] or {}
    a = ref.get("a")
    sym = ref.get("symmetry")
    if sym == "fcc":
        return a / math.sqrt(2)
    if sym == "bcc":
        return a * math.sqrt(3) / 2
    if sym == "hcp":
        return a
    if sym == "diamond":
        return a * math.sqrt(3) / 4
    return 2 * covalent_radii[z]


def _supercells(value, where: str) -> list[tuple[int, int, int]]:
    value = value if value is not None else [[1, 1, 1]]
    out = []
    for sc in value:
        sc = [sc] * 3 if isinstance(sc, int) else sc
        if len(sc) != 3 or any(int(n) < 1 for n in sc):
            raise SpecError(f"{where}: supercells must be [n1, n2, n3] with n >= 1, got {sc}")
        out.append(tuple(int(n) for n in sc))
    return out


class Family:
    """One prototype family: ``len(family)`` candidates, ``family.make(i, rng)``."""

    kind = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def make(self, i: int, rng: np.random.Generator) -> tuple[str, Structure]:
        raise NotImplementedError


def _decode(i: int, radices: list[int]) -> list[int]:
    """Mixed-radix digits of ``i`` (last radix varies fastest)."""
    digits = []
    for r in reversed(radices):
        i, d = divmod(i, r)
        digits.append(d)
    return digits[::-1]


class Perovskite(Family):
    kind = "perovskite"

    def __init__(self, spec: dict, where: str) -> None:
        _check_keys(spec, {"kind", "A", "B", "X", "a", "supercells", "rattle", "samples"}, where)
        self.sites = [_symbols_to_z(spec.get(k), f"{where}.{k}") for k in ("A", "B", "X")]
        self.a = spec.get("a", "auto")
        if self.a != "auto" and not float(self.a) > 0:
            raise SpecError(f"{where}.a: lattice constant must be positive or 'auto'")
        self.supercells = _supercells(spec.get("supercells"), f"{where}.supercells")
        self.samples = _positive_int(spec.get("samples", 1), f"{where}.samples")
        self.radices = [*(len(s) for s in self.sites), len(self.supercells), self.samples]

    def __len__(self) -> int:
        return math.prod(self.radices)

    def make(self, i, rng):
        from ase import Atoms
        from ase.data import chemical_symbols, covalent_radii

        ia, ib, ix, isc, sample = _decode(i, self.radices)
        za, zb, zx = self.sites[0][ia], self.sites[1][ib], self.sites[2][ix]
        a = (2 * (covalent_radii[zb] + covalent_radii[zx]) if self.a == "auto"
             else float(self.a))
        frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
        atoms = Atoms(numbers=[za, zb, zx, zx, zx], scaled_positions=frac, cell=np.eye(3) * a,
                      pbc=True).repeat(self.supercells[isc])
        formula = f"{chemical_symbols[za]}{chemical_symbols[zb]}{chemical_symbols[zx]}3"
        name = f"perovskite/{formula}/{'x'.join(map(str, self.supercells[isc]))}/{sample}"
        return name, atoms


class Alloy(Family):
    kind = "alloy"

    def __init__(self, spec: dict, where: str) -> None:
        _check_keys(spec, {"kind", "lattice", "elements", "components", "supercells", "step",
                           "samples", "rattle"}, where)
        self.lattice = spec.get("lattice", "fcc")
        if self.lattice not in LATTICES:
            raise SpecError(f"{where}.lattice: must be one of {LATTICES}, got {self.lattice!r}")
        self.elements = _symbols_to_z(spec.get("elements"), f"{where}.elements")
        comps = spec.get("components", [2])
        comps = [comps] if isinstance(comps, int) else list(comps)
        if any(not 1 <= int(c) <= len(self.elements) for c in comps):
            raise SpecError(f"{where}.components: each must be 1..{len(self.elements)}")
        self.supercells = _supercells(spec.get("supercells"), f"{where}.supercells")
        step = float(spec.get("step", 0.25))
        if not 0 < step <= 1 or abs(round(1 / step) - 1 / step) > 1e-9:
            raise SpecError(f"{where}.step: must be 1/n for a whole n, got {step}")
        self.grid = round(1 / step)
        self.samples = _positive_int(spec.get("samples", 1), f"{where}.samples")
        # Element subsets and composition grids are small (tens to thousands); the product
        # with supercells and samples is what grows, and it is never materialised.
        self.subsets = [c for k in sorted({int(c) for c in comps})
                        for c in itertools.combinations(self.elements, k)]
        self.compositions = {k: [p for p in itertools.product(range(1, self.grid + 1), repeat=k)
                                 if sum(p) == self.grid] for k in {len(s) for s in self.subsets}}
        # per subset: number of compositions; flatten (subset, composition) with offsets
        self.sizes = [len(self.compositions[len(s)]) for s in self.subsets]
        self.offsets = np.cumsum([0, *self.sizes])
        self.radices = [int(self.offsets[-1]), len(self.supercells), self.samples]

    def __len__(self) -> int:
        return math.prod(self.radices)

    def _cell(self, d: float, repeat):
        from ase.build import bulk

        if self.lattice == "fcc":
            proto = bulk("Cu", "fcc", a=d * math.sqrt(2), cubic=True)
        elif self.lattice == "bcc":
            proto = bulk("Fe", "bcc", a=2 * d / math.sqrt(3), cubic=True)
        else:
            proto = bulk("Mg", "hcp", a=d, c=d * math.sqrt(8 / 3))
        return proto.repeat(repeat)

    def make(self, i, rng):
        from ase.data import chemical_symbols

        sc_idx, isc, sample = _decode(i, self.radices)
        s = int(np.searchsorted(self.offsets, sc_idx, side="right") - 1)
        subset, comp = self.subsets[s], self.compositions[len(self.subsets[s])][
            sc_idx - int(self.offsets[s])]
        fractions = np.array(comp) / self.grid
        d = float(sum(f * nn_distance(z) for f, z in zip(fractions, subset, strict=True)))
        atoms = self._cell(d, self.supercells[isc])
        n = len(atoms)
        counts = np.floor(fractions * n).astype(int)
        counts[: n - counts.sum()] += 1  # largest-remainder-free: deterministic top-up
        numbers = np.repeat(subset, counts)
        atoms.numbers = rng.permutation(numbers)
        # the grid composition (unique per candidate; the cell's counts are its formula)
        label = "".join(f"{chemical_symbols[z]}{f:.4g}"
                        for z, f in zip(subset, fractions, strict=True))
        name = (f"alloy/{self.lattice}/{label}/{'x'.join(map(str, self.supercells[isc]))}/"
                f"{sample}")
        return name, atoms


class Molecule(Family):
    kind = "molecule"

    def __init__(self, spec: dict, where: str) -> None:
        from ase.build import molecule

        _check_keys(spec, {"kind", "skeleton", "sites", "substituents", "rattle", "samples"},
                    where)
        name = spec.get("skeleton")
        try:
            self.skeleton = molecule(name)
        except (KeyError, TypeError):
            raise SpecError(f"{where}.skeleton: {name!r} is not a molecule ase.build.molecule "
                            "knows") from None
        self.skeleton_name = name
        sites = spec.get("sites")
        if sites is None:
            sites = [i for i, z in enumerate(self.skeleton.numbers) if z == 1]
        if not sites or any(not 0 <= int(i) < len(self.skeleton) for i in sites):
            raise SpecError(f"{where}.sites: atom indices 0..{len(self.skeleton) - 1} required")
        self.sites = [int(i) for i in sites]
        self.substituents = _symbols_to_z(spec.get("substituents"), f"{where}.substituents")
        self.samples = _positive_int(spec.get("samples", 1), f"{where}.samples")
        self.radices = [len(self.substituents)] * len(self.sites) + [self.samples]
        pos = self.skeleton.positions
        # each site's bonded partner: its nearest other atom (bond lengths are rescaled to the
        # sum of covalent radii when the element changes)
        dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
        self.partner = {i: int(np.argmin(dist[i])) for i in self.sites}

    def __len__(self) -> int:
        return math.prod(self.radices)

    def make(self, i, rng):
        from ase.data import chemical_symbols, covalent_radii

        *choice, sample = _decode(i, self.radices)
        atoms = self.skeleton.copy()
        for site, c in zip(self.sites, choice, strict=True):
            z = self.substituents[c]
            j = self.partner[site]
            bond = atoms.positions[site] - atoms.positions[j]
            length = covalent_radii[z] + covalent_radii[atoms.numbers[j]]
            atoms.positions[site] = atoms.positions[j] + bond / np.linalg.norm(bond) * length
            atoms.numbers[site] = z
        subs = "-".join(chemical_symbols[self.substituents[c]] for c in choice)
        return f"molecule/{self.skeleton_name}/{subs}/{sample}", atoms


FAMILIES = {"perovskite": Perovskite, "alloy": Alloy, "molecule": Molecule}


def _check_keys(spec: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _positive_int(value, where: str) -> int:
    if int(value) != value or int(value) < 1:
        raise SpecError(f"{where}: must be a whole number >= 1, got {value!r}")
    return int(value)


@dataclass
class Candidate:
    """One generated candidate: global ``index`` (int), readable ``id`` and its structure."""

    index: int
    id: str
    structure: Structure


class CandidateGenerator:
    """All families of a spec as one index space ``0..len-1`` (family after family).

    Args:
        spec: the parsed spec (see the module docstring).
        source: where it came from, for error messages.
    """

    def __init__(self, spec: dict, source: str = "<spec>") -> None:
        if not isinstance(spec, dict):
            raise SpecError(f"{source}: a spec is a mapping with 'families'")
        _check_keys(spec, {"seed", "families"}, source)
        self.source = source
        self.digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str)
                                     .encode()).hexdigest()[:16]
        self.seed = int(spec.get("seed", 0))
        fams = spec.get("families")
        if not fams:
            raise SpecError(f"{source}: 'families' must list at least one family")
        self.families: list[Family] = []
        self.rattle: list[float] = []
        for k, f in enumerate(fams):
            where = f"{source}: families[{k}]"
            kind = f.get("kind") if isinstance(f, dict) else None
            if kind not in FAMILIES:
                raise SpecError(f"{where}.kind: must be one of {KINDS}, got {kind!r}")
            self.families.append(FAMILIES[kind](f, where))
            rattle = float(f.get("rattle", 0.0))
            if rattle < 0:
                raise SpecError(f"{where}.rattle: must be >= 0 Å")
            self.rattle.append(rattle)
        self.offsets = np.cumsum([0, *(len(f) for f in self.families)])

    @classmethod
    def from_file(cls, path: str | Path) -> CandidateGenerator:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"generator spec not found: {path}")
        with open(path) as fh:
            try:
                spec = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls(spec, str(path))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def counts(self) -> list[tuple[str, int]]:
        """(kind, number of candidates) per family, without enumerating."""
        return [(f.kind, len(f)) for f in self.families]

    def __getitem__(self, index: int) -> Candidate:
        if not 0 <= index < len(self):
            raise IndexError(f"candidate {index} out of range 0..{len(self) - 1}")
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        local = index - int(self.offsets[k])
        rng = np.random.default_rng([self.seed, k, local])
        name, atoms = self.families[k].make(local, rng)
        if self.rattle[k] > 0:
            atoms.positions += rng.normal(0.0, self.rattle[k], atoms.positions.shape)
        n_electrons = int(atoms.numbers.sum())
        spin = 0.0 if atoms.pbc.any() else float(1 + n_electrons % 2)
        s = Structure(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, spin=spin,
                      source=self.source, index=index)
        return Candidate(index, name, s)

    def iter(self, start: int = 0, stop: int | None = None) -> Iterator[Candidate]:
        """Candidates ``start..stop-1``, one at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            yield self[i]

    def __iter__(self) -> Iterator[Candidate]:
        return self.iter()
