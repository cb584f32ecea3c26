"""DimeNet++ specifics: size, angle dependence, triplet memory, the spherical basis, precision."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from scipy.special import spherical_jn as scipy_jn
from torch.utils._python_dispatch import TorchDispatchMode

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.structure import MAX_Z, Structure
from atomgfm.models.backbones.dimenet import (
    NUM_AFTER_SKIP,
    NUM_BEFORE_SKIP,
    NUM_OUTPUT_LAYERS,
    DimeNetPP,
    spherical_bessel_zeros,
    spherical_jn,
)
from atomgfm.testing import physics
from atomgfm.testing.fixtures import random_force_field

_ff = partial(random_force_field, "dimenet")


def _batch(structures, cutoff, dtype=torch.float64):
    return collate([structure_to_graph(s, cutoff, 0, DimeNetPP.needs) for s in structures], dtype)


def test_m_preset_parameter_count_matches_a_hand_count():
    H, B, I, Bm, O, S, R = 128, 4, 64, 8, 256, 7, 6  # noqa: E741  the M preset (the paper's)
    dense = H * H + H
    embedding = (MAX_Z + 1 + 13 + 9) * H  # elements, charges -6..6, multiplicities 0..8
    frequencies = R  # trainable Bessel frequencies
    edge_embedding = (R * H + H) + (3 * H * H + H)
    interaction = (R * Bm + Bm * H  # radial basis through the bottleneck (no bias)
                   + S * R * Bm + Bm * I  # spherical basis through the bottleneck (no bias)
                   + 2 * dense  # W_kj, W_ji
                   + H * I + I * H  # down- and up-projection (no bias)
                   + (NUM_BEFORE_SKIP + NUM_AFTER_SKIP) * 2 * dense + dense)
    output = R * H + H * O + NUM_OUTPUT_LAYERS * (O * O + O) + O * H
    expected = embedding + frequencies + edge_embedding + B * interaction + (B + 1) * output
    backbone = DimeNetPP(**DimeNetPP.presets["M"])
    assert sum(p.numel() for p in backbone.parameters()) == expected
    assert expected == 2_054_278
    assert (backbone.num_scalar_features, backbone.num_vector_features) == (H, 0)


def _triatomic(angle_deg: float, mirrored: bool = False) -> Structure:
    """O at the origin, two H at 0.96 Å and the given H–O–H angle (H–H > 1.5 Å, the cutoff)."""
    t = np.radians(angle_deg) * (-1 if mirrored else 1)
    pos = [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.96 * np.cos(t), 0.96 * np.sin(t), 0.0]]
    return Structure([8, 1, 1], np.array(pos) + [0.3, -0.2, 0.1])


def test_energy_depends_on_the_angle_and_not_on_its_mirror_image():
    """At a 1.5 Å cutoff the two structures have the same edges and distances (O–H only): a
    distance-only model gives them the same energy; DimeNet++ sees the angle through the
    triplets. The mirror image has the same angle, so exactly the same energy."""
    ff = _ff(cutoff=1.5)
    s1, s2, s3 = _triatomic(104.5), _triatomic(120.0), _triatomic(104.5, mirrored=True)
    graphs = [structure_to_graph(s, 1.5, 0, DimeNetPP.needs) for s in (s1, s2)]
    assert [g[K.EDGE_INDEX].shape[1] for g in graphs] == [4, 4]
    assert [g[K.TRIPLET_INDEX].shape[1] for g in graphs] == [2, 2]
    e = physics.evaluate(ff, [s1, s2, s3])[K.ENERGY]
    assert abs(e[0] - e[1]) > 1e-7  # a distance-only model: equal to rounding (~1e-15)
    assert e[2] == pytest.approx(e[0], abs=1e-12)


def test_triplets_are_used_once_each_and_nothing_is_n_edges_squared(ethanol):
    """200 ethanols at 4 Å: E ≈ 14k edges, so an (E, E) float64 table would take > 1 GB. Every op
    of energy and forces is watched: the spherical basis has one row per triplet of
    ``TRIPLET_INDEX`` and no tensor comes near E² elements."""
    ff = _ff()
    batch = _batch([ethanol] * 200, ff.cutoff)
    n_edges, n_triplets = batch[K.EDGE_INDEX].shape[1], batch[K.TRIPLET_INDEX].shape[1]
    assert n_edges**2 * 8 > 1e9 and n_triplets > n_edges
    rows = []
    handle = ff.backbone.sbf.register_forward_hook(lambda m, i, out: rows.append(out.shape[0]))

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else [out]:
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    try:
        with Largest():
            out = ff(batch, forces=True)
    finally:
        handle.remove()
    assert rows == [n_triplets]
    assert torch.isfinite(out[K.FORCES]).all()
    assert Largest.numel <= 16 * n_triplets < n_edges**2 / 50


def test_spherical_bessel_functions_match_scipy():
    zeros = spherical_bessel_zeros(7, 6)
    for order in range(7):
        np.testing.assert_allclose(scipy_jn(order, zeros[order]), 0.0, atol=1e-12)
        assert np.all(np.diff(zeros[order]) > 0) and zeros[order, 0] > order
    z = np.linspace(0.05, 40.0, 4001)
    ref = np.stack([scipy_jn(order, z) for order in range(9)], axis=1)  # (4001, 9)
    grid = torch.tensor(z)[:, None, None].expand(-1, 9, 1)  # row l: arguments of order l
    np.testing.assert_allclose(spherical_jn(grid)[..., 0].numpy(), ref, atol=1e-14)
    got32 = spherical_jn(grid.float())[..., 0].double().numpy()
    np.testing.assert_allclose(got32, ref, atol=5e-7)  # the series keeps small z accurate


def test_collinear_triplets_have_finite_first_and_second_derivatives():
    """CO2 (θ = π exactly) and a linear chain: forces and the training double backward are
    finite."""
    ff = _ff()
    co2 = Structure([6, 8, 8], [[0, 0, 0], [1.16, 0, 0], [-1.16, 0, 0]])
    chain = Structure([6, 6, 6, 6], [[0, 0, 0], [1.2, 0, 0], [2.4, 0, 0], [3.6, 0, 0]])
    physics.assert_forces_are_gradient(ff, co2)
    out = ff(_batch([co2, chain], ff.cutoff), forces=True, create_graph=True)
    assert torch.isfinite(out[K.FORCES]).all()
    (out[K.ENERGY].sum() + out[K.FORCES].square().sum()).backward()
    grads = [p.grad for p in ff.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)


def test_every_parameter_gets_a_gradient(ethanol):
    """No unused parameters: DDP needs no unused-parameter search."""
    physics.assert_no_unused_parameters(_ff(), ethanol)


def test_fp32_and_fp64_agree(ethanol, alloy):
    physics.assert_fp32_matches_fp64(_ff("M"), [ethanol, alloy], force_atol=1e-4)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="int_emb_size"):
        DimeNetPP(int_emb_size=0)
    with pytest.raises(ValueError, match="cutoff"):
        DimeNetPP(cutoff=0.0)
