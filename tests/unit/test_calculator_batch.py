"""The ASE calculator: batched calls equal one-by-one calls, head "auto" picks the covering head
and says why, and the uncertainty is the spread across heads (zero with one head) and across an
ensemble of checkpoints."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase.build import bulk

from atomgfm.calculators.ase_calculator import Calculator
from atomgfm.inference.spread import _deviation
from atomgfm.testing.fixtures import emt_bulk, emt_clusters, tiny_datasets, train_tiny_model


def _train(out, datasets, seed=0):
    return str(train_tiny_model(out, datasets, steps=3, seed=seed))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two-head models ("bulk": Cu Ni Ag Au Pd Pt Al, periodic; "clusters": Cu Ni Au, molecules)
    from two seeds, and a one-head model."""
    two = tiny_datasets(n_bulk=8, n_clusters=4)
    return {"a": _train(tmp_path_factory.mktemp("a"), two),
            "b": _train(tmp_path_factory.mktemp("b"), tiny_datasets(n_bulk=8, n_clusters=4),
                        seed=1),
            "one": _train(tmp_path_factory.mktemp("one"), tiny_datasets(n_bulk=8)[:1])}


def _images():
    cells = emt_bulk(3, seed=5) + emt_bulk(1, seed=6, repeat=(2, 1, 1))
    clusters = emt_clusters(3, seed=7, size=4)
    return cells, clusters


def test_batch_equals_one_by_one(ckpts):
    calc = Calculator(ckpts["a"], head="auto", precision="fp64", device="cpu")
    cells, clusters = _images()
    images = cells + clusters
    batched = calc.calculate_batch(images)
    small = calc.calculate_batch(images, max_structures=2)  # several packed batches
    for a, rb, rs in zip(images, batched, small, strict=True):
        a.calc = calc
        one = {"energy": a.get_potential_energy(), "forces": a.get_forces(),
               "uncertainty": calc.results["uncertainty"]}
        for r in (rb, rs):
            assert r["head"] == calc.results["head"]
            assert abs(r["energy"] - one["energy"]) < 1e-9
            np.testing.assert_allclose(r["forces"], one["forces"], atol=1e-10, rtol=0)
            assert abs(r["uncertainty"] - one["uncertainty"]) < 1e-10
    with_stress = calc.calculate_batch(cells, properties=("energy", "forces", "stress"))
    for a, r in zip(cells, with_stress, strict=True):
        a.calc = calc
        np.testing.assert_allclose(r["stress"], a.get_stress(), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="periodic in all three"):
        calc.calculate_batch(clusters, properties=("energy", "stress"))


def test_auto_head_covers_and_logs_the_rule(ckpts, caplog):
    calc = Calculator(ckpts["a"], head="auto", device="cpu")
    cells, clusters = _images()
    cu_ni = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu_ni.symbols[0] = "Ni"
    with caplog.at_level(logging.INFO, logger="atomgfm"):
        heads = [r["head"] for r in calc.calculate_batch([cu_ni, clusters[0]])]
    # Both heads cover Cu-Ni and Cu-Ni-Au; periodicity decides.
    assert heads == ["bulk", "clusters"]
    assert "'bulk'" in caplog.text and "by periodicity" in caplog.text
    pt = bulk("Pt", "fcc", a=3.9)  # only the bulk head knows Pt
    assert calc.calculate_batch([pt])[0]["head"] == "bulk"
    with pytest.raises(ValueError, match=r"Atoms\(Fe.*no head was trained on all of the elem"):
        calc.calculate_batch([bulk("Fe", "bcc", a=2.87)])
    with pytest.raises(ValueError, match="choose a head"):
        Calculator(ckpts["a"], device="cpu")


def test_head_spread_is_the_deviation_of_the_heads(ckpts):
    cells, clusters = _images()
    atoms = clusters[0]  # Cu/Ni/Au: both heads cover it
    calc = Calculator(ckpts["a"], head="clusters", precision="fp64", device="cpu")
    r = calc.calculate_batch([atoms])[0]
    assert r["spread_heads"] == ["bulk", "clusters"]
    f = []
    learned = []
    for h in ("bulk", "clusters"):
        c = Calculator(ckpts["a"], head=h, precision="fp64", device="cpu", uncertainty=False)
        f.append(c.calculate_batch([atoms])[0]["forces"])
        model = c.predictor.model.model
        learned.append(c.calculate_batch([atoms])[0]["energy"]
                       - sum(float(model.heads[h].element_energy[z]) for z in atoms.numbers))
    expect = np.sqrt(((np.stack(f) - np.mean(f, axis=0)) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(r["forces_spread_heads"], expect, atol=1e-10)
    assert r["uncertainty"] == pytest.approx(expect.max(), abs=1e-10) and expect.max() > 0
    assert r["energy_spread_heads"] == pytest.approx(abs(learned[0] - learned[1]) / 2 / 4,
                                                     abs=1e-10)
    # A structure only one head covers has no head spread.
    only = Calculator(ckpts["a"], head="bulk", precision="fp64", device="cpu")
    r_pt = only.calculate_batch([bulk("Pt", "fcc", a=3.9)])[0]
    assert r_pt["spread_heads"] == ["bulk"] and r_pt["uncertainty"] == 0.0


def test_one_head_model_has_zero_uncertainty(ckpts):
    atoms = emt_bulk(1, seed=3)[0]
    atoms.calc = Calculator(ckpts["one"], device="cpu")
    atoms.get_forces()
    assert atoms.calc.results["uncertainty"] == 0.0
    assert atoms.calc.get_property("uncertainty") == 0.0
    assert np.all(atoms.calc.results["forces_spread_heads"] == 0.0)


def test_ensemble_mean_and_spread(ckpts):
    atoms = emt_bulk(1, seed=4)[0]
    same = Calculator(ckpts["one"], ensemble=[ckpts["one"]], precision="fp64", device="cpu")
    r = same.calculate_batch([atoms])[0]
    assert r["energy_spread_ensemble"] == 0.0 and r["uncertainty"] == 0.0
    ens = Calculator(ckpts["a"], head="bulk", ensemble=[ckpts["b"]], precision="fp64",
                     device="cpu", uncertainty=True)
    r = ens.calculate_batch([atoms])[0]
    single = [Calculator(p, head="bulk", precision="fp64", device="cpu").calculate_batch(
        [atoms])[0] for p in (ckpts["a"], ckpts["b"])]
    assert r["energy"] == pytest.approx(np.mean([s["energy"] for s in single]), abs=1e-10)
    fe = _deviation(np.stack([s["forces"] for s in single], axis=-1))
    np.testing.assert_allclose(r["forces_spread_ensemble"], fe, atol=1e-10)
    assert r["energy_spread_ensemble"] == pytest.approx(
        abs(single[0]["energy"] - single[1]["energy"]) / 2 / len(atoms), abs=1e-10)
    assert r["uncertainty"] >= fe.max() - 1e-12 and fe.max() > 0
