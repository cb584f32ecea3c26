"""Structure validation: charge and multiplicity of a possible state, overlapping atoms."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import atomgfm
from atomgfm.data.readers import read_structures
from atomgfm.data.structure import MIN_DISTANCE, Structure, StructureError

WATER = molecule("H2O")  # 10 electrons when neutral


def water(**kw) -> Structure:
    return Structure(WATER.numbers, WATER.positions, source="w.xyz", index=3, **kw)


def state_error(**kw) -> StructureError:
    with pytest.raises(StructureError) as info:
        water(**kw)
    assert info.value.reason == "charge/spin"
    return info.value


# --- charge and spin ------------------------------------------------------------------------


@pytest.mark.parametrize("charge, spin", [(0, 0), (0, 1), (0, 3), (1, 2), (-1, 2), (2, 1),
                                          (-2, 3), (10, 1), (10, 0), (1, 0)])
def test_possible_states_pass(charge, spin):
    s = water(charge=charge, spin=spin)
    assert (s.charge, s.spin) == (float(charge), float(spin))


def test_near_integers_are_rounded():
    s = water(charge=1 + 4e-7, spin=2 - 4e-7)
    assert (s.charge, s.spin) == (1.0, 2.0)


def test_fractional_charge():
    assert str(state_error(charge=0.5)) == (
        "w.xyz, record 3: charge must be a whole number of e, got 0.5")
    assert "got 1.00001" in str(state_error(charge=1.00001))


def test_fractional_multiplicity():
    assert str(state_error(spin=1.5)) == (
        "w.xyz, record 3: spin multiplicity must be a whole number, got 1.5")


def test_negative_multiplicity():
    assert str(state_error(spin=-1)) == (
        "w.xyz, record 3: spin multiplicity must be >= 1 (or 0 for not given), got -1.0")


def test_parity_of_unpaired_electrons():
    assert str(state_error(spin=2)) == (
        "w.xyz, record 3: spin multiplicity 2 is impossible with 10 electrons (charge 0): "
        "1 unpaired electrons need an electron count of the same parity")
    assert str(state_error(charge=1, spin=1)) == (
        "w.xyz, record 3: spin multiplicity 1 is impossible with 9 electrons (charge 1): "
        "0 unpaired electrons need an electron count of the same parity")


def test_more_unpaired_electrons_than_electrons():
    assert str(state_error(charge=8, spin=5)) == (
        "w.xyz, record 3: spin multiplicity 5 needs 4 unpaired electrons but there are only "
        "2 electrons (charge 8)")
    s = Structure([1], [[0, 0, 0]], charge=1, spin=1)  # a bare proton: 0 electrons, singlet
    assert s.spin == 1.0


def test_charge_beyond_the_nuclear_charge():
    assert str(state_error(charge=11)) == (
        "w.xyz, record 3: charge 11 exceeds the nuclear charge 10 (negative electron count)")


def test_non_finite_charge():
    assert str(state_error(charge=float("nan"))) == "w.xyz, record 3: non-finite charge"


def test_unknown_spin_is_allowed_for_solids():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    s = Structure(cu.numbers, cu.positions, cu.cell.array, cu.pbc, charge=0, spin=0)
    assert s.spin == 0.0


# --- overlapping atoms ----------------------------------------------------------------------


def test_min_distance_is_a_tenth_of_an_angstrom():
    assert MIN_DISTANCE == 0.1


def test_overlapping_atoms_named():
    pos = np.array([[0, 0, 0], [1.0, 0, 0], [1.03, 0.04, 0], [3, 0, 0]])
    s = Structure([6, 1, 1, 8], pos, source="m.xyz", index=5, charge=1, spin=0)
    with pytest.raises(StructureError) as info:
        s.check_overlapping_atoms()
    assert str(info.value) == ("m.xyz, record 5: atoms 1 and 2 are 0.05 Å apart (< 0.1 Å): "
                               "overlapping atoms")
    assert info.value.reason == "overlapping atoms"
    Structure([6, 1], pos[:2]).check_overlapping_atoms()  # 1 Å: fine


def test_overlap_through_a_periodic_image():
    cell = np.diag([4.0, 4.0, 4.0])
    pos = np.array([[0.02, 1.0, 1.0], [3.96, 1.0, 1.0]])  # 0.06 Å apart across the x face
    s = Structure([29, 29], pos, cell, [True, True, True], source="c.xyz")
    with pytest.raises(StructureError, match=r"^c\.xyz, record 0: atoms 0 and 1 are 0\.06 Å "
                                             r"apart \(< 0\.1 Å\): overlapping atoms$"):
        s.check_overlapping_atoms()
    Structure([29, 29], pos, cell, [False, True, True]).check_overlapping_atoms()  # no image in x


def test_atom_overlapping_its_own_image():
    cell = np.array([[0.05, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    s = Structure([1, 1], [[0, 0, 0], [0, 1.5, 0]], cell, [True, True, True])
    with pytest.raises(StructureError, match=r"record 0: atom 0 and its periodic image are "
                                             r"0\.05 Å apart"):
        s.check_overlapping_atoms()


# --- through a reader -----------------------------------------------------------------------


def labelled(atoms, **info):
    atoms.calc = EMT()
    atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(),
                                       forces=atoms.get_forces())
    atoms.info.update(info)
    return atoms


def test_reader_skips_impossible_states_and_overlaps(tmp_path):
    path = tmp_path / "mixed.extxyz"
    overlapping = molecule("CH4")
    overlapping.positions[2] = overlapping.positions[1] + [0.0, 0.0, 0.08]
    frames = [labelled(molecule("CH4"), charge=0, spin=1),
              labelled(molecule("CH4"), charge=0, spin=2),  # 10 electrons: no doublet
              labelled(overlapping),
              labelled(molecule("CH3"), charge=0, spin=2)]
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(StructureError, match=r"mixed\.extxyz, record 1: spin multiplicity 2 is "
                                             r"impossible with 10 electrons"):
        read_structures(path)
    result = read_structures(path, on_error="skip")
    assert [s.index for s in result.structures] == [0, 3]
    assert result.skipped.counts == {"charge/spin": 1, "overlapping atoms": 1}
    assert result.skipped.examples[1] == (
        str(path), 2, f"{path}, record 2: atoms 1 and 2 are 0.08 Å apart (< 0.1 Å): "
                      "overlapping atoms")


def test_shipped_demo_file_validates():
    path = Path(atomgfm.__file__).parent / "demo" / "files" / "mol_pbe_svp.extxyz"
    result = read_structures(path)
    assert len(result) == 80 and result.skipped.total == 0
    states = {(s.charge, s.spin) for s in result.structures}
    assert {(0.0, 1.0), (0.0, 2.0), (1.0, 2.0), (-1.0, 1.0)} <= states
