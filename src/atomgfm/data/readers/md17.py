"""Reader ``md17``: MD17 and revised MD17 (rMD17) ``.npz`` files, one molecule per file.

Layouts (keys of the NumPy archive):

- original MD17 (sGDML's ``md17_ethanol.npz``): ``z`` (n_atoms,) atomic numbers, ``R``
  (n_frames, n_atoms, 3) in Å, ``E`` (n_frames, 1) in kcal/mol, ``F`` (n_frames, n_atoms, 3) in
  kcal/mol/Å; plus ``name``, ``theory``, ``md5``, ``type`` (not needed);
- rMD17 (``rmd17_ethanol.npz``): ``nuclear_charges`` (n_atoms,), ``coords`` (n_frames, n_atoms,
  3) in Å, ``energies`` (n_frames,) in kcal/mol, ``forces`` (n_frames, n_atoms, 3) in kcal/mol/Å;
  plus ``old_indices``, ``old_energies``, ``old_forces`` (the original MD17 frames' labels).

Reader option ``split_file``: one of rMD17's official split files (``splits/index_train_01.csv``:
one frame index per line, 0-based); only those frames are read, in the file's order. A relative
path is taken from the ``.npz`` file's folder. The record index is the frame's index in the
``.npz`` (what the split files list); messages also name the frame. Molecules are neutral; the
multiplicity is not given (0). The four arrays of a file are read into memory when the file is
opened (about 50 MB for rMD17's 100,000 frames of aspirin); frames are built one at a time.
"""

from __future__ import annotations

import os
import zipfile
from functools import partial

import numpy as np

from atomgfm.data.readers.base import ReaderError, ReadOptions, Records, reader
from atomgfm.data.readers.corpus import make_structure, native_factors, reader_option

LAYOUTS = {  # name -> (numbers, positions, energies, forces)
    "MD17": ("z", "R", "E", "F"),
    "rMD17": ("nuclear_charges", "coords", "energies", "forces"),
}


def _layout(keys) -> str | None:
    return next((name for name, ks in LAYOUTS.items() if set(ks) <= set(keys)), None)


def is_md17_file(path: str) -> bool:
    """An ``.npz`` with the MD17 or rMD17 keys (reads the archive's index, not its arrays), so a
    folder's ``metadata.npz`` (OMat24) is left alone."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return _layout(npz.files) is not None
    except Exception:  # any unreadable file is simply not ours
        return False


@reader("md17", formats=("md17", "rmd17"), suffixes=(".npz",), check=is_md17_file,
        options=("split_file",))
def md17_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of one MD17 / rMD17 file (all frames, or those of ``split_file``)."""
    path = str(path)
    ef, lf = native_factors(path, options, "MD17", "kcal/mol", "Å")
    split_file = reader_option(path, options, "split_file", None, (str, type(None)))
    layout, (numbers, pos, energy, forces) = _load(path)
    frames = range(len(pos)) if split_file is None else _split(path, split_file, len(pos))
    for k in frames:
        yield int(k), partial(_build, path, int(k), f" ({layout} frame {k})", numbers, pos,
                              energy, forces, ef, lf, options.dataset)


def _load(path: str):
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            layout = _layout(keys)
            arrays = None if layout is None else [npz[k] for k in LAYOUTS[layout]]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ReaderError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})"
                          ) from None
    if layout is None:
        raise ReaderError(f"{path}: neither an MD17 (z, R, E, F) nor an rMD17 (nuclear_charges, "
                          f"coords, energies, forces) file; it has {sorted(keys)}")
    z, r, e, f = arrays
    names = LAYOUTS[layout]
    if z.ndim != 1 or r.ndim != 3 or r.shape[1:] != (len(z), 3):
        raise ReaderError(f"{path}: {names[1]} has shape {r.shape}, expected (n_frames, "
                          f"{len(z)}, 3) for {names[0]} of shape {z.shape}")
    if e.shape not in ((len(r),), (len(r), 1)):
        raise ReaderError(f"{path}: {names[2]} has shape {e.shape}, expected ({len(r)},) or "
                          f"({len(r)}, 1)")
    if f.shape != r.shape:
        raise ReaderError(f"{path}: {names[3]} has shape {f.shape}, expected {r.shape}")
    return layout, (z, r, e.reshape(-1), f)


def _split(path: str, split_file: str, n: int) -> np.ndarray:
    if not os.path.isabs(split_file):
        split_file = os.path.join(os.path.dirname(os.path.abspath(path)), split_file)
    try:
        idx = np.loadtxt(split_file, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise ReaderError(f"{split_file}: not a split file of frame indices, one per line "
                          f"({exc})") from None
    if idx.size == 0:
        raise ReaderError(f"{split_file}: empty split file")
    bad = (idx != np.round(idx)) | (idx < 0) | (idx >= n)
    if bad.any():
        raise ReaderError(f"{split_file}: line {int(np.flatnonzero(bad)[0]) + 1}: "
                          f"{idx[bad][0]:g} is not a frame index of {path} (0..{n - 1})")
    return idx.astype(np.int64)


def _build(path, k, note, numbers, pos, energy, forces, ef, lf, dataset):
    return make_structure(
        path, k, note, numbers=numbers, positions=np.asarray(pos[k], np.float64) * lf,
        energy=float(energy[k]) * ef, forces=np.asarray(forces[k], np.float64) * (ef / lf),
        charge=0.0, spin=0.0, dataset=dataset)
