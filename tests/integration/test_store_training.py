"""Training streams from a store exactly as from the files it was made of: same splits, same
batches, same losses, with or without DataLoader workers; evaluation reads the store too."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT

from atomgfm.config.schema import config_from_dict
from atomgfm.data.store.writer import preprocess
from atomgfm.inference.evaluate import evaluate_checkpoint
from atomgfm.testing.fixtures import emt_bulk, emt_clusters
from atomgfm.train.loop import Trainer

pytest.importorskip("adios2")
MODEL = {"backbone_kwargs": {"num_features": 8, "num_layers": 1, "cutoff": 4.0, "num_rbf": 6}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two EMT-labelled extxyz datasets and the store preprocessed from them."""
    root = tmp_path_factory.mktemp("corpus")
    for name, frames in (("bulk", emt_bulk(14, 0)), ("clusters", emt_clusters(10, 1, size=4))):
        for a in frames:
            a.calc = EMT()
            a.get_potential_energy()
        ase.io.write(root / f"{name}.extxyz", frames, format="extxyz")
    data = {"root": str(root), "val_fraction": 0.25, "max_atoms_per_batch": 24,
            "datasets": [{"name": "bulk", "path": "bulk.extxyz"},
                         {"name": "clusters", "path": "clusters.extxyz"}]}
    cfg = _cfg(root / "unused", data)
    preprocess(cfg.data, 4.0, root / "store", shard_size=4, progress=False)
    return root, data


def _cfg(out, data, **train):
    return config_from_dict({"model": MODEL, "data": data,
                             "train": {"out_dir": str(out), "max_steps": 4, "eval_every": 4,
                                       "log_every": 2, "progress": False, "warmup_steps": 1,
                                       "precision": "fp64", "ema_decay": None, **train}})


def _losses(trainer, n):
    return [trainer.train_step()["loss"] for _ in range(n)]


def test_store_training_matches_files_with_and_without_loader_workers(corpus, tmp_path):
    root, data = corpus
    from_files = Trainer.from_config(_cfg(tmp_path / "f", data))
    store = {**data, "store": "store", "datasets": []}
    from_store = Trainer.from_config(_cfg(tmp_path / "s", store))
    workers = Trainer.from_config(_cfg(tmp_path / "w", {**store, "loader_workers": 1,
                                                        "prefetch": 2}))
    assert from_files.data.datasets is not None and from_store.data.datasets is None
    for key in ("name", "n_train", "n_val", "elements", "labels"):
        assert [d[key] for d in from_files.table] == [d[key] for d in from_store.table]
    expected = _losses(from_files, 5)
    assert _losses(from_store, 5) == pytest.approx(expected, rel=1e-12, abs=0)
    assert _losses(workers, 5) == pytest.approx(expected, rel=1e-12, abs=0)
    assert workers.sampler.state_dict() == from_files.sampler.state_dict()  # used, not prefetched
    a = from_files.evaluate().compute()
    b = from_store.evaluate().compute()
    for name in a:
        for key, value in a[name].items():
            assert b[name][key] == pytest.approx(value, rel=1e-9)


def test_evaluate_checkpoint_of_a_store_run_streams_the_store(corpus, tmp_path):
    root, data = corpus
    cfg = _cfg(tmp_path / "run", {**data, "store": "store"}, max_steps=2, eval_every=2)
    trainer = Trainer.from_config(cfg)
    metrics = trainer.fit()
    ev = evaluate_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "eval")
    assert set(ev.metrics) == {"bulk", "clusters"}
    for name in metrics:
        assert ev.metrics[name]["forces_mae_meV_A"] == pytest.approx(
            metrics[name]["forces_mae_meV_A"], rel=1e-9)
    assert "| bulk |" in ev.table and "| clusters |" in ev.table
    assert np.isfinite(ev.metrics["bulk"]["energy_mae_meV_atom"])
