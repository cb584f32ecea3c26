"""Readers: files -> validated :class:`~atomgfm.data.structure.Structure` records in eV / Å / e.

    result = read_structures("train.extxyz", dataset="mptrj", on_error="skip")
    result.structures      # list[Structure]
    print(result.skipped)  # "skipped 2 of 120 records in train.extxyz: 2 non-finite energy"

    for s in iter_structures("omol25/train_4M", dataset="omol"):  # lazily, a folder of files
        ...

Registered readers (``registry.names("reader")``, each a :class:`ReaderSpec`): ``aselmdb``
(fairchem's ASE-LMDB, ``.aselmdb``; needs ``lmdb``), ``ase_db`` (ASE databases, ``.db`` and
``.json``) and ``ase`` (every format ``ase.io`` reads, with its own frame splitting for (extended)
XYZ), and the public corpora's own layouts: ``ani1x`` and ``transition1x`` and ``spice``
(HDF5), ``mptrj`` (CHGNet's JSON), ``md17`` (MD17 / rMD17 ``.npz``). A reader module registers
itself with :func:`reader`; importing this package imports every
reader module, which is what ``registry.get("reader", ...)`` does.
"""

from __future__ import annotations

from atomgfm.data.readers import (  # noqa: F401  (they register)
    ani1x,
    ase_db,
    ase_files,
    aselmdb,
    md17,
    mptrj,
    spice,
    transition1x,
)
from atomgfm.data.readers.base import (
    ReaderError,
    ReaderSpec,
    ReadOptions,
    ReadResult,
    RecordError,
    SkipReport,
    atoms_to_structure,
    reader,
)
from atomgfm.data.readers.stream import (
    StructureStream,
    iter_structures,
    read_structures,
    reader_for,
    reader_specs,
)
from atomgfm.data.structure import Structure, StructureError

__all__ = [
    "ReadOptions", "ReadResult", "ReaderError", "ReaderSpec", "RecordError", "SkipReport",
    "Structure", "StructureError", "StructureStream", "atoms_to_structure", "iter_structures",
    "read_structures", "reader", "reader_for", "reader_specs",
]
