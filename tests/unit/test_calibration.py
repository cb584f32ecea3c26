"""Calibration numbers on cases checked by hand, and calibrate() against direct predictions."""

from __future__ import annotations

import numpy as np
import pytest

from atomgfm.inference.calibration import (
    binned,
    calibrate,
    calibration_rows,
    rankdata,
    spearman,
    write_calibration,
)
from atomgfm.inference.spread import SpreadPredictor
from atomgfm.testing.fixtures import emt_clusters, to_structures, train_tiny_model


def test_spearman_by_hand():
    # d = rank differences (0, 0, 1, -1): rho = 1 - 6*2 / (4*15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    np.testing.assert_allclose(rankdata([1, 2, 2, 3]), [1, 2.5, 2.5, 4])
    # ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(22.5))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert np.isnan(spearman([0, 0, 0], [1, 2, 3]))  # no spread at all: undefined, not 0
    with pytest.raises(ValueError, match="3 and 2 values"):
        spearman([1, 2, 3], [1, 2])


def test_binned_by_hand():
    b = binned([4, 1, 3, 2], [5, 1, 3, 1], n_bins=2)
    assert [x["n"] for x in b] == [2, 2]
    assert b[0]["rms_spread"] == pytest.approx(np.sqrt(2.5))  # spreads 1, 2
    assert b[0]["rms_error"] == pytest.approx(1.0)
    assert b[1]["rms_spread"] == pytest.approx(np.sqrt(12.5))  # spreads 3, 4
    assert b[1]["rms_error"] == pytest.approx(np.sqrt(17.0))  # errors 3, 5


def test_calibrate_matches_direct_predictions(tmp_path):
    ckpt = str(train_tiny_model(tmp_path))
    sp = SpreadPredictor.from_checkpoints([ckpt], device="cpu", precision="fp64")
    held_out = to_structures(emt_clusters(5, seed=11, size=4), "clusters")
    held_out[0].forces = None  # no force label: skipped and counted
    [cal] = calibrate(sp, {"clusters": held_out})
    assert cal.skipped == 1 and len(cal.force_error) == 4
    direct = sp.predict(held_out[1:], head="clusters", stress=False)
    for k, (s, r) in enumerate(zip(held_out[1:], direct, strict=True)):
        err = np.sqrt(np.mean(np.sum((r["forces"] - s.forces) ** 2, axis=1)))
        assert cal.force_error[k] == pytest.approx(err, rel=1e-12)
        assert cal.force_spread["heads"][k] == pytest.approx(
            np.sqrt(np.mean(r["forces_spread_heads"] ** 2)), rel=1e-12)
        assert cal.energy_error[k] == pytest.approx(abs(r["energy"] - s.energy) / 4, rel=1e-12)
    [row] = calibration_rows([cal])  # no ensemble: only the head spread
    assert row["source"] == "heads" and row["n"] == 4
    assert row["spearman_forces"] == pytest.approx(
        spearman(cal.force_spread["heads"], cal.force_error))
    table, png = write_calibration([cal], tmp_path / "cal")
    assert "| clusters | heads | 4 |" in table
    assert png.stat().st_size > 1000 and (tmp_path / "cal" / "calibration.json").exists()
