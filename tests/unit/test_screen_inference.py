"""Screening's inference path: the backbone compiled (torch.compile, inductor) equals the
eager head-by-head reference at fp64, the inference copy leaves the caller's model alone, and
ASE Atoms in memory are a candidate source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.screen.engine import blend, naive, screening_model
from atomgfm.screen.generate import CandidateGenerator
from atomgfm.screen.run import Screener, ScreenSettings
from atomgfm.testing.fixtures import multi_head_force_field

HEADS = ["a", "b", "c"]
MODEL = {"backbone_kwargs": {"num_features": 8, "num_layers": 2, "cutoff": 4.0, "num_rbf": 8}}
SPEC = {"seed": 1, "families": [
    {"kind": "alloy", "lattice": "fcc", "elements": ["Cu", "Ni", "Au"], "components": [2],
     "step": 0.25, "samples": 1, "rattle": 0.05},
    {"kind": "molecule", "skeleton": "C6H6", "sites": [6, 7], "substituents": ["H", "F"]},
]}


@pytest.fixture(scope="module")
def ff():
    return multi_head_force_field(MODEL, HEADS)


def test_screening_model_is_a_frozen_copy(ff):
    before = [p.requires_grad for p in ff.parameters()]
    sm = screening_model(ff)
    assert any(before) and sm is not ff and not any(p.requires_grad for p in sm.parameters())
    assert [p.requires_grad for p in ff.parameters()] == before  # the caller's model unchanged
    for a, b in zip(sm.state_dict().values(), ff.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA model"):
        screening_model(ff, compile=True, cuda_graphs=True)
    with pytest.raises(ValueError, match="compile must be"):
        Screener(ff, [{"name": h, "id": k, "elements": [29]} for k, h in enumerate(HEADS)],
                 settings=ScreenSettings(compile="yes"))


@pytest.mark.slow
def test_compiled_blend_equals_eager_head_by_head_reference_fp64(ff):
    """One dynamic-shape compile serves batches of different sizes (no recompiles) and gives
    the eager naive path's energies and forces to 1e-10 at fp64. (A batch of a single
    structure compiles once more: torch specialises sizes 0 and 1.)"""
    g = CandidateGenerator(SPEC)
    structs = [g[i].structure for i in range(len(g))]
    batches = [collate([structure_to_graph(s, 4.0) for s in structs[lo:hi]], torch.float64)
               for lo, hi in ((0, 5), (5, 11), (11, len(g)))]
    assert len({b[K.POSITIONS].shape[0] for b in batches}) == 3
    compiled = screening_model(ff, compile=True)
    gen = torch.Generator().manual_seed(0)
    counters = torch._dynamo.utils.counters
    counters.clear()
    graphs = []
    for b in batches:
        w = torch.rand((b[K.N_ATOMS].shape[0], len(HEADS)), dtype=torch.float64,
                       generator=gen) + 0.1
        out = blend(compiled, b, w, HEADS, threshold=0.0, forces=True)
        graphs.append(counters["stats"]["unique_graphs"])
        ref = naive(ff, b, w, HEADS, forces=True)
        torch.testing.assert_close(out[K.ENERGY], ref[K.ENERGY], rtol=0, atol=1e-10)
        torch.testing.assert_close(out[K.FORCES], ref[K.FORCES], rtol=0, atol=1e-10)
        assert out[K.FORCES].abs().max() > 1e-3
    assert graphs[0] >= 1 and graphs[-1] == graphs[0], graphs  # compiled once, for every size


def test_atoms_list_is_a_source_with_ids_and_error_rows(ff, tmp_path):
    """ASE Atoms in memory screen like any source: ids from info["id"] or the position, an
    Atoms that cannot be converted gets a row with its error (not dropped)."""
    from ase.build import molecule

    from atomgfm.screen.results import read_results

    atoms = [molecule("H2O"), molecule("CH4"), molecule("NH3")]
    atoms[0].info["id"] = "water"
    atoms[2].info["multiplicity"] = 2  # NH3 has 10 electrons: a doublet is impossible
    table = [{"name": h, "id": k, "elements": list(range(1, 84))} for k, h in enumerate(HEADS)]
    settings = ScreenSettings(workers=0, progress=False, device="cpu", precision="fp64")
    summary = Screener(ff, table, None, None, settings, "<test>").run(atoms, tmp_path)
    t = read_results(tmp_path)
    assert summary["scored"] == 2 and summary["errors"] == 1
    assert t.column("id").to_pylist() == ["water", "atoms:1", "atoms:2"]
    err = t.column("error").to_pylist()
    assert err[0] is None and err[1] is None and "multiplicity" in err[2]
    e = t.column("energy").to_numpy()
    assert np.isfinite(e[:2]).all() and np.isnan(e[2])
    other = [a.copy() for a in atoms]
    other[1].positions[0, 0] += 0.1
    with pytest.raises(ValueError, match="different screen"):
        Screener(ff, table, None, None, settings, "<test>").run(other, tmp_path)


def test_block_graphs_equal_structure_to_graph():
    """Molecules searched together give structure_to_graph's fields and edge set; periodic
    cells, single atoms and overlapping atoms take the ordinary path or its error."""
    from ase.build import bulk, molecule

    from atomgfm.calculators.ase_calculator import atoms_to_structure
    from atomgfm.data.structure import StructureError
    from atomgfm.screen.graphs import block_graphs

    atoms = [molecule(n) for n in ("H2O", "C6H6", "CH3CH2OH", "NH3")]
    atoms[1].positions *= 1.6  # benzene stretched: some pairs beyond the cutoff
    clash = molecule("CH4")
    clash.positions[1] = clash.positions[0] + [0.05, 0, 0]
    atoms += [bulk("Cu", "fcc", a=3.6), molecule("H2O")[:1], clash]
    structs = [atoms_to_structure(a) for a in atoms]
    got = block_graphs(structs, 3.0)
    for s, g in zip(structs[:6], got[:6], strict=True):
        ref = structure_to_graph(s, 3.0)
        assert set(g) == set(ref)
        for k in ref:
            if k in (K.EDGE_INDEX, K.CELL_SHIFTS):
                continue
            assert g[k].dtype == ref[k].dtype and np.array_equal(g[k], ref[k]), k
        assert g[K.EDGE_INDEX].dtype == ref[K.EDGE_INDEX].dtype
        edges, want = ({(a, b, *c) for a, b, c in zip(*x[K.EDGE_INDEX], x[K.CELL_SHIFTS].tolist(),
                                                      strict=True)} for x in (g, ref))
        assert edges == want and len(edges) == g[K.EDGE_INDEX].shape[1]
    assert 0 < got[1][K.EDGE_INDEX].shape[1] < 12 * 11  # the cutoff dropped some pairs
    assert isinstance(got[6], StructureError) and "overlapping atoms" in str(got[6])


def test_block_graphs_in_pair_limited_groups_are_the_same(monkeypatch):
    """A block whose pairs exceed MAX_PAIRS is searched in groups: the same graphs, same order."""
    from ase.build import molecule

    from atomgfm.calculators.ase_calculator import atoms_to_structure
    from atomgfm.screen import graphs

    names = ("H2O", "C6H6", "CH3CH2OH", "NH3", "CH4", "C2H2") * 3
    structs = [atoms_to_structure(molecule(n)) for n in names]
    whole = graphs.block_graphs(structs, 3.0)
    monkeypatch.setattr(graphs, "MAX_PAIRS", 40)  # below benzene's 144: groups of one or two
    split = graphs.block_graphs(structs, 3.0)
    for a, b in zip(whole, split, strict=True):
        assert set(a) == set(b)
        for k in a:
            assert np.array_equal(a[k], b[k]), k


@pytest.mark.slow
def test_compiled_screen_run_with_a_worker_equals_the_eager_run(ff, tmp_path):
    """``compile="on"`` through Screener.run, graphs built in a worker process forked after the
    compilation machinery started: the same rows and energies as the eager in-process run."""
    from atomgfm.screen.results import read_results

    g = CandidateGenerator(SPEC)
    table = [{"name": h, "id": k, "elements": list(range(1, 84))} for k, h in enumerate(HEADS)]
    tables = {}
    for name, kw in {"eager": {"compile": "off", "workers": 0},
                     "compiled": {"compile": "on", "workers": 1}}.items():
        settings = ScreenSettings(progress=False, device="cpu", precision="fp64", forces=True,
                                  chunk_size=6, **kw)
        sc = Screener(ff, table, None, None, settings, "<test>")
        sc.run(g, tmp_path / name)
        assert sc.compiled == (name == "compiled")
        tables[name] = read_results(tmp_path / name)
    assert tables["compiled"].column("id").to_pylist() == tables["eager"].column("id").to_pylist()
    for col in ("energy", "fmax"):
        np.testing.assert_allclose(tables["compiled"].column(col).to_numpy(),
                                   tables["eager"].column(col).to_numpy(), rtol=0, atol=1e-10)


def test_a_list_of_other_objects_is_refused_with_its_index():
    from ase.build import molecule

    from atomgfm.screen.run import AtomsCandidates

    with pytest.raises(TypeError, match="item 1 is a str"):
        AtomsCandidates([molecule("H2O"), "CH4.xyz"])
