"""MPtrj JSON: {mp_id: {frame_id: frame}} with pymatgen Structure dicts, kBar stress, streamed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from corpus_fixtures import GPA_EV_A3

from atomgfm.data.readers import ReaderError, RecordError, read_structures
from atomgfm.data.readers.mptrj import KBAR_TO_EV_A3, iter_json_object
from atomgfm.data.readers.stream import reader_for

O_CORRECTION = -0.687  # MP2020 oxide correction, eV per O atom


def pymatgen_dict(atoms) -> dict:
    """What pymatgen's ``Structure.as_dict()`` writes (no pymatgen needed)."""
    cell = atoms.cell.array
    lengths, angles = atoms.cell.cellpar()[:3], atoms.cell.cellpar()[3:]
    fractional = atoms.get_scaled_positions(wrap=False)  # pymatgen does not wrap sites
    return {
        "@module": "pymatgen.core.structure", "@class": "Structure", "charge": 0,
        "lattice": {"matrix": cell.tolist(), "pbc": [True, True, True],
                    "a": lengths[0], "b": lengths[1], "c": lengths[2], "alpha": angles[0],
                    "beta": angles[1], "gamma": angles[2], "volume": atoms.get_volume()},
        "properties": {},
        "sites": [{"species": [{"element": sym, "occu": 1}], "abc": frac.tolist(),
                   "xyz": xyz.tolist(), "properties": {"magmom": 0.0}, "label": sym}
                  for sym, frac, xyz in zip(atoms.get_chemical_symbols(), fractional,
                                            atoms.positions, strict=True)],
    }


def frame(atoms, mp_id) -> dict:
    """One MPtrj frame labelled by EMT: energies eV, forces eV/Å, stress in VASP's kBar."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    e = atoms.get_potential_energy()
    stress_ase = atoms.get_stress(voigt=False)  # eV/Å^3, positive = tensile
    n_o = int((atoms.numbers == 8).sum())
    return {
        "structure": pymatgen_dict(atoms),
        "uncorrected_total_energy": e, "corrected_total_energy": e + O_CORRECTION * n_o,
        "energy_per_atom": e / len(atoms), "ef_per_atom": -0.1, "e_per_atom_relaxed": e,
        "ef_per_atom_relaxed": -0.1, "force": atoms.get_forces().tolist(),
        "stress": (-stress_ase / (0.1 * GPA_EV_A3)).tolist(),  # VASP: kBar, compressive > 0
        "magmom": None, "bandgap": 0.0, "mp_id": mp_id,
    }


@pytest.fixture
def mptrj_file(tmp_path):
    cu = bulk("Cu", "fcc", a=3.5, cubic=True)  # compressed (EMT's a = 3.59): pressure > 0
    cu.rattle(0.05, seed=1)
    cu2 = cu.copy()
    cu2.positions[0] += [0.1, 0.0, 0.0]
    cuo = bulk("Cu", "fcc", a=3.7)
    cuo = cuo.repeat((2, 1, 1))
    cuo.symbols[1] = "O"
    data = {"mp-30": {"mp-30-0-0": frame(cu, "mp-30"), "mp-30-0-1": frame(cu2, "mp-30")},
            "mp-1692": {"mp-1692-1-0": frame(cuo, "mp-1692")}}
    path = tmp_path / "MPtrj_2022.9_full.json"
    path.write_text(json.dumps(data))
    return path, data, (cu, cu2, cuo)


def test_kbar_to_ase_stress_sign_and_factor():
    # 10 kBar of VASP compressive stress = 1 GPa of pressure = -1 GPa in ASE's tensile sign
    assert 10 * KBAR_TO_EV_A3 == pytest.approx(-GPA_EV_A3, rel=1e-9)
    assert KBAR_TO_EV_A3 == pytest.approx(-6.241509e-4, rel=1e-6)


def test_reads_frames_with_cell_stress_and_energy_choice(mptrj_file):
    path, data, (cu, cu2, cuo) = mptrj_file
    assert reader_for(path) == "mptrj"
    result = read_structures(path, dataset="mptrj")
    assert len(result) == 3
    s = result.structures[0]
    assert s.info == {"mp_id": "mp-30", "frame_id": "mp-30-0-0"}
    assert s.pbc.all() and s.numbers.tolist() == [29] * 4
    np.testing.assert_allclose(s.cell, cu.cell.array)
    np.testing.assert_allclose(s.positions, cu.positions)
    # the reader's stress is what EMT (ASE convention) gave: a compressed cell is negative
    ref = cu.copy()
    ref.calc = EMT()
    np.testing.assert_allclose(s.stress, ref.get_stress(voigt=False), rtol=1e-9, atol=1e-12)
    assert np.trace(s.stress) < 0 and np.trace(np.array(data["mp-30"]["mp-30-0-0"]["stress"])) > 0
    np.testing.assert_allclose(s.forces, ref.get_forces())
    assert s.energy == pytest.approx(ref.get_potential_energy())
    assert s.charge == 0 and s.spin == 0
    corrected = read_structures(path, reader_options={"energy_key": "corrected_total_energy"})
    assert corrected.structures[2].energy == pytest.approx(result.structures[2].energy - 0.687)
    assert corrected.structures[0].energy == result.structures[0].energy  # metals: no correction


def test_fractional_only_sites(mptrj_file, tmp_path):
    path, data, (cu, *_) = mptrj_file
    for site in data["mp-30"]["mp-30-0-0"]["structure"]["sites"]:
        del site["xyz"]
    path.write_text(json.dumps(data))
    s = read_structures(path).structures[0]
    np.testing.assert_allclose(s.positions, cu.positions, atol=1e-12)


def test_streaming_decoder_matches_json_load_at_any_chunk_size(mptrj_file):
    path, data, _ = mptrj_file
    for chunk in (1, 7, 100, 1 << 20):
        assert dict(iter_json_object(str(path), chunk=chunk)) == data


def test_bad_frames_and_files_are_named(mptrj_file, tmp_path):
    path, data, _ = mptrj_file
    del data["mp-1692"]["mp-1692-1-0"]["force"]
    data["mp-30"]["mp-30-0-1"]["structure"]["sites"][0]["species"] = [
        {"element": "Cu", "occu": 0.5}, {"element": "Ni", "occu": 0.5}]
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"record 1 \(mp_id mp-30, frame_id mp-30-0-1\): site 0 "
                                          "is disordered"):
        read_structures(path)
    skipped = read_structures(path, on_error="skip")
    assert len(skipped) == 1
    assert skipped.skipped.counts == {"disordered site": 1, "missing label": 1}
    assert "(mp_id mp-1692, frame_id mp-1692-1-0): missing ['force']" in str(
        skipped.skipped.examples)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # truncated download
    with pytest.raises(ReaderError, match="truncated JSON at character .* key 'mp-30'"):
        read_structures(path, on_error="skip")
    with pytest.raises(ReaderError, match="MPtrj has"):
        read_structures(path, reader_options={"energy_key": "energy"})
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(ReaderError, match="empty.json: empty file, no records"):
        read_structures(empty, format="mptrj")
