"""Physics contracts for every registered backbone, in fp64, on tiny random-weight models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from atomgfm import keys as K
from atomgfm.data.structure import Structure
from atomgfm.models.build import build_model
from atomgfm.registry import names
from atomgfm.testing import physics


def tiny(name: str) -> dict:
    """Every registered backbone, no list to edit: its S preset at a 4 Å cutoff."""
    return {"backbone": name, "preset": "S", "backbone_kwargs": {"cutoff": 4.0}}


@pytest.fixture(params=names("backbone"))
def ff(request):
    model = build_model(tiny(request.param), ["alloy", "mol"], seed=0).double()
    rng = np.random.default_rng(0)
    for head in model.heads.values():
        head.set_normalization(rng.normal(0, 1, head.element_energy.shape), 0.7)
    with torch.no_grad():  # non-zero charge/spin embeddings so those paths are exercised too
        for name, p in model.backbone.named_parameters():
            if "charge" in name or "spin" in name:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture
def cell():
    a = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)  # primitive (triclinic) cell, 2 atoms
    a.set_chemical_symbols(["Cu", "Au"])
    a.cell[2] += [0.3, -0.2, 0.1]  # a little shear
    a.rattle(0.1, seed=1)
    return Structure(a.numbers, a.positions, a.cell.array, a.pbc)


@pytest.fixture
def radical():
    m = molecule("CH3CH2OH")
    m.rattle(0.05, seed=2)
    return Structure(m.numbers, m.positions, charge=1, spin=2)


def test_forces_are_minus_energy_gradient(ff, cell, radical):
    physics.assert_forces_are_gradient(ff, cell)
    physics.assert_forces_are_gradient(ff, radical, dataset_id=1)


def test_stress_is_strain_derivative(ff, cell):
    physics.assert_stress_is_strain_derivative(ff, cell)


def test_invariance_and_equivariance(ff, cell, radical):
    physics.assert_invariance(ff, cell)
    physics.assert_invariance(ff, radical, dataset_id=1)


def test_features_are_invariant_or_equivariant(ff, cell, radical):
    physics.assert_features_equivariant(ff, radical)
    physics.assert_features_equivariant(ff, cell)


def test_no_unused_parameters(ff, radical):
    physics.assert_no_unused_parameters(ff, radical)


def test_supercell_is_extensive(ff, cell):
    physics.assert_supercell_extensive(ff, cell)


def test_alone_equals_in_batch(ff, cell, radical):
    physics.assert_batch_consistent(ff, [radical, cell, radical], [1, 0, 0])


def test_heads_only_see_their_own_atoms(ff, cell, radical):
    physics.assert_heads_isolated(ff, [cell, radical, radical], [0, 1, 0])


def test_train_and_eval_mode_agree(ff, cell, radical):
    e_eval = physics.evaluate(ff, [cell, radical], [0, 1])[K.ENERGY]
    ff.train()
    e_train = physics.evaluate(ff, [cell, radical], [0, 1])[K.ENERGY]
    np.testing.assert_allclose(e_train, e_eval, rtol=1e-12)


def test_isolated_atoms_get_their_reference_energy(ff):
    # Two atoms 10 Å apart (cutoff 4 Å): no neighbours, energy = sum of element references.
    s = Structure([29, 79], [[0, 0, 0], [10, 0, 0]])
    out = physics.evaluate(ff, [s], [0])
    ref = ff.heads["alloy"].element_energy.numpy()
    assert out[K.ENERGY][0] == pytest.approx(ref[29] + ref[79], abs=1e-12)
    np.testing.assert_allclose(out[K.FORCES], 0.0, atol=1e-12)


def test_energy_and_forces_are_continuous_at_the_cutoff(ff):
    """A pair pulled from r_c − 1e-4 Å to r_c + 1e-4 Å changes E by < 1e-6 eV (and forces by
    < 1e-3 eV/Å), with the moving atom still bonded to another."""
    physics.assert_continuous_at_cutoff(ff)
    cutoff = ff.cutoff  # and a lone dimer, which the isolation gate switches off smoothly
    e = [physics.evaluate(ff, [Structure([29, 29], [[0, 0, 0], [r, 0, 0]])])[K.ENERGY][0]
         for r in (cutoff - 1e-4, cutoff + 1e-4)]
    assert abs(e[0] - e[1]) < 1e-6


def test_fp32_and_bf16_stay_close_to_fp64(ff, cell, radical):
    """The same weights in fp32 agree with fp64 to rounding; bf16 autocast within its
    precision (8 bits of mantissa). The errors are what docs/models.md reports."""
    err = physics.precision_errors(ff, [cell, radical], [0, 1])
    assert err["fp32_energy_eV_atom"] < 1e-5 and err["fp32_forces_eV_A"] < 1e-4, err
    assert err["bf16_energy_eV_atom"] < 0.05 and err["bf16_forces_eV_A"] < 0.5, err


def test_charge_and_spin_enter_only_through_their_parameters(ff, radical):
    """Ethanol (26 electrons) in five valid states. With the backbone's charge/spin parameters
    zeroed (and zero state energies in the head), every state has exactly the same energy; with
    them set, each state has its own (so the states are not silently ignored)."""
    states = [(1, 2), (-1, 2), (1, 4), (0, 1), (0, 3)]
    structures = [Structure(radical.numbers, radical.positions, charge=q, spin=m)
                  for q, m in states]
    e = physics.evaluate(ff, structures, [1] * len(states))[K.ENERGY]
    gaps = np.abs(e[:, None] - e[None, :])[np.triu_indices(len(states), 1)]
    assert gaps.min() > 1e-6, f"two charge/spin states give the same energy: {e}"
    saved = {n: p.detach().clone() for n, p in ff.backbone.named_parameters()
             if "charge" in n or "spin" in n}
    assert saved, "the backbone has no charge/spin parameters"
    try:
        with torch.no_grad():
            for n, p in ff.backbone.named_parameters():
                if n in saved:
                    p.zero_()
        e0 = physics.evaluate(ff, structures, [1] * len(states))[K.ENERGY]
        np.testing.assert_allclose(e0, e0[0], rtol=0, atol=1e-10)
    finally:
        with torch.no_grad():
            for n, p in ff.backbone.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


def test_state_energies_shift_energy_not_forces(radical):
    ff = build_model(tiny("painn"), ["mol"], seed=0).double().eval()
    ff.heads["mol"].set_normalization(np.zeros(119), 1.0, state_energy=[2.0, -1.0, 0.5])
    # Charge/spin embeddings start at zero, so only the fitted state energies see charge/spin.
    closed = Structure(radical.numbers, radical.positions, charge=0, spin=1)
    cation = Structure(radical.numbers, radical.positions, charge=1, spin=2)
    anion = Structure(radical.numbers, radical.positions, charge=-2, spin=1)
    out = physics.evaluate(ff, [closed, cation, anion], [0, 0, 0])
    e = out[K.ENERGY]
    assert e[1] - e[0] == pytest.approx(2.0 + 0.5, abs=1e-10)
    assert e[2] - e[0] == pytest.approx(2 * -1.0, abs=1e-10)
    n = radical.n_atoms
    np.testing.assert_allclose(out[K.FORCES][n:2 * n], out[K.FORCES][:n], atol=1e-12)
    np.testing.assert_allclose(out[K.ATOM_ENERGY].reshape(3, n).sum(1), e, rtol=1e-12)
