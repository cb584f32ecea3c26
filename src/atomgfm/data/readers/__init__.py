"""Readers: files -> validated :class:`~atomgfm.data.structure.Structure` records in eV / Å / e.

    result = read_structures("train.extxyz", dataset="mptrj", on_error="skip")
    result.structures      # list[Structure]
    print(result.skipped)  # "skipped 2 of 120 records in train.extxyz: 2 non-finite energy"

Registered readers (``registry.names("reader")``): ``ase`` (every format ``ase.io`` reads, with
its own frame splitting for (extended) XYZ) and ``ase_db`` (ASE databases, ``.db`` and ``.json``).
Each is called as ``reader(path, ReadOptions(...), format=...)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from atomgfm.data.readers.ase_db import is_ase_json_db, read_ase_db
from atomgfm.data.readers.ase_files import read_ase
from atomgfm.data.readers.base import (
    ReaderError,
    ReadOptions,
    ReadResult,
    RecordError,
    SkipReport,
    atoms_to_structure,
)
from atomgfm.data.structure import Structure, StructureError
from atomgfm.units import energy_factor, length_factor

__all__ = [
    "ReadOptions", "ReadResult", "ReaderError", "RecordError", "SkipReport", "Structure",
    "StructureError", "atoms_to_structure", "read_ase", "read_ase_db", "read_structures",
    "reader_for",
]

DB_FORMATS = ("db", "json")
# Both are also in the registry (``registry.get("reader", ...)``); dispatching here directly keeps
# reading files from importing the model packages that ``registry.get`` loads.
_BUILTIN = {"ase": read_ase, "ase_db": read_ase_db}


def reader_for(path: str | os.PathLike, format: str | None = None) -> str:
    """Name of the registered reader for ``path``: ``ase_db`` for ASE databases, else ``ase``."""
    if format is not None:
        return "ase_db" if format in DB_FORMATS else "ase"
    suffix = Path(path).suffix.lower()
    if suffix == ".db" or (suffix == ".json" and is_ase_json_db(str(path))):
        return "ase_db"
    return "ase"


def read_structures(
    path: str | os.PathLike,
    *,
    dataset: str = "",
    format: str | None = None,
    energy_unit: str = "eV",
    length_unit: str = "Å",
    on_error: str = "raise",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> ReadResult:
    """Read every record of ``path`` into validated ``Structure`` records in eV / Å / e.

    ``energy_unit`` / ``length_unit`` are the file's units (see ``atomgfm.units``); forces are
    converted by energy/length and stress by energy/length³. ``on_error="skip"`` drops records
    that fail to parse or validate and counts them in ``result.skipped``; errors that make the
    rest of a file unreachable are raised either way. ``*_key`` names the label in
    ``atoms.info`` / ``atoms.arrays`` (e.g. ``"REF_energy"``); by default ``energy``,
    ``REF_energy``, ``total_energy`` (forces: ``forces``, ``REF_forces``; stress: ``stress``,
    ``REF_stress``) are tried and more than one present in a record is an error.
    """
    options = ReadOptions(
        dataset=dataset,
        energy_factor=energy_factor(energy_unit),
        length_factor=length_factor(length_unit),
        on_error=on_error,
        energy_key=energy_key,
        forces_key=forces_key,
        stress_key=stress_key,
    )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ReaderError(f"{path}: is a directory, not a structure file")
    if os.path.getsize(path) == 0:
        raise ReaderError(f"{path}: empty file, no records")
    name = reader_for(path, format)
    result = _BUILTIN[name](path, options, format=format)
    _check_explicit_keys(path, result, energy_key, forces_key, stress_key)
    return result


def _check_explicit_keys(path, result: ReadResult, energy_key, forces_key, stress_key) -> None:
    """A key the caller named that no record carries is a typo, not a dataset without labels."""
    for key, attr in ((energy_key, "energy"), (forces_key, "forces"), (stress_key, "stress")):
        if key is not None and all(getattr(s, attr) is None for s in result.structures):
            raise ReaderError(f"{path}: {attr}_key={key!r} was not found in any record")
