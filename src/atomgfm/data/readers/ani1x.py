"""Reader ``ani1x``: the ANI-1x / ANI-1ccx HDF5 release (``ani1x-release.h5``).

Layout, as the release's ``dataloader.py`` (``iter_data_buckets``) reads it: one top-level group
per molecular formula (``/C2H6O``), each holding

- ``atomic_numbers`` (n_atoms,) integers,
- ``coordinates`` (n_conformers, n_atoms, 3) in Å,
- one dataset per level of theory and property, named ``<level>.<property>``:
  ``wb97x_dz.energy``, ``wb97x_tz.energy``, ``ccsd(t)_cbs.energy``, ``hf_dz.energy``, … (n_conf,)
  in Hartree, and ``wb97x_dz.forces``, ``wb97x_tz.forces`` (n_conf, n_atoms, 3) in Hartree/Å.

Every group has every key; a conformer for which a level was not computed holds NaN there (e.g.
``ccsd(t)_cbs.energy`` exists only for the ANI-1ccx subset). The reader follows the release's
loader, which drops such conformers, but counts them: a NaN energy for the chosen ``energy_key`` is
an :class:`~atomgfm.data.readers.base.Omitted` record (skip report ``not computed
(<energy_key>)``, never an error), while a conformer whose energy is there but whose forces are all
NaN is kept **without forces** (a partly NaN force array is a broken record).

Reader options (``reader_options`` in the dataset spec): ``energy_key`` (default
``wb97x_dz.energy``) and ``forces_key`` (default ``<level>.forces`` of the energy key's level when
the group has it, else no forces; a named key that a group lacks is an error). Molecules are
neutral; the multiplicity is not given (0). Record index: the conformer's position counting
through the groups in file order; messages also name the group and conformer.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from atomgfm.data.readers.base import Omitted, ReadOptions, RecordError, Records, reader, where
from atomgfm.data.readers.corpus import (
    fail_all,
    h5_dataset,
    h5_frame_count,
    h5_peek,
    make_structure,
    native_factors,
    open_h5,
)

DEFAULT_ENERGY_KEY = "wb97x_dz.energy"


def is_ani_file(path: str) -> bool:
    """An HDF5 file whose first group has ``atomic_numbers`` and ``coordinates``."""
    peek = h5_peek(path)
    return peek is not None and {"atomic_numbers", "coordinates"} <= set(peek[1])


@reader("ani1x", formats=("ani1x",), suffixes=(".h5", ".hdf5"), requires=("h5py",),
        check=is_ani_file)
def ani1x_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of an ANI-1x-layout HDF5 file, group by group, conformer by conformer."""
    import h5py

    path = str(path)
    ef, lf = native_factors(path, options, "ANI-1x", "Hartree", "Å")
    energy_key = options.energy_key or DEFAULT_ENERGY_KEY
    forces_key = options.forces_key or energy_key.rsplit(".", 1)[0] + ".forces"
    with open_h5(path) as f:
        index = 0
        for name in f:
            grp = f[name]
            note = f" (group /{name})"
            if not isinstance(grp, h5py.Group):
                yield from fail_all(path, index, 1, note, "a top-level dataset; ANI-1x files "
                                    "hold one group per formula", "malformed group")
                index += 1
                continue
            n_conf = h5_frame_count(grp, "coordinates")
            try:
                arrays = _group_arrays(grp, energy_key, forces_key, options.forces_key is not None)
            except ValueError as exc:
                yield from fail_all(path, index, n_conf, note, str(exc), "malformed group")
                index += n_conf
                continue
            for k in range(len(arrays[1])):
                yield index, partial(_build, path, index, name, k, arrays, energy_key,
                                     forces_key, ef, lf, options.dataset)
                index += 1


def _group_arrays(grp, energy_key: str, forces_key: str, forces_named: bool):
    numbers = h5_dataset(grp, "atomic_numbers", 1)
    coords = h5_dataset(grp, "coordinates", 3)
    n_conf, n_atoms = coords.shape[0], len(numbers)
    if coords.shape[1:] != (n_atoms, 3):
        raise ValueError(f"coordinates have shape {coords.shape}, expected (n_conformers, "
                         f"{n_atoms}, 3) for {n_atoms} atomic_numbers")
    energies = h5_dataset(grp, energy_key, 1)
    if energies.shape != (n_conf,):
        raise ValueError(f"{energy_key} has shape {energies.shape}, expected ({n_conf},)")
    forces = h5_dataset(grp, forces_key, 3, optional=not forces_named)
    if forces is not None and forces.shape != coords.shape:
        raise ValueError(f"{forces_key} has shape {forces.shape}, expected {coords.shape}")
    return numbers, coords, energies, forces


def _build(path, index, name, k, arrays, energy_key, forces_key, ef, lf, dataset):
    numbers, coords, energies, forces = arrays
    note = f" (group /{name}, conformer {k})"
    energy = float(energies[k])
    if np.isnan(energy):
        raise Omitted(f"{where(path, index)}{note}: {energy_key} is NaN (not computed for "
                      "this conformer)", f"not computed ({energy_key})")
    f = None
    if forces is not None:
        f = np.asarray(forces[k], dtype=np.float64)
        nan = np.isnan(f)
        if nan.all():
            f = None  # forces not computed at this level for this conformer: kept without
        elif nan.any():
            n_nan = int(nan.any(axis=1).sum())
            raise RecordError(f"{where(path, index)}{note}: {forces_key} is NaN for {n_nan} "
                              f"of {len(f)} atoms", "non-finite forces")
        else:
            f = f * (ef / lf)
    return make_structure(
        path, index, note, numbers=numbers, positions=np.asarray(coords[k], np.float64) * lf,
        energy=energy * ef, forces=f, charge=0.0, spin=0.0, dataset=dataset,
        info={"group": name, "conformer": k})
