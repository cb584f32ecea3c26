"""The store's round-trip contract, for any reader: a file's records come back from the store
exactly (positions, numbers, cell, pbc, labels, charge, spin; units converted by the reader), and
the store's graph sources give exactly the graphs the file path builds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from atomgfm.config.schema import DataConfig, DatasetConfig
from atomgfm.data.readers import read_structures
from atomgfm.data.sources import prepare_data
from atomgfm.data.store.manifest import Store
from atomgfm.data.store.shard import ShardReader
from atomgfm.data.store.writer import preprocess


def assert_store_round_trip(path: str | Path, work: str | Path, cutoff: float = 4.0,
                            shard_size: int = 5, **dataset_options) -> list:
    """Preprocess ``path`` (a dataset spec's ``dataset_options``: format, reader_options, units)
    into a store under ``work``, check the contract, and return the records read back."""
    work = Path(work)
    cfg = DataConfig(datasets=[DatasetConfig(name="set", path=[str(path)], **dataset_options)],
                     val_fraction=0.3)
    result = read_structures(path, dataset="set", **dataset_options)
    ref = result.structures
    preprocess(cfg, cutoff, work / "store", shard_size=shard_size, progress=False)
    store = Store.open(work / "store")
    back = []
    for shard in store.shards:
        reader = ShardReader(store.shard_path(shard["name"]))
        back.extend(reader.structure(r) for r in range(shard["n"]))
        reader.close()
    assert len(back) == len(ref) and len(store.shards) == -(-len(ref) // shard_size)
    for a, b in zip(ref, back, strict=True):
        assert np.array_equal(a.numbers, b.numbers) and np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.cell, b.cell) and np.array_equal(a.pbc, b.pbc)
        assert (a.charge, a.spin, a.energy) == (b.charge, b.spin, b.energy)
        for name in ("forces", "stress"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y), name
    assert store.datasets[0]["skipped"] == ([str(result.skipped)] if result.skipped.total
                                            else [])
    files = prepare_data(cfg, cutoff, progress=False)
    streamed = prepare_data(dataclasses.replace(cfg, store=str(work / "store")), cutoff,
                            progress=False)
    for f_src, s_src in zip(files.train + files.val, streamed.train + streamed.val, strict=True):
        assert np.array_equal(f_src.n_atoms, s_src.n_atoms)
        assert np.array_equal(f_src.n_edges, s_src.n_edges)
        for i in range(len(f_src)):
            g, h = f_src[i], s_src[i]
            assert set(g) == set(h)
            for key in g:
                assert g[key].dtype == h[key].dtype and np.array_equal(g[key], h[key]), key
    return back
