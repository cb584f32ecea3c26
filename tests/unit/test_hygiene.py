"""Library hygiene the issue tracker asked for, checked on the source and on behaviour."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import torch

import atomgfm

SRC = Path(atomgfm.__file__).parent


def _imports(package: str) -> dict[str, set[str]]:
    """{file: modules it imports} for every module of ``atomgfm.<package>``."""
    out = {}
    for path in (SRC / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        out[str(path.relative_to(SRC))] = names
    return out


def test_prediction_needs_no_trainer():
    """inference/, calculators/ and models/ import nothing from train/."""
    for package in ("inference", "calculators", "models"):
        for path, names in _imports(package).items():
            bad = sorted(n for n in names if n.startswith("atomgfm.train"))
            assert not bad, f"{path} imports {bad}"


def test_core_data_package_does_not_import_the_demo():
    for path, names in _imports("data").items():
        assert not any(n.startswith("atomgfm.demo") for n in names), path


def test_library_logs_instead_of_printing():
    """print() only in the CLI, whose output is the command's result."""
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                raise AssertionError(f"{rel}:{node.lineno} calls print()")


def test_training_leaves_the_global_random_generators_alone(tmp_path):
    from atomgfm.config.schema import config_from_dict
    from atomgfm.testing.fixtures import tiny_datasets
    from atomgfm.train.loop import Trainer

    datasets = tiny_datasets(n_bulk=6, n_clusters=4)
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    cfg = config_from_dict({
        "model": {"preset": "S", "backbone_kwargs": {"cutoff": 4.0}},
        "train": {"out_dir": str(tmp_path), "max_steps": 2, "eval_every": 2, "log_every": 1,
                  "progress": False}})
    Trainer.from_config(cfg, datasets).fit()
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]
