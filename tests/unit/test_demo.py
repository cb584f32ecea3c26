"""The demo corpus: files exist, labels are real and finite, charge/spin vary, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from ase.io import read

pytest.importorskip("tblite")
from atomgfm.demo.corpus import DATASETS, generate_demo  # noqa: E402

SCALE = 0.01


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The tiny corpus for seed 0 (twice) and seed 1."""
    dirs = {key: tmp_path_factory.mktemp(key) for key in ("a", "b", "c")}
    specs = generate_demo(dirs["a"], seed=0, progress=False, scale=SCALE)
    generate_demo(dirs["b"], seed=0, progress=False, scale=SCALE)
    generate_demo(dirs["c"], seed=1, progress=False, scale=SCALE)
    return dirs, specs


def test_every_dataset_written_with_finite_labels(corpora):
    dirs, specs = corpora
    assert [s["name"] for s in specs] == list(DATASETS)
    on_disk = yaml.safe_load((dirs["a"] / "datasets.yaml").read_text(encoding="utf-8"))
    assert on_disk["datasets"] == specs
    for spec in specs:
        assert spec["energy_unit"] == "eV" and spec["length_unit"] == "Å"
        records = read(dirs["a"] / spec["path"], index=":", format="extxyz")
        assert len(records) == spec["n_structures"] > 0
        for atoms in records:
            assert np.isfinite(atoms.get_potential_energy())
            forces = atoms.get_forces()
            assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all()
            assert bool(atoms.pbc.all()) == spec["periodic"]
            if spec["periodic"]:
                assert np.isfinite(atoms.get_stress()).all()


@pytest.mark.parametrize("name", ["mol_gfn2", "mol_gfn1", "mol_dft"])
def test_molecule_sets_have_charged_and_open_shell_records(corpora, name):
    dirs, _ = corpora
    records = read(dirs["a"] / f"{name}.extxyz", index=":", format="extxyz")
    assert any(a.info["charge"] != 0 for a in records)
    assert any(a.info["spin"] != 1 for a in records)
    for a in records:  # electron count and multiplicity must have matching parity
        assert (a.numbers.sum() - a.info["charge"] + a.info["spin"] - 1) % 2 == 0


def test_same_seed_same_bytes_other_seed_differs(corpora):
    dirs, specs = corpora
    for spec in specs:
        first = (dirs["a"] / spec["path"]).read_bytes()
        assert first == (dirs["b"] / spec["path"]).read_bytes(), spec["name"]
    generated = [s for s in specs if s["name"] != "mol_dft"]
    for spec in generated:
        assert (dirs["a"] / spec["path"]).read_bytes() != (dirs["c"] / spec["path"]).read_bytes()


@pytest.mark.parametrize(("name", "method"), [("mol_gfn2", "GFN2-xTB"),
                                              ("mol_gfn1", "GFN1-xTB")])
def test_xtb_labels_are_xtb_for_the_stated_charge_and_spin(corpora, name, method):
    """A charged or open-shell record recomputed with tblite at its stored charge and
    multiplicity gives the stored energy and forces."""
    from tblite.ase import TBLite

    dirs, _ = corpora
    records = read(dirs["a"] / f"{name}.extxyz", index=":", format="extxyz")
    atoms = next(a for a in records if a.info["charge"] != 0 or a.info["spin"] != 1)
    stored_e, stored_f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = TBLite(method=method, charge=float(atoms.info["charge"]),
                        multiplicity=int(atoms.info["spin"]), verbosity=0)
    assert atoms.get_potential_energy() == pytest.approx(stored_e, abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), stored_f, atol=1e-5)


def test_emt_labels_are_emt(corpora):
    from ase.calculators.emt import EMT

    dirs, _ = corpora
    atoms = read(dirs["a"] / "alloy_emt.extxyz", index="0", format="extxyz")
    stored_e, stored_f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = EMT()
    assert atoms.get_potential_energy() == pytest.approx(stored_e, abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), stored_f, atol=1e-7)
