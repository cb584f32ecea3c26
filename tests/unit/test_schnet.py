"""SchNet: its size from the architecture, smoothness at the cutoff, precision and options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.stats import GraphStats
from atomgfm.data.structure import MAX_Z, Structure
from atomgfm.models.backbones.schnet import SchNet
from atomgfm.models.build import backbone_settings, build_model
from atomgfm.testing import physics


def _hand_count(F: int, T: int, n_filters: int, n_rbf: int, max_charge=6, max_spin=8) -> int:
    embedding = (MAX_Z + 1 + 2 * max_charge + 1 + max_spin + 1) * F  # element + charge + spin
    block = (F * n_filters  # in2f, no bias
             + n_rbf * n_filters + n_filters + n_filters * n_filters + n_filters  # filter net
             + n_filters * F + F + F * F + F)  # f2out
    return embedding + T * block


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_m_preset_matches_the_architecture():
    settings = backbone_settings({"backbone": "schnet", "preset": "M"})
    assert (settings.num_features, settings.num_interactions, settings.num_rbf) == (128, 3, 20)
    backbone = build_model({"backbone": "schnet", "preset": "M"}, ["a"]).backbone
    # 141 x 128 embeddings + 3 x (16384 + 2688 + 16512 + 16512 + 16512)
    assert _hand_count(128, 3, 128, 20) == 223_872
    assert _n_params(backbone) == 223_872
    assert backbone.num_scalar_features == 128 and backbone.num_vector_features == 0


def test_num_filters_zero_means_num_features_and_otherwise_is_its_own_width():
    assert _n_params(SchNet(32, 2, 0, 4.0, 16)) == _hand_count(32, 2, 32, 16)
    assert _n_params(SchNet(32, 2, 48, 4.0, 16)) == _hand_count(32, 2, 48, 16)
    with pytest.raises(ValueError, match="num_filters >= 0"):
        SchNet(num_filters=-1)


def _dimer_model(seed: int = 0):
    ff = build_model({"backbone": "schnet", "preset": "M"}, ["alloy"], seed=seed).double()
    rng = np.random.default_rng(seed)
    ff.heads["alloy"].set_normalization(rng.normal(0, 1, 119), 0.7)
    with torch.no_grad():  # charge/spin paths on, as in the physics suite
        for name, p in ff.backbone.named_parameters():
            if "charge" in name or "spin" in name:
                p.normal_(0, 0.3)
    return ff.eval()


def test_a_dimer_leaves_the_cutoff_smoothly():
    """Distance enters only through the cutoff-weighted filter (and the isolation gate): at
    r_c ∓ 1e-4 Å the energy matches the isolated atoms' and the force has (nearly) vanished."""
    ff = _dimer_model()
    rc = ff.cutoff
    dimer = [physics.evaluate(ff, [Structure([29, 79], [[0, 0, 0], [r, 0, 0]], charge=1,
                                             spin=2)]) for r in (rc - 1e-4, rc + 1e-4)]
    ref = ff.heads["alloy"].element_energy.numpy()
    assert dimer[1][K.ENERGY][0] == pytest.approx(ref[29] + ref[79], abs=1e-12)
    assert abs(dimer[0][K.ENERGY][0] - dimer[1][K.ENERGY][0]) < 1e-6
    assert np.abs(dimer[0][K.FORCES]).max() < 1e-4
    np.testing.assert_allclose(dimer[1][K.FORCES], 0.0, atol=1e-12)
    # Deep inside the cutoff the pair does interact (the test above is not vacuous).
    inside = physics.evaluate(ff, [Structure([29, 79], [[0, 0, 0], [2.5, 0, 0]])])
    assert np.abs(inside[K.FORCES]).max() > 1e-3


def test_backbone_features_of_a_pair_at_the_cutoff_are_those_of_lone_atoms():
    backbone = _dimer_model().backbone
    rc = backbone.cutoff

    def features(r):
        g = structure_to_graph(Structure([8, 1], [[0, 0, 0], [r, 0, 0]]), rc)
        batch = collate([g], torch.float64)
        return batch[K.EDGE_INDEX].shape[1], backbone(batch)[K.NODE_SCALARS].detach().numpy()

    n_edges, pair = features(rc - 1e-6)
    assert n_edges == 2  # the neighbour list did keep the pair
    n_edges, apart = features(2 * rc)
    assert n_edges == 0
    np.testing.assert_allclose(pair, apart, rtol=0, atol=1e-9)


def _alloy_cell() -> Structure:
    a = bulk("Cu", "fcc", a=3.7, cubic=True)
    a.set_chemical_symbols(["Cu", "Au", "Ni", "Pd"])
    a.rattle(0.05, seed=3)
    return Structure(a.numbers, a.positions, a.cell.array, a.pbc)


def test_fp32_and_fp64_give_the_same_energy():
    s = _alloy_cell()
    ff = build_model({"backbone": "schnet", "preset": "M"}, ["alloy"], seed=1).eval()
    graph = structure_to_graph(s, ff.cutoff)
    e32 = ff.float()(collate([graph], torch.float32), forces=False)[K.ENERGY].item()
    e64 = ff.double()(collate([graph], torch.float64), forces=False)[K.ENERGY].item()
    assert abs(e64) > 1e-2  # the learned part is not negligible
    assert e32 == pytest.approx(e64, rel=1e-5)


def test_messages_are_divided_by_the_mean_neighbour_count_when_stats_are_given():
    s = _alloy_cell()
    batch = collate([structure_to_graph(s, 5.0)], torch.float64)
    torch.manual_seed(0)
    plain = SchNet(32, 2, 0, 5.0, 16).double()
    scaled = SchNet(32, 2, 0, 5.0, 16, stats=GraphStats([29], 40.0)).double()
    one = SchNet(32, 2, 0, 5.0, 16, stats=GraphStats([29], 1.0)).double()
    scaled.load_state_dict(plain.state_dict())
    one.load_state_dict(plain.state_dict())
    assert scaled.message_norm == pytest.approx(1 / 40)
    x = plain(batch)[K.NODE_SCALARS]
    assert torch.equal(one(batch)[K.NODE_SCALARS], x)
    assert not torch.allclose(scaled(batch)[K.NODE_SCALARS], x)
    assert SchNet(stats=GraphStats()).message_norm == 1.0  # empty statistics: plain sums


def test_bf16_autocast_runs_and_keeps_the_width():
    s = _alloy_cell()
    backbone = SchNet(32, 2, 0, 5.0, 16)
    batch = collate([structure_to_graph(s, 5.0)], torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = backbone(batch)[K.NODE_SCALARS]
    assert x.shape == (4, 32) and torch.isfinite(x).all()
