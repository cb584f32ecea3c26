"""SPICE HDF5: per-molecule groups in Bohr/Hartree, gradients, charge from the mapped SMILES."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from corpus_fixtures import BOHR_A, HARTREE_EV, acetate, ammonium, displaced

from atomgfm.data.readers import RecordError, StructureError, read_structures
from atomgfm.data.readers.spice import smiles_charge
from atomgfm.data.readers.stream import reader_for

MOLECULES = {  # group name: (mapped SMILES, atoms in map order, charge)
    "CC(=O)[O-]": ("[C:1](=[O:2])([O-:3])[C:4]([H:5])([H:6])[H:7]", acetate(), -1),
    "[NH4+]": ("[N+:1]([H:2])([H:3])([H:4])[H:5]", ammonium(), 1),
    "O": ("[O:1]([H:2])[H:3]", molecule("H2O"), 0),
    "[br-]": ("[Br-:1]", Atoms("Br", positions=[[0.0, 0.0, 0.0]]), -1),
}


def write_spice(path, labelled, molecules=MOLECULES):
    """The layout and dtypes of SPICE's createSpice.py (units attributes included)."""
    with h5py.File(path, "w") as f:
        for name, (smiles, atoms, q) in molecules.items():
            confs = displaced(atoms, 2 if len(atoms) > 1 else 1)
            labels = [labelled(a, charge=q) for a in confs]
            g = f.create_group(name)
            g.create_dataset("subset", data=["SPICE PubChem Set 1 Single Points Dataset v1.3"],
                             dtype=h5py.string_dtype())
            g.create_dataset("smiles", data=[smiles], dtype=h5py.string_dtype())
            g.create_dataset("atomic_numbers", data=atoms.numbers, dtype=np.int16)
            ds = g.create_dataset("conformations", dtype=np.float32,
                                  data=np.stack([a.positions for a in confs]) / BOHR_A)
            ds.attrs["units"] = "bohr"
            ds = g.create_dataset("dft_total_energy",
                                  data=np.array([e for e, _ in labels]) / HARTREE_EV)
            ds.attrs["units"] = "hartree"
            grad = -np.stack([F for _, F in labels]) / (HARTREE_EV / BOHR_A)
            ds = g.create_dataset("dft_total_gradient", data=grad, dtype=np.float32)
            ds.attrs["units"] = "hartree/bohr"
            ds = g.create_dataset("mbis_charges", data=np.zeros((len(confs), len(atoms), 1)),
                                  dtype=np.float32)
            ds.attrs["units"] = "elementary_charge"
    return path


@pytest.mark.parametrize("smiles, charge", [
    ("[C:1]([H:5])([H:6])([H:7])[C:2](=[O:3])[O-:4]", -1),
    ("[O-][N+](=O)c1ccccc1", 0),  # nitro: a zwitterion inside a neutral molecule
    ("[Ca+2:1]", 2), ("[Fe++]", 2), ("[NH4+]", 1), ("[O--]", -2), ("[nH+:3]", 1),
    ("[C@@H:1](Cl)(Br)F", 0), ("[Cl-:1].[Na+:2]", 0), ("c1ccccc1", 0),
])
def test_smiles_formal_charges(smiles, charge):
    assert smiles_charge(smiles)[0] == charge


def test_reads_molecules_with_charge_units_and_forces(tmp_path, labelled):
    path = write_spice(tmp_path / "SPICE-2.0.1.hdf5", labelled)
    assert reader_for(path) == "spice"
    result = read_structures(path, dataset="spice")
    assert len(result) == 2 + 2 + 2 + 1
    by_smiles = {}
    for s in result.structures:
        by_smiles.setdefault(s.info["smiles"], []).append(s)
    acet = by_smiles["[C:1](=[O:2])([O-:3])[C:4]([H:5])([H:6])[H:7]"]
    assert [s.charge for s in acet] == [-1, -1] and acet[0].spin == 1
    assert by_smiles["[N+:1]([H:2])([H:3])([H:4])[H:5]"][0].charge == 1
    assert by_smiles["[Br-:1]"][0].charge == -1 and by_smiles["[Br-:1]"][0].numbers.tolist() == [35]
    # Bohr -> Å, Hartree -> eV, gradient (Hartree/Bohr) -> forces = -gradient (eV/Å)
    energy, forces = labelled(displaced(acetate(), 2)[1], charge=-1)
    s = acet[1]
    assert s.energy == pytest.approx(energy, rel=1e-7)
    np.testing.assert_allclose(s.forces, forces, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.positions, displaced(acetate(), 2)[1].positions, atol=1e-6)
    assert s.info["subset"].startswith("SPICE PubChem")


def test_smiles_that_does_not_match_the_atoms_is_named(tmp_path, labelled):
    bad = {"O": ("[O:1]([H:2])[H:3]", molecule("H2O"), 0),
           "N": ("[N:1]([H:2])([H:3])[H:4]", molecule("H2O"), 0)}
    path = write_spice(tmp_path / "spice.hdf5", labelled, bad)
    with pytest.raises(RecordError, match=r"group /N\): smiles .* maps 4 atoms, atomic_numbers "
                                          "has 3"):
        read_structures(path)
    with h5py.File(path, "a") as f:
        del f["N"]
        del f["O"]["smiles"]
        f["O"].create_dataset("smiles", data=["[N:1]([H:2])[H:3]"], dtype=h5py.string_dtype())
    with pytest.raises(RecordError, match="map number 1 is N but atomic_numbers.0. is 8"):
        read_structures(path)


def test_units_attribute_missing_key_and_impossible_state(tmp_path, labelled):
    path = write_spice(tmp_path / "spice.hdf5", labelled, {"[br-]": MOLECULES["[br-]"],
                                                           "O": MOLECULES["O"]})
    with h5py.File(path, "a") as f:
        f["O"]["conformations"].attrs["units"] = "angstrom"
    with pytest.raises(RecordError, match=r"group /O\): conformations has units 'angstrom'"):
        read_structures(path)
    with h5py.File(path, "a") as f:
        f["O"]["conformations"].attrs["units"] = "bohr"
        del f["O"]["dft_total_gradient"]
    with pytest.raises(RecordError, match=r"group /O\): missing dataset 'dft_total_gradient'"):
        read_structures(path)
    no_forces = read_structures(path, reader_options={"gradient_key": None}, on_error="skip")
    assert len(no_forces) == 3 and all(s.forces is None for s in no_forces.structures)
    with pytest.raises(StructureError, match=r"record 0: spin multiplicity 2 is impossible with "
                                             r"10 electrons .*\(group /O, conformation 0\)"):
        read_structures(path, reader_options={"multiplicity": 2, "gradient_key": None})
