"""Encode once, read out any heads: the multi-head paths agree with single-head evaluations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.structure import Structure
from atomgfm.models.build import build_model
from atomgfm.models.heads import EnergyHead, Head, PropertyHead
from atomgfm.registry import get

HEADS = ["pbe", "wb97", "emt"]


@pytest.fixture(scope="module")
def ff():
    model = build_model({"backbone_kwargs": {"num_features": 8, "num_layers": 2, "cutoff": 4.0,
                                             "num_rbf": 8}}, HEADS, seed=0).double()
    rng = np.random.default_rng(1)
    for k, head in enumerate(model.heads.values()):
        head.set_normalization(rng.normal(0, 1, head.element_energy.shape), 0.5 + k,
                               state_energy=rng.normal(0, 0.3, 3))
        with torch.no_grad():  # distinct heads, so a mix-up of columns cannot pass
            for p in head.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def structures():
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell.set_chemical_symbols(["Cu", "Au", "Cu", "Au"])
    cell.rattle(0.1, seed=1)
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=2)
    return [Structure(cell.numbers, cell.positions, cell.cell.array, cell.pbc),
            Structure(mol.numbers, mol.positions, charge=1, spin=2)]


def _batch(structures, ids):
    return collate([structure_to_graph(s, 4.0, d) for s, d in zip(structures, ids, strict=True)],
                   torch.float64)


@pytest.mark.parametrize(("mode", "backward_calls"), [("batched", 1), ("loop", 3)])
def test_three_heads_one_encode_one_backward_equal_three_single_head_runs(ff, structures, mode,
                                                                          backward_calls):
    """HEAD_ENERGY / HEAD_FORCES of one call = each head alone (own-head evaluation), 1e-10:
    one encode, and one backward call ("batched") or one per head over the kept graph."""
    ff.head_backward = mode
    calls = {"backbone": 0, "grad": 0}
    hook = ff.backbone.register_forward_hook(lambda *a: calls.__setitem__(
        "backbone", calls["backbone"] + 1))
    grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls["grad"] += 1
        return grad(*args, **kwargs)

    torch.autograd.grad = counting_grad
    try:
        n = len(structures)
        weights = torch.full((n, 3), 1 / 3, dtype=torch.float64)
        out = ff(_batch(structures, [0] * n), heads=HEADS, weights=weights, per_head=True,
                 stress=True)
    finally:
        torch.autograd.grad = grad
        hook.remove()
        del ff.head_backward
    assert calls == {"backbone": 1, "grad": backward_calls}
    assert out[K.HEAD_ENERGY].shape == (2, 3)
    assert out[K.HEAD_FORCES].shape == (sum(s.n_atoms for s in structures), 3, 3)
    for k in range(3):
        single = ff(_batch(structures, [k] * len(structures)), stress=True)
        np.testing.assert_allclose(out[K.HEAD_ENERGY][:, k].detach(), single[K.ENERGY].detach(),
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(out[K.HEAD_FORCES][..., k].detach(),
                                   single[K.FORCES].detach(), rtol=0, atol=1e-10)
    # the blend is the weighted sum of the heads, energies and forces alike
    np.testing.assert_allclose(out[K.ENERGY].detach(), out[K.HEAD_ENERGY].detach().mean(1),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(out[K.FORCES].detach(), out[K.HEAD_FORCES].detach().mean(-1),
                               rtol=0, atol=1e-10)
    plain = ff(_batch(structures, [0] * n), heads=HEADS, weights=weights, stress=True)
    for key in (K.ENERGY, K.FORCES, K.STRESS):  # per_head changes nothing in the combination
        np.testing.assert_allclose(out[key].detach(), plain[key].detach(), rtol=0, atol=1e-10)


def test_blended_forces_are_minus_the_gradient_of_the_blended_energy(ff, structures):
    w = torch.tensor([[0.2, 0.0, 0.8], [0.5, 0.5, 0.0]], dtype=torch.float64)
    batch = _batch(structures, [0, 0])
    out = ff(batch, heads=HEADS, weights=w)
    h = 1e-5
    for atom, comp in ((0, 0), (5, 2)):
        e = []
        for sign in (1, -1):
            b = dict(batch)
            b[K.POSITIONS] = batch[K.POSITIONS].clone()
            b[K.POSITIONS][atom, comp] += sign * h
            e.append(float(ff(b, heads=HEADS, weights=w, forces=False)[K.ENERGY].sum().detach()))
        fd = -(e[0] - e[1]) / (2 * h)
        assert float(out[K.FORCES][atom, comp]) == pytest.approx(fd, abs=1e-6)


def test_own_head_readout_equals_the_selected_column(ff, structures):
    batch = _batch(structures, [2, 1])
    features = ff.encode(batch)
    per_atom = ff.readout(features, batch)  # (n_atoms, 3): every head on every atom
    assert per_atom.shape == (batch[K.N_ATOMS].sum(), 3) and per_atom.dtype == torch.float64
    own = ff(batch, forces=False)[K.ATOM_ENERGY]
    n0 = structures[0].n_atoms
    np.testing.assert_allclose(own[:n0].detach(), per_atom[:n0, 2].detach(), atol=1e-12)
    np.testing.assert_allclose(own[n0:].detach(), per_atom[n0:, 1].detach(), atol=1e-12)


def test_stacked_heads_equal_heads_one_by_one(ff, structures):
    batch = _batch(structures, [0, 0])
    features = ff.encode(batch)
    heads = [ff.heads[n] for n in HEADS]
    args = (features[K.NODE_SCALARS], batch[K.ATOMIC_NUMBERS], features[K.GATE])
    stacked = EnergyHead.stacked(heads, *args)
    looped = Head.stacked(heads, *args)  # the protocol's default: one head at a time
    assert stacked.shape == looped.shape == (batch[K.N_ATOMS].sum(), 1, 3)
    np.testing.assert_allclose(stacked.detach(), looped.detach(), rtol=1e-13, atol=1e-13)


def test_unknown_head_and_bad_weights_are_errors(ff, structures):
    batch = _batch(structures, [0, 0])
    with pytest.raises(KeyError, match=r"unknown head\(s\) \['b3lyp'\]; this model has"):
        ff(batch, heads=["b3lyp"], weights=torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"weights must have shape \(n_structs, n_heads\) = "
                                         r"\(2, 2\), got \(2, 3\)"):
        ff(batch, heads=["pbe", "emt"], weights=torch.ones(2, 3))
    with pytest.raises(ValueError, match="weights are required when reading out a subset"):
        ff(batch, heads=["pbe"])


def test_property_head_follows_the_head_protocol(ff, structures):
    """A structure-level head on the same features: intensive (mean) pooling is invariant to
    atom order and gives the same answer alone or in a batch."""
    assert get("head", "property") is PropertyHead
    torch.manual_seed(0)
    head = PropertyHead(ff.backbone.num_scalar_features, out_dim=3).double()
    ff.model.heads["gap"] = head
    ff.model.dataset_names.append("gap")
    try:
        batch = _batch(structures, [0, 0])
        together = ff.model.property(ff.encode(batch), batch, "gap")
        assert together.shape == (2, 3)
        mol = structures[1]
        perm = np.random.default_rng(0).permutation(mol.n_atoms)
        shuffled = Structure(mol.numbers[perm], mol.positions[perm], charge=1, spin=2)
        alone = _batch([shuffled], [0])
        np.testing.assert_allclose(ff.model.property(ff.encode(alone), alone, "gap").detach(),
                                   together[1:].detach(), rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError, match=r"\['gap'\] are not energy heads"):
            ff.readout(ff.encode(batch), batch, ["pbe", "gap"])
    finally:
        del ff.model.heads["gap"]
        ff.model.dataset_names.remove("gap")


def test_trainable_router_weights_get_the_same_gradient_with_per_head_outputs(ff, structures):
    """Weights from a router's parameters (constant in the positions): the blended forces, and
    the gradient of a force loss with respect to the router, are the same whether or not every
    head's forces are also returned."""
    batch = _batch(structures, [0, 0])
    logits = torch.nn.Parameter(torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4]],
                                             dtype=torch.float64))
    results = []
    for per_head in (False, True):
        out = ff(batch, heads=HEADS, weights=torch.softmax(logits, -1), per_head=per_head,
                 create_graph=True, stress=True)
        (grad,) = torch.autograd.grad(out[K.FORCES].pow(2).sum(), logits)
        results.append((out[K.FORCES].detach(), out[K.STRESS].detach(), grad))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
