"""Reader ``mptrj``: the Materials Project trajectory set as CHGNet ships it
(``MPtrj_2022.9_full.json``).

Layout: one JSON object ``{mp_id: {frame_id: frame}}`` (``"mp-1005792": {"mp-1005792-0-2":
{...}}``), each frame with

- ``structure``: a pymatgen ``Structure.as_dict()``: ``lattice.matrix`` (3x3, rows in Å),
  ``lattice.pbc`` (optional, default all true), ``charge`` (optional, default 0) and ``sites``,
  each with ``species`` (``[{"element": "Li", "occu": 1}]``) and ``xyz`` (Cartesian Å) and/or
  ``abc`` (fractional);
- ``uncorrected_total_energy`` (VASP's total energy, eV) and ``corrected_total_energy`` (with the
  Materials Project 2020 compatibility corrections, eV), ``energy_per_atom``, ``ef_per_atom``, …;
- ``force`` (n_atoms, 3) in eV/Å; ``stress`` (3x3) in **kBar with VASP's sign** (positive =
  compressive); ``magmom``, ``bandgap``, ``mp_id``.

The stress becomes ASE's convention (eV/Å³, positive = tensile; (1/V) ∂E/∂ε) as
``σ_ASE = −0.1 · σ_VASP[kBar] · GPa``: 1 kBar = 0.1 GPa, and VASP reports the negative of the
derivative (CHGNet's own loader multiplies by −0.1 to get GPa; ASE's VASP readers use the same
``-1e-1 * GPa``). See :data:`KBAR_TO_EV_A3`.

Reader option ``energy_key``: ``uncorrected_total_energy`` (default; the DFT energy whose
derivatives the forces and stress are) or ``corrected_total_energy`` (what CHGNet trains on; the
corrections shift energies by composition- and anion-dependent amounts). Periodic cells; the
multiplicity is not given (0). Record index: the frame's position in the file; messages name
``mp_id`` and ``frame_id``. Energies, forces and lengths are in eV and Å (the spec's units must be
left at those).

Memory: the file (about 11 GB) is never loaded whole: it is read in 1 MiB chunks and decoded one
material (``mp_id``'s frames) at a time with the standard library's incremental JSON decoder, so
memory holds one material plus one chunk; pymatgen is not needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import partial

import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.units import GPa

from atomgfm.data.readers.base import ReaderError, ReadOptions, RecordError, Records, reader, where
from atomgfm.data.readers.corpus import make_structure, native_factors

KBAR_TO_EV_A3 = -0.1 * GPa  # VASP kBar (compressive positive) -> ASE eV/Å^3 (tensile positive)
ENERGY_KEYS = ["uncorrected_total_energy", "corrected_total_energy"]
CHUNK = 1 << 20
_MP_KEY = re.compile(r'^\s*\{\s*"(mp|mvc)-\d+"\s*:')
_WS = " \t\n\r"


def is_mptrj_file(path: str) -> bool:
    """JSON whose first key is a Materials Project id (``"mp-123"``, ``"mvc-4"``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return _MP_KEY.match(fh.read(256)) is not None
    except (OSError, UnicodeDecodeError):
        return False


@reader("mptrj", formats=("mptrj",), suffixes=(".json",), check=is_mptrj_file)
def mptrj_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of an MPtrj JSON file, material by material, frame by frame."""
    path = str(path)
    native_factors(path, options, "MPtrj", "eV", "Å")
    energy_key = options.energy_key or ENERGY_KEYS[0]
    if energy_key not in ENERGY_KEYS:
        raise ReaderError(f"{path}: energy_key={energy_key!r}; MPtrj has {ENERGY_KEYS}")
    if options.forces_key is not None or options.stress_key is not None:
        raise ReaderError(f"{path}: MPtrj's labels are 'force' and 'stress'; forces_key and "
                          "stress_key cannot be set")
    index = 0
    for mp_id, frames in iter_json_object(path):
        if not isinstance(frames, dict):
            raise ReaderError(f"{where(path, index)} (mp_id {mp_id}): expected an object of "
                              f"frames, got {type(frames).__name__}")
        for frame_id, frame in frames.items():
            yield index, partial(_build, path, index, mp_id, frame_id, frame, energy_key,
                                 options.dataset)
            index += 1


def iter_json_object(path: str, chunk: int = CHUNK) -> Iterator[tuple[str, object]]:
    """``(key, value)`` of a top-level JSON object, one value decoded at a time.

    Raises:
        ReaderError: not a JSON object, or malformed/truncated JSON (named by byte offset in
            the text and the last key read).
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as fh:
        buf, pos, offset, eof = "", 0, 0, False
        last = None

        def more(size: int) -> bool:
            nonlocal buf, pos, offset, eof
            text = fh.read(size)
            offset += pos
            buf, pos = buf[pos:] + text, 0
            eof = not text
            return bool(text)

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos < len(buf) or not more(chunk):
                    return

        def expect(chars: str) -> str:
            skip_ws()
            if pos >= len(buf) or buf[pos] not in chars:
                got = "end of file" if pos >= len(buf) else repr(buf[pos])
                after = f" after key {last!r}" if last is not None else ""
                raise ReaderError(f"{path}: malformed JSON at character {offset + pos}{after}: "
                                  f"expected {' or '.join(map(repr, chars))}, got {got}")
            return buf[pos]

        def value():
            nonlocal pos
            size = chunk
            while True:
                skip_ws()
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    # Cut by the chunk's end (read more), or broken (stop now, not at the end
                    # of an 11 GB file): a cut shows at the buffer's end or in an open string.
                    err_at = offset + exc.pos
                    cut = exc.pos >= len(buf) - 64 or exc.msg.startswith("Unterminated string")
                    if cut and more(size):
                        size *= 2
                        continue
                    after = f" (value of key {last!r})" if last is not None else ""
                    raise ReaderError(f"{path}: malformed or truncated JSON at character "
                                      f"{err_at}{after}: {exc.msg}") from None
                if end == len(buf) and not eof and not isinstance(obj, dict | list | str):
                    more(size)  # a number may continue in the next chunk
                    continue
                pos = end
                return obj

        more(chunk)
        if expect("{") == "{":
            pos += 1
        if expect('}"') == "}":
            return
        while True:
            key = value()
            if not isinstance(key, str):
                raise ReaderError(f"{path}: malformed JSON at character {offset + pos}")
            last = key
            expect(":")
            pos += 1
            yield key, value()
            if expect(",}") == "}":
                return
            pos += 1


def _build(path, index, mp_id, frame_id, frame, energy_key, dataset):
    note = f" (mp_id {mp_id}, frame_id {frame_id})"
    at = f"{where(path, index)}{note}"
    if not isinstance(frame, dict):
        raise RecordError(f"{at}: expected an object, got {type(frame).__name__}")
    missing = [k for k in ("structure", energy_key, "force") if k not in frame]
    if missing:
        raise RecordError(f"{at}: missing {missing}", "missing label")
    numbers, positions, cell, pbc, charge = _pymatgen_structure(at, frame["structure"])
    stress = frame.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64)
        if stress.shape != (3, 3):
            raise RecordError(f"{at}: stress has shape {stress.shape}, expected (3, 3)", "stress")
        stress = stress * KBAR_TO_EV_A3
    return make_structure(
        path, index, note, numbers=numbers, positions=positions, cell=cell, pbc=pbc,
        energy=_number(at, energy_key, frame[energy_key]), forces=frame["force"],
        stress=stress, charge=charge, spin=0.0, dataset=dataset,
        info={"mp_id": mp_id, "frame_id": frame_id})


def _number(at: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"{at}: {key} is not a number ({value!r})", "non-numeric label")
    return float(value)


def _pymatgen_structure(at: str, d) -> tuple:
    """numbers, Cartesian positions (Å), cell (rows, Å), pbc and charge of a pymatgen
    ``Structure.as_dict()``; ordered sites only."""
    try:
        lattice = d["lattice"]
        cell = np.asarray(lattice["matrix"], dtype=np.float64)
        sites = d["sites"]
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{at}: structure is not a pymatgen Structure dict ({exc!r})") from None
    if cell.shape != (3, 3):
        raise RecordError(f"{at}: lattice matrix has shape {cell.shape}, expected (3, 3)")
    pbc = np.asarray(lattice.get("pbc", (True, True, True)), dtype=bool)
    if not sites:
        raise RecordError(f"{at}: structure has no sites", "no atoms")
    numbers, positions = [], []
    for i, site in enumerate(sites):
        try:
            species = site["species"]
            if len(species) != 1 or abs(float(species[0].get("occu", 1)) - 1) > 1e-8:
                raise RecordError(f"{at}: site {i} is disordered ({species}); only ordered "
                                  "structures are read", "disordered site")
            symbol = species[0]["element"]
            if symbol not in SYMBOL_TO_Z:
                raise RecordError(f"{at}: site {i} has unknown element {symbol!r}",
                                  "unknown element")
            numbers.append(SYMBOL_TO_Z[symbol])
            if "xyz" in site:
                positions.append(np.asarray(site["xyz"], dtype=np.float64))
            else:
                positions.append(np.asarray(site["abc"], dtype=np.float64) @ cell)
        except RecordError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RecordError(f"{at}: site {i} is not a pymatgen site ({exc!r})") from None
        if positions[-1].shape != (3,):
            raise RecordError(f"{at}: site {i} has a position of shape {positions[-1].shape}")
    return np.array(numbers), np.array(positions), cell, pbc, float(d.get("charge") or 0.0)
