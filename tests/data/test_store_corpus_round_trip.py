"""File → store → graph source for the corpus layouts whose writers live beside their reader
tests (SPICE, Transition1x, MPtrj): records identical, units converted once, same graphs."""

from __future__ import annotations

import pytest
from test_reader_mptrj import mptrj_file  # noqa: F401  (a fixture)
from test_reader_spice import write_spice
from test_reader_transition1x import t1x_file  # noqa: F401  (a fixture)

from atomgfm.testing.store import assert_store_round_trip

pytest.importorskip("adios2")


def test_spice_round_trip_keeps_smiles_charges(tmp_path, labelled):
    path = write_spice(tmp_path / "SPICE-1.1.4.hdf5", labelled)
    back = assert_store_round_trip(path, tmp_path, shard_size=3)
    assert {s.charge for s in back} == {-1.0, 0.0, 1.0}


def test_transition1x_round_trip(tmp_path, t1x_file):  # noqa: F811
    path, (frames, _), (frames2, _) = t1x_file
    back = assert_store_round_trip(path, tmp_path, shard_size=3,
                                   reader_options={"split": "data", "frames": "all"})
    assert 0 < len(back) <= len(frames) + len(frames2)


def test_mptrj_round_trip_keeps_stress(tmp_path, mptrj_file):  # noqa: F811
    path, _, cells = mptrj_file
    back = assert_store_round_trip(path, tmp_path, shard_size=2)
    assert len(back) == len(cells) and all(s.stress is not None for s in back)
