"""The user's path through the command line, on a tiny demo corpus: data -> train -> evaluate."""

from __future__ import annotations

import json

import pytest
import yaml

from atomgfm.cli.main import main

pytest.importorskip("tblite")


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    assert main(["data", "demo", "--out", str(root / "data"), "--scale", "0.02"]) == 0
    specs = yaml.safe_load((root / "data" / "datasets.yaml").read_text())["datasets"]
    cfg = {"data": {"root": "data", "max_atoms_per_batch": 128,
                    "datasets": [{"name": s["name"], "path": s["path"],
                                  "level_of_theory": s["level_of_theory"]} for s in specs]},
           "model": {"backbone_kwargs": {"num_features": 8, "num_layers": 1, "cutoff": 4.0,
                                         "num_rbf": 6}},
           "train": {"out_dir": str(root / "run"), "max_steps": 3, "eval_every": 3,
                     "progress": False}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, root


def test_train_evaluate_info(demo_config, capsys):
    path, root = demo_config
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| mol_dft | PBE/def2-SVP |" in out and "F MAE / F std" in out
    assert (root / "run" / "best.pt").exists()
    assert main(["evaluate", str(root / "run" / "best.pt"), "--out", str(root / "eval")]) == 0
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"alloy_emt", "mol_gfn2", "mol_gfn1", "inorg_gfn1", "mol_dft"}
    assert all("forces_mae_meV_A" in m for m in metrics.values())
    assert "stress_mae_meV_A3" in metrics["alloy_emt"]
    assert len(list((root / "eval").glob("parity_*.png"))) == 5
    capsys.readouterr()
    assert main(["info", str(root / "run" / "best.pt")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in info["datasets"]][-1] == "mol_dft"
    assert info["datasets"][0]["labels"] == {"energy": True, "forces": True, "stress": True}


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {max_stepz: 3}\n")
    assert main(["train", str(path)]) == 2
    assert "unknown key(s) ['max_stepz']" in capsys.readouterr().err


def test_missing_data_file_names_it(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("data: {datasets: [{name: a, path: nope.extxyz}]}\n")
    assert main(["train", str(path)]) == 2
    assert "nope.extxyz" in capsys.readouterr().err


def test_info_without_checkpoint_lists_the_registry(capsys):
    assert main(["info"]) == 0
    registry = json.loads(capsys.readouterr().out)
    assert {"ase", "ase_db", "aselmdb"} <= set(registry["reader"])
    assert registry["reader"]["aselmdb"] == {"suffixes": ".aselmdb", "requires": ["lmdb"]}
    painn = registry["backbone"]["painn"]
    assert painn["feature_kind"] == "vectors" and set(painn["presets"]) == {"S", "M", "L"}
    assert painn["settings"]["cutoff"] == {"default": 5.0, "range": [3.5, 6.5], "log": False}
    assert registry["head"] == ["energy", "property"]
