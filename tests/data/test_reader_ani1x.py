"""ANI-1x HDF5: one group per formula, Hartree labels, NaN = not computed."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ase.build import molecule
from corpus_fixtures import HARTREE_EV, displaced

from atomgfm.data.readers import ReaderError, RecordError, iter_structures, read_structures
from atomgfm.data.readers.stream import reader_for


def write_ani(path, groups):
    """groups: {formula: (atoms list, energies eV, forces eV/Å, extra datasets)} in the
    release's layout and dtypes (uint8 numbers, float32 coordinates/forces, float64 energies)."""
    with h5py.File(path, "w") as f:
        for name, (confs, e, F, extra) in groups.items():
            g = f.create_group(name)
            g.create_dataset("atomic_numbers", data=confs[0].numbers.astype(np.uint8))
            g.create_dataset("coordinates",
                             data=np.stack([a.positions for a in confs]).astype(np.float32))
            g.create_dataset("wb97x_dz.energy", data=np.asarray(e) / HARTREE_EV)
            g.create_dataset("wb97x_dz.forces", data=(np.asarray(F) / HARTREE_EV)
                             .astype(np.float32))
            for key, value in extra.items():
                g.create_dataset(key, data=value)


@pytest.fixture
def ani_file(tmp_path, labelled):
    groups = {}
    for name, mol in (("C1H4", molecule("CH4")), ("H2O1", molecule("H2O"))):
        confs = displaced(mol, 3)
        labels = [labelled(a) for a in confs]
        e = np.array([x[0] for x in labels])
        F = np.stack([x[1] for x in labels])
        cc = e / HARTREE_EV - 0.01  # a second level of theory, computed for conformer 0 only
        cc[1:] = np.nan
        tz_f = (F / HARTREE_EV).astype(np.float32)
        tz_f[2] = np.nan  # wb97x_tz forces not computed for conformer 2
        groups[name] = (confs, e, F, {"ccsd(t)_cbs.energy": cc,
                                      "wb97x_tz.energy": e / HARTREE_EV + 1e-3,
                                      "wb97x_tz.forces": tz_f})
    path = tmp_path / "ani1x-release.h5"
    write_ani(path, groups)
    return path, groups


def test_reads_every_conformer_in_ev_and_angstrom(ani_file):
    path, groups = ani_file
    assert reader_for(path) == "ani1x"
    result = read_structures(path, dataset="ani")
    assert len(result) == 6 and result.skipped.total == 0
    s = result.structures[4]  # H2O1 conformer 1 (groups in name order)
    confs, e, F, _ = groups["H2O1"]
    assert s.numbers.tolist() == [8, 1, 1]
    np.testing.assert_array_equal(s.positions, confs[1].positions.astype(np.float32))
    # file holds Hartree and Hartree/Å; the reader gives eV and eV/Å
    e_ha = e[1] / HARTREE_EV
    assert s.energy == pytest.approx(e_ha * HARTREE_EV, rel=1e-7)
    np.testing.assert_allclose(s.forces, F[1], rtol=1e-5, atol=1e-6)
    assert not s.pbc.any() and s.charge == 0 and s.spin == 0
    assert s.info == {"group": "H2O1", "conformer": 1} and s.dataset == "ani"


def test_nan_energy_is_not_computed_and_counted_even_when_raising(ani_file):
    path, groups = ani_file
    result = read_structures(path, reader_options={"energy_key": "ccsd(t)_cbs.energy"},
                             on_error="raise")
    assert len(result) == 2  # conformer 0 of each group
    assert result.skipped.counts == {"not computed (ccsd(t)_cbs.energy)": 4}
    assert "skipped 4 of 6" in str(result.skipped)
    # ccsd(t)_cbs has no forces key: energies only
    assert all(s.forces is None for s in result.structures)
    e_ha = groups["C1H4"][1][0] / HARTREE_EV - 0.01
    assert result.structures[0].energy == pytest.approx(e_ha * HARTREE_EV, rel=1e-7)


def test_level_of_theory_forces_follow_and_all_nan_forces_kept_without(ani_file):
    path, _ = ani_file
    result = read_structures(path, reader_options={"energy_key": "wb97x_tz.energy"})
    assert len(result) == 6
    assert [s.forces is None for s in result.structures] == [False, False, True] * 2


def test_malformed_group_named(tmp_path, ani_file):
    path, groups = ani_file
    with h5py.File(path, "a") as f:
        del f["H2O1"]["coordinates"]
        f["H2O1"].create_dataset("coordinates", data=np.zeros((3, 2, 3), np.float32))
    with pytest.raises(RecordError, match=r"group /H2O1\).*coordinates have shape \(3, 2, 3\)"):
        read_structures(path)
    skipped = read_structures(path, on_error="skip")
    assert len(skipped) == 3 and skipped.skipped.counts == {"malformed group": 3}


def test_missing_key_partial_nan_and_bad_options(tmp_path, ani_file):
    path, _ = ani_file
    with pytest.raises(RecordError, match=r"missing dataset 'wb97x_dz\.energie'"):
        read_structures(path, reader_options={"energy_key": "wb97x_dz.energie"})
    with h5py.File(path, "a") as f:
        f["C1H4"]["wb97x_dz.forces"][1, 2] = np.nan
    with pytest.raises(RecordError, match=r"group /C1H4, conformer 1\): wb97x_dz\.forces is "
                                             r"NaN for 1 of 5 atoms"):
        read_structures(path)
    with pytest.raises(ReaderError, match=r"unknown reader option\(s\) \['level'\].*'ani1x'"):
        iter_structures(path, reader_options={"level": "wb97x_dz"})
    with pytest.raises(ReaderError, match="ANI-1x files are in Hartree"):
        read_structures(path, energy_unit="kcal/mol")
    assert len(read_structures(path, energy_unit="Hartree", on_error="skip")) == 5  # own unit
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(ReaderError, match="empty.h5: empty file, no records"):
        read_structures(empty, format="ani1x")


def test_dataset_spec_names_reader_label_keys_and_units(ani_file):
    from atomgfm.config.schema import config_from_dict
    from atomgfm.data.sources import load_datasets

    path, _ = ani_file

    def spec(**options):
        return config_from_dict({"data": {"root": str(path.parent), "datasets": [{
            "name": "ani1ccx", "path": path.name, "format": "ani1x", "energy_unit": "Hartree",
            "level_of_theory": "CCSD(T)/CBS", "reader_options": options}]}}).data

    (loaded,) = load_datasets(spec(energy_key="ccsd(t)_cbs.energy"))
    assert len(loaded.train) + len(loaded.val) == 2
    assert loaded.skipped == ["skipped 4 of 6 records in " + str(path)
                              + ": 4 not computed (ccsd(t)_cbs.energy)"]
    with pytest.raises(ReaderError, match=r"unknown reader option\(s\) \['energy_kye'\]"):
        load_datasets(spec(energy_kye="ccsd(t)_cbs.energy"))
