"""Readers: files written by ASE itself, labelled by a real calculator (EMT), read back."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from atomgfm import registry
from atomgfm.data.readers import (
    ReaderError,
    ReaderSpec,
    RecordError,
    StructureError,
    StructureStream,
    atoms_to_structure,
    iter_structures,
    read_structures,
    reader_for,
)
from atomgfm.registry import names

# The specific readers, by name, as dispatch lists them (the public corpora's included).
CORPORA = ("ani1x (.h5, .hdf5); ase_db (.db, .json); aselmdb (.aselmdb); md17 (.npz); "
           "mptrj (.json); spice (.hdf5, .h5); transition1x (.h5, .hdf5); ")


def emt_labels(atoms: Atoms) -> dict:
    atoms.calc = EMT()
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


def labelled(atoms: Atoms, **info) -> Atoms:
    """Atoms carrying EMT labels in a SinglePointCalculator, as corpora store them."""
    atoms.calc = SinglePointCalculator(atoms, **emt_labels(atoms))
    atoms.info.update(info)
    return atoms


def crystal(seed: int = 0) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def mol(name: str = "CH4") -> Atoms:
    atoms = molecule(name)
    atoms.rattle(0.02, seed=1)
    return atoms


def frames() -> list[Atoms]:
    return [labelled(crystal(0), charge=1, spin=2), labelled(mol("CH4")),
            labelled(crystal(1), total_charge=-2, multiplicity=3)]


def check_same(structure, atoms: Atoms, charge=0.0, spin=0.0, atol=1e-7) -> None:
    res = atoms.calc.results
    np.testing.assert_array_equal(structure.numbers, atoms.numbers)
    np.testing.assert_allclose(structure.positions, atoms.positions, atol=1e-7)
    np.testing.assert_allclose(structure.cell, atoms.cell.array, atol=1e-7)
    np.testing.assert_array_equal(structure.pbc, atoms.pbc)
    assert structure.energy == pytest.approx(res["energy"], rel=1e-10)
    np.testing.assert_allclose(structure.forces, res["forces"], atol=atol)
    if "stress" in res:
        voigt = res["stress"]
        np.testing.assert_allclose(np.diag(structure.stress), voigt[:3], atol=1e-10)
        np.testing.assert_allclose(structure.stress, structure.stress.T)
    else:
        assert structure.stress is None
    assert structure.charge == charge
    assert structure.spin == spin


# --- round trips --------------------------------------------------------------------------


def test_registry_lists_the_readers():
    assert {"ase", "ase_db", "aselmdb"} <= set(names("reader"))
    for name in names("reader"):
        spec = registry.get("reader", name)
        assert isinstance(spec, ReaderSpec) and spec.name == name and spec.suffixes


# --- dispatch through the registry ------------------------------------------------------------


def test_reader_for_by_suffix_and_format():
    assert reader_for("a.extxyz") == reader_for("a.XYZ") == reader_for("POSCAR") == "ase"
    assert reader_for("md.traj") == reader_for("x.cif") == "ase"
    assert reader_for("set.db") == "ase_db"
    assert reader_for("shard.aselmdb") == "aselmdb"
    assert reader_for("anything.dat", format="db") == "ase_db"
    assert reader_for("anything.txt", format="extxyz") == "ase"


def test_unsupported_suffix_lists_the_supported_ones(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_text("x")
    with pytest.raises(ReaderError) as info:
        read_structures(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == (f"{path}: unsupported file (suffix '.parquet'); supported: {CORPORA}"
                   "ase (.extxyz, .xyz, .traj, .cif, .vasp, .pdb, .xsf, .sdf, "
                   f"+{len(registry.get('reader', 'ase').suffixes) - 8} more); or pass format=")
    with pytest.raises(ReaderError, match=r"unsupported file \(suffix 'none'\)"):
        reader_for(tmp_path / "README")


def test_unknown_format_lists_the_formats(tmp_path):
    path = tmp_path / "x.xyz"
    ase.io.write(path, frames(), format="extxyz")
    with pytest.raises(ReaderError, match=rf"^{path}: unknown format 'parquet'; formats: ani1x "
                                          r"\(ani1x\); ase_db \(db, json\); aselmdb \(aselmdb\); "
                                          r"md17 \(md17, rmd17\); mptrj \(mptrj\); spice "
                                          r"\(spice\); transition1x \(transition1x, t1x\); "
                                          r"ase \(cif, "
                                          r"extxyz, sdf, traj, vasp, xsf, xyz, .*more\)$"):
        read_structures(path, format="parquet")


def test_a_registered_reader_is_found_by_its_suffix(tmp_path, monkeypatch):
    """Dispatch is generated from the registry: a new spec is picked up with no other change."""
    def records(path, options, format=None):
        for index, line in enumerate(open(path).read().split()):
            atoms = Atoms(line, positions=[[0, 0, 0], [0.74, 0, 0]][:len(Atoms(line))])
            yield index, lambda atoms=atoms, index=index: options.convert(atoms, path, index)

    spec = ReaderSpec("toy", records, formats=("toy",), suffixes=(".toy",))
    monkeypatch.setitem(registry._REGISTRY["reader"], "toy", spec)
    path = tmp_path / "pairs.toy"
    path.write_text("H2 HO Cu")
    assert reader_for(path) == "toy"
    result = read_structures(path, dataset="t")
    assert [s.numbers.tolist() for s in result.structures] == [[1, 1], [1, 8], [29]]


def test_iter_structures_is_a_lazy_stream(tmp_path):
    path = tmp_path / "lazy.xyz"
    atoms = frames()
    atoms[2].calc.results["energy"] = float("nan")
    ase.io.write(path, atoms, format="extxyz")
    stream = iter_structures(path, dataset="d")
    assert isinstance(stream, StructureStream) and stream.files == [str(path)]
    first = next(stream)
    assert first.index == 0 and stream.skipped.n_records == 1
    assert next(stream).index == 1
    with pytest.raises(StructureError, match=r"lazy\.xyz, record 2: non-finite energy"):
        next(stream)
    with iter_structures(path, on_error="skip") as skipping:
        assert [s.index for s in skipping] == [0, 1]
    assert str(skipping.skipped) == f"skipped 1 of 3 records in {path}: 1 non-finite energy"


def test_problems_before_the_first_record_raise_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.xyz: no such file"):
        iter_structures(tmp_path / "nothere.xyz")
    (tmp_path / "x.parquet").write_text("x")
    with pytest.raises(ReaderError, match="unsupported file"):
        iter_structures(tmp_path / "x.parquet")


def test_folder_of_mixed_files(tmp_path):
    ase.io.write(tmp_path / "b.extxyz", frames()[:2], format="extxyz")
    with ase.db.connect(tmp_path / "a.db") as db:
        db.write(frames()[2], total_charge=-2, multiplicity=3)
    (tmp_path / "notes.md").write_text("not data")
    result = read_structures(tmp_path)
    assert [(s.source, s.index) for s in result.structures] == [
        (str(tmp_path / "a.db"), 0), (str(tmp_path / "b.extxyz"), 0),
        (str(tmp_path / "b.extxyz"), 1)]
    only = read_structures(tmp_path, format="extxyz")
    assert [s.source for s in only.structures] == [str(tmp_path / "b.extxyz")] * 2


def test_folder_without_data(tmp_path):
    (tmp_path / "notes.md").write_text("not data")  # .md is an ASE suffix, not one in folders
    (tmp_path / "run.log").write_text("not data")
    with pytest.raises(ReaderError) as info:
        read_structures(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: a folder with no file a reader takes; supported: {CORPORA}"
        "ase (.extxyz, .xyz, .traj, .cif, .vasp, .pdb, .xsf, .sdf)")


def test_reading_writes_nothing_beside_the_data(tmp_path):
    with ase.db.connect(tmp_path / "set.db") as db:
        for atoms in frames():
            db.write(atoms)
    ase.io.write(tmp_path / "set.json", frames())
    ase.io.write(tmp_path / "set.extxyz", frames(), format="extxyz")
    ase.io.write(tmp_path / "set.traj", frames())
    before = sorted(p.name for p in tmp_path.iterdir())
    assert before == ["set.db", "set.extxyz", "set.json", "set.traj"]
    stamp = {name: (tmp_path / name).stat().st_mtime_ns for name in before}
    for name in before:
        assert len(read_structures(tmp_path / name)) == 3
    assert len(read_structures(tmp_path)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in before} == stamp


def test_sqlite_file_that_is_not_an_ase_db_is_left_alone(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    data = path.read_bytes()
    with pytest.raises(ReaderError, match=rf"^{path}: an SQLite file but not an ASE database "
                                          r"\(no 'systems' table\)$"):
        read_structures(path)
    assert path.read_bytes() == data  # ASE would have created its tables in it
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(ReaderError, match=r"text\.db: not a readable ASE database \("):
        read_structures(tmp_path / "text.db")


def test_extxyz_round_trip(tmp_path):
    path = tmp_path / "train.extxyz"
    atoms = frames()
    ase.io.write(path, atoms, format="extxyz")
    result = read_structures(path, dataset="emt")
    assert len(result) == 3 and result.skipped.total == 0
    check_same(result.structures[0], atoms[0], charge=1, spin=2)
    check_same(result.structures[1], atoms[1])
    check_same(result.structures[2], atoms[2], charge=-2, spin=3)
    assert [s.index for s in result.structures] == [0, 1, 2]
    assert all(s.dataset == "emt" and s.source == str(path) for s in result.structures)
    assert result.structures[0].stress[0, 0] != 0.0  # a real EMT stress came through


def test_traj_round_trip(tmp_path):
    path = tmp_path / "md.traj"
    atoms = frames()
    ase.io.write(path, atoms)
    result = read_structures(path)
    check_same(result.structures[0], atoms[0], charge=1, spin=2)
    check_same(result.structures[1], atoms[1])
    check_same(result.structures[2], atoms[2], charge=-2, spin=3)


def test_db_round_trip(tmp_path):
    path = tmp_path / "set.db"
    atoms = frames()
    charged = mol("CH4")
    charged.set_initial_charges([1, 0, 0, 0, 0])  # net charge from per-atom charges
    atoms[1] = labelled(charged)
    with ase.db.connect(path) as db:
        db.write(atoms[0], spin=2, total_charge=1)
        db.write(atoms[1])
        db.write(atoms[2], multiplicity=3, total_charge=-2)
    assert reader_for(path) == "ase_db"
    result = read_structures(path)
    check_same(result.structures[0], atoms[0], charge=1, spin=2)
    check_same(result.structures[1], atoms[1], charge=1)
    check_same(result.structures[2], atoms[2], charge=-2, spin=3)


def test_json_written_by_ase_is_read_as_db(tmp_path):
    path = tmp_path / "set.json"
    atoms = frames()
    ase.io.write(path, atoms)
    assert reader_for(path) == "ase_db"
    result = read_structures(path)
    assert len(result) == 3
    check_same(result.structures[1], atoms[1])


def test_mace_style_ref_keys(tmp_path):
    path = tmp_path / "mace.xyz"
    out = []
    for atoms in (crystal(2), mol("H2O")):
        lab = emt_labels(atoms)
        atoms.calc = None
        atoms.info["REF_energy"] = lab["energy"]
        atoms.arrays["REF_forces"] = lab["forces"]
        if "stress" in lab:
            atoms.info["REF_stress"] = lab["stress"]
        out.append((atoms.copy(), lab))
    ase.io.write(path, [a for a, _ in out], format="extxyz")
    for kwargs in ({}, {"energy_key": "REF_energy", "forces_key": "REF_forces"}):
        result = read_structures(path, **kwargs)
        assert len(result) == len(out)
        for s, (_, lab) in zip(result.structures, out, strict=True):
            assert s.energy == pytest.approx(lab["energy"], rel=1e-10)
            np.testing.assert_allclose(s.forces, lab["forces"], atol=1e-7)
        yy = out[0][1]["stress"][1]
        assert yy != 0.0 and result.structures[0].stress[1, 1] == pytest.approx(yy)
        assert result.structures[1].stress is None


def test_ambiguous_energy_needs_a_key(tmp_path):
    path = tmp_path / "both.xyz"
    atoms = labelled(mol("CH4"))
    atoms.info["REF_energy"] = atoms.calc.results["energy"] + 1.0
    ase.io.write(path, [atoms], format="extxyz")
    with pytest.raises(StructureError, match=r"both\.xyz, record 0: ambiguous energy"):
        read_structures(path)
    s = read_structures(path, energy_key="REF_energy").structures[0]
    assert s.energy == pytest.approx(atoms.calc.results["energy"] + 1.0)


def test_explicit_key_missing_everywhere_is_an_error(tmp_path):
    path = tmp_path / "plain.xyz"
    ase.io.write(path, frames(), format="extxyz")
    with pytest.raises(ReaderError, match=r"plain\.xyz: energy_key='dft_energy' was not found"):
        read_structures(path, energy_key="dft_energy")


def test_unit_conversion_hartree_bohr(tmp_path):
    path = tmp_path / "au.extxyz"
    ref = labelled(crystal(3))
    res = ref.calc.results
    au = ref.copy()
    au.set_cell(ref.cell.array / units.Bohr, scale_atoms=False)
    au.positions = ref.positions / units.Bohr
    au.calc = SinglePointCalculator(
        au, energy=res["energy"] / units.Hartree,
        forces=res["forces"] / (units.Hartree / units.Bohr),
        stress=res["stress"] / (units.Hartree / units.Bohr**3))
    ase.io.write(path, [au], format="extxyz")
    s = read_structures(path, energy_unit="Hartree", length_unit="Bohr").structures[0]
    check_same(s, ref, atol=2e-6)  # extxyz keeps 8 decimals of Hartree/Bohr
    # one number by hand: 1 Hartree = 27.211386 eV, 1 Bohr = 0.529177 Å
    raw = read_structures(path).structures[0]
    assert s.energy / raw.energy == pytest.approx(27.211386, rel=1e-6)
    assert s.positions[1, 1] / raw.positions[1, 1] == pytest.approx(0.529177, rel=1e-5)


def test_unknown_units_are_value_errors(tmp_path):
    path = tmp_path / "x.xyz"
    ase.io.write(path, frames(), format="extxyz")
    with pytest.raises(ValueError, match="unknown energy unit 'kcal'"):
        read_structures(path, energy_unit="kcal")
    with pytest.raises(ValueError, match="unknown length unit 'pm'"):
        read_structures(path, length_unit="pm")


def test_never_runs_a_calculator():
    class Exploding(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, *args, **kwargs):
            raise AssertionError("a reader ran the calculator")

    atoms = mol("CH4")
    atoms.calc = Exploding()
    s = atoms_to_structure(atoms, source="mem", index=4)
    assert s.energy is None and s.forces is None and s.index == 4


# --- bad input ----------------------------------------------------------------------------


def write_and_edit(path, atoms, edit) -> None:
    ase.io.write(path, atoms, format="extxyz")
    path.write_text(edit(path.read_text()))


def replace_in_frame(text: str, frame: int, old: str, new: str) -> str:
    """Replace the first ``old`` inside the given frame of an extxyz text."""
    lines = text.splitlines(keepends=True)
    i = 0
    for _ in range(frame):
        i += int(lines[i]) + 2
    n = int(lines[i])
    body = "".join(lines[i + 2:i + 2 + n]).replace(old, new, 1)
    return "".join(lines[:i + 2]) + body + "".join(lines[i + 2 + n:])


def test_unknown_element_names_file_and_record(tmp_path):
    path = tmp_path / "bad_elem.xyz"
    write_and_edit(path, frames(), lambda t: replace_in_frame(t, 1, "\nH ", "\nXx "))
    with pytest.raises(RecordError, match=r"bad_elem\.xyz, record 1 .*unknown element symbol 'Xx'"):
        read_structures(path)
    result = read_structures(path, on_error="skip")
    assert [s.index for s in result.structures] == [0, 2]
    assert result.skipped.counts == {"unknown element": 1}


def test_non_numeric_field_is_a_parse_error(tmp_path):
    path = tmp_path / "bad_num.xyz"
    write_and_edit(path, frames(), lambda t: replace_in_frame(t, 2, "Cu ", "Cu abc "))
    with pytest.raises(RecordError, match=r"bad_num\.xyz, record 2 \(line \d+\): parse error"):
        read_structures(path)
    result = read_structures(path, on_error="skip")
    assert len(result) == 2 and result.skipped.counts == {"parse error": 1}


def test_nan_energy(tmp_path):
    path = tmp_path / "nan.xyz"
    atoms = frames()
    atoms[1].calc.results["energy"] = float("nan")
    ase.io.write(path, atoms, format="extxyz")
    assert "energy=nan" in path.read_text()
    with pytest.raises(StructureError, match=r"nan\.xyz, record 1: non-finite energy"):
        read_structures(path)


def test_nan_energy_in_traj_skipped(tmp_path):
    path = tmp_path / "nan.traj"
    atoms = frames()
    atoms[0].calc.results["energy"] = float("nan")
    ase.io.write(path, atoms)
    result = read_structures(path, on_error="skip")
    assert [s.index for s in result.structures] == [1, 2]
    assert str(result.skipped) == f"skipped 1 of 3 records in {path}: 1 non-finite energy"


def test_wrong_forces_shape_in_db(tmp_path):
    path = tmp_path / "forces.db"
    good = labelled(mol("H2O"))
    bad = mol("H2O")
    with ase.db.connect(path) as db:
        db.write(good)
        bad_id = db.write(bad, data={"REF_forces": emt_labels(bad.copy())["forces"][:2]})
    with pytest.raises(StructureError, match=rf"forces\.db, record 1: forces has shape \(2, 3\), "
                                             rf"expected \(3, 3\) \(db row id {bad_id}\)"):
        read_structures(path)
    result = read_structures(path, on_error="skip")
    assert len(result) == 1 and result.skipped.counts == {"forces shape": 1}


def test_wrong_forces_shape_in_extxyz_text(tmp_path):
    path = tmp_path / "forces.xyz"
    # drop the last forces column of one atom line: the frame no longer parses
    write_and_edit(path, frames()[:2],
                   lambda t: replace_in_frame(t, 0, t.splitlines()[2], t.splitlines()[2][:-16]))
    with pytest.raises(RecordError, match=r"forces\.xyz, record 0 \(line 1\): parse error"):
        read_structures(path)


def test_truncated_last_frame(tmp_path):
    path = tmp_path / "trunc.xyz"
    write_and_edit(path, frames(), lambda t: "".join(t.splitlines(keepends=True)[:-2]))
    with pytest.raises(RecordError, match=r"trunc\.xyz, record 2 \(line \d+\): truncated frame"):
        read_structures(path)
    result = read_structures(path, on_error="skip")
    assert len(result) == 2 and result.skipped.counts == {"truncated frame": 1}


def test_lost_frame_boundary_raises_even_when_skipping(tmp_path):
    path = tmp_path / "frame.xyz"
    write_and_edit(path, frames(), lambda t: t.replace("\n5\n", "\nfive\n", 1))
    with pytest.raises(ReaderError, match=r"frame\.xyz, record 1 \(line \d+\): expected an "
                                          r"atom-count line, got 'five'"):
        read_structures(path, on_error="skip")


def test_missing_cell_under_pbc(tmp_path):
    path = tmp_path / "nocell.xyz"
    atoms = labelled(mol("CH4"))
    atoms.pbc = True
    ase.io.write(path, [labelled(mol("H2O")), atoms], format="extxyz")
    with pytest.raises(StructureError, match=r"nocell\.xyz, record 1: pbc=\[True, True, True\] "
                                             r"but the cell has a zero lattice vector"):
        read_structures(path)


def test_empty_files(tmp_path):
    for name in ("empty.xyz", "empty.traj", "empty.db"):
        path = tmp_path / name
        path.write_text("")
        with pytest.raises(ReaderError, match=rf"{name}: empty file, no records"):
            read_structures(path)
    blank = tmp_path / "blank.xyz"
    blank.write_text("\n\n  \n")
    with pytest.raises(ReaderError, match=r"blank\.xyz: empty file, no records"):
        read_structures(blank)
    empty_db = tmp_path / "norows.db"
    with ase.db.connect(empty_db) as db:
        db.delete([db.write(mol("H2O"))])
    with pytest.raises(ReaderError, match=r"norows\.db: empty file, no records"):
        read_structures(empty_db)


def test_missing_file(tmp_path):
    for name in ("nothere.xyz", "nothere.db"):
        with pytest.raises(FileNotFoundError, match=rf"{name}: no such file"):
            read_structures(tmp_path / name)
        assert not (tmp_path / name).exists()  # ase.db.connect would have created it


def test_skip_report_counts_and_reasons(tmp_path):
    path = tmp_path / "mixed.xyz"
    atoms = frames() + [labelled(mol("H2O"))]
    atoms[1].calc.results["energy"] = float("nan")
    write_and_edit(path, atoms, lambda t: replace_in_frame(t, 3, "O ", "Xx "))
    result = read_structures(path, on_error="skip")
    assert [s.index for s in result.structures] == [0, 2]
    rep = result.skipped
    assert rep.total == 2 and rep.n_records == 4
    assert rep.counts == {"non-finite energy": 1, "unknown element": 1}
    assert [(f, i) for f, i, _ in rep.examples] == [(str(path), 1), (str(path), 3)]
    assert str(rep) == f"skipped 2 of 4 records in {path}: 1 non-finite energy, 1 unknown element"


def test_every_record_skipped_is_an_error(tmp_path):
    path = tmp_path / "allbad.xyz"
    atoms = frames()
    for a in atoms:
        a.calc.results["energy"] = float("inf")
    ase.io.write(path, atoms, format="extxyz")
    with pytest.raises(ReaderError, match=r"allbad\.xyz: every record was skipped \(skipped 3 of "
                                          r"3 records in .*allbad\.xyz: 3 non-finite energy\)"):
        read_structures(path, on_error="skip")


def test_bad_on_error_value(tmp_path):
    path = tmp_path / "x.xyz"
    ase.io.write(path, frames(), format="extxyz")
    with pytest.raises(ValueError, match="on_error must be one of"):
        read_structures(path, on_error="ignore")
