"""Reader ``ase``: every file format ASE can read (tried after the specific readers).

Suffixes and ``format=`` names come from ASE's own format table (``ase.io.formats.ioformats``);
files named without a suffix that ASE recognises (``POSCAR``, ``OUTCAR``, ``vasprun.xml``) are
taken too. (Extended) XYZ files are split into frames here (count line, comment line, atom lines,
optional ``VEC`` lines) and each frame is parsed on its own, so a broken frame names its record and
line and ``on_error="skip"`` continues past it. Other formats (and compressed XYZ) go through
``ase.io.iread``; a parse error there ends the iterator, so it is raised (with the record index
reached) even when skipping.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import partial

import ase.io
from ase.data import chemical_symbols
from ase.io.formats import filetype, ioformats

from atomgfm.data.readers.base import (
    ReaderError,
    ReadOptions,
    RecordError,
    Records,
    reader,
    where,
)

XYZ_FORMATS = ("extxyz", "xyz")
COMPRESSED = (".gz", ".bz2", ".xz")  # ASE decompresses these; our frame splitter does not
# Database back ends are not files to iterate; every other format ASE can read is ours.
_READABLE = tuple(sorted(name for name, f in ioformats.items()
                         if f.can_read and name not in ("mysql", "postgresql")))
_COMMON = (".extxyz", ".xyz", ".traj", ".cif", ".vasp", ".pdb", ".xsf", ".sdf")  # listed first
_SUFFIXES = tuple(sorted(
    {f".{ext}" for name in _READABLE for ext in ioformats[name].extensions}
    | {f".{name}" for name in _READABLE if name.isalnum()},
    key=lambda sfx: (sfx not in _COMMON, _COMMON.index(sfx) if sfx in _COMMON else 0, sfx)))
_FORMATS = tuple(sorted(_READABLE, key=lambda f: ("." + f not in _COMMON, f)))


def _ase_format(path: str) -> str | None:
    """ASE's guess from the name alone (no reading), or None."""
    try:
        return filetype(path, read=False)
    except Exception:  # ASE raises several types for names it cannot place
        return None


def _recognised(path: str) -> bool:
    return _ase_format(path) in _READABLE


@reader("ase", formats=_FORMATS, suffixes=_SUFFIXES, recognises=_recognised, generic=True,
        folder_suffixes=_COMMON)
def ase_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of ``path`` read with ASE; ``format`` is ASE's name (guessed when None)."""
    path = str(path)
    if format is None:
        format = _ase_format(path)
        if format is None:
            raise ReaderError(f"{path}: ASE cannot tell the file format; pass format=")
    if format not in _READABLE:
        raise ReaderError(f"{path}: ASE has no reader for format {format!r}; pass format=")
    if format in XYZ_FORMATS and not path.lower().endswith(COMPRESSED):
        return _xyz_records(path, format, options)
    return _iread_records(path, format, options)


def _xyz_records(path: str, fmt: str, options: ReadOptions) -> Iterator:
    for index, lineno, lines, complete in _xyz_frames(path):
        if not complete:
            n = int(lines[0])
            got = max(len(lines) - 2, 0)
            msg = (f"{where(path, index)} (line {lineno}): truncated frame, expected {n} atom "
                   f"lines but the file ends after {got}")
            yield index, partial(_raise, RecordError(msg, "truncated frame"))
            return
        yield index, partial(_parse_frame, path, index, lineno, "".join(lines), fmt, options)


def _xyz_frames(path: str) -> Iterator[tuple[int, int, list[str], bool]]:
    """Yield (record index, line number of the count line, frame lines, complete?)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        lineno = 0
        index = 0
        pending: str | None = None
        while True:
            line = pending if pending is not None else fh.readline()
            pending = None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue  # blank lines between frames (ASE itself stops at the first one)
            try:
                n = int(line.strip())
                if n < 0:
                    raise ValueError("negative atom count")
            except ValueError:
                raise ReaderError(
                    f"{where(path, index)} (line {lineno}): expected an atom-count line, got "
                    f"{line.strip()[:60]!r}; cannot find the start of this or any later record"
                ) from None
            start = lineno
            lines = [line]
            for _ in range(n + 1):
                nxt = fh.readline()
                if not nxt:
                    yield index, start, lines, False
                    return
                lineno += 1
                lines.append(nxt)
            while True:  # old-style lattice lines after the atoms
                nxt = fh.readline()
                if nxt.startswith("VEC"):
                    lineno += 1
                    lines.append(nxt)
                    continue
                pending = nxt if nxt else ""
                break
            yield index, start, lines, True
            index += 1
            if pending == "":
                return


def _parse_frame(path: str, index: int, lineno: int, text: str, fmt: str,
                 options: ReadOptions):
    at = f"{where(path, index)} (line {lineno})"
    try:
        atoms = ase.io.read(io.StringIO(text), format=fmt, index=0)
    except KeyError as exc:
        key = exc.args[0] if exc.args else ""
        if isinstance(key, str) and key not in chemical_symbols:
            raise RecordError(f"{at}: unknown element symbol {key!r}", "unknown element") from exc
        raise RecordError(f"{at}: parse error: KeyError {exc}") from exc
    except Exception as exc:  # ASE's parsers raise many types; all mean "this frame is broken"
        raise RecordError(f"{at}: parse error: {type(exc).__name__}: {exc}") from exc
    return options.convert(atoms, path, index)


def _iread_records(path: str, fmt: str, options: ReadOptions) -> Iterator:
    index = 0
    try:
        frames = ase.io.iread(path, index=":", format=fmt)
        while True:
            try:
                atoms = next(frames)
            except StopIteration:
                return
            yield index, partial(options.convert, atoms, path, index)
            index += 1
    except (ReaderError, FileNotFoundError):
        raise
    except Exception as exc:
        raise ReaderError(
            f"{where(path, index)}: ASE ({fmt}) could not read it: {type(exc).__name__}: {exc}; "
            "later records cannot be reached"
        ) from exc


def _raise(exc: Exception):
    raise exc
