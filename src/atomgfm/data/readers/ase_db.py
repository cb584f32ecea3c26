"""Reader for ASE databases (``ase.db``: SQLite ``.db`` and ``.json``).

The record index is the position in the selection; messages also give the database row id, which
is what ``ase db`` shows. Key-value pairs and ``data`` entries of a row are visible to the label
lookup (e.g. ``data={"REF_forces": ...}``, ``key_value_pairs={"total_charge": 1}``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import ase.db

from atomgfm.data.readers.base import (
    ReaderError,
    ReadOptions,
    ReadResult,
    RecordError,
    collect,
    where,
)
from atomgfm.data.structure import StructureError
from atomgfm.registry import register


@register("reader", "ase_db")
def read_ase_db(path: str, options: ReadOptions, *, format: str | None = None,
                selection=None) -> ReadResult:
    """Read the rows of an ASE database (``selection`` is passed to ``db.select``)."""
    path = str(path)
    if not os.path.exists(path):  # ase.db.connect would silently create an empty database
        raise FileNotFoundError(f"{path}: no such file")
    try:
        db = ase.db.connect(path)
        rows = db.select(selection) if selection is not None else db.select()
    except Exception as exc:
        raise ReaderError(
            f"{path}: not a readable ASE database ({type(exc).__name__}: {exc})") from exc
    return collect(path, _records(path, rows, options), options.on_error)


def _records(path: str, rows, options: ReadOptions) -> Iterator:
    index = 0
    try:
        for index, row in enumerate(rows):
            yield index, (lambda row=row, index=index: _convert(path, index, row, options))
    except (ReaderError, StructureError):
        raise
    except Exception as exc:
        raise ReaderError(f"{where(path, index)}: ASE db could not read the row "
                          f"({type(exc).__name__}: {exc})") from exc


def _convert(path: str, index: int, row, options: ReadOptions):
    try:
        atoms = row.toatoms()
        for key, value in row.get("key_value_pairs", {}).items():
            atoms.info.setdefault(key, value)
        for key, value in (row.get("data") or {}).items():
            atoms.info.setdefault(key, value)
    except Exception as exc:
        raise RecordError(f"{where(path, index)} (db row id {row.id}): cannot build atoms: "
                          f"{type(exc).__name__}: {exc}") from exc
    try:
        return options.convert(atoms, path, index)
    except StructureError as exc:
        raise StructureError(f"{exc} (db row id {row.id})") from exc


def is_ase_json_db(path: str) -> bool:
    """True when ``path`` is JSON laid out as an ASE database (``ase.io.write`` makes these)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(1)
            if head != "{":
                return False
            fh.seek(0)
            obj = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and ("ids" in obj or "nextid" in obj)
