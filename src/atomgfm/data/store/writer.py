"""``preprocess``: the datasets of a data config → a sharded ADIOS2 store (see ``manifest.py``).

    preprocess(cfg.data, cutoff=4.5, out="store", workers=2)

Each source of a dataset (a path of its ``path`` list: a file, or a folder of files; any
registered reader, through ``iter_structures``) is one unit of work: one process reads it and
cuts its records, in stream order, into shards of ``shard_size`` records; shard k of source s of
dataset d is always the same records, so the work is resumable shard by shard, and sources are
read in parallel (``workers``). For each shard the worker builds the graphs at ``cutoff`` (edge
counts for the manifest; the neighbour lists themselves when ``edges``), writes the shard under
a temporary name, reads it back and compares, renames it, and only then records it in a side file
with its digest and the sums of its training records (``partials.py``). A rerun skips recorded
shards whose digest still matches and redoes the rest; nothing half-written ever looks complete.
When every shard is recorded, ``finalize`` merges the side files into the entry arrays, the
reference fit and the statistics, and writes ``manifest.json`` last.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import shutil
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from atomgfm.config.schema import DataConfig
from atomgfm.data.graph import structure_to_graph
from atomgfm.data.readers import iter_structures
from atomgfm.data.sources import dataset_paths, file_digest
from atomgfm.data.store.manifest import (
    ENTRY_FIELDS,
    FORMAT,
    TRAIN,
    VAL,
    VERSION,
    StoreError,
    check_shard,
    write_json,
    write_npy,
)
from atomgfm.data.store.partials import Partial
from atomgfm.data.store.shard import ShardError, ShardReader, shard_arrays, write_verified
from atomgfm.data.store.splits import HASH_BYTES, content_hash, forced_moves, split_value
from atomgfm.data.structure import Structure

log = logging.getLogger(__name__)
LOADER_KEYS = ("loader_workers", "prefetch", "store", "stage_dir", "verify_store")


class PreprocessInterrupted(RuntimeError):
    """Raised by ``stop_after_shards`` (tests of resumption): the conversion stopped early."""


def store_spec(cfg: DataConfig, cutoff: float, shard_size: int, edges: bool) -> dict:
    """What the store's contents depend on; a resumed conversion must have the same."""
    data = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in LOADER_KEYS}
    return {"data": data, "cutoff": float(cutoff), "shard_size": int(shard_size),
            "edges": bool(edges), "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed}


def _chunks(stream, size: int) -> Iterator[list[Structure]]:
    chunk: list[Structure] = []
    for s in stream:
        chunk.append(s)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def convert_shard(shards_dir: str, name: str, ds_id: int, dataset: str,
                  records: list[Structure], cutoff: float, edges: bool, val_fraction: float,
                  split_seed: int) -> int:
    """Build graphs, write and verify one shard, then record it (runs in a worker)."""
    shards_dir = Path(shards_dir)
    graphs = [structure_to_graph(s, cutoff, ds_id) for s in records]
    digest = write_verified(shards_dir / f"{name}.bp",
                            shard_arrays(records, graphs if edges else None), cutoff)
    hashes = [content_hash(s) for s in records]
    u = [split_value(h, split_seed) for h in hashes]
    train = Partial()
    val_labels = {"energy": 0, "forces": 0, "stress": 0}
    elements: set[int] = set()
    for s, g, uu in zip(records, graphs, u, strict=True):
        elements.update(int(z) for z in np.unique(s.numbers))
        if uu >= val_fraction:
            train.add(s, g)
        else:
            for k in val_labels:
                val_labels[k] += getattr(s, k) is not None
    write_json(shards_dir / f"{name}.json", {
        "name": name, "dataset": dataset, "dataset_id": ds_id, "n": len(records),
        "digest": digest, "n_atoms": [s.n_atoms for s in records],
        "n_edges": [int(g["edge_index"].shape[1]) for g in graphs],
        "hash": [h.hex() for h in hashes], "u": u, "train": train.to_dict(),
        "val_labels": val_labels, "elements": sorted(elements)})
    return len(records)


def _completed(shards_dir: Path) -> dict[str, dict]:
    """Recorded shards whose digest still matches; others (and temporary folders) removed."""
    done = {}
    for p in sorted(shards_dir.glob(".tmp-*")):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    for side in sorted(shards_dir.glob("*.json")):
        rec = json.loads(side.read_text())
        try:
            check_shard(shards_dir / f"{rec['name']}.bp", rec["digest"])
        except ShardError as exc:
            log.warning("%s; redoing it", exc)
            side.unlink()
            shutil.rmtree(shards_dir / f"{rec['name']}.bp", ignore_errors=True)
            continue
        done[rec["name"]] = rec
    for bp in sorted(shards_dir.glob("*.bp")):  # renamed but never recorded: redo
        if bp.stem not in done:
            shutil.rmtree(bp)
    return done


_PROGRESS = None  # a worker's queue for per-shard progress (set by the pool initializer)


def _init_worker(queue) -> None:
    global _PROGRESS
    _PROGRESS = queue


@dataclasses.dataclass
class Unit:
    """One source (file or folder) of one dataset: read, cut into shards and written by one
    process; shard ``d{dataset:03d}-{source:04d}-{k:06d}`` holds its records k·size … ."""

    ds_id: int
    source_id: int
    dataset: dict  # DatasetConfig as a dict (plain data crosses the process boundary)
    path: str
    on_error: str


def convert_unit(unit: Unit, shards_dir: str, done: dict[str, int], cutoff: float,
                 edges: bool, shard_size: int, val_fraction: float, split_seed: int,
                 stop_after_shards: int | None = None, bar=None) -> dict:
    """Read one source and write its shards (skipping the ``done`` ones: name → records).

    Returns the records read, the new shards, the files read and the skip report."""
    dc = unit.dataset
    stream = iter_structures(unit.path, dataset=dc["name"], format=dc["format"],
                             energy_unit=dc["energy_unit"], length_unit=dc["length_unit"],
                             on_error=unit.on_error, reader_options=dc["reader_options"])
    n = new = 0
    with stream:
        for k, chunk in enumerate(_chunks(stream, shard_size)):
            name = f"d{unit.ds_id:03d}-{unit.source_id:04d}-{k:06d}"
            n += len(chunk)
            if name in done:
                if done[name] != len(chunk):
                    raise StoreError(f"{shards_dir}/{name}.bp: recorded with {done[name]} "
                                     f"records but {unit.path} now gives {len(chunk)} for it: "
                                     "the input files changed; start a new store")
            else:
                convert_shard(shards_dir, name, unit.ds_id, dc["name"], chunk, cutoff, edges,
                              val_fraction, split_seed)
                new += 1
            if bar is not None:
                bar.update(len(chunk))
            elif _PROGRESS is not None:
                _PROGRESS.put(len(chunk))
            if stop_after_shards is not None and new >= stop_after_shards:
                raise PreprocessInterrupted(f"stopped after {new} new shards")
    skipped = str(stream.skipped) if stream.skipped.total else ""
    if skipped:
        log.warning("dataset %s: %s", dc["name"], skipped)
    return {"n": n, "new": new, "files": list(stream.files), "skipped": skipped}


def preprocess(cfg: DataConfig, cutoff: float, out: str | Path, *, workers: int = 1,
               shard_size: int = 2048, edges: bool = True, progress: bool = True,
               stop_after_shards: int | None = None) -> Path:
    """Convert the datasets of ``cfg`` into a store at ``out`` (resuming one that is there).

    The unit of work is one source (a path of a dataset's ``path`` list: a file or a folder);
    with ``workers`` > 1, sources are read, converted and written in parallel processes.

    Args:
        cfg: the data section (datasets, root, val_fraction, split_seed, on_error).
        cutoff: graph cutoff (Å) for edge counts and stored neighbour lists.
        workers: processes reading sources and writing their shards (1: this process).
        shard_size: records per shard.
        edges: store neighbour lists (otherwise they are built when read).
        stop_after_shards: stop (``PreprocessInterrupted``) after this many new shards, with
            one worker; for tests of resumption.
    """
    if not cfg.datasets:
        raise ValueError("data.datasets is empty: name at least one dataset to preprocess")
    if shard_size < 1 or workers < 1:
        raise ValueError("shard_size and workers must be >= 1")
    out = Path(out)
    shards_dir = out / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    spec = store_spec(cfg, cutoff, shard_size, edges)
    spec_path = out / "spec.json"
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        new = json.loads(json.dumps(spec))
        if old != new:
            differ = sorted({k for k in {**old, **new} if old.get(k) != new.get(k)} - {"data"}
                            | {f"data.{k}" for k in {**old["data"], **new["data"]}
                               if old["data"].get(k) != new["data"].get(k)})
            raise StoreError(f"{out}: holds a conversion of a different spec (spec.json differs "
                             f"in {', '.join(differ)}); choose a new --out, or delete the folder "
                             "to start over")
    else:
        write_json(spec_path, spec)
    (out / "manifest.json").unlink(missing_ok=True)  # rewritten when every shard is verified
    done = {name: rec["n"] for name, rec in _completed(shards_dir).items()}
    if done:
        log.info("%s: resuming, %d shards already complete", out, len(done))
    units = [Unit(ds_id, k, dataclasses.asdict(dc), str(path), cfg.on_error)
             for ds_id, dc in enumerate(cfg.datasets)
             for k, path in enumerate(dataset_paths(cfg, dc))]
    common = (str(shards_dir), done, cutoff, edges, shard_size, cfg.val_fraction,
              cfg.split_seed)
    bar = tqdm(desc="preprocess", unit=" structures", disable=not progress)
    results: dict[int, dict] = {}
    try:
        if workers == 1:
            for i, unit in enumerate(units):
                results[i] = convert_unit(unit, *common, stop_after_shards=stop_after_shards,
                                          bar=bar)
                if stop_after_shards is not None:
                    stop_after_shards -= results[i]["new"]
        else:
            results = _run_pool(units, common, workers, bar)
    finally:
        bar.close()
    skipped: dict[str, list[str]] = {dc.name: [] for dc in cfg.datasets}
    files: dict[str, list[str]] = {dc.name: [] for dc in cfg.datasets}
    for i, unit in enumerate(units):
        name = unit.dataset["name"]
        files[name].extend(results[i]["files"])
        if results[i]["skipped"]:
            skipped[name].append(results[i]["skipped"])
    finalize(out, cfg, cutoff, edges, spec, skipped, files)
    return out


def _run_pool(units: list[Unit], common: tuple, workers: int, bar) -> dict[int, dict]:
    """Units in ``workers`` spawned processes; progress arrives shard by shard on a queue."""
    ctx = multiprocessing.get_context("spawn")  # never inherit torch/OpenMP threads or files
    queue = ctx.Queue()
    results = {}
    with ProcessPoolExecutor(min(workers, len(units)), mp_context=ctx,
                             initializer=_init_worker, initargs=(queue,)) as pool:
        futures = {pool.submit(convert_unit, unit, *common): i for i, unit in enumerate(units)}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    bar.update(queue.get())
                for f in finished:
                    results[futures[f]] = f.result()
        finally:
            for f in pending:
                f.cancel()
    while not queue.empty():
        bar.update(queue.get())
    return results


def finalize(out: Path, cfg: DataConfig, cutoff: float, edges: bool, spec: dict,
             skipped: dict[str, list[str]], files: dict[str, list[str]]) -> None:
    """Merge the shard side files into entries, the dataset table and statistics."""
    shards_dir = out / "shards"
    sides = sorted((json.loads(p.read_text()) for p in shards_dir.glob("*.json")),
                   key=lambda r: r["name"])
    cols: dict[str, list] = {k: [] for k in ENTRY_FIELDS}
    table, shard_rows = [], []
    for ds_id, dc in enumerate(cfg.datasets):
        mine = [r for r in sides if r["dataset_id"] == ds_id]
        if not mine:
            raise StoreError(f"{out}: dataset {dc.name!r} has no records")
        start = len(shard_rows)
        shard_rows.extend(mine)
        u = np.concatenate([r["u"] for r in mine])
        split = np.where(u < cfg.val_fraction, VAL, TRAIN).astype(np.int8)
        train = Partial()
        for r in mine:
            train = train.merge(Partial.from_dict(r["train"]))
        val_labels = {k: sum(r["val_labels"][k] for r in mine) for k in train.labels}
        shard_of = np.concatenate([np.full(r["n"], start + j) for j, r in enumerate(mine)])
        row = np.concatenate([np.arange(r["n"]) for r in mine])
        to_val, to_train = forced_moves(u, cfg.val_fraction)
        for e, sign, target in ((to_val, -1, VAL), (to_train, 1, TRAIN)):
            if e is None:
                continue
            reader = ShardReader(shards_dir / f"{shard_rows[shard_of[e]]['name']}.bp")
            s = reader.structure(int(row[e]))
            reader.close()
            train.add(s, structure_to_graph(s, cutoff, ds_id), sign)
            for k in val_labels:
                val_labels[k] -= sign * (getattr(s, k) is not None)
            split[e] = target
        cols["n_atoms"].append(np.concatenate([r["n_atoms"] for r in mine]))
        cols["n_edges"].append(np.concatenate([r["n_edges"] for r in mine]))
        cols["dataset"].append(np.full(len(u), ds_id))
        cols["split"].append(split)
        cols["shard"].append(shard_of)
        cols["row"].append(row)
        cols["hash"].append(np.array([np.frombuffer(bytes.fromhex(h), np.uint8)
                                      for r in mine for h in r["hash"]]))
        norm = train.normalization(dc.name)
        table.append({
            "name": dc.name, "id": ds_id, "level_of_theory": dc.level_of_theory,
            "labels": {k: v > 0 for k, v in train.labels.items()},
            "elements": train.element_list(), "states": train.state_list(),
            "normalization": norm.to_dict(),
            "provenance": file_digest([Path(f) for f in files.get(dc.name, [])]),
            "n_train": int((split == TRAIN).sum()), "n_val": int((split == VAL).sum()),
            "skipped": skipped.get(dc.name, []),
            "weights": {"energy": dc.energy_weight, "forces": dc.forces_weight,
                        "stress": dc.stress_weight},
            "train_labels": train.labels, "val_labels": val_labels,
            "elements_all": sorted({z for r in mine for z in r["elements"]}),
            "train_sums": train.to_dict()})
    dtypes = {"n_atoms": np.int32, "n_edges": np.int64, "dataset": np.int16, "split": np.int8,
              "shard": np.int32, "row": np.int32, "hash": np.uint8}
    (out / "entries").mkdir(exist_ok=True)
    n = 0
    for k in ENTRY_FIELDS:
        a = np.concatenate(cols[k]).astype(dtypes[k])
        if k == "hash":
            a = a.reshape(-1, HASH_BYTES)
        n = len(a)
        write_npy(out / "entries" / f"{k}.npy", a)
    write_json(out / "manifest.json", {
        "format": FORMAT, "version": VERSION, "cutoff": float(cutoff), "edges": bool(edges),
        "spec": spec, "n_entries": n, "datasets": table,
        "shards": [{"name": r["name"], "dataset": r["dataset"], "n": r["n"],
                    "digest": r["digest"]} for r in shard_rows]})
