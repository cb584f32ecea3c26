"""Content hashes of structures and the train/validation split they decide.

A structure's content hash is the SHA-256 of its canonical bytes (atomic numbers, positions,
cell, pbc, total charge, multiplicity: the record after unit conversion, labels left out), so the
same geometry in two datasets (two fidelities of one molecule) lands in the same split in both.
The split is a pure function of the hash, ``split_seed`` and ``val_fraction``:

    u = first 8 bytes of blake2b(hash, key=split_seed) / 2**64;   validation iff u < val_fraction

so adding data never moves a structure between train and validation, and a store and the files it
came from give the same splits. Tiny datasets keep the old guarantees: when n >= 2 records hash
into one split only, the record nearest the boundary moves (the lowest-u training record to
validation, or the highest-u validation record to training): at least one record in each split.
"""

from __future__ import annotations

import hashlib

import numpy as np

from atomgfm.data.structure import Structure

HASH_BYTES = 16  # stored per manifest entry


def content_hash(s: Structure) -> bytes:
    """16-byte digest of the structure's geometry and electronic state (not its labels)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(s.numbers, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(s.positions, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(s.cell, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(s.pbc, dtype="u1").tobytes())
    h.update(np.array([s.charge, s.spin], dtype="<f8").tobytes())
    return h.digest()[:HASH_BYTES]


def split_value(digest: bytes, split_seed: int = 0) -> float:
    """u in [0, 1) from a content hash; validation iff u < val_fraction."""
    key = int(split_seed).to_bytes(8, "little", signed=True)
    u = hashlib.blake2b(bytes(digest), digest_size=8, key=key).digest()
    return int.from_bytes(u, "little") / 2.0**64


def is_val(digest: bytes, val_fraction: float, split_seed: int = 0) -> bool:
    return split_value(digest, split_seed) < val_fraction


def forced_moves(u: np.ndarray, val_fraction: float) -> tuple[int | None, int | None]:
    """The record (index into ``u``) to move to validation and the one to move to training so
    that n >= 2 records have at least one in each split (a single record trains); (None, None)
    when none must move."""
    u = np.asarray(u, dtype=np.float64)
    val = u < val_fraction
    if len(u) == 1:  # a single record trains
        return None, (0 if val[0] else None)
    if len(u) == 0:
        return None, None
    if not val.any():
        return int(np.argmin(u)), None
    if val.all():
        return None, int(np.argmax(u))
    return None, None


def hash_split(structures: list[Structure], val_fraction: float,
               split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), each in record order, decided by content hash."""
    u = np.array([split_value(content_hash(s), split_seed) for s in structures])
    val = u < val_fraction
    to_val, to_train = forced_moves(u, val_fraction)
    if to_val is not None:
        val[to_val] = True
    if to_train is not None:
        val[to_train] = False
    return np.flatnonzero(~val), np.flatnonzero(val)
