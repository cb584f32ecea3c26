"""``screen run``: stream candidates through the model, write Parquet chunks, resume after a kill.

    screener = Screener.from_checkpoint("runs/demo/best.pt", ScreenSettings(forces=True))
    screener.run(CandidateGenerator.from_file("spec.yaml"), "runs/screen1")

The candidate index space is cut into blocks of ``chunk_size``; block b belongs to rank
b mod WORLD_SIZE (torchrun's environment; ranks share nothing else), and within a rank to
DataLoader worker (b div WORLD_SIZE) mod workers. A worker builds the graphs of its block
(neighbour lists in that process), packs them into batches by atoms and edges, and passes them
on; the main process encodes each batch once, evaluates every kept head in one stacked product,
blends by router weight (:mod:`atomgfm.screen.engine`) and, when all batches of a block are
back, writes the block's chunk (:mod:`atomgfm.screen.results`). A restarted run skips blocks
whose chunk exists, whatever the number of ranks, so no candidate is lost or scored twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from atomgfm import keys as K
from atomgfm.data.graph import collate
from atomgfm.data.mixing import packed_batches
from atomgfm.data.structure import StructureError
from atomgfm.precision import autocast, param_dtype, resolve_device
from atomgfm.screen import results as R
from atomgfm.screen.engine import blend, compile_backbone, screening_model
from atomgfm.screen.graphs import block_graphs

log = logging.getLogger(__name__)

#: Batch limits of the screening path per device type (see :func:`batch_limits`). CPU, measured
#: on one core with the backbone compiled (benchmarks/RESULTS.md, 2026-11-26): energies only,
#: batches up to 8,192 edges (16 heads, 8-atom cells: 1,210 cells/s against 1,010 at 4,096
#: edges and 805 at 2,048: the readout's cost per batch is then spread over more structures);
#: with forces, batches close at ``CPU_FORCE_MAX_EDGES`` instead. CUDA: not measured yet.
BATCH_LIMITS = {"cpu": {"max_atoms": 1024, "max_edges": 8192, "max_structures": 256},
                "cuda": {"max_atoms": 16_384, "max_edges": 1_000_000, "max_structures": 4096}}

#: CPU batches with forces close at this many edges: the backward's per-edge tensors (E x 2F
#: floats and their gradients) then stay in a core's L2 cache. g2 molecules, two one-thread
#: processes side by side: ~2,330 /s each against ~2,050 at 4,096 edges; 108-atom alloy cells
#: (one per batch from 8,192 edges down) 43-46 /s against 31-35 at 16,000.
CPU_FORCE_MAX_EDGES = 2048


def batch_limits(device_type: str, forces: bool) -> dict[str, int]:
    """The default batch limits of ``screen run`` on this device type, with or without forces."""
    lim = dict(BATCH_LIMITS.get(device_type, BATCH_LIMITS["cpu"]))
    if device_type == "cpu" and forces:
        lim["max_edges"] = CPU_FORCE_MAX_EDGES
    return lim


#: ``compile="auto"`` compiles the backbone for a source of at least this many candidates: the
#: compilation (about 30 s cold, 10 s with inductor's cache warm, PaiNN 128x3 on a CPU core) is
#: repaid by about 0.45 ms saved per g2 molecule and more per larger cell (benchmarks/RESULTS.md).
AUTO_COMPILE_MIN = 20_000


@dataclass
class ScreenSettings:
    """How to screen. threshold: heads below this router weight are skipped; confidence: rows
    whose largest weight is below it are flagged; chunk_size: candidates per Parquet chunk (and
    per resume unit); workers: graph-building processes (0: in the main process); compile:
    "on", "off" or "auto" (on for a source of known length >= ``AUTO_COMPILE_MIN``) compiles the
    backbone (:func:`~atomgfm.screen.engine.compile_backbone`); cuda_graphs: with compile on
    CUDA, also replay CUDA graphs."""

    threshold: float = 0.01
    confidence: float = 0.5
    forces: bool = False
    precision: str = "fp32"
    device: str = "auto"
    chunk_size: int = 4096
    workers: int = 1
    max_atoms: int | None = None
    max_edges: int | None = None
    max_structures: int | None = None
    compile: str = "auto"
    cuda_graphs: bool = False
    progress: bool = True


class FileCandidates:
    """Structures of a file or folder through the reader registry; index = position in the
    stream, id = ``file:record``. Invalid records are skipped by the reader and reported."""

    def __init__(self, path: str | Path, format: str | None = None) -> None:
        self.path, self.format = str(path), format

    def __len__(self) -> int:  # unknown without reading: blocks are cut as the stream goes
        raise TypeError("a file source has no length before it is read")

    def describe(self) -> dict:
        return {"kind": "files", "path": self.path, "format": self.format}

    def items(self, owned: Callable[[int], bool], chunk: int) -> Iterator[tuple[int, list]]:
        from atomgfm.data.readers import iter_structures

        stream = iter_structures(self.path, format=self.format, on_error="skip")
        block, lo = [], 0
        with stream:
            for i, s in enumerate(stream):
                if i // chunk != lo // chunk:
                    if owned(lo // chunk):
                        yield lo, block
                    block, lo = [], i
                block.append((i, f"{Path(s.source).name}:{s.index}", s, None))
            if block and owned(lo // chunk):
                yield lo, block
        if stream.skipped.total:
            log.warning("%s", stream.skipped)


class GeneratedCandidates:
    """A :class:`~atomgfm.screen.generate.CandidateGenerator` as a source (random access)."""

    def __init__(self, generator) -> None:
        self.generator = generator

    def __len__(self) -> int:
        return len(self.generator)

    def describe(self) -> dict:
        return {"kind": "generator", "source": self.generator.source, "n": len(self.generator),
                "digest": self.generator.digest,
                "counts": self.generator.counts()}

    def items(self, owned, chunk):
        for start, indices in _owned_blocks(len(self.generator), chunk, owned):
            rows = []
            for i in indices:
                try:
                    c = self.generator[i]
                    rows.append((i, c.id, c.structure, None))
                except StructureError as exc:
                    rows.append((i, f"#{i}", None, str(exc)))
            yield start, rows


def _owned_blocks(n: int, chunk: int, owned):
    """(first index, index range) of each block of ``chunk`` candidates out of ``n`` that
    ``owned(block number)`` gives to this rank."""
    for b in range((n + chunk - 1) // chunk):
        if owned(b):
            yield b * chunk, range(b * chunk, min((b + 1) * chunk, n))


class AtomsCandidates:
    """In-memory ASE ``Atoms`` as a source (random access): index = position in the list, id =
    ``atoms.info["id"]`` when set, else ``atoms:INDEX``. Conversion (charge and multiplicity
    from ``atoms.info``, as the ASE calculator reads them) happens in the graph-building
    worker; an Atoms that cannot be converted gets a row with its error."""

    def __init__(self, atoms: list) -> None:
        from ase import Atoms

        self.atoms = list(atoms)
        bad = next((k for k, a in enumerate(self.atoms) if not isinstance(a, Atoms)), None)
        if bad is not None:
            raise TypeError(f"a list source must hold ASE Atoms; item {bad} is a "
                            f"{type(self.atoms[bad]).__name__}")

    def __len__(self) -> int:
        return len(self.atoms)

    def describe(self) -> dict:
        """Kind, count and a digest of every Atoms' numbers, positions, cell, pbc and info
        (so a resume into the same folder with other Atoms is refused)."""
        import hashlib

        h = hashlib.sha256()
        for a in self.atoms:
            for x in (a.numbers, a.positions, a.cell.array, a.pbc):
                h.update(np.ascontiguousarray(x).tobytes())
            h.update(repr(sorted(a.info.items(), key=lambda kv: str(kv[0]))).encode())
        return {"kind": "atoms", "n": len(self.atoms), "digest": h.hexdigest()[:16]}

    def items(self, owned, chunk):
        from atomgfm.data.readers.convert import charge_and_spin
        from atomgfm.data.structure import Structure

        for start, indices in _owned_blocks(len(self.atoms), chunk, owned):
            rows = []
            for i in indices:
                a = self.atoms[i]
                cid = str(a.info.get("id", f"atoms:{i}"))
                try:  # as calculators.atoms_to_structure, with the id in the message
                    charge, spin = charge_and_spin(a, f"Atoms {cid}")
                    s = Structure(a.numbers, a.positions, a.cell.array, a.pbc,
                                  charge=charge, spin=spin, source="atoms", index=i)
                    rows.append((i, cid, s, None))
                except StructureError as exc:
                    rows.append((i, cid, None, str(exc)))
            yield start, rows


class _Batches(IterableDataset):
    """Blocks owned by (rank, worker) -> packed, collated batches with their rows."""

    def __init__(self, source, chunk, rank, world, done, cutoff, needs, dtype, head_elements,
                 limits):
        self.source, self.chunk, self.rank, self.world = source, chunk, rank, world
        self.done, self.cutoff, self.needs, self.dtype = done, cutoff, needs, dtype
        self.head_elements = head_elements  # (H, MAX_Z+1) bool: elements each head knows
        self.limits = limits

    def __iter__(self):
        info = get_worker_info()
        w, n_w = (info.id, info.num_workers) if info else (0, 1)

        def owned(b):
            return (b % self.world == self.rank and (b // self.world) % n_w == w
                    and b * self.chunk not in self.done)

        for lo, rows in self.source.items(owned, self.chunk):
            yield from self._block(lo, rows)

    def _block(self, lo, rows):
        graphs, meta, errors = [], [], []
        valid = [r for r in rows if r[3] is None]
        built = iter(block_graphs([r[2] for r in valid], self.cutoff, self.needs))
        for i, cid, s, err in rows:
            if err is None:
                g = next(built)
                if not isinstance(g, StructureError):
                    graphs.append(g)
                    meta.append((i, cid, s))
                    continue
                err = str(g)
            errors.append((i, cid, err))
        hi = lo + len(rows)
        packs = packed_batches([len(g[K.ATOMIC_NUMBERS]) for g in graphs],
                               self.limits["max_atoms"], self.limits["max_structures"],
                               [g[K.EDGE_INDEX].shape[1] for g in graphs],
                               self.limits["max_edges"]) if graphs else []
        n = max(len(packs), 1)
        if not packs:
            yield {"block": (lo, hi), "n": n, "batch": None, "rows": [], "errors": errors}
        width = self.head_elements.shape[1]
        for k, idx in enumerate(packs):
            # as NumPy arrays: a worker hands them over through its pipe in one pickle, where
            # tensors would each get a shared-memory segment
            batch = {key: v.numpy() for key, v in
                     collate([graphs[j] for j in idx], self.dtype).items()}
            # (S, MAX_Z + 1) element counts of the batch's structures, in one pass
            counts = np.bincount(batch[K.BATCH] * width + batch[K.ATOMIC_NUMBERS],
                                 minlength=len(idx) * width).reshape(len(idx), width)
            # a head covers a structure when it knows every element of it
            cover = ~((counts > 0)[:, None, :] & ~self.head_elements[None]).any(-1)  # (S, H)
            yield {"block": (lo, hi), "n": n, "errors": errors if k == 0 else [],
                   "batch": batch, "cover": cover,
                   "rows": [(meta[j][0], meta[j][1], f, int(batch[K.N_ATOMS][r]))
                            for r, (j, f) in enumerate(zip(idx, _formulas(counts),
                                                           strict=True))]}


def _as_is(item: dict) -> dict:
    """Items pass through the DataLoader unchanged (its default conversion walks every row)."""
    return item


def _formulas(counts: np.ndarray) -> list[str]:
    """Formula of each row of an (S, MAX_Z + 1) element-count matrix as ase.formula's "hill"
    writes it, e.g. ``C6H4Cl2``, ``H3N``: C, then H, then the other elements alphabetically.
    Each distinct composition is written once."""
    from ase.data import chemical_symbols

    names: dict[bytes, str] = {}
    out = []
    for row in counts:
        key = row.tobytes()
        if key not in names:
            n = {chemical_symbols[a]: int(row[a]) for a in np.flatnonzero(row)}
            first = [k for k in ("C", "H") if k in n]
            order = first + sorted(k for k in n if k not in first)
            names[key] = "".join(f"{k}{n[k] if n[k] > 1 else ''}" for k in order)
        out.append(names[key])
    return out


class Screener:
    """Screens candidate sources with a force field, its heads and an optional router.

    Args:
        model: a ``ForceField``.
        datasets: the checkpoint's dataset registry (names, ids, training elements per head).
        router: a :class:`~atomgfm.screen.router.Router`, or None for equal weights over the
            heads that know a candidate's elements.
        heads: restrict to these heads (default: all).
    """

    def __init__(self, model, datasets: list[dict], router=None, heads: list[str] | None = None,
                 settings: ScreenSettings | None = None, checkpoint: str = "") -> None:
        from atomgfm.data.structure import MAX_Z

        self.settings = settings or ScreenSettings()
        self.device = resolve_device(self.settings.device)
        self.dtype = param_dtype(self.settings.precision)
        if self.settings.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be 'auto', 'on' or 'off', got "
                             f"{self.settings.compile!r}")
        if self.settings.cuda_graphs and (self.settings.compile == "off"
                                          or self.device.type != "cuda"):
            raise ValueError("cuda_graphs needs compile 'on' or 'auto' and a CUDA device")
        # a frozen inference copy: the caller's model is left as it is
        self.model = screening_model(model, self.device, self.dtype)
        self.compiled = False
        table = {d["name"]: d for d in datasets}
        self.heads = list(heads) if heads else [d["name"] for d in sorted(datasets,
                                                                          key=lambda d: d["id"])]
        unknown = [h for h in self.heads if h not in table]
        if unknown:
            raise KeyError(f"unknown head(s) {unknown}; the model has {sorted(table)}")
        self.head_elements = np.zeros((len(self.heads), MAX_Z + 1), dtype=bool)
        for k, h in enumerate(self.heads):
            self.head_elements[k, table[h]["elements"]] = True
        self.router = router.to(self.device) if router is not None else None
        if self.router is not None:
            missing = [h for h in self.heads if h not in self.router.heads]
            if missing:
                raise ValueError(f"the router has no output for head(s) {missing}")
            self.router_cols = [self.router.heads.index(h) for h in self.heads]
        self.checkpoint = str(checkpoint)

    @classmethod
    def from_checkpoint(cls, path: str | Path, settings: ScreenSettings | None = None,
                        heads: list[str] | None = None, use_router: bool = True) -> Screener:
        from atomgfm.models.checkpoint import load_model
        from atomgfm.screen.router import load_router

        model, state = load_model(path)
        router = load_router(state) if use_router else None
        if use_router and router is None:
            log.warning("%s has no router (atomgfm router fit): equal weights over the heads "
                        "that know each candidate's elements", path)
        return cls(model, state["datasets"], router, heads, settings, str(path))

    def weights(self, batch: dict[str, torch.Tensor], cover: torch.Tensor) -> torch.Tensor:
        """(S, H) float64 router weights, zero for heads that do not know the elements, each
        row renormalised (all-zero rows stay zero)."""
        if self.router is None:
            w = torch.ones(cover.shape, dtype=torch.float64, device=self.device)
        else:
            w = self.router.weights(batch)[:, self.router_cols]
        w = w * cover.to(self.device)
        total = w.sum(-1, keepdim=True)
        return w / torch.where(total > 0, total, torch.ones_like(total))

    def score(self, batch: dict[str, torch.Tensor], cover: torch.Tensor) -> dict[str, np.ndarray]:
        """One collated batch -> result columns (NumPy) for its structures."""
        s = self.settings
        batch = {k: v.to(self.device) for k, v in batch.items()}
        w = self.weights(batch, cover)
        unknown = ~cover.to(self.device).any(-1)
        w_eval = torch.where(unknown.unsqueeze(-1), torch.ones_like(w), w)  # scored, then NaN
        with autocast(s.precision, self.device):
            out = blend(self.model, batch, w_eval, self.heads, s.threshold, s.forces)
        n = batch[K.N_ATOMS].to(torch.float64)
        head_pa = out[K.HEAD_ENERGY] / n.unsqueeze(-1)
        rel = (out[K.HEAD_ENERGY] - out["head_reference"]) / n.unsqueeze(-1)
        wk = out[K.HEAD_WEIGHTS]
        rel0 = torch.nan_to_num(rel)
        rel_blend = (wk * rel0).sum(-1)
        spread = torch.sqrt((wk * (rel0 - rel_blend.unsqueeze(-1)) ** 2).sum(-1))
        energy = torch.where(unknown, torch.full_like(out[K.ENERGY], float("nan")), out[K.ENERGY])
        cols = {"energy": energy, "energy_per_atom": energy / n,
                "relative_energy_per_atom": torch.where(unknown, energy, rel_blend),
                "spread": torch.where(unknown, energy, spread)}
        if s.forces:
            fnorm = torch.linalg.vector_norm(out[K.FORCES].detach().to(torch.float64), dim=-1)
            fmax = torch.zeros_like(n).scatter_reduce(0, batch[K.BATCH], fnorm, "amax")
            cols["fmax"] = torch.where(unknown, energy, fmax)
        for k, h in enumerate(self.heads):
            kept = out["kept"][:, k] & ~unknown
            cols[f"e_{h}"] = torch.where(kept, head_pa[:, k], torch.full_like(n, float("nan")))
            cols[f"w_{h}"] = torch.where(unknown, torch.zeros_like(n), wk[:, k])
        cols["low_confidence"] = w.max(-1).values < s.confidence
        cols["unknown_elements"] = unknown
        return {k: v.detach().cpu().numpy() for k, v in cols.items()}

    def _empty_columns(self) -> list[str]:
        names = ["energy", "energy_per_atom", "relative_energy_per_atom", "spread"]
        return names + (["fmax"] if self.settings.forces else []) + [
            f"{p}_{h}" for h in self.heads for p in ("e", "w")]

    def manifest(self, source) -> dict:
        s = asdict(self.settings)
        for k in ("progress", "workers", "device", "max_atoms", "max_edges", "max_structures",
                  "compile", "cuda_graphs"):
            s.pop(k)  # these may change between a run and its resume
        return {"checkpoint": self.checkpoint, "heads": self.heads, "source": source.describe(),
                "router": self.router is not None, "settings": s}

    def run(self, source, out: str | Path, rank: int | None = None, world: int | None = None,
            on_chunk: Callable[[Path], None] | None = None) -> dict:
        """Screen ``source`` into ``out``; resumes from the chunks there. Returns a summary."""
        s = self.settings
        rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} not in 0..{world - 1}")
        if s.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {s.chunk_size}")
        if isinstance(source, list | tuple):
            source = AtomsCandidates(source)
        if not hasattr(source, "items"):
            from atomgfm.screen.generate import CandidateGenerator

            if not isinstance(source, CandidateGenerator):
                raise TypeError("source must be a CandidateGenerator, a list of ASE Atoms or a "
                                "candidate source")
            source = GeneratedCandidates(source)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            R.write_manifest(out, self.manifest(source))
            if R.clean_temporaries(out):
                log.info("removed chunk temp files of an interrupted run")
        done = R.done_chunks(out)
        limits = {**batch_limits(self.device.type, s.forces),
                  **{k: v for k, v in (("max_atoms", s.max_atoms), ("max_edges", s.max_edges),
                                       ("max_structures", s.max_structures)) if v}}
        total = None
        try:
            n = len(source)
            blocks = [b for b in range((n + s.chunk_size - 1) // s.chunk_size)
                      if b % world == rank and b * s.chunk_size not in done]
            total = sum(min((b + 1) * s.chunk_size, n) - b * s.chunk_size for b in blocks)
        except TypeError:
            pass
        if not self.compiled and (s.compile == "on" or (
                s.compile == "auto" and total is not None and total >= AUTO_COMPILE_MIN)):
            compile_backbone(self.model, s.cuda_graphs)
            self.compiled = True
        data = _Batches(source, s.chunk_size, rank, world, set(done), self.model.cutoff,
                        frozenset(self.model.backbone.needs), self.dtype, self.head_elements,
                        limits)
        loader = DataLoader(data, batch_size=None, collate_fn=_as_is, num_workers=s.workers,
                            prefetch_factor=4 if s.workers else None,
                            persistent_workers=False)
        pending: dict[int, dict] = {}
        n_scored = n_errors = n_chunks = 0
        t0 = time.perf_counter()
        bar = tqdm(total=total, desc=f"screen rank {rank}" if world > 1 else "screen",
                   unit=" structures", disable=not s.progress, smoothing=0.1)
        try:
            for item in loader:
                lo, hi = item["block"]
                p = pending.setdefault(lo, {"hi": hi, "left": item["n"], "parts": []})
                if item["batch"] is not None:
                    batch = {k: torch.from_numpy(v) for k, v in item["batch"].items()}
                    cols = self.score(batch, torch.from_numpy(item["cover"]))
                    p["parts"].append((item["rows"], cols))
                    n_scored += len(item["rows"])
                for e in item["errors"]:
                    p["parts"].append(([(e[0], e[1], "", 0)], {"error": e[2]}))
                    n_errors += 1
                bar.update(len(item["rows"]) + len(item["errors"]))
                p["left"] -= 1
                if p["left"] == 0:
                    path = R.write_chunk(out, lo, p["hi"], self._columns(pending.pop(lo)))
                    n_chunks += 1
                    if on_chunk is not None:
                        on_chunk(path)
        finally:
            bar.close()
        dt = time.perf_counter() - t0
        return {"scored": n_scored, "errors": n_errors, "chunks": n_chunks,
                "skipped_chunks": len(done), "seconds": dt,
                "structures_per_s": (n_scored + n_errors) / dt if dt > 0 else 0.0}

    def _columns(self, block: dict) -> dict:
        """Rows of a finished block in index order, every column present."""
        names = self._empty_columns()
        idx, ids, formulas, natoms, errs = [], [], [], [], []
        values = {k: [] for k in names + ["low_confidence", "unknown_elements"]}
        for rows, cols in block["parts"]:
            m = len(rows)
            for i, cid, formula, na in rows:
                idx.append(i)
                ids.append(cid)
                formulas.append(formula)
                natoms.append(na)
            err = cols.get("error")
            errs.extend([err] * m)
            for k in values:
                default = False if k in ("low_confidence", "unknown_elements") else np.nan
                values[k].append(cols[k] if k in cols else np.full(m, default))
        order = np.argsort(idx, kind="stable")
        table = {"index": np.asarray(idx, dtype=np.int64)[order],
                 "id": [ids[i] for i in order], "formula": [formulas[i] for i in order],
                 "n_atoms": np.asarray(natoms, dtype=np.int32)[order]}
        for k, parts in values.items():
            table[k] = np.concatenate(parts)[order]
        table["error"] = [errs[i] for i in order]
        return table
