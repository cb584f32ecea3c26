"""ASE-LMDB (``.aselmdb``) files written here byte for byte in fairchem's layout, read back.

The writer below follows fairchem's ``LMDBDatabase`` (and ``ase-db-backends``): ASCII keys
``"1".."n"``, ``"nextid"``, ``"deleted_ids"``, ``"metadata"``; values zlib-compressed JSON; a row
is the dict of an ASE ``AtomsRow`` (numbers, positions, cell, pbc, calculator results, ...)
with ``key_value_pairs`` and ``data``. Arrays as plain lists (fairchem's orjson writer) or ASE's
``__ndarray__`` objects (``ase-db-backends``).
"""

from __future__ import annotations

import json
import os
import sys
import zlib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db.row import AtomsRow
from ase.io.jsonio import encode

from atomgfm import registry
from atomgfm.data.readers import (
    ReaderError,
    RecordError,
    StructureError,
    iter_structures,
    read_structures,
    reader_for,
)

lmdb = pytest.importorskip("lmdb")


# --- a writer in fairchem's layout -------------------------------------------------------------


def _plain(obj):
    """What orjson's OPT_SERIALIZE_NUMPY writes for NumPy values: plain lists and numbers."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj)}")


def _pack(obj, encoding: str) -> bytes:
    text = encode(obj) if encoding == "ase" else json.dumps(obj, default=_plain)
    return zlib.compress(text.encode("utf-8"))


def row_dict(atoms: Atoms, key_value_pairs: dict | None = None, data: dict | None = None) -> dict:
    """The dict fairchem's ``LMDBDatabase._write`` stores for one row."""
    row = AtomsRow(atoms)
    row.ctime = 24.5
    row.user = "writer"
    dct = {k: row[k] for k in row.__dict__ if k[0] != "_" and k not in row._keys and k != "id"}
    dct["mtime"] = 24.5
    if key_value_pairs:
        dct["key_value_pairs"] = key_value_pairs
    dct["data"] = data or {}
    dct["cell"] = np.asarray(dct["cell"])
    return dct


def write_aselmdb(path, rows: list[dict], deleted: tuple[int, ...] = (), encoding: str = "orjson",
                  extra: dict | None = None) -> None:
    """Rows get ids 1..len(rows); ``deleted`` ids are then removed as ``LMDBDatabase.delete``
    does (key gone, id listed in ``deleted_ids``). Writes with LMDB's default lock, then removes
    the ``-lock`` file, as a shipped dataset has none."""
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26, meminit=False)
    with env.begin(write=True) as txn:
        for row_id, dct in enumerate(rows, start=1):
            txn.put(str(row_id).encode("ascii"), _pack(dct, encoding))
        txn.put(b"nextid", _pack(len(rows) + 1, encoding))
        txn.put(b"metadata", _pack({"title": "test"}, encoding))
        for row_id in deleted:
            txn.delete(str(row_id).encode("ascii"))
        if deleted:
            txn.put(b"deleted_ids", _pack(list(deleted), encoding))
        for key, value in (extra or {}).items():
            txn.put(key.encode("ascii"), value)
    env.close()
    os.remove(f"{path}-lock")


def emt(atoms: Atoms) -> Atoms:
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def omat_rows() -> list[Atoms]:
    """OMat24-style: rattled, strained periodic cells with energy, forces and stress."""
    out = []
    for seed, (symbol, a) in enumerate((("Cu", 3.6), ("Al", 4.05), ("Ni", 3.52), ("Au", 4.08))):
        atoms = bulk(symbol, "fcc", a=a, cubic=True)
        atoms.set_cell(atoms.cell.array * (1 + 0.01 * seed), scale_atoms=True)
        atoms.rattle(0.05, seed=seed)
        out.append(emt(atoms))
    return out


OMOL_STATES = (("CH3", 0, 2), ("H2O", 1, 2), ("NH3", 0, 1), ("CH4", -1, 2))  # name, charge, 2S+1


def omol_rows() -> list[tuple[Atoms, int, int]]:
    """OMol25-style: molecules, no cell, charge and multiplicity kept in ``data``."""
    out = []
    for name, charge, spin in OMOL_STATES:
        atoms = molecule(name)
        atoms.rattle(0.02, seed=3)
        out.append((emt(atoms), charge, spin))
    return out


@pytest.fixture(params=["orjson", "ase"])
def encoding(request):
    return request.param


# --- reading --------------------------------------------------------------------------------


def test_registered_with_its_suffix_and_backend():
    spec = registry.get("reader", "aselmdb")
    assert spec.suffixes == (".aselmdb",) and spec.formats == ("aselmdb",)
    assert spec.requires == ("lmdb",)
    assert reader_for("data.0000.aselmdb") == "aselmdb"
    assert reader_for("odd.name", format="aselmdb") == "aselmdb"


def test_omat24_style_periodic_rows(tmp_path, encoding):
    path = tmp_path / "omat.aselmdb"
    atoms = omat_rows()
    write_aselmdb(path, [row_dict(a, {"sid": f"omat-{i}"}, {"source": "test"})
                         for i, a in enumerate(atoms)], encoding=encoding)
    result = read_structures(path, dataset="omat")
    assert len(result) == 4 and result.skipped.total == 0
    for i, (s, a) in enumerate(zip(result.structures, atoms, strict=True)):
        res = a.calc.results
        assert (s.source, s.index, s.dataset) == (str(path), i, "omat")
        np.testing.assert_array_equal(s.numbers, a.numbers)
        np.testing.assert_allclose(s.positions, a.positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(s.cell, a.cell.array, rtol=0, atol=1e-12)
        assert s.pbc.tolist() == [True, True, True]
        assert s.energy == res["energy"]
        np.testing.assert_allclose(s.forces, res["forces"], rtol=0, atol=1e-12)
        xx, yy, zz, yz, xz, xy = res["stress"]
        np.testing.assert_allclose(s.stress, [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]],
                                   rtol=0, atol=1e-12)
        assert (s.charge, s.spin) == (0.0, 0.0)
        assert s.info["sid"] == f"omat-{i}" and s.info["source"] == "test"
    assert result.structures[1].stress[0, 1] != 0.0  # a real, sheared EMT stress came through


def test_omol25_style_charge_and_spin_from_data(tmp_path, encoding):
    path = tmp_path / "omol.aselmdb"
    rows = omol_rows()
    write_aselmdb(path, [row_dict(a, data={"charge": q, "spin": m, "data_id": f"m{i}"})
                         for i, (a, q, m) in enumerate(rows)], encoding=encoding)
    result = read_structures(path, dataset="omol")
    got = [(s.charge, s.spin) for s in result.structures]
    assert got == [(0.0, 2.0), (1.0, 2.0), (0.0, 1.0), (-1.0, 2.0)]
    for s, (a, _, _) in zip(result.structures, rows, strict=True):
        assert s.pbc.tolist() == [False, False, False] and s.stress is None
        assert s.energy == a.calc.results["energy"]
        np.testing.assert_allclose(s.forces, a.calc.results["forces"], rtol=0, atol=1e-12)
    assert result.structures[3].info["data_id"] == "m3"


def test_deleted_ids_are_left_out_and_row_ids_named(tmp_path):
    path = tmp_path / "deleted.aselmdb"
    rows = omol_rows()
    dicts = [row_dict(a, data={"charge": q, "spin": m}) for a, q, m in rows]
    dicts[2]["data"]["spin"] = 2  # NH3 (10 electrons) cannot be a doublet
    write_aselmdb(path, dicts, deleted=(2,))
    # ids 1, 3, 4 remain: record indices 0, 1, 2
    with pytest.raises(StructureError) as info:
        read_structures(path)
    assert str(info.value) == (
        f"{path}, record 1: spin multiplicity 2 is impossible with 10 electrons (charge 0): "
        "1 unpaired electrons need an electron count of the same parity (db row id 3)")
    result = read_structures(path, on_error="skip")
    assert [s.index for s in result.structures] == [0, 2]
    assert [(s.charge, s.spin) for s in result.structures] == [(0.0, 2.0), (-1.0, 2.0)]
    assert result.skipped.counts == {"charge/spin": 1}
    assert str(result.skipped) == f"skipped 1 of 3 records in {path}: 1 charge/spin"


def test_missing_row_is_a_skippable_record_error(tmp_path):
    path = tmp_path / "hole.aselmdb"
    write_aselmdb(path, [row_dict(a) for a in omat_rows()[:3]])
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.delete(b"2")  # gone, but not listed in deleted_ids
    env.close()
    with pytest.raises(RecordError, match=rf"^{path}, record 1 \(db row id 2\): row missing "
                                          r"\(neither stored nor listed in 'deleted_ids'\)$"):
        read_structures(path)
    result = read_structures(path, on_error="skip")
    assert len(result) == 2 and result.skipped.counts == {"missing row": 1}


def test_overlapping_atoms_in_a_row_are_skipped(tmp_path):
    path = tmp_path / "overlap.aselmdb"
    atoms = omat_rows()
    bad = atoms[1].copy()
    bad.positions[3] = bad.positions[0] + [0.03, 0.04, 0.0]
    write_aselmdb(path, [row_dict(atoms[0]), row_dict(bad), row_dict(atoms[2])])
    with pytest.raises(StructureError, match=rf"^{path}, record 1: atoms 0 and 3 are 0\.05 Å "
                                             r"apart \(< 0\.1 Å\): overlapping atoms "
                                             r"\(db row id 2\)$"):
        read_structures(path)
    result = read_structures(path, on_error="skip")
    assert [s.index for s in result.structures] == [0, 2]
    assert result.skipped.counts == {"overlapping atoms": 1}


def test_undecodable_row(tmp_path):
    path = tmp_path / "garbled.aselmdb"
    write_aselmdb(path, [row_dict(a) for a in omat_rows()[:2]])
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"2", b"not zlib")
    env.close()
    with pytest.raises(RecordError, match=rf"^{path}, record 1 \(db row id 2\): cannot decode "
                                          r"the row \(error: "):
        read_structures(path)
    assert read_structures(path, on_error="skip").skipped.counts == {"parse error": 1}


def test_a_folder_of_files_as_released(tmp_path):
    folder = tmp_path / "rattled-relax"
    folder.mkdir()
    atoms = omat_rows()
    write_aselmdb(folder / "data.0001.aselmdb", [row_dict(a) for a in atoms[2:]])
    write_aselmdb(folder / "data.0000.aselmdb", [row_dict(a) for a in atoms[:2]], deleted=(1,))
    np.savez(folder / "metadata.npz", natoms=np.array([4, 4, 4]))  # fairchem ships these
    (folder / "data.0000.aselmdb-lock").write_bytes(b"")  # left by a writer: not data
    result = read_structures(folder, dataset="omat")
    first, second = str(folder / "data.0000.aselmdb"), str(folder / "data.0001.aselmdb")
    assert [(s.source, s.index) for s in result.structures] == [(first, 0), (second, 0),
                                                               (second, 1)]
    assert [s.energy for s in result.structures] == [a.calc.results["energy"] for a in atoms[1:]]
    assert str(result.skipped) == f"skipped 0 of 3 records in {folder}"
    stream = iter_structures(folder)
    assert stream.files == [first, second]


def test_folder_skip_report_names_the_file(tmp_path):
    folder = tmp_path / "omol"
    folder.mkdir()
    rows = omol_rows()
    good = [row_dict(a, data={"charge": q, "spin": m}) for a, q, m in rows]
    bad = row_dict(rows[0][0], data={"charge": 0, "spin": 1})  # CH3 has 9 electrons
    write_aselmdb(folder / "a.aselmdb", good[:2])
    write_aselmdb(folder / "b.aselmdb", [good[2], bad])
    result = read_structures(folder, on_error="skip")
    assert len(result) == 3 and result.skipped.counts == {"charge/spin": 1}
    [(file, index, message)] = result.skipped.examples
    assert (file, index) == (str(folder / "b.aselmdb"), 1)
    assert message.startswith(f"{folder / 'b.aselmdb'}, record 1: spin multiplicity 1 is "
                              "impossible with 9 electrons")


def test_iteration_is_lazy(tmp_path):
    path = tmp_path / "lazy.aselmdb"
    rows = omol_rows()
    dicts = [row_dict(a, data={"charge": q, "spin": m}) for a, q, m in rows]
    dicts[2]["data"]["charge"] = 0.5
    write_aselmdb(path, dicts)
    stream = iter_structures(path)
    assert stream.skipped.n_records == 0  # nothing read yet
    assert next(stream).index == 0 and next(stream).index == 1
    assert stream.skipped.n_records == 2
    with pytest.raises(StructureError, match=r"record 2: charge must be a whole number of e, "
                                             r"got 0\.5 \(db row id 3\)"):
        next(stream)
    skipping = iter_structures(path, on_error="skip")
    assert [s.index for s in skipping] == [0, 1, 3]
    assert skipping.skipped.counts == {"charge/spin": 1}


def test_not_an_lmdb_file(tmp_path):
    path = tmp_path / "fake.aselmdb"
    path.write_text("just text\n" * 100)
    with pytest.raises(ReaderError, match=rf"^{path}: not an LMDB file \("):
        read_structures(path)


def test_lmdb_without_nextid_is_not_an_ase_lmdb(tmp_path):
    path = tmp_path / "other.aselmdb"
    env = lmdb.open(str(path), subdir=False, lock=False, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"alpha", b"1")
        txn.put(b"beta", b"2")
    env.close()
    with pytest.raises(ReaderError, match=rf"^{path}: an LMDB file with 2 entries but no "
                                          r"'nextid' key: not an ASE-LMDB database$"):
        read_structures(path, on_error="skip")


def test_empty_database(tmp_path):
    path = tmp_path / "empty.aselmdb"
    write_aselmdb(path, [])
    with pytest.raises(ReaderError, match=rf"^{path}: empty file, no records"):
        read_structures(path)


def test_missing_lmdb_names_the_package(tmp_path, monkeypatch):
    path = tmp_path / "x.aselmdb"
    write_aselmdb(path, [row_dict(omat_rows()[0])])
    monkeypatch.setitem(sys.modules, "lmdb", None)  # import lmdb now raises ImportError
    with pytest.raises(ReaderError) as info:
        read_structures(path)
    assert str(info.value) == (
        f"{path}: reading aselmdb files needs the Python package 'lmdb', which is not "
        "installed: pip install lmdb (or pip install 'atomgfm[storage]')")


def test_reading_writes_no_lock_file(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    write_aselmdb(folder / "a.aselmdb", [row_dict(a) for a in omat_rows()])
    before = sorted(os.listdir(folder))
    assert before == ["a.aselmdb"]
    read_structures(folder / "a.aselmdb")
    read_structures(folder)
    assert sorted(os.listdir(folder)) == before


def test_a_dataset_can_be_a_folder_of_aselmdb_files(tmp_path):
    """OMol25 ships folders of .aselmdb files: a dataset path may name the folder. The records of
    every file are read, charge/spin reach the dataset table, and the provenance hash covers the
    files (changing one changes it)."""
    from atomgfm.config.schema import DataConfig, DatasetConfig
    from atomgfm.data.sources import load_datasets

    folder = tmp_path / "omol"
    folder.mkdir()
    rows = [row_dict(a, data={"charge": q, "spin": m}) for a, q, m in omol_rows()]
    write_aselmdb(folder / "data0000.aselmdb", rows[:2])
    write_aselmdb(folder / "data0001.aselmdb", rows[2:])
    cfg = DataConfig(datasets=[DatasetConfig(name="omol", path=str(folder))], val_fraction=0.25)
    (d,) = load_datasets(cfg)
    assert len(d.train) + len(d.val) == 4
    states = sorted((int(s.charge), int(s.spin)) for s in d.train + d.val)
    assert states == sorted((q, m) for _, q, m in OMOL_STATES)
    assert d.registry_entry()["states"] == sorted({(int(s.charge), int(s.spin))
                                                    for s in d.train})
    before = d.provenance
    write_aselmdb(folder / "data0001.aselmdb", rows[2:3])
    assert load_datasets(cfg)[0].provenance != before
