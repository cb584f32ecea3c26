"""Training and evaluation read graphs from a store: a :class:`GraphSource` per split.

    data = prepare_store_data(cfg.data, cutoff=4.5)   # cfg.data.store = "store"
    data.train[0][17]                                 # graph 17 of dataset 0's training split

A source holds only its entries' indices and sizes (from the manifest); records are read when
asked for, one slice per variable, through a per-process cache of open shards (least recently
used closed first, ``max_open_shards``), so memory stays bounded whatever the store size. With
``MixedBatchSampler``'s rank share, a rank only ever reads its own draws. DataLoader workers
(``data.loader_workers``) each open their own shards (the cache is reset in a new process).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from atomgfm.config.schema import DataConfig
from atomgfm.data.store.manifest import TRAIN, VAL, Store, StoreError, check_shard
from atomgfm.data.store.shard import ShardError, ShardReader

log = logging.getLogger(__name__)


class ShardCache:
    """Open :class:`ShardReader` objects of one process, least recently used closed first."""

    def __init__(self, store: Store, root: Path | None = None, max_open_shards: int = 8) -> None:
        self.store, self.root, self.max_open = store, root, max(1, int(max_open_shards))
        self._open: OrderedDict[int, ShardReader] = OrderedDict()
        self._pid = os.getpid()

    def get(self, shard: int) -> ShardReader:
        if self._pid != os.getpid():  # a forked worker: never share the parent's file handles
            self._open, self._pid = OrderedDict(), os.getpid()
        reader = self._open.get(shard)
        if reader is None:
            name = self.store.shards[shard]["name"]
            reader = ShardReader(self.store.shard_path(name, self.root))
            self._open[shard] = reader
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(shard)
        return reader

    def __getstate__(self):  # pickled into spawned workers without open files
        return {"store": self.store, "root": self.root, "max_open": self.max_open}

    def __setstate__(self, state):
        self.__init__(state["store"], state["root"], state["max_open"])


class StoreGraphSource:
    """One split of one dataset of a store, as a :class:`~atomgfm.data.sources.GraphSource`.

    Args:
        store: the opened store.
        store_id: the dataset's id in the store; ``dataset_id``: its id in this run's table.
        split: ``TRAIN`` or ``VAL``.
        cutoff: graph cutoff (Å); the store's (stored edges are used) or another (built on read;
            ``n_edges`` is then the store's count and only a packing estimate).
        needs: extra graph fields (``TRIPLET_INDEX``).
    """

    def __init__(self, store: Store, store_id: int, dataset_id: int, split: int, cutoff: float,
                 needs: frozenset[str] = frozenset(), cache: ShardCache | None = None) -> None:
        self.store, self.dataset_id, self.cutoff = store, int(dataset_id), float(cutoff)
        self.needs = frozenset(needs)
        self.cache = cache or ShardCache(store)
        self.index = store.indices(store_id, split)
        self.n_atoms = np.asarray(store.entries["n_atoms"][self.index], dtype=np.int64)
        self.n_edges = np.asarray(store.entries["n_edges"][self.index], dtype=np.int64)
        self._shard = np.asarray(store.entries["shard"][self.index], dtype=np.int64)
        self._row = np.asarray(store.entries["row"][self.index], dtype=np.int64)
        sums = store.datasets[store_id]["train_sums"]["degree"]
        self.n_isolated_atoms = int(sums[0]) if split == TRAIN and sums else 0

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for {len(self)} entries")
        reader = self.cache.get(int(self._shard[i]))
        return reader.graph(int(self._row[i]), self.dataset_id, self.cutoff, self.needs)

    def shards(self) -> set[int]:
        return set(np.unique(self._shard).tolist())


def stage_shards(store: Store, shard_ids: list[int], dest: str | Path,
                 progress: bool = True) -> Path:
    """Copy shards to ``dest`` (node-local disk), each verified against its manifest digest;
    shards already there with the right digest are kept. Returns ``dest``."""
    dest = Path(dest)
    (dest / "shards").mkdir(parents=True, exist_ok=True)
    for k in tqdm(shard_ids, desc="stage shards", disable=not progress, leave=False):
        rec = store.shards[k]
        target = store.shard_path(rec["name"], dest)
        try:
            check_shard(target, rec["digest"])
            continue
        except ShardError:
            shutil.rmtree(target, ignore_errors=True)
        tmp = dest / "shards" / f".tmp-{rec['name']}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(store.shard_path(rec["name"]), tmp)
        check_shard(tmp, rec["digest"])  # the copy, not only the source, is verified
        os.replace(tmp, target)
    return dest


def prepare_store_data(cfg: DataConfig, cutoff: float, progress: bool = True,
                       needs: frozenset[str] = frozenset()):
    """:class:`~atomgfm.data.sources.PreparedData` streaming from ``cfg.store``.

    ``cfg.datasets``, when given, selects store datasets by name (in that order: it sets the
    run's ids) and their loss weights; otherwise every dataset of the store, in its order. Every
    shard the run reads is checked against its digest first (``verify_store``), or staged to
    ``stage_dir`` and checked there; a bad shard is refused by name.
    """
    from atomgfm.data.sources import PreparedData

    path = Path(cfg.store)
    store = Store.open(path if path.is_absolute() else Path(cfg.root) / path)
    if abs(store.cutoff - cutoff) > 1e-12:
        raise StoreError(f"{store.root}: preprocessed at cutoff {store.cutoff} Å but the model's "
                         f"cutoff is {cutoff} Å (the manifest's edge counts and stored neighbour "
                         "lists are for the store's): preprocess again with this cutoff")
    spec = store.manifest["spec"]
    if (spec["val_fraction"], spec["split_seed"]) != (cfg.val_fraction, cfg.split_seed):
        log.warning("%s: split by val_fraction %s, split_seed %s at preprocessing; the config's "
                    "val_fraction %s, split_seed %s do not apply to a store", store.root,
                    spec["val_fraction"], spec["split_seed"], cfg.val_fraction, cfg.split_seed)
    by_name = {d["name"]: d for d in store.datasets}
    chosen = [d.name for d in cfg.datasets] or [d["name"] for d in store.datasets]
    unknown = [n for n in chosen if n not in by_name]
    if unknown:
        raise StoreError(f"{store.root}: no dataset(s) {unknown} in the store; it has "
                         f"{list(by_name)}")
    table = []
    for run_id, name in enumerate(chosen):
        entry = {k: v for k, v in by_name[name].items()
                 if k not in ("train_sums", "train_labels", "val_labels", "elements_all")}
        entry["id"] = run_id
        entry["states"] = [tuple(x) for x in entry["states"]]
        dc = next((d for d in cfg.datasets if d.name == name), None)
        if dc is not None:
            entry["weights"] = {"energy": dc.energy_weight, "forces": dc.forces_weight,
                                "stress": dc.stress_weight}
            entry["level_of_theory"] = dc.level_of_theory or entry["level_of_theory"]
        table.append(entry)
    store_ids = [by_name[n]["id"] for n in chosen]
    shard_ids = sorted(k for k, s in enumerate(store.shards)
                       if s["dataset"] in set(chosen))
    root = None
    if cfg.stage_dir:
        root = stage_shards(store, shard_ids, cfg.stage_dir, progress)
    elif cfg.verify_store:
        store.verify([store.shards[k]["name"] for k in shard_ids], progress=progress)
    cache = ShardCache(store, root)
    train = [StoreGraphSource(store, s, r, TRAIN, cutoff, needs, cache)
             for r, s in enumerate(store_ids)]
    val = [StoreGraphSource(store, s, r, VAL, cutoff, needs, cache)
           for r, s in enumerate(store_ids)]
    return PreparedData(table, train, val, store.graph_stats(store_ids), float(cutoff), None,
                        frozenset(needs))
