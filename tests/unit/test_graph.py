from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.neighbors import neighbor_list
from atomgfm.data.structure import Structure


def _pairs(i, j, S):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(S, int).tolist()),
                      strict=True))


def test_periodic_neighbours_match_ase_including_many_images():
    a = bulk("Cu", "fcc", a=3.6)  # primitive cell smaller than the cutoff
    a.rattle(0.05, seed=0)
    nb = neighbor_list(a.positions, a.cell.array, a.pbc, 5.0)
    i, j, S = ase_neighbor_list("ijS", a, 5.0)
    assert _pairs(*nb.edge_index, nb.cell_shifts) == _pairs(i, j, S)
    vec = (a.positions[nb.edge_index[1]] - a.positions[nb.edge_index[0]]
           + nb.cell_shifts @ a.cell.array)
    assert np.linalg.norm(vec, axis=1).max() < 5.0


def test_mixed_pbc_slab():
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.pbc = [True, True, False]
    nb = neighbor_list(a.positions, a.cell.array, a.pbc, 4.0)
    i, j, S = ase_neighbor_list("ijS", a, 4.0)
    assert _pairs(*nb.edge_index, nb.cell_shifts) == _pairs(i, j, S)
    assert (nb.cell_shifts[:, 2] == 0).all()


def test_isolated_atoms_are_counted_not_dropped():
    nb = neighbor_list(np.array([[0.0, 0, 0], [1.0, 0, 0], [20.0, 0, 0]]), np.zeros((3, 3)),
                       np.zeros(3, bool), 3.0)
    assert nb.n_isolated == 1
    assert nb.edge_index.shape == (2, 2)


def test_collate_offsets_edges_and_stacks_fields():
    m = molecule("H2O")
    c = bulk("Cu", "fcc", a=3.6)
    s1 = Structure(m.numbers, m.positions, energy=-1.0, charge=-1, spin=2)
    s2 = Structure(c.numbers, c.positions, c.cell.array, c.pbc, energy=-3.0,
                   forces=np.zeros((1, 3)), stress=np.zeros(6))
    g1, g2 = structure_to_graph(s1, 3.0, 1), structure_to_graph(s2, 3.0, 0)
    b = collate([g1, g2], torch.float32)
    assert b[K.POSITIONS].shape == (4, 3)
    assert b[K.BATCH].tolist() == [0, 0, 0, 1]
    assert b[K.DATASET].tolist() == [1, 0]
    assert b[K.CHARGE].tolist() == [-1.0, 0.0]
    assert b[K.HAS_FORCES].tolist() == [False, True]
    assert b[K.HAS_STRESS].tolist() == [False, True]
    n1 = g1[K.EDGE_INDEX].shape[1]
    assert (b[K.EDGE_INDEX][:, n1:] == 3).all()  # copper's edges point at atom 3
    assert b[K.CELL].shape == (2, 3, 3) and b[K.EDGE_INDEX].dtype == torch.long
    assert b[K.ENERGY].dtype == torch.float64  # totals of -1e4 eV need float64


def test_collate_rejects_undeclared_fields():
    m = molecule("H2")
    g = structure_to_graph(Structure(m.numbers, m.positions), 2.0)
    g["mystery"] = np.zeros(1)
    try:
        collate([g])
    except KeyError as exc:
        assert "mystery" in str(exc)
    else:
        raise AssertionError("undeclared field was collated")


def test_overlapping_atoms_are_an_error_naming_the_record():
    import pytest

    from atomgfm.data.structure import StructureError

    s = Structure([1, 1, 8], [[0, 0, 0], [0.01, 0, 0], [1, 0, 0]], source="bad.xyz", index=7)
    with pytest.raises(StructureError, match=r"bad.xyz, record 7: atoms 0 and 1 are 0.01 Å apart"):
        structure_to_graph(s, 3.0)


def _with_triplets(g: dict) -> dict:
    """All (k→j, j→i) edge pairs meeting at j, k ≠ i: the DimeNet triplets of one graph."""
    i, j = g[K.EDGE_INDEX]
    pairs = [(e_kj, e_ji) for e_ji in range(len(i)) for e_kj in range(len(i))
             if j[e_kj] == i[e_ji] and e_kj != e_ji and i[e_kj] != j[e_ji]]
    g = dict(g)
    g[K.TRIPLET_INDEX] = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    return g


def test_collate_offsets_every_declared_index_field():
    """Edges are offset by atoms, triplets by edges: after collation, every triplet of the
    second graph still joins two edges that meet at one atom of the second graph."""
    water, ammonia = molecule("H2O"), molecule("NH3")
    g1 = _with_triplets(structure_to_graph(Structure(water.numbers, water.positions), 2.0))
    g2 = _with_triplets(structure_to_graph(Structure(ammonia.numbers, ammonia.positions), 2.0))
    b = collate([g1, g2])
    e1, t1 = g1[K.EDGE_INDEX].shape[1], g1[K.TRIPLET_INDEX].shape[1]
    np.testing.assert_array_equal(b[K.TRIPLET_INDEX][:, :t1].numpy(), g1[K.TRIPLET_INDEX])
    np.testing.assert_array_equal(b[K.TRIPLET_INDEX][:, t1:].numpy(), g2[K.TRIPLET_INDEX] + e1)
    edges = b[K.EDGE_INDEX]
    kj, ji = b[K.TRIPLET_INDEX]
    assert torch.equal(edges[1, kj], edges[0, ji])  # the shared atom j
    assert b[K.TRIPLET_INDEX].dtype == torch.long
    assert (edges[:, kj[t1:]] >= 3).all()  # ammonia's triplets use ammonia's atoms (3..6)


def _brute_force_triplets(g: dict) -> list[tuple[int, int]]:
    i, j = g[K.EDGE_INDEX]
    S = g[K.CELL_SHIFTS]
    return sorted((a, b) for b in range(len(i)) for a in range(len(i))
                  if i[a] == j[b] and not (j[a] == i[b] and np.array_equal(S[a], -S[b])))


def test_triplets_match_brute_force_with_periodic_images():
    """Every (k→j, j→i) pair, periodic images of i counted as distinct k: in a primitive fcc
    cell at 3 Å each atom has 12 neighbours, all images of itself, so 12 × 11 triplets."""
    from atomgfm.data.graph import triplets

    cu = bulk("Cu", "fcc", a=3.6)
    g = structure_to_graph(Structure(cu.numbers, cu.positions, cu.cell.array, cu.pbc), 3.0,
                           needs={K.TRIPLET_INDEX})
    got = sorted(map(tuple, g[K.TRIPLET_INDEX].T.tolist()))
    assert len(got) == 12 * 11 and got == _brute_force_triplets(g)
    m = molecule("CH3CH2OH")
    g = structure_to_graph(Structure(m.numbers, m.positions), 2.5, needs={K.TRIPLET_INDEX})
    assert sorted(map(tuple, g[K.TRIPLET_INDEX].T.tolist())) == _brute_force_triplets(g)
    assert np.array_equal(triplets(g[K.EDGE_INDEX], g[K.CELL_SHIFTS], len(m)),
                          g[K.TRIPLET_INDEX])
    with pytest.raises(ValueError, match=r"cannot provide \['angles'\]"):
        structure_to_graph(Structure(m.numbers, m.positions), 2.5, needs={"angles"})
