"""The ASE calculator names the Atoms in its errors and warns, once per head and state, when a
head never trained on the input's (charge, multiplicity) state."""

from __future__ import annotations

import warnings

import pytest
from ase import Atoms
from ase.build import bulk

from atomgfm.calculators.ase_calculator import (
    Calculator,
    UntrainedStateWarning,
    atoms_to_structure,
)
from atomgfm.data.structure import Structure, StructureError
from atomgfm.models.checkpoint import read_checkpoint, save_checkpoint
from atomgfm.testing.fixtures import train_tiny_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for two steps on EMT fixtures (all records: charge 0, spin not
    given), plus variants of its checkpoint with edited dataset registries."""
    out = tmp_path_factory.mktemp("run")
    train_tiny_model(out)
    state = read_checkpoint(out / "last.pt")
    assert state["datasets"][0]["name"] == "bulk" and state["datasets"][0]["states"] == [(0, 0)]
    paths = {"trained": out / "last.pt"}
    for d in state["datasets"]:
        d["states"] = [(0, 0), (1, 2)]
    save_checkpoint(out / "cation.pt", {k: v for k, v in state.items() if k != "format"})
    paths["cation"] = out / "cation.pt"
    for d in state["datasets"]:
        del d["states"]
    save_checkpoint(out / "old.pt", {k: v for k, v in state.items() if k != "format"})
    paths["old"] = out / "old.pt"
    return paths


def _cu4(charge=None, spin=None, rattle=0):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    if rattle:
        atoms.rattle(0.02, seed=rattle)
    if charge is not None:
        atoms.info["charge"] = charge
    if spin is not None:
        atoms.info["spin"] = spin
    return atoms


def _energy(calc, atoms) -> tuple[float, list[str]]:
    atoms.calc = calc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = atoms.get_potential_energy()
    return e, [str(w.message) for w in caught if issubclass(w.category, UntrainedStateWarning)]


def test_warns_once_per_head_and_untrained_state(trained):
    calc = Calculator(str(trained["trained"]), head="bulk", device="cpu")
    assert _energy(calc, _cu4())[1] == []  # (0, 0): the training state
    e, caught = _energy(calc, _cu4(charge=1, spin=2))
    assert caught == ["head 'bulk' never trained on charge 1, multiplicity 2 (its training "
                      "states (charge, multiplicity): [(0, 0)]); Atoms(Cu4) is predicted by "
                      "extrapolation"]
    assert isinstance(e, float)
    assert _energy(calc, _cu4(charge=1, spin=2, rattle=1))[1] == []  # same state: once only
    caught = _energy(calc, _cu4(charge=-1, spin=2))[1]
    assert len(caught) == 1 and "never trained on charge -1, multiplicity 2" in caught[0]
    assert _energy(calc, _cu4(charge=1, spin=2, rattle=2))[1] == []
    assert calc._warned == {("bulk", (1, 2)), ("bulk", (-1, 2))}
    other = Calculator(str(trained["trained"]), head="bulk", device="cpu")  # per calculator
    assert len(_energy(other, _cu4(charge=1, spin=2))[1]) == 1


def test_a_trained_state_does_not_warn(trained):
    calc = Calculator(str(trained["cation"]), head="bulk", device="cpu")
    assert _energy(calc, _cu4(charge=1, spin=2))[1] == []
    caught = _energy(calc, _cu4(charge=-1, spin=2))[1]
    assert caught == ["head 'bulk' never trained on charge -1, multiplicity 2 (its training "
                      "states (charge, multiplicity): [(0, 0), (1, 2)]); Atoms(Cu4) is predicted "
                      "by extrapolation"]


def test_old_checkpoints_without_states_do_not_warn(trained):
    calc = Calculator(str(trained["old"]), head="bulk", device="cpu")
    assert _energy(calc, _cu4(charge=1, spin=2))[1] == []
    assert calc._warned == set()


def test_invalid_state_names_the_atoms(trained):
    calc = Calculator(str(trained["trained"]), head="bulk", device="cpu")
    atoms = _cu4(charge=0, spin=-1)
    atoms.calc = calc
    with pytest.raises(StructureError) as info:
        atoms.get_potential_energy()
    assert str(info.value) == ("Atoms(Cu4, charge 0, multiplicity -1): spin multiplicity must be "
                               ">= 1 (or 0 for not given), got -1.0")


def test_impossible_multiplicity_names_the_atoms():
    water = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]],
                  info={"charge": 0, "spin": 2})
    try:
        Structure(water.numbers, water.positions, spin=2)
    except StructureError:
        pass
    else:
        pytest.skip("Structure does not check multiplicity parity in this version")
    with pytest.raises(StructureError) as info:
        atoms_to_structure(water, "mol")
    msg = str(info.value)
    assert msg.startswith("Atoms(H2O, charge 0, multiplicity 2): ") and "<memory>" not in msg
    assert "10 electrons" in msg


def test_non_numeric_charge_names_the_atoms():
    atoms = _cu4(charge="plus one")
    with pytest.raises(StructureError) as info:
        atoms_to_structure(atoms)
    assert str(info.value).startswith("Atoms(Cu4): charge is not numeric (")


def test_unknown_element_names_the_atoms(trained):
    calc = Calculator(str(trained["trained"]), head="bulk", device="cpu")
    atoms = _cu4()
    atoms.numbers[0] = 92
    atoms.calc = calc
    with pytest.raises(ValueError) as info:
        atoms.get_potential_energy()
    assert str(info.value).startswith("Atoms(Cu3U, charge 0, multiplicity 0): element(s) ['U'] "
                                      "not in the training elements of head 'bulk' [")
