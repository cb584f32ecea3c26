"""Corpus readers: records/s and peak memory reading MPtrj JSON and ANI-1x HDF5 files.

    .venv/bin/python benchmarks/corpus_readers.py                 # ~60 MB MPtrj, 20k ANI conformers
    .venv/bin/python benchmarks/corpus_readers.py --materials 200 --conformers 2000   # smoke test

Writes files in each corpus's layout into --workdir (a temporary folder by default), labelled by
ASE's EMT (a handful of distinct structures, repeated under new ids so that the file is large
without hours of labelling), then reads each one in a fresh process with ``iter_structures`` (full
validation, overlapping-atom check included) and prints records/s, MB/s and the reading process's
peak RSS (``ru_maxrss``, imports included). MPtrj is read at two sizes (a quarter and the whole):
a streaming reader's peak does not grow with the file. The whole file is also loaded with a plain
``json.load`` in a fresh process (parsing only, no records built): the memory streaming avoids.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_mptrj(path: str, n_materials: int, frames: int) -> None:
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.units import GPa

    distinct = []
    for k in range(8):
        a = bulk("Cu", "fcc", a=3.55 + 0.01 * k, cubic=True).repeat((2, 2, 2))
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        e = a.get_potential_energy()
        site = [{"species": [{"element": s, "occu": 1}], "abc": f.tolist(), "xyz": x.tolist(),
                 "properties": {"magmom": 0.0}, "label": s}
                for s, f, x in zip(a.get_chemical_symbols(), a.get_scaled_positions(wrap=False),
                                   a.positions, strict=True)]
        distinct.append({
            "structure": {"@module": "pymatgen.core.structure", "@class": "Structure",
                          "charge": 0, "lattice": {"matrix": a.cell.array.tolist(),
                                                   "pbc": [True, True, True]},
                          "properties": {}, "sites": site},
            "uncorrected_total_energy": e, "corrected_total_energy": e,
            "energy_per_atom": e / len(a), "force": a.get_forces().tolist(),
            "stress": (-a.get_stress(voigt=False) / (0.1 * GPa)).tolist(), "magmom": None,
            "bandgap": 0.0})
    with open(path, "w") as fh:
        fh.write("{")
        for m in range(n_materials):
            mp_id = f"mp-{m + 1}"
            body = {f"{mp_id}-0-{j}": {**distinct[(m + j) % 8], "mp_id": mp_id}
                    for j in range(frames)}
            fh.write(("," if m else "") + json.dumps(mp_id) + ":" + json.dumps(body))
        fh.write("}")


def write_ani(path: str, n_conformers: int, per_group: int = 500) -> None:
    import h5py
    from ase.build import molecule
    from ase.calculators.emt import EMT

    with h5py.File(path, "w") as f:
        for g in range(max(n_conformers // per_group, 1)):
            mol = molecule(("CH3CH2OH", "CH4", "H2O", "NH3")[g % 4])
            rng = np.random.default_rng(g)
            coords, energies, forces = [], [], []
            for _ in range(8):  # 8 labelled conformers, repeated
                a = mol.copy()
                a.positions += rng.normal(scale=0.03, size=a.positions.shape)
                a.calc = EMT()
                coords.append(a.positions)
                energies.append(a.get_potential_energy() / 27.211386245988)
                forces.append(a.get_forces() / 27.211386245988)
            reps = -(-per_group // 8)
            grp = f.create_group(f"{mol.get_chemical_formula()}_{g}")
            grp["atomic_numbers"] = mol.numbers.astype(np.uint8)
            grp["coordinates"] = np.tile(np.array(coords), (reps, 1, 1))[:per_group].astype(
                np.float32)
            grp["wb97x_dz.energy"] = np.tile(energies, reps)[:per_group]
            grp["wb97x_dz.forces"] = np.tile(np.array(forces), (reps, 1, 1))[:per_group].astype(
                np.float32)


def read(path: str, how: str) -> None:
    """Run in a fresh process: read ``path`` and print one JSON line."""
    from atomgfm.data.readers import iter_structures  # imported before the clock starts

    t0 = time.perf_counter()
    if how == "json.load":
        with open(path) as fh:
            n = sum(len(v) for v in json.load(fh).values())
    else:
        with iter_structures(path, format=how) as stream:
            n = sum(1 for _ in stream)
    dt = time.perf_counter() - t0
    print(json.dumps({"records": n, "seconds": dt, "peak_rss_mb": _peak_mb()}))


def run(path: str, how: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--read", path, how], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--materials", type=int, default=4000, help="MPtrj materials (3 frames each)")
    p.add_argument("--conformers", type=int, default=20000, help="ANI-1x conformers")
    p.add_argument("--workdir", default=None)
    p.add_argument("--read", nargs=2, metavar=("PATH", "HOW"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.read:
        read(*args.read)
        return
    work = args.workdir or tempfile.mkdtemp(prefix="corpus_readers_")
    small = os.path.join(work, "MPtrj_1_4.json")
    mptrj, ani = os.path.join(work, "MPtrj.json"), os.path.join(work, "ani1x.h5")
    write_mptrj(small, max(args.materials // 4, 1), 3)
    write_mptrj(mptrj, args.materials, 3)
    write_ani(ani, args.conformers)
    print(f"{'file':<16}{'reader':<12}{'MB':>8}{'records':>10}{'records/s':>12}{'MB/s':>8}"
          f"{'peak RSS MB':>13}")
    for path, how in ((small, "mptrj"), (mptrj, "mptrj"), (mptrj, "json.load"), (ani, "ani1x")):
        r = run(path, how)
        mb = os.path.getsize(path) / 1e6
        print(f"{os.path.basename(path):<16}{how:<12}{mb:>8.1f}{r['records']:>10}"
              f"{r['records'] / r['seconds']:>12.0f}{mb / r['seconds']:>8.1f}"
              f"{r['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
