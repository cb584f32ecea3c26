"""EGNN specifics: parameter count, cutoff smoothness, equivariant vectors, precision, DDP."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.stats import GraphStats
from atomgfm.data.structure import MAX_Z, Structure
from atomgfm.models.backbones.egnn import EGNN
from atomgfm.testing import physics
from atomgfm.testing.fixtures import random_force_field

_ff = partial(random_force_field, "egnn")


def _batch(structures, cutoff, dtype=torch.float64):
    return collate([structure_to_graph(s, cutoff) for s in structures], dtype)


def test_m_preset_parameter_count_matches_a_hand_count():
    F, L, R, C = 128, 4, 16, 16  # the M preset
    embedding = (MAX_Z + 1 + 13 + 9) * F  # elements, charges -6..6, multiplicities 0..8
    bessel = R  # the (frozen) Bessel frequencies are a parameter too
    radial = R * L * F + L * F  # every layer's bessel term of φ_e, with φ_e's first bias
    layer = (2 * F * F  # φ_e first layer, h_i and h_j parts
             + (F * F + F)  # φ_e second layer
             + (F * C + C)  # φ_x
             + ((2 * F + C) * F + F) + (F * F + F))  # φ_h
    vector_in = (L - 1) * C * F  # φ_e reads δ from layer 2 on
    expected = embedding + bessel + radial + L * layer + vector_in
    backbone = EGNN(**EGNN.presets["M"])
    assert sum(p.numel() for p in backbone.parameters()) == expected
    assert (backbone.num_scalar_features, backbone.num_vector_features) == (F, C)


def test_dimer_is_smooth_at_the_cutoff():
    ff = _ff()  # default 5 Å cutoff
    with torch.no_grad():
        for p in ff.backbone.parameters():  # larger weights than at init: a harder test
            p.mul_(2.0)
    rc = ff.cutoff
    out = [physics.evaluate(ff, [Structure([29, 29], [[0, 0, 0], [r, 0, 0]])])
           for r in (rc - 1e-4, rc + 1e-4)]
    assert abs(out[0][K.ENERGY][0] - out[1][K.ENERGY][0]) < 1e-6
    assert np.abs(out[0][K.FORCES]).max() < 1e-4
    np.testing.assert_array_equal(out[1][K.FORCES], 0.0)


def test_fp32_and_fp64_energies_agree(ethanol, alloy):
    physics.assert_fp32_matches_fp64(_ff("M"), [ethanol, alloy])


def test_every_parameter_gets_a_gradient(ethanol):
    """No unused parameters: DDP needs no unused-parameter search (φ_h reads the last ‖v‖²)."""
    physics.assert_no_unused_parameters(_ff("S", vector_channels=8), ethanol)


def test_invariant_variant_and_neighbour_normalisation(ethanol):
    ff = _ff("S", vector_channels=0)
    out = ff.backbone(_batch([ethanol], ff.cutoff))
    assert out[K.NODE_VECTORS].shape == (ethanol.n_atoms, 3, 0)
    physics.assert_forces_are_gradient(ff, ethanol)
    assert EGNN(stats=GraphStats([1, 6], 23.5, [], 4, 94)).avg_num_neighbors == 23.5
    assert EGNN().avg_num_neighbors == 10.0
    with pytest.raises(ValueError, match="vector_channels"):
        EGNN(vector_channels=-1)
