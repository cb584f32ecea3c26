"""One checkpoint evaluated in fp64, fp32 and bf16 (``atomgfm evaluate --precision``)."""

from __future__ import annotations

import json

import pytest

from atomgfm.cli.main import main
from atomgfm.config.schema import load_config
from atomgfm.inference.evaluate import evaluate_checkpoint
from atomgfm.testing.fixtures import write_emt_run_config
from atomgfm.train.loop import Trainer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("prec")
    config = write_emt_run_config(
        root, 10, 8, data={"max_atoms_per_batch": 24, "val_fraction": 0.3},
        train={"out_dir": str(root / "run"), "max_steps": 2, "eval_every": 2, "progress": False,
               "precision": "fp32", "device": "cpu"})
    Trainer.from_config(load_config(config)).fit()
    return root / "run" / "best.pt"


def test_evaluate_in_three_precisions(checkpoint, tmp_path):
    m = {p: evaluate_checkpoint(checkpoint, tmp_path / p, device="cpu", precision=p).metrics
         for p in ("fp64", "fp32", "bf16")}
    for name in ("bulk", "clusters"):
        f64, f32, b16 = (m[p][name]["forces_mae_meV_A"] for p in ("fp64", "fp32", "bf16"))
        assert f32 == pytest.approx(f64, rel=1e-4)  # fp32 rounding only
        assert b16 != f64 and b16 == pytest.approx(f64, rel=0.2)  # bf16: coarser, same model
        e64, e32 = (m[p][name]["energy_mae_meV_atom"] for p in ("fp64", "fp32"))
        assert e32 == pytest.approx(e64, rel=1e-3, abs=1e-3)


def test_evaluate_cli_precision(checkpoint, tmp_path, capsys):
    assert main(["evaluate", str(checkpoint), "--precision", "bf16", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    assert "val split, bf16:" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"bulk", "clusters"}
    with pytest.raises(SystemExit):
        main(["evaluate", str(checkpoint), "--precision", "fp16"])
