"""Reader ``aselmdb``: ASE-LMDB files (``.aselmdb``), fairchem's ASE database (OMat24, OMol25).

Layout, as fairchem's ``LMDBDatabase`` (now ``ase-db-backends``) writes it: one LMDB environment
per file (``subdir=False``), ASCII keys, every value zlib-compressed UTF-8 JSON.

- ``"nextid"``: the id the next row would get; rows have ids ``1 .. nextid - 1``.
- ``"deleted_ids"``: ids removed from that range (their keys are gone).
- ``"metadata"``: a free-form dict (not needed to read rows).
- ``"<id>"`` (e.g. ``"17"``): one row, the dict ASE's ``AtomsRow`` is made of: ``numbers``,
  ``positions``, ``cell``, ``pbc``, calculator results (``energy``, ``forces``, ``stress`` in
  Voigt order, ...), optional ``initial_charges`` / ``initial_magmoms`` / ``tags`` / ``momenta`` /
  ``constraints``, ``key_value_pairs`` and ``data``.

Arrays are plain nested lists (fairchem's orjson writer, OMat24) or ASE's ``{"__ndarray__": ...}``
objects (``ase-db-backends``); both decode. OMol25 keeps the total charge and the multiplicity in
``data["charge"]`` and ``data["spin"]``: like ``key_value_pairs`` they are merged into
``atoms.info``, as fairchem's ``AseDBDataset`` does, so they reach ``Structure.charge``/``spin``.

Rows are read in id order; the record index is the position in that order and every message also
names the row id. Files are opened ``readonly=True, lock=False``: reading writes nothing (no
``-lock`` file) beside the data. The released datasets are folders of ``.aselmdb`` files; pass the
folder (see ``iter_structures``).
"""

from __future__ import annotations

import zlib
from functools import partial

from ase.db.row import AtomsRow
from ase.io.jsonio import decode

from atomgfm.data.readers.ase_db import convert_row
from atomgfm.data.readers.base import (
    ReaderError,
    ReadOptions,
    RecordError,
    Records,
    reader,
    where,
)

RESERVED_KEYS = ("nextid", "deleted_ids", "metadata")


@reader("aselmdb", formats=("aselmdb",), suffixes=(".aselmdb",), requires=("lmdb",))
def aselmdb_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of one ``.aselmdb`` file, in row-id order (deleted ids left out)."""
    import lmdb  # optional backend (the storage extra); ReaderSpec.require named it if missing

    path = str(path)
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, readahead=True,
                        meminit=False)
    except lmdb.Error as exc:
        raise ReaderError(f"{path}: not an LMDB file ({type(exc).__name__}: {exc})") from None
    try:
        with env.begin(write=False) as txn:
            ids = _row_ids(path, txn, env.stat()["entries"])
            for index, row_id in enumerate(ids):
                raw = txn.get(str(row_id).encode("ascii"))
                yield index, partial(_build, path, index, row_id, raw, options)
    finally:
        env.close()


def _row_ids(path: str, txn, n_entries: int) -> list[int]:
    nextid = _reserved(path, txn, "nextid")
    deleted = _reserved(path, txn, "deleted_ids")
    if nextid is None:
        other = n_entries - sum(txn.get(k.encode("ascii")) is not None for k in RESERVED_KEYS)
        if other:
            raise ReaderError(f"{path}: an LMDB file with {other} entries but no 'nextid' key: "
                              "not an ASE-LMDB database")
        return []
    if not isinstance(nextid, int) or nextid < 1:
        raise ReaderError(f"{path}: 'nextid' must be a positive integer, got {nextid!r}")
    deleted = set() if deleted is None else {int(i) for i in deleted}
    return [i for i in range(1, nextid) if i not in deleted]


def _reserved(path: str, txn, key: str):
    raw = txn.get(key.encode("ascii"))
    if raw is None:
        return None
    try:
        return _decode(raw)
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise ReaderError(f"{path}: cannot decode the {key!r} entry ({type(exc).__name__}: "
                          f"{exc}); not an ASE-LMDB database") from None


def _decode(raw: bytes):
    """zlib-compressed JSON -> Python (lists of numbers become arrays, as ASE's decoder does)."""
    return decode(zlib.decompress(raw).decode("utf-8"))


def _build(path: str, index: int, row_id: int, raw: bytes | None, options: ReadOptions):
    at = f"{where(path, index)} (db row id {row_id})"
    if raw is None:
        raise RecordError(f"{at}: row missing (neither stored nor listed in 'deleted_ids')",
                          "missing row")
    try:
        dct = _decode(raw)
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"{at}: cannot decode the row ({type(exc).__name__}: {exc})") from None
    if not isinstance(dct, dict) or "numbers" not in dct or "positions" not in dct:
        raise RecordError(f"{at}: not an ASE row (no 'numbers'/'positions')")
    dct["id"] = row_id
    try:
        row = AtomsRow(dct)
    except Exception as exc:  # ASE's row checks raise several types
        raise RecordError(f"{at}: not an ASE row ({type(exc).__name__}: {exc})") from None
    return convert_row(path, index, row, options)
