"""The sharded ADIOS2 store: round trips from every source kind, resumable preprocessing,
hash-checked shards, content-hash splits shared with the file path, streaming training."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zlib

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.db import connect

from atomgfm import registry
from atomgfm.config.schema import DataConfig, DatasetConfig
from atomgfm.data.readers import read_structures
from atomgfm.data.sources import load_datasets, prepare_data
from atomgfm.data.store.manifest import Store, StoreError
from atomgfm.data.store.shard import ShardError
from atomgfm.data.store.splits import content_hash, hash_split
from atomgfm.data.store.writer import PreprocessInterrupted, preprocess
from atomgfm.testing.fixtures import emt_bulk, emt_clusters
from atomgfm.testing.store import assert_store_round_trip
from atomgfm.units import energy_factor, length_factor

pytest.importorskip("adios2")
CUTOFF = 4.0


def labelled(n_bulk: int = 6, n_clusters: int = 6, seed: int = 0):
    """EMT-labelled periodic alloys (with stress) and charged/open-shell clusters."""
    out = []
    for a in emt_bulk(n_bulk, seed):
        a.calc = EMT()
        a.info.update(energy=a.get_potential_energy())
        a.arrays["forces"] = a.get_forces()
        a.info["stress"] = a.get_stress()
        out.append(a)
    for k, a in enumerate(emt_clusters(n_clusters, seed + 1, size=4)):
        a.calc = EMT()
        a.info.update(energy=a.get_potential_energy())
        a.arrays["forces"] = a.get_forces()
        charge = k % 3 - 1
        electrons = int(a.numbers.sum()) - charge
        a.info.update(charge=charge, spin=1 + electrons % 2 + (2 if k % 2 and electrons > 2
                                                                 else 0))
        out.append(a)
    return out


def _strip(a):
    b = a.copy()
    b.calc = None
    return b


# ---- one entry per source kind: (writer(tmp_path, atoms) -> path, DatasetConfig extras)
def _extxyz(tmp_path, atoms):
    """kcal/mol and Bohr in the file: the reader converts, the store keeps eV and Å."""
    e, length = energy_factor("kcal/mol"), length_factor("Bohr")
    frames = []
    for a in atoms:
        b = _strip(a)
        b.positions /= length
        b.cell = b.cell.array / length
        b.info["energy"] = a.info["energy"] / e
        b.arrays["forces"] = a.arrays["forces"] / e * length
        if "stress" in a.info:
            b.info["stress"] = a.info["stress"] / e * length**3
        frames.append(b)
    path = tmp_path / "set.extxyz"
    import ase.io

    ase.io.write(path, frames, format="extxyz")
    return path, {"energy_unit": "kcal/mol", "length_unit": "Bohr"}


def _ase_db(tmp_path, atoms):
    from ase.calculators.singlepoint import SinglePointCalculator

    path = tmp_path / "set.db"
    with connect(path) as db:
        for a in atoms:
            b = _strip(a)
            results = {"energy": a.info["energy"], "forces": a.arrays["forces"]}
            if "stress" in a.info:
                results["stress"] = a.info["stress"]
            b.calc = SinglePointCalculator(b, **results)
            kv = ({"total_charge": a.info["charge"], "spin": a.info["spin"]}
                  if "spin" in a.info else {})
            db.write(b, **kv)  # ("charge" is a reserved ASE db key)
    return path, {}


def _aselmdb(tmp_path, atoms):
    lmdb = pytest.importorskip("lmdb")
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.db.row import AtomsRow

    def plain(o):
        return np.asarray(o).tolist()

    path = tmp_path / "set.aselmdb"
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, a in enumerate(atoms, start=1):
            b = _strip(a)
            results = {"energy": a.info["energy"], "forces": a.arrays["forces"]}
            if "stress" in a.info:
                results["stress"] = a.info["stress"]
            b.calc = SinglePointCalculator(b, **results)
            row = AtomsRow(b)
            dct = {k: row[k] for k in row.__dict__ if k[0] != "_" and k not in row._keys
                   and k != "id"}
            dct["cell"] = np.asarray(dct["cell"])
            dct["data"] = {k: a.info[k] for k in ("charge", "spin") if k in a.info}
            txn.put(str(i).encode(), zlib.compress(json.dumps(dct, default=plain).encode()))
        txn.put(b"nextid", zlib.compress(json.dumps(len(atoms) + 1).encode()))
    env.close()
    (tmp_path / "set.aselmdb-lock").unlink(missing_ok=True)
    return path, {}


def _md17(tmp_path, atoms):
    """rMD17's layout: one molecule, frames of it, kcal/mol(/Å)."""
    if "md17" not in registry.names("reader"):
        pytest.skip("the md17 reader is not registered")
    base = emt_clusters(1, 3, size=4)[0]
    rng = np.random.default_rng(0)
    coords, energies, forces = [], [], []
    for _ in range(6):
        a = base.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        coords.append(a.positions)
        energies.append(a.get_potential_energy() / energy_factor("kcal/mol"))
        forces.append(a.get_forces() / energy_factor("kcal/mol"))
    path = tmp_path / "rmd17_cluster.npz"
    np.savez(path, nuclear_charges=base.numbers, coords=np.array(coords),
             energies=np.array(energies), forces=np.array(forces))
    return path, {}


def _ani1x(tmp_path, atoms):
    """ANI-1x's HDF5 layout: a group per formula, Hartree labels, float32 coordinates; one
    conformer not computed (NaN energy), which the reader omits and counts."""
    if "ani1x" not in registry.names("reader"):
        pytest.skip("the ani1x reader is not registered")
    h5py = pytest.importorskip("h5py")
    hartree = energy_factor("Hartree")
    rng = np.random.default_rng(1)
    path = tmp_path / "ani1x-release.h5"
    with h5py.File(path, "w") as f:
        for name, base in (("Cu2Ni2", emt_clusters(1, 5, size=4, elements=("Cu", "Ni"))[0]),
                           ("Au3Cu", emt_clusters(1, 6, size=4, elements=("Au", "Cu"))[0])):
            coords, energies, forces = [], [], []
            for _ in range(4):
                a = base.copy()
                a.positions = (a.positions + rng.normal(0, 0.05, a.positions.shape)).astype(
                    np.float32)
                a.calc = EMT()
                coords.append(a.positions)
                energies.append(a.get_potential_energy() / hartree)
                forces.append(a.get_forces() / hartree)
            energies[2] = np.nan
            g = f.create_group(name)
            g.create_dataset("atomic_numbers", data=base.numbers.astype(np.uint8))
            g.create_dataset("coordinates", data=np.array(coords, dtype=np.float32))
            g.create_dataset("wb97x_dz.energy", data=np.array(energies))
            g.create_dataset("wb97x_dz.forces", data=np.array(forces, dtype=np.float32))
    return path, {}


SOURCES = {"extxyz": _extxyz, "ase_db": _ase_db, "aselmdb": _aselmdb, "md17": _md17,
           "ani1x": _ani1x}


def _cfg(paths, name="set", **kw) -> DataConfig:
    extras = kw.pop("extras", {})
    return DataConfig(datasets=[DatasetConfig(name=name, path=[str(p) for p in paths], **extras)],
                      val_fraction=0.3, **kw)


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_round_trip_file_store_graph_source_identical(tmp_path, kind):
    """Records read back from the store are the reader's records (units converted), and the
    graph source gives exactly the graphs the file path builds (the SPICE, Transition1x and
    MPtrj layouts: tests/data/test_store_corpus_round_trip.py)."""
    path, extras = SOURCES[kind](tmp_path, labelled())
    back = assert_store_round_trip(path, tmp_path, CUTOFF, **extras)
    molecules = kind in ("md17", "ani1x")  # one-molecule corpora: neutral, no stress
    assert any(s.stress is not None for s in back) or molecules
    assert {s.charge for s in back} != {0.0} or molecules


def test_store_and_files_same_splits_references_and_stats(tmp_path):
    path, _ = _extxyz(tmp_path, labelled(10, 10))
    cfg = _cfg([path], extras={"energy_unit": "kcal/mol", "length_unit": "Bohr"})
    preprocess(cfg, CUTOFF, tmp_path / "store", shard_size=4, progress=False)
    (d,) = load_datasets(cfg)
    files = prepare_data(cfg, CUTOFF, datasets=[d], progress=False)
    streamed = prepare_data(dataclasses.replace(cfg, store=str(tmp_path / "store")), CUTOFF,
                            progress=False)
    store = Store.open(tmp_path / "store")
    val_hashes = {bytes(h) for h in store.entries["hash"][store.indices(0, 1)]}
    assert val_hashes == {content_hash(s) for s in d.val} and 0 < len(d.val) < 20
    a, b = files.table[0], streamed.table[0]
    for key in ("n_train", "n_val", "labels", "elements", "states", "weights", "provenance"):
        assert a[key] == b[key], key
    for key, value in a["normalization"].items():
        np.testing.assert_allclose(b["normalization"][key], value, rtol=1e-8, atol=1e-9)
    assert files.stats.to_dict() == streamed.stats.to_dict()


def test_splits_stable_when_data_is_appended(tmp_path):
    first, _ = _ase_db(tmp_path, labelled(8, 8, seed=0))
    more_dir = tmp_path / "more"
    more_dir.mkdir()
    more, _ = _ase_db(more_dir, labelled(8, 8, seed=5))
    preprocess(_cfg([first]), CUTOFF, tmp_path / "a", shard_size=6, progress=False)
    preprocess(_cfg([first, more]), CUTOFF, tmp_path / "ab", shard_size=6, progress=False)
    a, ab = Store.open(tmp_path / "a"), Store.open(tmp_path / "ab")
    split_a = {bytes(h): int(s) for h, s in zip(a.entries["hash"], a.entries["split"],
                                                strict=True)}
    split_ab = {bytes(h): int(s) for h, s in zip(ab.entries["hash"], ab.entries["split"],
                                                 strict=True)}
    assert len(split_ab) == len(split_a) + 16
    assert all(split_ab[h] == s for h, s in split_a.items())
    # the file path decides the same way
    structures = read_structures(first).structures
    _, val = hash_split(structures, 0.3)
    assert {content_hash(structures[i]) for i in val} == {h for h, s in split_a.items() if s}


def test_interrupted_preprocess_resumes_every_record_exactly_once(tmp_path):
    path, _ = _ase_db(tmp_path, labelled(10, 10))
    cfg = _cfg([path])
    out = tmp_path / "store"
    with pytest.raises(PreprocessInterrupted):
        preprocess(cfg, CUTOFF, out, shard_size=3, progress=False, stop_after_shards=2)
    with pytest.raises(StoreError, match="did not finish"):
        Store.open(out)
    shards = out / "shards"
    done = sorted(p.name for p in shards.glob("*.json"))
    assert done == ["d000-0000-000000.json", "d000-0000-000001.json"]
    first_digest = json.loads((shards / done[0]).read_text())["digest"]
    mtime = (shards / "d000-0000-000000.bp" / "data.0").stat().st_mtime_ns
    # what a kill leaves behind: a half-written temporary shard, and a shard renamed into place
    # whose side file was never written; neither may count as complete
    shutil.copytree(shards / "d000-0000-000001.bp", shards / ".tmp-d000-0000-000002.bp-4242")
    shutil.copytree(shards / "d000-0000-000001.bp", shards / "d000-0000-000003.bp")
    preprocess(cfg, CUTOFF, out, shard_size=3, progress=False)
    store = Store.open(out)
    assert (shards / "d000-0000-000000.bp" / "data.0").stat().st_mtime_ns == mtime  # not redone
    assert store.shards[0]["digest"] == first_digest
    assert not list(shards.glob(".tmp-*"))
    expected = [content_hash(s) for s in read_structures(path).structures]
    assert [bytes(h) for h in store.entries["hash"]] == expected  # each once, in order
    store.verify()
    # a different spec into the same folder is refused
    with pytest.raises(StoreError, match="different spec"):
        preprocess(cfg, CUTOFF + 1, out, shard_size=3, progress=False)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_shard_is_named_and_refused(tmp_path, damage):
    path, _ = _ase_db(tmp_path, labelled(6, 6))
    cfg = _cfg([path])
    preprocess(cfg, CUTOFF, tmp_path / "store", shard_size=4, progress=False)
    data0 = tmp_path / "store" / "shards" / "d000-0000-000001.bp" / "data.0"
    raw = bytearray(data0.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
        data0.write_bytes(bytes(raw))
    else:
        data0.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(ShardError, match=r"d000-0000-000001\.bp: hash check failed"):
        prepare_data(dataclasses.replace(cfg, store=str(tmp_path / "store")), CUTOFF,
                     progress=False)
    # preprocessing again redoes exactly that shard
    preprocess(cfg, CUTOFF, tmp_path / "store", shard_size=4, progress=False)
    prepare_data(dataclasses.replace(cfg, store=str(tmp_path / "store")), CUTOFF,
                 progress=False)


def test_staging_copies_verified_shards(tmp_path):
    path, _ = _ase_db(tmp_path, labelled(4, 4))
    cfg = _cfg([path])
    preprocess(cfg, CUTOFF, tmp_path / "store", shard_size=3, progress=False)
    staged = dataclasses.replace(cfg, store=str(tmp_path / "store"),
                                 stage_dir=str(tmp_path / "local"))
    data = prepare_data(staged, CUTOFF, progress=False)
    assert sorted(p.name for p in (tmp_path / "local" / "shards").iterdir()) == [
        f"d000-0000-{k:06d}.bp" for k in range(3)]
    assert str(tmp_path / "local") in str(data.train[0].cache.get(0).path)
    # a damaged staged copy is replaced by a fresh one
    (tmp_path / "local" / "shards" / "d000-0000-000000.bp" / "md.0").write_bytes(b"x")
    data = prepare_data(staged, CUTOFF, progress=False)
    Store.open(tmp_path / "store").verify(root=tmp_path / "local")


def test_store_errors_name_the_problem(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        Store.open(tmp_path / "nothing")
    path, _ = _ase_db(tmp_path, labelled(3, 3))
    cfg = _cfg([path])
    preprocess(cfg, CUTOFF, tmp_path / "store", shard_size=10, progress=False)
    with pytest.raises(StoreError, match="cutoff 4.0 Å but the model's cutoff is 5.0"):
        prepare_data(dataclasses.replace(cfg, store=str(tmp_path / "store")), 5.0,
                     progress=False)
    other = dataclasses.replace(cfg, store=str(tmp_path / "store"),
                                datasets=[DatasetConfig(name="nope", path="x")])
    with pytest.raises(StoreError, match=r"no dataset\(s\) \['nope'\]"):
        prepare_data(other, CUTOFF, progress=False)


def test_cli_preprocess_and_info(tmp_path, capsys):
    from atomgfm.cli.main import main

    path, _ = _ase_db(tmp_path, labelled(4, 4))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"cutoff: {CUTOFF}\ndata:\n  val_fraction: 0.3\n  datasets:\n"
                    f"    - {{name: alloys, path: {path.name}, level_of_theory: EMT}}\n")
    assert main(["data", "preprocess", str(spec), "--out", str(tmp_path / "st"),
                 "--shard-size", "3"]) == 0
    assert main(["data", "info", str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert "8 structures in 3 shards" in out and "alloys" in out and "EMT" in out
    assert main(["data", "verify", str(tmp_path / "st")]) == 0
    assert "all 3 shards match" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_sigkilled_preprocess_with_workers_resumes_exactly_once(tmp_path):
    """A real kill (SIGKILL of the process group, workers included) mid-conversion."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path, _ = _ase_db(tmp_path, labelled(30, 30))
    code = ("from atomgfm.config.schema import DataConfig, DatasetConfig\n"
            "from atomgfm.data.store.writer import preprocess\n"
            f"cfg = DataConfig(datasets=[DatasetConfig(name='set', path=[{str(path)!r}])], "
            "val_fraction=0.3)\n"
            f"preprocess(cfg, {CUTOFF}, {str(tmp_path / 'store')!r}, workers=2, shard_size=2, "
            "progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 120
    while len(list((tmp_path / "store" / "shards").glob("*.json"))) < 3:
        assert proc.poll() is None and time.time() < deadline, "finished before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "store" / "manifest.json").exists()
    preprocess(_cfg([path]), CUTOFF, tmp_path / "store", shard_size=2, progress=False)
    store = Store.open(tmp_path / "store")
    expected = [content_hash(s) for s in read_structures(path).structures]
    assert [bytes(h) for h in store.entries["hash"]] == expected
    store.verify()


@pytest.mark.slow
def test_worker_processes_write_the_same_store(tmp_path):
    """Sources read in parallel give byte-identical shards and the same manifest."""
    a, _ = _ase_db(tmp_path, labelled(6, 6, seed=0))
    sub = tmp_path / "b"
    sub.mkdir()
    b, _ = _ase_db(sub, labelled(6, 6, seed=3))
    cfg = DataConfig(datasets=[DatasetConfig(name="one", path=[str(a), str(b)]),
                               DatasetConfig(name="two", path=str(b))], val_fraction=0.3)
    preprocess(cfg, CUTOFF, tmp_path / "w1", shard_size=5, progress=False)
    preprocess(cfg, CUTOFF, tmp_path / "w2", shard_size=5, workers=2, progress=False)
    s1, s2 = Store.open(tmp_path / "w1"), Store.open(tmp_path / "w2")
    assert s1.shards == s2.shards and s1.datasets == s2.datasets
    for key in s1.entries:
        assert np.array_equal(s1.entries[key], s2.entries[key])
