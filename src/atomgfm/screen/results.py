"""Screening results: Parquet chunks with their id range, the run manifest, ranking.

A run folder holds ``screen.json`` (what was screened, with which model and settings) and one
``chunk-LLLLLLLLLLLL-HHHHHHHHHHHH.parquet`` per block of candidate indices [L, H): written to a
temporary name and renamed, so a chunk exists complete or not at all. The chunk files are the
resume index: a block whose file exists is done, every other block is (re)screened.

Columns (one row per candidate, in index order): ``index`` (int64), ``id``, ``formula``,
``n_atoms``, ``energy`` (eV, the router blend of the kept heads), ``energy_per_atom`` (eV/atom),
``relative_energy_per_atom`` (eV/atom: the blend of each head's energy minus its own element
and charge/spin references, comparable across compositions and levels of theory), ``spread``
(eV/atom: router-weighted standard deviation of the kept heads' relative energies per atom, an
uncertainty signal; 0 with one head), ``fmax`` (eV/Å, largest force norm, when forces were
asked), ``e_<head>`` (eV/atom, each head's energy per atom; NaN where skipped), ``w_<head>``
(the head's blend weight after skipping), ``low_confidence`` (router's largest weight below the
confidence level), ``unknown_elements`` (an element outside every head's training set: energy
is NaN), ``error`` (why a candidate could not be scored, e.g. overlapping atoms; else null).
"""

from __future__ import annotations

import heapq
import json
import os
import re
import uuid
from pathlib import Path

import numpy as np

CHUNK_RE = re.compile(r"^chunk-(\d{12})-(\d{12})\.parquet$")
MANIFEST = "screen.json"
ASCENDING = {"energy", "energy_per_atom", "relative_energy_per_atom"}


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("screening results are Parquet files: pip install 'atomgfm[screen]' "
                          "(pyarrow)") from None
    return pa, pq


def chunk_name(lo: int, hi: int) -> str:
    return f"chunk-{lo:012d}-{hi:012d}.parquet"


def done_chunks(folder: str | Path) -> dict[int, int]:
    """{lo: hi} of the complete chunk files in ``folder`` (temporary files are ignored)."""
    folder = Path(folder)
    out = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = CHUNK_RE.match(p.name)
            if m:
                out[int(m.group(1))] = int(m.group(2))
    return out


def write_chunk(folder: str | Path, lo: int, hi: int,
                columns: dict[str, list | np.ndarray]) -> Path:
    """Atomically write one chunk (temp file in the same folder, then rename)."""
    pa, pq = _pa()
    folder = Path(folder)
    target = folder / chunk_name(lo, hi)
    table = pa.table(columns)
    tmp = folder / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def clean_temporaries(folder: str | Path) -> int:
    """Remove chunk temp files a killed run left behind; returns how many."""
    n = 0
    for p in Path(folder).glob(".chunk-*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def write_manifest(folder: str | Path, manifest: dict) -> None:
    """Write ``screen.json``; a resumed run must describe the same screen (else ValueError)."""
    path = Path(folder) / MANIFEST
    manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples become lists)
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in manifest if k in old and old[k] != manifest[k])
        if diff:
            raise ValueError(f"{path}: this folder holds a different screen ({', '.join(diff)} "
                             "differ); use a new --out or delete the folder")
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)


def chunk_files(results: str | Path) -> list[Path]:
    """The chunk files of a results folder (or one chunk file), in index order."""
    results = Path(results)
    if results.is_file():
        return [results]
    if not results.is_dir():
        raise FileNotFoundError(f"screening results not found: {results}")
    files = sorted(p for p in results.iterdir() if CHUNK_RE.match(p.name))
    if not files:
        raise FileNotFoundError(f"{results}: no chunk-*.parquet files (not a screening run?)")
    return files


def read_results(results: str | Path, columns: list[str] | None = None):
    """All rows as one pyarrow Table (small runs and tests; ``top`` streams instead)."""
    pa, pq = _pa()
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in chunk_files(results)])


def top(results: str | Path, k: int = 100, by: str = "energy_per_atom",
        descending: bool | None = None) -> list[dict]:
    """The ``k`` best rows by column ``by``, reading one chunk at a time (memory ∝ k).

    Ascending for energies, descending otherwise (spread, fmax), unless ``descending`` is given.
    Rows with NaN or null in ``by`` (errors, unknown elements) are never ranked."""
    _, pq = _pa()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    desc = (by not in ASCENDING) if descending is None else descending
    heap: list[tuple[float, int, dict]] = []
    for path in chunk_files(results):
        table = pq.read_table(path)
        if by not in table.column_names:
            raise KeyError(f"{path}: no column {by!r}; columns are {table.column_names}")
        values = table.column(by).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = np.flatnonzero(np.isfinite(values))
        key = values[ok] if desc else -values[ok]  # heap keeps the k largest keys
        best = ok[np.argsort(-key, kind="stable")[:k]]
        rows = table.take(best).to_pylist()
        for row, v in zip(rows, values[best], strict=True):
            item = (float(v) if desc else -float(v), -int(row["index"]), row)
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
    return [r for *_, r in sorted(heap, key=lambda t: t[:2], reverse=True)]
