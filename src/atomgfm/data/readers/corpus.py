"""Helpers the public-corpus readers share (ANI-1x, Transition1x, SPICE, MPtrj, MD17).

- :func:`native_factors`: a corpus fixes its own units; the dataset spec's ``energy_unit`` /
  ``length_unit`` may be left at the defaults (eV, Å) or name the corpus's own units, anything
  else is an error (a file in these layouts is never in other units).
- :func:`reader_option`: one typed ``reader_options`` value with a default; a wrong type is an
  error naming the file, the option and what it takes.
- :func:`make_structure`: a validated :class:`Structure` whose errors end with the record's place
  in the corpus (an HDF5 group path and frame, an ``mp_id``/``frame_id``).
- :func:`open_h5` / :func:`h5_dataset`: HDF5 access with one-line errors naming file and group;
  :func:`h5_frame_count`: how many records a (possibly broken) group of frames stands for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from atomgfm.data.readers.base import ReaderError, ReadOptions, RecordError, where, with_note
from atomgfm.data.structure import Structure, StructureError
from atomgfm.units import energy_factor, length_factor


def native_factors(path: str, options: ReadOptions, reader: str, energy_unit: str,
                   length_unit: str) -> tuple[float, float]:
    """Conversion factors from the corpus's own units to eV and Å.

    Raises:
        ReaderError: the spec declared units other than the defaults or the corpus's own.
    """
    ef, lf = energy_factor(energy_unit), length_factor(length_unit)
    for what, given, native, unit in (("energy_unit", options.energy_factor, ef, energy_unit),
                                      ("length_unit", options.length_factor, lf, length_unit)):
        if not (np.isclose(given, 1.0, rtol=1e-12) or np.isclose(given, native, rtol=1e-12)):
            raise ReaderError(f"{path}: {reader} files are in {energy_unit} and {length_unit}; "
                              f"the dataset spec's {what} says otherwise (leave it out or set "
                              f"{unit!r})")
    return ef, lf


def reader_option(path: str, options: ReadOptions, name: str, default: Any,
                  allowed: list | type | tuple[type, ...]) -> Any:
    """``options.reader_options[name]`` or ``default``: ``allowed`` is a list of the values it
    may take, or the type(s) it must have."""
    value = options.reader_options.get(name, default)
    if isinstance(allowed, list):
        ok = value in allowed
        what = "one of " + ", ".join(repr(v) for v in allowed)
    else:
        types = allowed if isinstance(allowed, tuple) else (allowed,)
        ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        what = "a " + " or ".join("null" if t is type(None) else t.__name__ for t in types)
    if not ok:
        raise ReaderError(f"{path}: reader option {name}={value!r} must be {what}")
    return value


def make_structure(path: str, index: int, note: str, **fields) -> Structure:
    """A validated record (overlapping atoms checked); every error ends with ``note``, e.g.
    ``" (group /C2H6O frame 3)"``."""
    try:
        structure = Structure(source=path, index=index, **fields)
        structure.check_overlapping_atoms()
    except StructureError as exc:
        raise with_note(exc, note) from None
    return structure


def fail(path: str, index: int, note: str, problem: str, reason: str = "parse error"):
    """A build that raises :class:`RecordError` (for a record that cannot be built at all)."""
    def build():
        raise RecordError(f"{where(path, index)}{note}: {problem}", reason)
    return build


def fail_all(path: str, start: int, n: int, note: str, problem: str,
             reason: str = "parse error") -> list[tuple[int, Callable[[], Structure]]]:
    """``n`` failing records (every frame of a broken group; at least one)."""
    return [(start + k, fail(path, start + k, note, problem, reason)) for k in range(max(n, 1))]


# --- HDF5 -----------------------------------------------------------------------------------

def open_h5(path: str):
    """An ``h5py.File`` opened read-only; a file that is not HDF5 is a one-line error."""
    import h5py  # optional backend (the storage extra); ReaderSpec.require named it if missing

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ReaderError(f"{path}: not an HDF5 file ({exc})") from None


def h5_dataset(group, key: str, ndim: int | None = None, *, optional: bool = False):
    """``group[key]`` read into NumPy, checked for its number of dimensions.

    Raises:
        ValueError: missing (unless ``optional``), not a dataset, or of the wrong rank; the
            message names the key; callers add file and group.
    """
    import h5py

    if key not in group:
        if optional:
            return None
        raise ValueError(f"missing dataset {key!r} (has {sorted(group.keys())})")
    try:
        obj = group[key]
    except KeyError as exc:  # a dangling soft link
        raise ValueError(f"cannot open {key!r} ({exc})") from None
    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{key!r} is a {type(obj).__name__}, expected a dataset")
    value = obj[()]
    if ndim is not None and np.ndim(value) != ndim:
        raise ValueError(f"dataset {key!r} has shape {np.shape(value)}, expected {ndim} "
                         "dimensions")
    return value


def h5_frame_count(group, key: str) -> int:
    """The number of frames of ``group[key]`` when it is a 3-D dataset (frames, atoms, 3), else 1
    (``group`` is not a group, or ``key`` is missing or malformed): how many failing records a
    group that cannot be read stands for."""
    import h5py

    obj = group.get(key) if isinstance(group, h5py.Group) else None
    return obj.shape[0] if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else 1


def h5_peek(path: str) -> tuple[list[str], list[str]] | None:
    """Names of the top-level members and of the first group's members, or None when ``path``
    is not a readable HDF5 file (for the readers' ``check`` functions; reads no data)."""
    try:
        import h5py

        if not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as f:
            top = list(f.keys())
            first = f.get(top[0]) if top else None
            inner = list(first.keys()) if isinstance(first, h5py.Group) else []
            return top, inner
    except Exception:  # any unreadable file (or no h5py) is simply not ours
        return None
