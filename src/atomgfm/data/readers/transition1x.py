"""Reader ``transition1x``: the Transition1x HDF5 release (``transition1x.h5``).

Layout, as the release's ``transition1x/dataloader.py`` reads it:

- ``/data/<formula>/<reaction>/`` (e.g. ``/data/C2H2O/rxn0001``) holds the reaction's NEB path
  frames: ``atomic_numbers`` (n_atoms,), ``positions`` (n_frames, n_atoms, 3) in Å,
  ``wB97x_6-31G(d).energy`` (n_frames,) in eV, ``wB97x_6-31G(d).forces`` (n_frames, n_atoms, 3) in
  eV/Å (and ``wB97x_6-31G(d).atomization_energy``);
- its subgroups ``reactant``, ``product`` and ``transition_state`` hold the same keys for one frame;
- ``/train``, ``/val`` and ``/test`` hold ``<formula>/<reaction>`` entries that are links into
  ``/data`` (hard links or ``h5py.SoftLink``; both are followed, a dangling one is an error
  naming it).

Reader options: ``split`` (``data`` (default: every reaction), ``train``, ``val``, ``test``) and
``frames``:

- ``all`` (default), as the official ``Dataloader``: per reaction the reactant, the product, then
  every path frame, leaving out path frames that repeat the reactant or product (same positions
  and energy; the loader's ``skip_energy``), counted as ``duplicate endpoint`` in the skip report;
- ``path``: the path frames only; ``final``: reactant, transition state and product only.

``energy_key``/``forces_key`` default to ``wB97x_6-31G(d).energy``/``.forces``. Molecules are
neutral; the multiplicity is not given (0). Messages name the group path and frame.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from atomgfm.data.readers.base import Omitted, ReaderError, ReadOptions, Records, reader, where
from atomgfm.data.readers.corpus import (
    fail_all,
    h5_dataset,
    h5_peek,
    make_structure,
    native_factors,
    open_h5,
    reader_option,
)

LEVEL = "wB97x_6-31G(d)"
SPLITS = ["data", "train", "val", "test"]
FRAMES = ["all", "path", "final"]
ENDPOINTS = ("reactant", "product", "transition_state")


def is_t1x_file(path: str) -> bool:
    """An HDF5 file with a top-level ``data`` group and only the split groups beside it."""
    peek = h5_peek(path)
    return peek is not None and "data" in peek[0] and set(peek[0]) <= set(SPLITS)


@reader("transition1x", formats=("transition1x", "t1x"), suffixes=(".h5", ".hdf5"),
        requires=("h5py",), check=is_t1x_file, options=("split", "frames"))
def t1x_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of the chosen split, reaction by reaction."""
    import h5py

    path = str(path)
    ef, lf = native_factors(path, options, "Transition1x", "eV", "Å")
    split = reader_option(path, options, "split", "data", SPLITS)
    frames = reader_option(path, options, "frames", "all", FRAMES)
    keys = (options.energy_key or f"{LEVEL}.energy", options.forces_key or f"{LEVEL}.forces")
    with open_h5(path) as f:
        if split not in f:
            raise ReaderError(f"{path}: no /{split} group (top level has {sorted(f.keys())})")
        index = 0
        top = f[split]
        for formula in top:
            for rxn, link in _members(top, formula, h5py):
                at = f"/{split}/{formula}/{rxn}"
                if isinstance(link, h5py.SoftLink):
                    at += f" -> {link.path}"
                try:
                    grp = top[formula][rxn]
                    frames_of = _reaction(grp, frames, keys, h5py)
                except (KeyError, ValueError) as exc:
                    problem = (f"dangling link ({exc})" if isinstance(exc, KeyError)
                               else str(exc))
                    yield from fail_all(path, index, 1, f" ({at})", problem, "malformed group")
                    index += 1
                    continue
                for label, k, arrays, duplicate in frames_of:
                    yield index, partial(_build, path, index, f" ({at}, {label})", arrays, k,
                                         duplicate, ef, lf, options.dataset, keys)
                    index += 1


def _members(top, formula: str, h5py):
    """(reaction name, link object) of one formula group (SoftLink, HardLink, ...)."""
    links = top[formula]
    if not isinstance(links, h5py.Group):
        raise ReaderError(f"{top.file.filename}: {top.name}/{formula} is not a group")
    return [(rxn, links.get(rxn, getlink=True)) for rxn in links]


def _frames(grp, keys, h5py, one: bool):
    numbers = h5_dataset(grp, "atomic_numbers", 1)
    pos = h5_dataset(grp, "positions", 3)
    energy = h5_dataset(grp, keys[0], 1)
    forces = h5_dataset(grp, keys[1], 3)
    n = pos.shape[0]
    if pos.shape[1:] != (len(numbers), 3):
        raise ValueError(f"{grp.name}: positions have shape {pos.shape}, expected (n_frames, "
                         f"{len(numbers)}, 3)")
    if energy.shape != (n,) or forces.shape != pos.shape:
        raise ValueError(f"{grp.name}: {keys[0]} shape {energy.shape} / {keys[1]} shape "
                         f"{forces.shape} do not match positions {pos.shape}")
    if one and n != 1:
        raise ValueError(f"{grp.name}: expected one frame, found {n}")
    return numbers, pos, energy, forces


def _reaction(grp, frames: str, keys, h5py):
    """[(label, frame, arrays, duplicate?)] of one reaction, in the order read."""
    ends = {}
    if frames != "path":
        for name in ENDPOINTS:
            if name not in grp:
                raise ValueError(f"{grp.name}: missing subgroup {name!r}")
            ends[name] = _frames(grp[name], keys, h5py, one=True)
    out = []
    if frames == "final":
        return [(name, 0, ends[name], False) for name in ("reactant", "transition_state",
                                                           "product")]
    if frames == "all":
        out += [(name, 0, ends[name], False) for name in ("reactant", "product")]
    path = _frames(grp, keys, h5py, one=False)
    for k in range(len(path[1])):
        duplicate = frames == "all" and any(
            np.array_equal(path[1][k], e[1][0]) and path[2][k] == e[2][0]
            for e in (ends["reactant"], ends["product"]))
        out.append((f"path frame {k}", k, path, duplicate))
    return out


def _build(path, index, note, arrays, k, duplicate, ef, lf, dataset, keys):
    if duplicate:
        raise Omitted(f"{where(path, index)}{note}: repeats the reactant or product frame",
                      "duplicate endpoint")
    numbers, pos, energy, forces = arrays
    return make_structure(
        path, index, note, numbers=numbers, positions=np.asarray(pos[k], np.float64) * lf,
        energy=float(energy[k]) * ef, forces=np.asarray(forces[k], np.float64) * (ef / lf),
        charge=0.0, spin=0.0, dataset=dataset, info={"reaction": note.strip(" ()")})
