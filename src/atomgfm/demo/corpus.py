"""The demo corpus: five small datasets at four levels of theory, labelled by real calculators.

``generate_demo(out_dir)`` writes one extxyz file per dataset plus ``datasets.yaml``:

- ``alloy_emt``: random fcc/bcc alloys of the EMT elements (EMT; energy, forces, stress).
- ``mol_gfn2``: G2 molecules incl. radicals and ions, GFN2-xTB via tblite (energy, forces).
- ``mol_gfn1``: the same chemistry at GFN1-xTB, other geometries (energy, forces).
- ``inorg_gfn1``: small ionic/covalent crystals, Γ-point GFN1-xTB (energy, forces, stress).
- ``mol_dft``: PBE/def2-SVP (PySCF) molecules, shipped with the package; see
  ``scripts/make_dft_set.py``.

Every random choice comes from ``numpy.random.default_rng`` streams derived from ``seed``, so a seed
reproduces the files byte for byte. Molecules carry ``info["charge"]`` (e) and ``info["spin"]``
(multiplicity 2S+1); periodic cells carry charge 0 and spin 0 (EMT: not given) or 1 (xTB singlet).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms
from ase.calculators.calculator import CalculationFailed
from ase.io import read, write
from tqdm.auto import tqdm

from atomgfm.demo.crystals import random_alloy, random_inorganic
from atomgfm.demo.molecules import (
    Species,
    attach_labels,
    molecule_pool,
    random_geometry,
    sample_species,
    species_catalogue,
)

log = logging.getLogger(__name__)

DEMO_FILES = Path(__file__).resolve().parent / "files"
DFT_FILE = "mol_pbe_svp.extxyz"
# name -> (structures at scale 1, level of theory, periodic)
DATASETS = {
    "alloy_emt": (1500, "EMT", True),
    "mol_gfn2": (400, "GFN2-xTB", False),
    "mol_gfn1": (100, "GFN1-xTB", False),
    "inorg_gfn1": (250, "GFN1-xTB", True),
    "mol_dft": (None, "PBE/def2-SVP", False),
}
MAX_RETRIES = 5


@contextmanager
def _openmp_threads(n: int) -> Iterator[None]:
    """Run tblite with ``n`` OpenMP threads: its threaded sums are not bitwise reproducible.

    tblite links the system libgomp; where that library cannot be found this is a no-op.
    """
    name = ctypes.util.find_library("gomp")
    try:
        lib = ctypes.CDLL(name or "libgomp.so.1")
        old = lib.omp_get_max_threads()
    except (OSError, AttributeError):
        yield
        return
    lib.omp_set_num_threads(n)
    try:
        yield
    finally:
        lib.omp_set_num_threads(old)


def _emt_label(atoms: Atoms) -> Atoms:
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    return attach_labels(atoms, atoms.get_potential_energy(), atoms.get_forces(),
                         atoms.get_stress())


def _xtb_label(atoms: Atoms, method: str) -> Atoms:
    from tblite.ase import TBLite

    periodic = bool(atoms.pbc.all())
    mult = int(atoms.info.get("spin", 1)) or 1
    atoms.calc = TBLite(method=method, charge=float(atoms.info.get("charge", 0)),
                        multiplicity=mult, verbosity=0)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    stress = atoms.get_stress() if periodic else None
    if not (np.isfinite(energy) and np.isfinite(forces).all()
            and (stress is None or np.isfinite(stress).all())):
        raise CalculationFailed(f"non-finite {method} result")
    return attach_labels(atoms, energy, forces, stress)


def _generate(name: str, n: int, make: Callable[[np.random.Generator, int], Atoms],
              label: Callable[[Atoms], Atoms], rng: np.random.Generator,
              progress: bool) -> tuple[list[Atoms], int]:
    """Build and label ``n`` records; a failed calculation is retried with a new geometry."""
    records, failures = [], 0
    for i in tqdm(range(n), desc=name, unit="struct", disable=not progress, leave=True):
        for _ in range(MAX_RETRIES):
            try:
                records.append(label(make(rng, i)))
                break
            except CalculationFailed:
                failures += 1
        else:
            raise RuntimeError(f"{name}: record {i} failed {MAX_RETRIES} times")
    return records, failures


def _molecule_maker(species: list[Species]) -> Callable[[np.random.Generator, int], Atoms]:
    return lambda rng, i: random_geometry(species[i], rng)


def generate_demo(out_dir: str | Path, seed: int = 0, progress: bool = True,
                  scale: float = 1.0) -> list[dict]:
    """Write the demo corpus into ``out_dir`` and return its dataset specs.

    Args:
        out_dir: folder to write ``<name>.extxyz`` files and ``datasets.yaml`` into (created).
        seed: seed of every random choice; the same seed gives byte-identical files.
        progress: show one tqdm progress bar per dataset.
        scale: multiplies the structure counts of the generated sets (the shipped DFT set is
            subsampled to the same fraction, keeping at least one charged and one open-shell
            record).

    Returns:
        One dict per dataset: ``name``, ``path`` (relative to ``out_dir``), ``level_of_theory``,
        ``energy_unit``, ``length_unit``, ``periodic`` and ``n_structures``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = np.random.SeedSequence(seed).spawn(len(DATASETS))
    rngs = {name: np.random.default_rng(s) for name, s in zip(DATASETS, streams, strict=True)}

    def count(name: str, minimum: int) -> int:
        return max(minimum, int(round(DATASETS[name][0] * scale)))

    catalogue = species_catalogue(molecule_pool(max_atoms=12))
    with _openmp_threads(1):
        built, failures = _generate_all(catalogue, count, rngs, progress)
    built["mol_dft"] = _shipped_dft(scale, rngs["mol_dft"])

    specs = []
    for name, (_, level, periodic) in DATASETS.items():
        path = f"{name}.extxyz"
        if name == "mol_dft" and scale >= 1.0:
            shutil.copyfile(DEMO_FILES / DFT_FILE, out / path)
        else:
            write(out / path, built[name], format="extxyz")
        specs.append({"name": name, "path": path, "level_of_theory": level, "energy_unit": "eV",
                      "length_unit": "Å", "periodic": periodic,
                      "n_structures": len(built[name])})
    with open(out / "datasets.yaml", "w", encoding="utf-8") as fh:
        yaml.safe_dump({"datasets": specs}, fh, sort_keys=False, allow_unicode=True)
    failed = {k: v for k, v in failures.items() if v}
    log.info("SCF/calculation failures retried with a new geometry: %s", failed or "none")
    return specs


def _generate_all(catalogue: dict[str, list[Species]], count: Callable[[str, int], int],
                  rngs: dict[str, np.random.Generator],
                  progress: bool) -> tuple[dict[str, list[Atoms]], dict[str, int]]:
    """Build and label the four generated sets; returns records and failure counts per set."""
    built: dict[str, list[Atoms]] = {}
    failures: dict[str, int] = {}
    built["alloy_emt"], failures["alloy_emt"] = _generate(
        "alloy_emt", count("alloy_emt", 2), lambda rng, i: random_alloy(rng), _emt_label,
        rngs["alloy_emt"], progress)
    for name, method in (("mol_gfn2", "GFN2-xTB"), ("mol_gfn1", "GFN1-xTB")):
        rng = rngs[name]
        species = sample_species(rng, count(name, 4), catalogue)
        built[name], failures[name] = _generate(
            name, len(species), _molecule_maker(species),
            lambda atoms, m=method: _xtb_label(atoms, m), rng, progress)
    built["inorg_gfn1"], failures["inorg_gfn1"] = _generate(
        "inorg_gfn1", count("inorg_gfn1", 2), lambda rng, i: random_inorganic(rng),
        lambda atoms: _xtb_label(atoms, "GFN1-xTB"), rngs["inorg_gfn1"], progress)
    return built, failures


def _shipped_dft(scale: float, rng: np.random.Generator) -> list[Atoms]:
    """The shipped PBE/def2-SVP records, subsampled when ``scale < 1``."""
    records = read(DEMO_FILES / DFT_FILE, index=":", format="extxyz")
    if scale >= 1.0:
        return records
    n = max(3, int(round(len(records) * scale)))
    charged = [i for i, a in enumerate(records) if a.info.get("charge", 0) != 0]
    open_shell = [i for i, a in enumerate(records) if a.info.get("spin", 1) != 1]
    keep = {charged[0], open_shell[0]} if charged and open_shell else set()
    rest = [i for i in rng.permutation(len(records)) if i not in keep]
    keep.update(int(i) for i in rest[: max(0, n - len(keep))])
    return [records[i] for i in sorted(keep)]
