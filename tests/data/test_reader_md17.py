"""MD17 and rMD17 .npz: one molecule per file, kcal/mol labels, optional official split files."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from corpus_fixtures import KCAL_MOL_EV, displaced

from atomgfm.data.readers import ReaderError, StructureError, read_structures
from atomgfm.data.readers.stream import reader_for


@pytest.fixture
def ethanol(labelled):
    confs = displaced(molecule("CH3CH2OH"), 4, seed=3)
    labels = [labelled(a) for a in confs]
    e = np.array([x[0] for x in labels]) / KCAL_MOL_EV  # kcal/mol
    F = np.stack([x[1] for x in labels]) / KCAL_MOL_EV  # kcal/mol/Å
    return confs, e, F


def write_md17(path, confs, e, F):
    """sGDML's MD17 keys: z, R, E (n, 1), F, plus name/theory/md5/type."""
    np.savez(path, z=confs[0].numbers.astype(np.uint8), R=np.stack([a.positions for a in confs]),
             E=e[:, None], F=F, name=np.array("ethanol"), theory=np.array("GFN2-xTB"),
             md5=np.array("0" * 32), type=np.array("d"))


def write_rmd17(path, confs, e, F):
    """rMD17's keys: nuclear_charges, coords, energies (n,), forces, old_*."""
    n = len(confs)
    np.savez(path, nuclear_charges=confs[0].numbers.astype(np.int64),
             coords=np.stack([a.positions for a in confs]), energies=e, forces=F,
             old_indices=np.arange(n) * 10, old_energies=e + 1.0, old_forces=F)


@pytest.mark.parametrize("writer", [write_md17, write_rmd17])
def test_both_layouts_in_ev(tmp_path, ethanol, writer):
    confs, e, F = ethanol
    path = tmp_path / f"{writer.__name__[6:]}_ethanol.npz"
    writer(path, confs, e, F)
    assert reader_for(path) == "md17"
    result = read_structures(path, dataset="ethanol")
    assert len(result) == 4
    s = result.structures[2]
    assert s.index == 2 and s.numbers.tolist() == confs[0].numbers.tolist()
    np.testing.assert_array_equal(s.positions, confs[2].positions)
    assert s.energy == pytest.approx(e[2] * KCAL_MOL_EV, rel=1e-7)  # kcal/mol -> eV
    np.testing.assert_allclose(s.forces, F[2] * KCAL_MOL_EV, rtol=1e-7)
    assert s.charge == 0 and not s.pbc.any()


def test_official_split_file(tmp_path, ethanol):
    confs, e, F = ethanol
    (tmp_path / "npz_data").mkdir()
    (tmp_path / "splits").mkdir()
    path = tmp_path / "npz_data" / "rmd17_ethanol.npz"
    write_rmd17(path, confs, e, F)
    (tmp_path / "splits" / "index_test_01.csv").write_text("3\n1\n")
    result = read_structures(path, reader_options={"split_file": "../splits/index_test_01.csv"})
    assert [s.index for s in result.structures] == [3, 1]
    assert result.structures[0].energy == pytest.approx(e[3] * KCAL_MOL_EV, rel=1e-7)
    (tmp_path / "splits" / "bad.csv").write_text("0\n4\n")
    with pytest.raises(ReaderError, match=r"bad.csv: line 2: 4 is not a frame index .*\(0..3\)"):
        read_structures(path, reader_options={"split_file": "../splits/bad.csv"})


def test_malformed_files_named(tmp_path, ethanol):
    confs, e, F = ethanol
    path = tmp_path / "x.npz"
    np.savez(path, z=confs[0].numbers, R=np.stack([a.positions for a in confs]))
    with pytest.raises(ReaderError, match=r"x.npz: unsupported file \(suffix '.npz'\)"):
        read_structures(path)  # by suffix, md17 takes only .npz files with its keys
    with pytest.raises(ReaderError, match=r"x.npz: neither an MD17 .* it has \['R', 'z'\]"):
        read_structures(path, format="md17")
    write_rmd17(path, confs, e, F[:, :-1])
    with pytest.raises(ReaderError, match=r"forces has shape \(4, 8, 3\), expected \(4, 9, 3\)"):
        read_structures(path)
    e_nan = e.copy()
    e_nan[1] = np.nan
    write_rmd17(path, confs, e_nan, F)
    with pytest.raises(StructureError, match=r"x.npz, record 1: non-finite energy .*rMD17 frame 1"):
        read_structures(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ReaderError, match="x.npz: not a readable .npz file"):
        read_structures(path, format="md17")
