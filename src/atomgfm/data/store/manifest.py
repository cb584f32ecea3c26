"""A finished store on disk: its manifest, per-entry arrays and shard integrity checks.

    STORE/
      spec.json                      the conversion's spec (data section, cutoff, shard size)
      shards/d000-000000.bp/         one BP5 folder per shard (``shard.py``)
      shards/d000-000000.json        written after the shard is verified and renamed: its digest,
                                     per-record sizes, content hashes and training-split sums
      entries/*.npy                  per entry (stream order): n_atoms, n_edges, dataset, split
                                     (0 train, 1 val), shard, row, hash (16 bytes)
      manifest.json                  written last: datasets (the registry table), statistics,
                                     shards with digests; a store without it is unfinished

Entry arrays are memory-mapped, so opening a store reads only the JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomgfm.data.stats import GraphStats
from atomgfm.data.store.partials import Partial
from atomgfm.data.store.shard import ShardError, shard_digest

FORMAT = "atomgfm-store"
VERSION = 1
ENTRY_FIELDS = ("n_atoms", "n_edges", "dataset", "split", "shard", "row", "hash")
TRAIN, VAL = 0, 1


class StoreError(ValueError):
    """A store is unfinished, inconsistent or does not match the run; the message names it."""


def write_json(path: Path, obj) -> None:
    """Atomic: a temporary file beside ``path``, fsynced, then renamed over it."""
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_npy(path: Path, a: np.ndarray) -> None:
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}.npy"
    np.save(tmp, a)
    os.replace(tmp, path)


@dataclass
class Store:
    """An opened store: ``manifest`` (the JSON), ``entries`` (memory-mapped arrays)."""

    root: Path
    manifest: dict
    entries: dict[str, np.ndarray]

    @classmethod
    def open(cls, root: str | os.PathLike) -> Store:
        root = Path(root)
        path = root / "manifest.json"
        if not root.is_dir():
            raise StoreError(f"{root}: no such store (not a folder)")
        if not path.exists():
            hint = ("preprocessing did not finish: run `atomgfm data preprocess` again with the "
                    "same spec and --out to resume" if (root / "spec.json").exists()
                    else "not an atomgfm store (no manifest.json)")
            raise StoreError(f"{root}: {hint}")
        try:
            manifest = json.loads(path.read_text())
        except ValueError as exc:
            raise StoreError(f"{path}: not valid JSON ({exc})") from None
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{path}: not an atomgfm store manifest")
        if manifest.get("version") != VERSION:
            raise StoreError(f"{path}: store version {manifest.get('version')}, this atomgfm "
                             f"reads version {VERSION}: preprocess again")
        entries = {}
        for name in ENTRY_FIELDS:
            f = root / "entries" / f"{name}.npy"
            if not f.exists():
                raise StoreError(f"{f}: missing (the store is incomplete)")
            entries[name] = np.load(f, mmap_mode="r")
        n = int(manifest["n_entries"])
        bad = [k for k, a in entries.items() if len(a) != n]
        if bad:
            raise StoreError(f"{root}: entry arrays {bad} do not have the manifest's {n} entries")
        return cls(root, manifest, entries)

    @property
    def cutoff(self) -> float:
        return float(self.manifest["cutoff"])

    @property
    def datasets(self) -> list[dict]:
        return self.manifest["datasets"]

    @property
    def shards(self) -> list[dict]:
        return self.manifest["shards"]

    def shard_path(self, name: str, root: Path | None = None) -> Path:
        return (root or self.root) / "shards" / f"{name}.bp"

    def indices(self, dataset: int, split: int) -> np.ndarray:
        """Entry indices of one split of one dataset (store ids), in stream order."""
        return np.flatnonzero((np.asarray(self.entries["dataset"]) == dataset)
                              & (np.asarray(self.entries["split"]) == split))

    def verify(self, names: list[str] | None = None, root: Path | None = None,
               progress: bool = False) -> None:
        """Recompute shard digests against the manifest; a mismatch is a :class:`ShardError`
        naming the shard."""
        from tqdm.auto import tqdm

        wanted = {s["name"]: s for s in self.shards}
        for name in tqdm(names if names is not None else list(wanted), desc="verify shards",
                         disable=not progress, leave=False):
            check_shard(self.shard_path(name, root), wanted[name]["digest"])

    def graph_stats(self, dataset_ids: list[int]) -> GraphStats:
        """GraphStats of the training splits of these datasets (store ids)."""
        p = Partial()
        for i in dataset_ids:
            p = p.merge(Partial.from_dict(self.datasets[i]["train_sums"]))
        if p.n_atoms == 0:
            raise StoreError(f"{self.root}: no training graphs in datasets {dataset_ids}")
        return GraphStats(p.element_list(), p.n_edges / p.n_atoms, p.degree.tolist(),
                          p.n_atoms, p.n_edges)


def check_shard(path: Path, digest: str) -> None:
    """Raise :class:`ShardError` naming ``path`` unless its digest is ``digest``."""
    if not path.is_dir():
        raise ShardError(f"{path}: shard missing")
    found = shard_digest(path)
    if found != digest:
        raise ShardError(f"{path}: hash check failed (manifest {digest[:16]}…, found "
                         f"{found[:16]}…): the shard is corrupted or truncated; run "
                         "`atomgfm data preprocess` again with the same spec and --out to redo "
                         "it")


def describe(store: Store) -> str:
    """The ``atomgfm data info`` text: datasets, sizes, splits, elements, labels."""
    from ase.data import chemical_symbols

    m = store.manifest
    n_shards = len(store.shards)
    size = sum(f.stat().st_size for f in (store.root / "shards").rglob("*") if f.is_file())
    lines = [f"store {store.root}: {m['n_entries']} structures in {n_shards} shards "
             f"({size / 2**20:.1f} MiB), cutoff {m['cutoff']} Å, neighbour lists "
             f"{'stored' if m['edges'] else 'built when read'}, split val_fraction "
             f"{m['spec']['val_fraction']} (seed {m['spec']['split_seed']}) by content hash",
             f"{'id':>3} {'dataset':<14}{'level of theory':<22}{'train':>8}{'val':>7}"
             f"{'atoms':>10}  {'labels (train/val: E F σ)':<29}elements"]
    n_atoms = np.asarray(store.entries["n_atoms"])
    ds = np.asarray(store.entries["dataset"])
    for d in store.datasets:
        tr, va = d["train_labels"], d["val_labels"]
        labels = " ".join(f"{tr[k]}/{va[k]}" for k in ("energy", "forces", "stress"))
        elements = "".join(chemical_symbols[z] + " " for z in d["elements_all"]).strip()
        lines.append(f"{d['id']:>3} {d['name']:<14}{d['level_of_theory'][:21]:<22}"
                     f"{d['n_train']:>8}{d['n_val']:>7}{int(n_atoms[ds == d['id']].sum()):>10}"
                     f"  {labels:<28} {elements}")
        if d["skipped"]:
            lines.append(f"    skipped: {'; '.join(d['skipped'])}")
    return "\n".join(lines)
