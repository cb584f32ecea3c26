"""The session-cached ``labelled`` fixture of the corpus-reader tests (helpers in
``corpus_fixtures.py``)."""

from __future__ import annotations

import pytest
from ase import Atoms
from corpus_fixtures import xtb


@pytest.fixture(scope="session")
def labelled():
    """``labelled(atoms, charge=0, multiplicity=1)`` -> (energy eV, forces eV/Å), cached."""
    cache: dict = {}

    def label(atoms: Atoms, charge: int = 0, multiplicity: int = 1):
        key = (tuple(atoms.numbers), atoms.positions.round(10).tobytes(), charge, multiplicity)
        if key not in cache:
            cache[key] = xtb(atoms, charge, multiplicity)
        return cache[key]

    return label
