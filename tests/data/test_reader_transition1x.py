"""Transition1x HDF5: data/<formula>/<reaction> path frames, endpoint subgroups, linked splits."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from atomgfm.data.readers import ReaderError, RecordError, read_structures
from atomgfm.data.readers.stream import reader_for

E_KEY, F_KEY = "wB97x_6-31G(d).energy", "wB97x_6-31G(d).forces"


def hcn_path(n: int = 5) -> list[Atoms]:
    """HCN -> HNC: the H swings around the CN axis (a real isomerisation path)."""
    hcn = molecule("HCN")  # C, N, H along z
    c, nn = hcn.positions[0], hcn.positions[1]
    mid, frames = (c + nn) / 2, []
    for t in np.linspace(0, 1, n):
        a = hcn.copy()
        angle = np.pi * t  # from beside C (t=0) to beside N (t=1)
        radius = 1.07 + 0.55 + 0.02 * np.sin(angle)
        a.positions[2] = mid + radius * np.array([np.sin(angle), 0, -np.cos(angle)])
        frames.append(a)
    return frames


def write_reaction(grp, frames, labels, ts: int):
    def put(g, confs, lab):
        g.create_dataset("atomic_numbers", data=confs[0].numbers.astype(np.int64))
        g.create_dataset("positions", data=np.stack([a.positions for a in confs]))
        g.create_dataset(E_KEY, data=np.array([x[0] for x in lab]))
        g.create_dataset(F_KEY, data=np.stack([x[1] for x in lab]))
        g.create_dataset("wB97x_6-31G(d).atomization_energy",
                         data=np.array([x[0] for x in lab]) - 10.0)
    put(grp, frames, labels)  # the path, endpoints included (NEB images)
    for name, k in (("reactant", 0), ("product", len(frames) - 1), ("transition_state", ts)):
        put(grp.create_group(name), [frames[k]], [labels[k]])


@pytest.fixture
def t1x_file(tmp_path, labelled):
    frames = hcn_path()
    labels = [labelled(a) for a in frames]
    h2co = molecule("H2CO")
    frames2 = [h2co.copy() for _ in range(3)]
    for k, a in enumerate(frames2):
        a.positions[2] += [0.0, 0.0, 0.15 * k]  # one H leaves: H2CO -> HCO + H
    labels2 = [labelled(a, multiplicity=1) for a in frames2]
    path = tmp_path / "transition1x.h5"
    with h5py.File(path, "w") as f:
        write_reaction(f.create_group("data/CHN/rxn0001"), frames, labels, ts=2)
        write_reaction(f.create_group("data/CH2O/rxn0002"), frames2, labels2, ts=1)
        f["train/CHN/rxn0001"] = f["data/CHN/rxn0001"]  # hard link
        f.create_group("test/CH2O")["rxn0002"] = h5py.SoftLink("/data/CH2O/rxn0002")
        f.create_group("val")
    return path, (frames, labels), (frames2, labels2)


def test_all_frames_follow_the_official_loader_and_drop_repeated_endpoints(t1x_file):
    path, (frames, labels), (frames2, labels2) = t1x_file
    assert reader_for(path) == "transition1x"
    result = read_structures(path, dataset="t1x")
    # per reaction: reactant, product, then path frames not equal to either endpoint
    assert len(result) == (2 + 3) + (2 + 1)
    assert result.skipped.counts == {"duplicate endpoint": 4}
    rxn1 = [s for s in result.structures if "CHN" in s.info["reaction"]]
    np.testing.assert_allclose(rxn1[0].positions, frames[0].positions)  # reactant
    np.testing.assert_allclose(rxn1[1].positions, frames[-1].positions)  # product
    s = rxn1[2 + 1]  # path frame 2, the transition state: eV and eV/Å as stored
    assert s.energy == labels[2][0]
    np.testing.assert_array_equal(s.forces, labels[2][1])
    assert s.numbers.tolist() == [6, 7, 1] and s.charge == 0 and not s.pbc.any()


def test_splits_follow_hard_and_soft_links(t1x_file):
    path, (frames, _), (frames2, labels2) = t1x_file
    train = read_structures(path, reader_options={"split": "train", "frames": "path"})
    assert len(train) == 5
    assert all("/train/CHN/rxn0001" in s.info["reaction"] for s in train.structures)
    test = read_structures(path, reader_options={"split": "test", "frames": "final"})
    assert [s.info["reaction"].split(", ")[-1] for s in test.structures] == [
        "reactant", "transition_state", "product"]
    assert "-> /data/CH2O/rxn0002" in test.structures[0].info["reaction"]
    assert test.structures[1].energy == labels2[1][0]
    with pytest.raises(ReaderError, match="empty file, no records"):
        read_structures(path, reader_options={"split": "val"})
    with pytest.raises(ReaderError, match=r"reader option split='dev' must be one of 'data'"):
        read_structures(path, reader_options={"split": "dev"})


def test_dangling_link_and_missing_subgroup_named(t1x_file):
    path, *_ = t1x_file
    with h5py.File(path, "a") as f:
        f["test/CH2O"]["rxn0003"] = h5py.SoftLink("/data/CH2O/rxn0003")
        del f["data/CHN/rxn0001/transition_state"]
    with pytest.raises(RecordError, match=r"/test/CH2O/rxn0003 -> /data/CH2O/rxn0003\): "
                                          "dangling link"):
        read_structures(path, reader_options={"split": "test"})
    with pytest.raises(RecordError, match=r"/data/CHN/rxn0001\): /data/CHN/rxn0001: missing "
                                          "subgroup 'transition_state'"):
        read_structures(path)
    skipped = read_structures(path, on_error="skip", reader_options={"split": "test"})
    assert skipped.skipped.counts == {"malformed group": 1, "duplicate endpoint": 2}
