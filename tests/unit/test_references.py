from __future__ import annotations

import numpy as np
import pytest

from atomgfm.data.references import fit_references
from atomgfm.data.structure import Structure


def _s(numbers, energy, forces=None):
    n = len(numbers)
    return Structure(numbers, np.arange(3 * n, dtype=float).reshape(n, 3), energy=energy,
                     forces=forces)


def test_fit_recovers_exact_element_energies():
    e = {1: -13.6, 8: -432.1, 6: -1029.5}
    comps = [[1, 1, 8], [6, 8], [6, 1, 1, 1, 1], [8, 8], [1, 1]]
    structures = [_s(c, sum(e[z] for z in c)) for c in comps]
    norm = fit_references(structures)
    for z, v in e.items():
        assert norm.element_energy[z] == pytest.approx(v, abs=1e-9)
    assert norm.element_energy[2] == 0.0
    assert norm.energy_rms == pytest.approx(0.0, abs=1e-9)


def test_scale_is_force_rms():
    f = np.array([[3.0, 0, 0], [0, -4.0, 0]])
    norm = fit_references([_s([1, 1], -1.0, f), _s([1, 1, 1], -1.4)])
    assert norm.scale == pytest.approx(np.sqrt(25 / 6))


def test_collinear_compositions_give_a_finite_fit():
    # Every structure is stoichiometric NaCl: e_Na and e_Cl are not separable; min-norm fit.
    structures = [_s([11, 17] * k, -5.0 * k) for k in (1, 2, 4)]
    norm = fit_references(structures)
    assert np.isfinite(norm.element_energy).all()
    assert norm.element_energy[11] + norm.element_energy[17] == pytest.approx(-5.0)


def test_no_labels_is_an_error():
    with pytest.raises(ValueError, match="no structure with an energy or forces label"):
        fit_references([_s([1], None)], "empty")


def test_forces_only_dataset_gets_zero_references_and_force_scale():
    norm = fit_references([_s([1, 1], None, np.array([[1.0, 0, 0], [-1.0, 0, 0]]))])
    assert not norm.element_energy.any()
    assert norm.scale == pytest.approx(np.sqrt(2 / 6))


def test_round_trip_through_dict():
    norm = fit_references([_s([1, 8], -10.0), _s([1, 1, 8], -12.0)])
    again = type(norm).from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.element_energy, norm.element_energy)
    assert again.scale == norm.scale


def test_charge_and_spin_state_energies_are_fitted():
    # E = Σ e_Z + 9.5·q⁺ - 2.0·q⁻ + 0.7·(unpaired electrons): recovered exactly.
    e = {1: -13.6, 6: -1029.5, 8: -432.1}
    rows = [([6, 1, 1, 1, 1], 0, 1), ([6, 1, 1, 1], 0, 2), ([6, 1, 1, 1], 1, 1),
            ([8, 1], -1, 1), ([8, 1], 0, 2), ([8, 8], 0, 3), ([1, 1], 1, 2), ([6, 8], 0, 1)]
    structures = []
    for numbers, q, m in rows:
        energy = sum(e[z] for z in numbers) + 9.5 * max(q, 0) - 2.0 * max(-q, 0) + 0.7 * (m - 1)
        n = len(numbers)
        structures.append(Structure(numbers, np.arange(3 * n, dtype=float).reshape(n, 3),
                                    energy=energy, charge=q, spin=m))
    norm = fit_references(structures)
    np.testing.assert_allclose(norm.state_energy, [9.5, -2.0, 0.7], atol=1e-8)
    assert norm.element_energy[8] == pytest.approx(-432.1, abs=1e-8)
    assert norm.reference_energy(structures[2]) == pytest.approx(structures[2].energy)


def test_neutral_closed_shell_data_fits_no_state_energy():
    norm = fit_references([_s([1, 8], -10.0), _s([1, 1, 8], -12.0)])
    np.testing.assert_array_equal(norm.state_energy, 0.0)
