"""PaiNN's radial basis setting: Gaussians by default (issue 14), Bessel on request, and
checkpoints written before the setting existed (Bessel, no ``radial`` in their config) still load
with the basis they were trained with."""

from __future__ import annotations

import pytest
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.nn.radial import BesselBasis, GaussianBasis
from atomgfm.testing.fixtures import random_force_field

SMALL = {"num_features": 8, "num_layers": 2, "num_rbf": 6, "cutoff": 4.0}


def test_default_is_gaussian_and_bessel_on_request():
    assert isinstance(random_force_field("painn", **SMALL).backbone.rbf, GaussianBasis)
    assert isinstance(random_force_field("painn", radial="bessel", **SMALL).backbone.rbf,
                      BesselBasis)
    with pytest.raises(ValueError, match="radial"):
        random_force_field("painn", radial="sinc", **SMALL)


def test_a_bessel_checkpoint_loads_into_a_default_model(ethanol):
    old = random_force_field("painn", radial="bessel", seed=1, **SMALL)
    state = old.state_dict()
    # what a checkpoint from before the setting holds
    assert any(k.endswith("backbone.rbf.freqs") for k in state)
    new = random_force_field("painn", seed=2, **SMALL)  # built from a config without ``radial``
    new.load_state_dict(state)
    assert isinstance(new.backbone.rbf, BesselBasis)
    batch = collate([structure_to_graph(ethanol, 4.0, 0)], torch.float64)
    e_old = old(batch, forces=False)[K.ENERGY]
    e_new = new(batch, forces=False)[K.ENERGY]
    torch.testing.assert_close(e_new, e_old, rtol=0, atol=1e-12)


def test_a_gaussian_state_keeps_its_basis(ethanol):
    a = random_force_field("painn", seed=1, **SMALL)
    b = random_force_field("painn", seed=2, **SMALL)
    b.load_state_dict(a.state_dict())
    assert isinstance(b.backbone.rbf, GaussianBasis)
    batch = collate([structure_to_graph(ethanol, 4.0, 0)], torch.float64)
    torch.testing.assert_close(b(batch, forces=False)[K.ENERGY], a(batch, forces=False)[K.ENERGY],
                               rtol=0, atol=1e-12)


def test_gaussian_tails_are_zero_not_denormal():
    """float32 tails below the smallest normal number slow CPU arithmetic several-fold."""
    r = torch.linspace(0.5, 5.0, 200, dtype=torch.float32, requires_grad=True)
    x = GaussianBasis(5.0, 20)(r)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((x != 0) & (x.abs() < tiny)).any()
    assert (x == 0).any()  # far tails are exactly zero
    (g,) = torch.autograd.grad(x.sum(), r)
    assert torch.isfinite(g).all() and not ((g != 0) & (g.abs() < tiny)).any()
