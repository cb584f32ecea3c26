"""One shard of a store: an ADIOS2 BP5 folder holding a run of records of one dataset.

Variables (n records, A atoms, E edges in the shard; records are rows):

    numbers (A,) uint8 | positions (A, 3) f8 Å | forces (A, 3) f8 eV/Å (zeros where absent)
    atom_offset (n + 1,) i8 | cell (n, 3, 3) f8 Å | pbc (n, 3) u1 | energy (n,) f8 eV
    stress (n, 3, 3) f8 eV/Å³ | charge (n,) f8 e | spin (n,) f8 | labels (n, 3) u1 (has E, F, σ)
    with stored neighbour lists: edge_offset (n + 1,) i8 | edges (E, 2) i4 (centre, neighbour;
    local to the record) | shifts (E, 3) i4 (integer lattice shifts)

Attributes: ``format`` (``atomgfm-shard``), ``version``, ``n_records``, ``cutoff`` (Å, of the
stored edges; 0 without). A shard's digest is the SHA-256 of its files (name and bytes, sorted by
name; ADIOS2's ``profiling.json`` is removed after writing), recorded in the store's manifest when
the shard is complete; a truncated or altered shard no longer matches it.

Readers keep the per-record arrays (a few hundred bytes per record) of an open shard in memory
and read each record's atoms and edges as one slice per variable: memory per open shard is
bounded by the shard size, whatever the store size.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from atomgfm import keys as K
from atomgfm.data.graph import structure_to_graph, triplets
from atomgfm.data.structure import Structure

FORMAT = "atomgfm-shard"
VERSION = 1
PER_ATOM = ("numbers", "positions", "forces")
PER_RECORD = ("cell", "pbc", "energy", "stress", "charge", "spin", "labels")


class ShardError(ValueError):
    """A shard is missing, truncated, altered or not a shard; the message names it."""


def _adios():
    try:
        import adios2
    except ImportError as exc:  # pragma: no cover - the storage extra is installed in dev
        raise ImportError("the ADIOS2 store needs the adios2 package: "
                          "pip install 'atomgfm[storage]'") from exc
    return adios2


def shard_arrays(records: list[Structure], graphs: list[dict] | None) -> dict[str, np.ndarray]:
    """The variables of a shard (see the module docstring) for ``records``; ``graphs`` (their
    graph dicts at the store's cutoff) adds the neighbour lists."""
    n_atoms = np.array([s.n_atoms for s in records], dtype=np.int64)
    out = {
        "numbers": np.concatenate([s.numbers for s in records]).astype(np.uint8),
        "positions": np.concatenate([s.positions for s in records]),
        "forces": np.concatenate([np.zeros((s.n_atoms, 3)) if s.forces is None else s.forces
                                  for s in records]),
        "atom_offset": np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64),
        "cell": np.stack([s.cell for s in records]),
        "pbc": np.stack([s.pbc for s in records]).astype(np.uint8),
        "energy": np.array([0.0 if s.energy is None else s.energy for s in records]),
        "stress": np.stack([np.zeros((3, 3)) if s.stress is None else s.stress
                            for s in records]),
        "charge": np.array([s.charge for s in records], dtype=np.float64),
        "spin": np.array([s.spin for s in records], dtype=np.float64),
        "labels": np.array([[s.energy is not None, s.forces is not None, s.stress is not None]
                            for s in records], dtype=np.uint8),
    }
    if graphs is not None:
        n_edges = np.array([g[K.EDGE_INDEX].shape[1] for g in graphs], dtype=np.int64)
        out["edge_offset"] = np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64)
        edges = [g[K.EDGE_INDEX].T for g in graphs]
        shifts = [g[K.CELL_SHIFTS] for g in graphs]
        out["edges"] = (np.concatenate(edges) if n_edges.sum() else np.zeros((0, 2))
                        ).astype(np.int32)
        out["shifts"] = (np.concatenate(shifts) if n_edges.sum() else np.zeros((0, 3))
                         ).astype(np.int32)
    return out


def write_shard(path: Path, arrays: dict[str, np.ndarray], cutoff: float) -> None:
    """Write ``arrays`` as a BP5 folder at ``path`` (which must not exist)."""
    adios2 = _adios()
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: exists")
    ad = adios2.Adios()
    io = ad.declare_io(f"write:{path}")
    io.set_engine("BP5")
    with adios2.Stream(io, str(path), "w") as s:
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            if a.size == 0:  # ADIOS2 cannot write an empty selection: record the shape only
                s.write_attribute(f"empty:{name}", list(a.shape) or [0])
                continue
            shape = list(a.shape)
            s.write(name, a, shape, [0] * len(shape), shape)
        s.write_attribute("format", FORMAT)
        s.write_attribute("version", VERSION)
        s.write_attribute("n_records", int(len(arrays["energy"])))
        s.write_attribute("cutoff", float(cutoff if "edges" in arrays else 0.0))
    (path / "profiling.json").unlink(missing_ok=True)


def shard_digest(path: Path) -> str:
    """SHA-256 (hex) over the shard's file names and bytes, in name order."""
    path = Path(path)
    if not path.is_dir():
        raise ShardError(f"{path}: shard missing (not a folder)")
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        h.update(name.encode() + b"\0")
        with open(path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_all(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a shard (used to verify a freshly written shard)."""
    adios2 = _adios()
    try:
        with adios2.FileReader(str(path)) as f:
            out = {name: f.read(name) for name in f.available_variables()}
            for name in f.available_attributes():
                if name.startswith("empty:"):
                    shape = tuple(int(x) for x in np.atleast_1d(f.read_attribute(name)))
                    out[name[6:]] = np.zeros(shape)
            return out
    except ShardError:
        raise
    except Exception as exc:  # ADIOS2 raises several types for damaged folders
        raise ShardError(f"{path}: cannot be read as a BP5 shard ({type(exc).__name__}: "
                         f"{exc})") from exc


def write_verified(final: Path, arrays: dict[str, np.ndarray], cutoff: float) -> str:
    """Write to a temporary name beside ``final``, read back and compare every variable, then
    rename into place; returns the shard digest. A crash leaves only the temporary folder."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    write_shard(tmp, arrays, cutoff)
    back = read_all(tmp)
    for name, a in arrays.items():
        b = back.get(name)
        if b is None or b.shape != a.shape or not np.array_equal(b, a):
            raise ShardError(f"{final}: variable {name!r} read back differs from what was "
                             "written (disk full or failing?)")
    digest = shard_digest(tmp)
    if final.exists():  # an earlier attempt renamed but never recorded it
        shutil.rmtree(final)
    os.replace(tmp, final)
    return digest


class ShardReader:
    """Records of one shard as graph dicts (the layout of ``structure_to_graph``)."""

    def __init__(self, path: Path) -> None:
        adios2 = _adios()
        self.path = Path(path)
        try:
            self._f = adios2.FileReader(str(self.path))
            fmt = self._f.read_attribute("format")
            if fmt != FORMAT:
                raise ShardError(f"{self.path}: not an atomgfm shard (format {fmt!r})")
            self.cutoff = float(self._f.read_attribute("cutoff"))
            variables = self._f.available_variables()
            self.n_records = int(self._f.read_attribute("n_records"))
            self.rec = {name: self._f.read(name) for name in PER_RECORD}
            self.atom_offset = self._f.read("atom_offset")
            self.has_edges = "edge_offset" in variables
            self._edges_in_file = "edges" in variables
            self.edge_offset = self._f.read("edge_offset") if self.has_edges else None
        except ShardError:
            raise
        except Exception as exc:
            raise ShardError(f"{self.path}: cannot be read as a BP5 shard "
                             f"({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        self._f.close()

    def _slice(self, name: str, start: int, stop: int, width: int | None) -> np.ndarray:
        if stop == start:
            return np.zeros((0,) if width is None else (0, width))
        if width is None:
            return self._f.read(name, [start], [stop - start])
        return self._f.read(name, [start, 0], [stop - start, width])

    def structure(self, row: int) -> Structure:
        """The record at ``row`` as a :class:`Structure` (labels absent where not stored)."""
        a, b = int(self.atom_offset[row]), int(self.atom_offset[row + 1])
        has_e, has_f, has_s = (bool(x) for x in self.rec["labels"][row])
        return Structure(self._slice("numbers", a, b, None).astype(np.int64),
                         self._slice("positions", a, b, 3), self.rec["cell"][row],
                         self.rec["pbc"][row].astype(bool),
                         energy=float(self.rec["energy"][row]) if has_e else None,
                         forces=self._slice("forces", a, b, 3) if has_f else None,
                         stress=self.rec["stress"][row] if has_s else None,
                         charge=float(self.rec["charge"][row]),
                         spin=float(self.rec["spin"][row]), source=str(self.path), index=row)

    def graph(self, row: int, dataset_id: int, cutoff: float,
              needs: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
        """The graph of record ``row`` at ``cutoff`` Å: stored edges when the shard has them at
        this cutoff, otherwise built now (vesin)."""
        if not (self.has_edges and abs(self.cutoff - cutoff) < 1e-12):
            return structure_to_graph(self.structure(row), cutoff, dataset_id, needs)
        a, b = int(self.atom_offset[row]), int(self.atom_offset[row + 1])
        ea, eb = int(self.edge_offset[row]), int(self.edge_offset[row + 1])
        labels = self.rec["labels"][row].astype(bool)
        n = b - a
        if self._edges_in_file:
            edge_index = self._slice("edges", ea, eb, 2).T.astype(np.int64)
            shifts = self._slice("shifts", ea, eb, 3).astype(np.float64)
        else:
            edge_index, shifts = np.zeros((2, 0), np.int64), np.zeros((0, 3))
        g = {
            K.POSITIONS: self._slice("positions", a, b, 3),
            K.ATOMIC_NUMBERS: self._slice("numbers", a, b, None).astype(np.int64),
            K.CELL: self.rec["cell"][row][None],
            K.PBC: self.rec["pbc"][row][None].astype(bool),
            K.CHARGE: self.rec["charge"][row:row + 1].copy(),
            K.SPIN: self.rec["spin"][row:row + 1].copy(),
            K.N_ATOMS: np.array([n]),
            K.DATASET: np.array([dataset_id]),
            K.EDGE_INDEX: np.ascontiguousarray(edge_index),
            K.CELL_SHIFTS: shifts,
            K.ENERGY: self.rec["energy"][row:row + 1].copy(),
            K.FORCES: self._slice("forces", a, b, 3) if labels[1] else np.zeros((n, 3)),
            K.STRESS: self.rec["stress"][row][None],
            K.HAS_ENERGY: labels[0:1].copy(),
            K.HAS_FORCES: labels[1:2].copy(),
            K.HAS_STRESS: labels[2:3].copy(),
        }
        if K.TRIPLET_INDEX in needs:
            g[K.TRIPLET_INDEX] = triplets(edge_index, shifts, n)
        return g
