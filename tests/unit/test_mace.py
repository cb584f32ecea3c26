"""MACE specifics: parameter count, equivariant irreps, correlation order, precision, gradients."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from e3nn import o3
from scipy.spatial.transform import Rotation

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.stats import GraphStats
from atomgfm.data.structure import MAX_Z, Structure
from atomgfm.models.backbones.mace import MACE, SymmetricContraction, symmetric_basis
from atomgfm.testing import physics
from atomgfm.testing.fixtures import random_force_field

_ff = partial(random_force_field, "mace")


def _batch(structures, cutoff, dtype=torch.float64):
    return collate([structure_to_graph(s, cutoff) for s in structures], dtype)


def _wigner_D(ir: o3.Irrep, rot: np.ndarray) -> torch.Tensor:
    """D(R) of irrep ``ir`` in float64, by least squares from Y_l(R x) = D Y_l(x). (e3nn 0.6
    builds its SO(3) generators in float32, so ``Irreps.D_from_matrix`` is only accurate to
    ~1e-6.) Y_l has parity (-1)^l, so a reflection needs a sign only for other parities."""
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(ir.l))
    R = torch.as_tensor(rot, dtype=torch.float64)
    y0 = o3.spherical_harmonics(ir.l, x, True, "component")
    y1 = o3.spherical_harmonics(ir.l, x @ R.T, True, "component")
    D = torch.linalg.lstsq(y0, y1).solution.T
    flip = np.linalg.det(rot) < 0 and ir.p != (-1) ** ir.l
    return -D if flip else D


def test_small_config_parameter_count_matches_a_hand_count():
    C, W, nb, n_el = 4, 8, 5, 2  # channels, radial width, Bessel functions, elements {1, 8}
    backbone = MACE(num_channels=C, max_ell=2, hidden_max_l=1, correlation=2,
                    num_interactions=2, num_bessel=nb, radial_mlp=W, elements=[8, 1])
    # Coupling paths onto 0e: ν=1 the l=0 component; ν=2 one invariant l⊗l per l = 0, 1, 2.
    # Onto 1o: ν=1 the l=1 component; ν=2 0e⊗1o and 1o⊗2e (1o⊗1o → 1 is antisymmetric).
    assert backbone.contractions[0].n_paths == {0: [1, 3], 1: [1, 2]}
    # Tensor-product paths (l_in, l_sh, l_out): layer 1 reads 0e: (0,l,l), l = 0..2;
    # layer 2 also reads 1o: (1,0,1), (1,1,0), (1,1,2), (1,2,1).
    n_paths = [3, 7]
    in_ls = [1, 2]  # irreps read by layers 1 and 2: 0e; 0e + 1o
    embedding = (MAX_Z + 1 + 13 + 9) * C  # elements, charges -6..6, multiplicities 0..8
    expected = embedding + nb  # the (frozen) Bessel frequencies are a parameter too
    for t in range(2):
        expected += in_ls[t] * C * C  # linear before the tensor product
        expected += in_ls[t] * n_el * C * C  # element-dependent skip
        expected += nb * W + 2 * W * W + W * n_paths[t] * C  # radial MLP, no biases
        expected += 3 * C * C  # linear per l of the atomic basis (l = 0, 1, 2)
        expected += n_el * C * (1 + 3 + 1 + 2)  # symmetric-contraction weights
        expected += 2 * C * C  # linear per l after the product (0e, 1o)
    assert sum(p.numel() for p in backbone.parameters()) == expected
    assert backbone.num_scalar_features == 2 * C
    assert backbone.irreps_out == o3.Irreps("4x0e+4x1o")


@pytest.mark.parametrize("improper", [False, True])
def test_node_irreps_rotate_with_the_structure(ethanol, alloy, improper):
    ff = _ff("S", max_ell=3)
    rot = Rotation.random(random_state=4).as_matrix()
    if improper:  # O(3): the 1o channels also follow a reflection
        rot = rot @ np.diag([1.0, 1.0, -1.0])
    irreps = ff.backbone.irreps_out
    D = torch.block_diag(*[_wigner_D(ir, rot) for mul, ir in irreps for _ in range(mul)])
    for s in (ethanol, alloy):
        turned = Structure(s.numbers, s.positions @ rot.T,
                           None if s.cell is None else s.cell @ rot.T, s.pbc)
        with torch.no_grad():
            a = ff.backbone(_batch([s], ff.cutoff))
            b = ff.backbone(_batch([turned], ff.cutoff))
        xa, xb = a[K.NODE_IRREPS], b[K.NODE_IRREPS]
        assert xa.shape == (s.n_atoms, irreps.dim) and xa[:, 8:].abs().max() > 1e-3
        np.testing.assert_allclose(xb.numpy(), (xa @ D.T).numpy(), atol=1e-10)
        np.testing.assert_allclose(b[K.NODE_SCALARS].numpy(), a[K.NODE_SCALARS].numpy(),
                                   atol=1e-10)


def test_higher_correlation_orders_add_to_the_first(ethanol, alloy):
    """Same weights at ν = 3 and ν = 1: different energies; with the ν = 2, 3 weights zeroed,
    exactly the ν = 1 model (the weight names are shared, so a state dict loads across)."""
    ff3, ff1 = _ff("S", correlation=3), _ff("S", correlation=1)
    missing, unexpected = ff1.load_state_dict(ff3.state_dict(), strict=False)
    assert not missing and unexpected and all(".weights_L" in k for k in unexpected)
    e3 = physics.evaluate(ff3, [ethanol, alloy])
    e1 = physics.evaluate(ff1, [ethanol, alloy])
    assert np.abs(e3[K.ENERGY] - e1[K.ENERGY]).min() > 1e-6
    with torch.no_grad():
        for name, p in ff3.backbone.named_parameters():
            if ".weights_L" in name and not name.endswith(".0"):
                p.zero_()
    e3 = physics.evaluate(ff3, [ethanol, alloy])
    np.testing.assert_allclose(e3[K.ENERGY], e1[K.ENERGY], rtol=1e-14, atol=0)
    np.testing.assert_allclose(e3[K.FORCES], e1[K.FORCES], rtol=1e-12, atol=1e-14)


def test_symmetric_basis_is_orthonormal_symmetric_and_counted():
    U = symmetric_basis(3, 3, 0)  # (K, 1, 16, 16, 16)
    flat = U.reshape(U.shape[0], -1)
    np.testing.assert_allclose((flat @ flat.T).numpy(), np.eye(U.shape[0]), atol=1e-12)
    np.testing.assert_allclose(U.numpy(), U.permute(0, 1, 3, 2, 4).numpy(), atol=1e-14)
    np.testing.assert_allclose(U.numpy(), U.permute(0, 1, 4, 3, 2).numpy(), atol=1e-14)
    # The M preset's contraction: 1 + 4 + 8 invariant paths, evaluated on 1 + 72 + 77 monomials
    # (of 16 + 136 + 816 distinct ones).
    sc = SymmetricContraction(4, 3, [0], 3, 1)
    assert sc.n_paths == {0: [1, 4, 8]} and sc.n_monomials == 150 and sc.split == [1, 72, 72, 77]


def test_fp32_and_fp64_energies_agree(ethanol, alloy):
    ff = _ff("M")
    e64 = physics.evaluate(ff, [ethanol])[K.ENERGY][0]
    physics.assert_fp32_matches_fp64(ff, [ethanol, alloy])
    # back in fp64 after the fp32 round trip: the coupling constants were not rounded
    np.testing.assert_allclose(physics.evaluate(ff, [ethanol])[K.ENERGY][0], e64, rtol=1e-5)


def test_every_parameter_gets_a_gradient(ethanol):
    """No unused parameters (DDP needs no unused-parameter search)."""
    physics.assert_no_unused_parameters(_ff("S", correlation=3), ethanol)


def test_element_table_and_neighbour_normalisation(ethanol):
    stats = GraphStats([1, 6, 8], 23.5, [], 4, 94)
    backbone = MACE(**MACE.presets["S"], elements=stats.elements, stats=stats).double()
    assert backbone.avg_num_neighbors == 23.5 and MACE(**MACE.presets["S"]).avg_num_neighbors == 10
    assert backbone.contractions[0].weights_L0[0].shape[0] == 3
    backbone(_batch([ethanol], backbone.cutoff))
    with pytest.raises(ValueError, match=r"built for elements \[1, 6, 8\]; got \[29\]"):
        backbone(_batch([Structure([29, 1], [[0, 0, 0], [1.5, 0, 0]])], backbone.cutoff))
    with pytest.raises(ValueError, match="max_ell"):
        MACE(max_ell=4)
