"""PaiNN's fused filters and per-atom vector gate compute the textbook layer exactly.

The backbone folds the cutoff into the filter product's input, drops the first layer's vector-gate
channel (it multiplies v = 0) and forms v_j ⊙ h_j once per atom; this test writes the layer as the
paper does (Schütt et al. 2021, eqs. 7-9: one (E, 3F) filter, cutoff times its output, split into
three channels) with the same weights, and compares node features and energies in fp64.
"""

from __future__ import annotations

import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.nn.geometry import edge_vectors
from atomgfm.testing.fixtures import random_force_field


def textbook_painn(bb, batch):
    i, j = batch[K.EDGE_INDEX]
    vec = edge_vectors(batch)
    r = torch.linalg.vector_norm(vec, dim=-1)
    unit = vec / r.unsqueeze(-1)
    filters = bb.filters(bb.rbf(r)) * bb.fcut(r).unsqueeze(-1)  # (E, layers · 3F)
    F = bb.num_scalar_features
    s = bb.embedding(batch)
    v = s.new_zeros((s.shape[0], 3, F))
    for k, (msg, upd) in enumerate(zip(bb.messages, bb.updates, strict=True)):
        x = msg.phi(s)[j] * filters[:, 3 * F * k:3 * F * (k + 1)]
        ds, dvv, dvs = torch.split(x, F, dim=-1)
        dv = v[j] * dvv.unsqueeze(1) + unit.unsqueeze(-1) * dvs.unsqueeze(1)
        s = s + torch.zeros_like(s).index_add(0, i, ds)
        v = v + torch.zeros_like(v).index_add(0, i, dv)
        s, v = upd(s, v)
    return s, v


def test_painn_matches_the_textbook_layer(ethanol, alloy):
    ff = random_force_field("painn", num_features=16, num_layers=3, num_rbf=8, cutoff=4.0)
    with torch.no_grad():  # a non-zero filter bias, which the fused product carries as a column
        ff.backbone.filters.bias.normal_()
    batch = collate([structure_to_graph(s, 4.0) for s in (ethanol, alloy)], torch.float64)
    with torch.no_grad():
        feats = ff.backbone(batch)
        s_ref, v_ref = textbook_painn(ff.backbone, batch)
    assert float(s_ref.abs().max()) > 0.1 and float(v_ref.abs().max()) > 0.01
    torch.testing.assert_close(feats[K.NODE_SCALARS], s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(feats[K.NODE_VECTORS], v_ref, rtol=1e-12, atol=1e-12)
