"""Reader ``ase_db``: ASE databases (``ase.db``: SQLite ``.db`` and ``.json``).

The record index is the position in the selection; messages also give the database row id, which
is what ``ase db`` shows. Key-value pairs and ``data`` entries of a row are visible to the label
lookup (e.g. ``data={"REF_forces": ...}``, ``key_value_pairs={"total_charge": 1}``).

Reading writes nothing: SQLite files are opened with ``mode=ro`` (so ASE cannot create its tables
in a file that is not an ASE database, nor a journal), and no ASE lock file is used.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from ase import Atoms
from ase.db.jsondb import JSONDatabase
from ase.db.row import AtomsRow
from ase.db.sqlite import SQLite3Database

from atomgfm.data.readers.base import (
    ReaderError,
    ReadOptions,
    RecordError,
    Records,
    reader,
    where,
    with_note,
)
from atomgfm.data.structure import StructureError


def is_ase_json_db(path: str) -> bool:
    """True when ``path`` is JSON laid out as an ASE database (``ase.io.write`` makes these)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(64).lstrip()
            # ASE's first key is a row id, "ids", "nextid" or "metadata": anything else (an
            # MPtrj file's "mp-...") is not loaded whole just to find out.
            if not re.match(r'\{\s*(\}|"(\d+|ids|nextid|metadata)")', head):
                return False
            fh.seek(0)
            obj = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and ("ids" in obj or "nextid" in obj)


def _db_check(path: str) -> bool:
    """``.db`` files are always ours; ``.json`` only when laid out as an ASE database."""
    return not path.lower().endswith(".json") or is_ase_json_db(path)


class _ReadOnlySQLite(SQLite3Database):
    """ASE's SQLite back end over a read-only connection: nothing can be written to the file."""

    def _connect(self):
        uri = Path(self.filename).resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=20)


@reader("ase_db", formats=("db", "json"), suffixes=(".db", ".json"), check=_db_check)
def ase_db_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of an ASE database, in row order."""
    path = str(path)
    if not os.path.exists(path):  # ase.db.connect would silently create an empty database
        raise FileNotFoundError(f"{path}: no such file")
    kind = format or ("json" if path.lower().endswith(".json") else "db")
    try:
        if kind == "json":
            db = JSONDatabase(os.path.abspath(path), use_lock_file=False)
        else:
            db = _ReadOnlySQLite(os.path.abspath(path), create_indices=False, use_lock_file=False)
        db.count()  # opens and checks the file now, so a foreign file is named as such
        rows = db.select()
    except Exception as exc:  # sqlite3, json and ASE raise many types for a foreign file
        raise ReaderError(_not_a_db(path, exc)) from exc
    return _records(path, rows, options)


def _not_a_db(path: str, exc: Exception) -> str:
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
        return f"{path}: an SQLite file but not an ASE database (no 'systems' table)"
    return f"{path}: not a readable ASE database ({type(exc).__name__}: {exc})"


def _records(path: str, rows, options: ReadOptions) -> Iterator:
    index = 0
    try:
        for index, row in enumerate(rows):
            yield index, partial(convert_row, path, index, row, options)
    except (ReaderError, StructureError):
        raise
    except Exception as exc:
        raise ReaderError(f"{where(path, index)}: ASE db could not read the row "
                          f"({type(exc).__name__}: {exc})") from exc


def row_to_atoms(row: AtomsRow) -> Atoms:
    """Atoms of a database row, its key-value pairs and ``data`` merged into ``atoms.info``
    (as fairchem's ``AseDBDataset`` does: OMol25 keeps ``charge`` and ``spin`` in ``data``)."""
    atoms = row.toatoms()
    for key, value in row.get("key_value_pairs", {}).items():
        atoms.info.setdefault(key, value)
    for key, value in (row.get("data") or {}).items():
        atoms.info.setdefault(key, value)
    return atoms


def convert_row(path: str, index: int, row: AtomsRow, options: ReadOptions):
    """Validated record of one row; errors end with the row id (``(db row id 7)``)."""
    note = f" (db row id {row.id})"
    try:
        atoms = row_to_atoms(row)
    except Exception as exc:  # a row ASE cannot turn into Atoms is one broken record
        raise RecordError(f"{where(path, index)}{note}: cannot build atoms: "
                          f"{type(exc).__name__}: {exc}") from exc
    try:
        return options.convert(atoms, path, index)
    except (StructureError, RecordError) as exc:
        raise with_note(exc, note) from exc

