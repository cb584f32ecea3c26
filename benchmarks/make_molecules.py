"""A molecular set large enough to tell overfitting from slow learning (issue 14).

    .venv/bin/python benchmarks/make_molecules.py --n 2400 --out /tmp/painn_acc/mol_gfn2_2400.extxyz

Neutral closed-shell molecules from the demo's own generators (``atomgfm.demo.molecules``: G2
species of H, C, N, O, F, S, Cl with up to 12 atoms, up to two torsions, a breathing and a rattle,
a random rotation), labelled with GFN2-xTB through tblite (energy eV, forces eV/Å), written as
extxyz (ASE's standard ``energy``/``forces`` fields, ``charge``/``spin`` in the info line). A
failed SCF is retried with a new geometry and counted. The file is a cache: not committed;
the same ``--seed`` and ``--n`` give the same file. Prints the labelling time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2400, help="molecules to label")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--max-atoms", type=int, default=12)
    p.add_argument("--out", default="/tmp/painn_acc/mol_gfn2_2400.extxyz",
                   help="where painn_accuracy.py looks for it (its --data overrides)")
    args = p.parse_args()
    from ase.io import write

    from atomgfm.demo.corpus import _generate, _molecule_maker, _openmp_threads, _xtb_label
    from atomgfm.demo.molecules import molecule_pool, sample_species, species_catalogue

    catalogue = species_catalogue(molecule_pool(max_atoms=args.max_atoms))
    rng = np.random.default_rng(args.seed)
    # no radicals or ions: every record a neutral closed-shell molecule (charge 0, singlet)
    species = sample_species(rng, args.n, catalogue, fractions={})
    assert all(s.kind == "neutral" and s.charge == 0 and s.spin == 1 for s in species)
    t0 = time.perf_counter()
    with _openmp_threads(1):
        records, failures = _generate("mol_gfn2", len(species), _molecule_maker(species),
                                      lambda atoms: _xtb_label(atoms, "GFN2-xTB"), rng,
                                      progress=True)
    seconds = time.perf_counter() - t0
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, records, format="extxyz")
    n_atoms = sum(len(a) for a in records)
    print(f"{len(records)} molecules ({n_atoms} atoms, {len(catalogue['neutral'])} G2 species) "
          f"labelled with GFN2-xTB in {seconds:.0f} s ({1000 * seconds / len(records):.0f} ms "
          f"each, 1 thread); {failures} failed SCFs retried with a new geometry; wrote {out}")


if __name__ == "__main__":
    main()
