"""PNAEq specifics: size, degree statistic, smooth aggregators at the cutoff, equivariant vectors,
precision, unused parameters."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.stats import GraphStats
from atomgfm.data.structure import MAX_Z, Structure
from atomgfm.models.backbones.pna import PNAEq, aggregate
from atomgfm.models.build import build_model
from atomgfm.testing import physics
from atomgfm.testing.fixtures import random_force_field

_ff = partial(random_force_field, "pnaeq")


def _batch(structures, cutoff, dtype=torch.float64):
    return collate([structure_to_graph(s, cutoff) for s in structures], dtype)


def test_m_preset_parameter_count_matches_a_hand_count():
    F, L, R, A, S = 128, 3, 16, 4, 3  # the M preset: 4 aggregators, 3 scalers
    embedding = (MAX_Z + 1 + 13 + 9) * F  # elements, charges -6..6, multiplicities 0..8
    bessel = R  # the (frozen) Bessel frequencies are a parameter too
    radial = R * L * F + L * F  # every layer's bessel term, with the message network's bias
    post = (1 + S * A) * F * F + F + F * F + F  # φ_post on [s, scaled aggregates]
    message = 2 * F * F + post  # W_i, W_j (no bias)
    edge_out = (F * 2 * F + 2 * F) + (L - 1) * (F * 3 * F + 3 * F)  # layer 1 has no v_j gate
    update = 2 * F * F + (2 * F * F + F) + (F * 3 * F + 3 * F)  # U, V, gate MLP
    expected = embedding + bessel + radial + L * (message + update) + edge_out
    backbone = PNAEq(**PNAEq.presets["M"])
    assert sum(p.numel() for p in backbone.parameters()) == expected == 1_289_488
    assert (backbone.num_scalar_features, backbone.num_vector_features) == (F, F)
    assert backbone.aggregators == ("mean", "max", "min", "std")
    assert backbone.scalers == ("identity", "amplification", "attenuation")


def test_degree_statistic_comes_from_the_training_histogram_and_the_checkpoint():
    hist = [0, 2, 1] + [0] * 9 + [1]  # two atoms of degree 1, one of 2, one of 12
    stats = GraphStats([1, 8, 29], 4.0, hist, 4, 16)
    expected = (2 * math.log(2) + math.log(3) + math.log(13)) / 4
    backbone = PNAEq(**PNAEq.presets["S"], stats=stats)
    assert backbone.log_degree.item() == pytest.approx(expected, rel=1e-15)
    ff = build_model({"backbone": "pnaeq", "preset": "S"}, ["a"], stats)
    assert ff.backbone.log_degree.item() == pytest.approx(expected, rel=1e-15)
    assert PNAEq(**PNAEq.presets["S"]).log_degree.item() == 1.0  # no statistics
    state = ff.state_dict()
    assert state["model.backbone.log_degree"].item() == pytest.approx(expected, rel=1e-15)
    fresh = build_model({"backbone": "pnaeq", "preset": "S"}, ["a"])  # rebuilt, then loaded
    fresh.load_state_dict(state)
    assert fresh.backbone.log_degree.item() == pytest.approx(expected, rel=1e-15)
    with pytest.raises(ValueError, match="degree histogram"):
        PNAEq(stats=GraphStats([1], 1.0, [0, 0], 0, 0))


def test_degree_scalers():
    backbone = PNAEq(**PNAEq.presets["S"], stats=GraphStats([1], 1.0, [0, 0, 0, 4], 4, 12))
    delta = math.log(4)
    d = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    ident, amp, att = backbone.degree_scalers(d)
    assert ident is None
    np.testing.assert_allclose(amp[:, 0].numpy(), np.log1p(d.numpy()) / delta, rtol=1e-15)
    np.testing.assert_allclose(att[:, 0].numpy(),
                               delta / np.log1p(np.sqrt(1 + d.numpy() ** 2)), rtol=1e-15)


def _aggregate(m, i, w, n, names, temperature=1.0):
    d = torch.zeros(n, dtype=w.dtype).index_add_(0, i, w)
    return aggregate(m, i, w, w / (d[i] + 1e-3), n, tuple(names.split(",")), temperature)


def test_aggregators_on_a_small_neighbourhood():
    """Atom 0 has three neighbours (weights 1), atom 1 none: exact mean and std (with the
    virtual zero message of weight ε = 1e-3), max/min-like soft extremes, zeros when isolated."""
    m = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]], dtype=torch.float64)  # 3 edges
    i = torch.tensor([0, 0, 0])
    w = torch.ones(3, dtype=torch.float64)
    out = _aggregate(m, i, w, 2, "mean,std,max,min", 0.01).view(2, 4, 2)
    mean = m.sum(0) / 3.001
    var = (m * m).sum(0) / 3.001 - mean**2
    np.testing.assert_allclose(out[0, 0].numpy(), mean.numpy(), rtol=1e-14)
    np.testing.assert_allclose(out[0, 1].numpy(), (torch.sqrt(var + 1e-4) - 1e-2).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(out[0, 2].numpy(), [3.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(out[0, 3].numpy(), [-1.0, -2.0], atol=1e-6)
    np.testing.assert_array_equal(out[1].numpy(), 0.0)
    # Huge messages do not overflow (the shift is exact), and a zero-weight edge does not count.
    big = _aggregate(m * 1e4, i, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), 1, "max")
    np.testing.assert_allclose(big[0].numpy(), [1e4, 4e4])
    # A neighbour of weight 1e-9 barely moves any aggregate, whatever its message.
    names = "mean,std,max,min"
    faint = _aggregate(m, i, torch.tensor([1.0, 1e-9, 1.0], dtype=torch.float64), 1, names, 0.5)
    without = _aggregate(m[[0, 2]], i[:2], torch.ones(2, dtype=torch.float64), 1, names, 0.5)
    np.testing.assert_allclose(faint.numpy(), without.numpy(), atol=1e-7)


def _fifth_neighbour(x: float) -> Structure:
    """A carbon with four neighbours (distorted tetrahedron, 1.5-2 Å) and a fifth atom at x Å."""
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    pos = np.vstack([[0, 0, 0], tet * [[1.5], [1.7], [1.9], [2.0]],
                     x * np.array([0.6, 0.0, 0.8])])
    return Structure([6, 1, 8, 7, 1, 8], pos)


@pytest.mark.parametrize("aggregators", ["mean", "max", "min", "std", "mean,max,min,std"])
def test_each_aggregator_is_smooth_as_a_fifth_neighbour_crosses_the_cutoff(aggregators):
    """The carbon gains a fifth neighbour at r_c ± 1e-4 Å: |E₊ − E₋ + F̄·Δx| < 1e-6 eV (the
    smooth change cancels), with all three degree scalers on and a sharp temperature."""
    ff = _ff("S", aggregators=aggregators, temperature=0.5)
    rc, delta = ff.cutoff, 1e-4
    out = [physics.evaluate(ff, [_fifth_neighbour(rc + sign * delta)]) for sign in (-1, 1)]
    pos = [_fifth_neighbour(rc + sign * delta).positions for sign in (-1, 1)]
    work = float(np.sum(0.5 * (out[0][K.FORCES] + out[1][K.FORCES]) * (pos[1] - pos[0])))
    jump = abs(out[1][K.ENERGY][0] - out[0][K.ENERGY][0] + work)
    assert jump < 1e-6, f"{aggregators}: energy jumps by {jump:.3g} eV at the cutoff"
    assert np.abs(out[1][K.FORCES] - out[0][K.FORCES]).max() < 1e-3
    # The fifth atom does matter inside the cutoff (so the test can see a jump).
    near = physics.evaluate(ff, [_fifth_neighbour(rc - 0.7)])[K.ENERGY][0]
    assert abs(near - out[1][K.ENERGY][0]) > 1e-4


def test_fp32_and_fp64_energies_agree(ethanol, alloy):
    physics.assert_fp32_matches_fp64(_ff("M"), [ethanol, alloy])


def test_every_parameter_gets_a_gradient(ethanol):
    """No unused parameters: DDP needs no unused-parameter search."""
    physics.assert_no_unused_parameters(_ff("S"), ethanol)


def test_subsets_of_aggregators_and_scalers_and_bad_names(ethanol):
    ff = _ff("S", aggregators="min,std", scalers="identity")
    physics.assert_forces_are_gradient(ff, ethanol, n_atoms=1)
    with pytest.raises(ValueError, match="aggregators"):
        PNAEq(aggregators="mean,median")
    with pytest.raises(ValueError, match="scalers"):
        PNAEq(scalers="identity,identity")
    with pytest.raises(ValueError, match="temperature"):
        PNAEq(temperature=0.0)
