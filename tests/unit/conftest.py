"""Structures the per-backbone unit tests share: a molecule and a sheared two-element cell."""

from __future__ import annotations

import pytest
from ase.build import bulk, molecule

from atomgfm.data.structure import Structure


@pytest.fixture
def ethanol():
    m = molecule("CH3CH2OH")
    m.rattle(0.05, seed=3)
    return Structure(m.numbers, m.positions)


@pytest.fixture
def alloy():
    a = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    a.set_chemical_symbols(["Cu", "Au"])
    a.cell[2] += [0.3, -0.2, 0.1]
    a.rattle(0.1, seed=1)
    return Structure(a.numbers, a.positions, a.cell.array, a.pbc)
