"""Screening engine: generator, router, blended evaluation, resumable chunked runs."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest
import torch
from ase.data import chemical_symbols

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.structure import Structure
from atomgfm.screen.engine import blend, kept_weights, naive
from atomgfm.screen.generate import CandidateGenerator, SpecError
from atomgfm.screen.results import read_results, top
from atomgfm.screen.router import Router, fit_router
from atomgfm.screen.run import FileCandidates, Screener, ScreenSettings
from atomgfm.testing.fixtures import multi_head_force_field

HEADS = ["pbe", "xtb", "emt", "wb97"]
MODEL = {"backbone_kwargs": {"num_features": 8, "num_layers": 2, "cutoff": 4.0, "num_rbf": 8}}

SPEC = {"seed": 3, "families": [
    {"kind": "perovskite", "A": ["Sr", "Ba"], "B": ["Ti", "Zr"], "X": ["O"], "rattle": 0.05},
    {"kind": "alloy", "lattice": "fcc", "elements": ["Cu", "Ni", "Au"], "components": [2, 3],
     "step": 0.25, "samples": 2, "rattle": 0.05},
    {"kind": "alloy", "lattice": "hcp", "elements": ["Cu", "Ni"], "samples": 1},
    {"kind": "molecule", "skeleton": "C6H6", "sites": [6, 7], "substituents": ["H", "F", "Cl"]},
]}


@pytest.fixture(scope="module")
def ff():
    return multi_head_force_field(MODEL, HEADS)


def _table(elements=None):
    elements = elements or list(range(1, 84))
    return [{"name": h, "id": k, "elements": elements} for k, h in enumerate(HEADS)]


@pytest.fixture(scope="module")
def batch():
    g = CandidateGenerator(SPEC)
    picks = [0, 5, 20, len(g) - 1, len(g) - 4]
    return collate([structure_to_graph(g[i].structure, 4.0) for i in picks], torch.float64)


# ---- generator ------------------------------------------------------------------------------

def test_generator_counts_without_enumerating_and_is_deterministic():
    g = CandidateGenerator(SPEC)
    # 4 perovskites; alloys: 3 binaries x 3 compositions + 1 ternary x 3, x 2 samples = 24;
    # hcp binary: 3 compositions; benzene: 3^2 substitutions
    assert g.counts() == [("perovskite", 4), ("alloy", 24), ("alloy", 3), ("molecule", 9)]
    assert len(g) == 40
    again = CandidateGenerator(SPEC)
    for i in (0, 7, 30, 39):  # random access, same result in any order
        a, b = g[i], again[i]
        assert a.id == b.id and a.index == i
        np.testing.assert_array_equal(a.structure.positions, b.structure.positions)
    ids = [c.id for c in g]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "perovskite/SrTiO3/1x1x1/0"
    mol = g[len(g) - 1].structure
    assert mol.spin == 1 and not mol.pbc.any() and (mol.numbers == 17).sum() == 2


def test_generator_is_lazy_for_huge_spaces():
    spec = {"families": [{"kind": "alloy", "lattice": "bcc", "elements": ["Fe", "Cr", "Ni", "Co",
            "Mn", "V"], "components": [2, 3], "step": 0.125, "samples": 10**9,
            "supercells": [[2, 2, 2], [3, 3, 3]]}]}
    t0 = time.perf_counter()
    g = CandidateGenerator(spec)
    n = len(g)
    c = g[n - 1]
    assert time.perf_counter() - t0 < 2.0
    assert n > 10**12 and c.index == n - 1 and c.structure.n_atoms == 54
    it = g.iter(n - 3)
    assert isinstance(it, types.GeneratorType) and len(list(it)) == 3


def test_generator_spec_errors_name_the_family():
    bad = {"families": [SPEC["families"][0], {"kind": "alloy", "elements": ["Cu", "Xx"]}]}
    with pytest.raises(SpecError, match=r"families\[1\]\.elements: unknown element 'Xx'"):
        CandidateGenerator(bad)
    with pytest.raises(SpecError, match="unknown key"):
        CandidateGenerator({"families": [{"kind": "perovskite", "A": ["Sr"], "B": ["Ti"],
                                          "X": ["O"], "colour": 1}]})


# ---- blended evaluation -----------------------------------------------------------------

def test_blend_equals_head_by_head_reference_fp64(ff, batch):
    """Encode once + stacked heads + one backward of the blend = every head on its own."""
    w = torch.rand((batch[K.N_ATOMS].shape[0], len(HEADS)), dtype=torch.float64,
                   generator=torch.Generator().manual_seed(0)) + 0.1
    calls = {"n": 0}
    hook = ff.backbone.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    try:
        out = blend(ff, batch, w, HEADS, threshold=0.0, forces=True)
    finally:
        hook.remove()
    ref = naive(ff, batch, w, HEADS, forces=True)
    assert calls["n"] == 1
    torch.testing.assert_close(out[K.ENERGY], ref[K.ENERGY], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[K.FORCES], ref[K.FORCES], rtol=0, atol=1e-10)
    assert out[K.FORCES].abs().max() > 1e-3  # forces are not trivially zero


def test_skipping_changes_the_blend_by_at_most_the_skipped_contribution(ff, batch):
    S = batch[K.N_ATOMS].shape[0]
    w = torch.softmax(torch.randn((S, len(HEADS)), generator=torch.Generator().manual_seed(2),
                                  dtype=torch.float64) * 3, -1)
    w[:, 3] = 1e-4  # below the threshold everywhere: never read out
    w = w / w.sum(-1, keepdim=True)
    full = blend(ff, batch, w, HEADS, threshold=0.0)
    cut = blend(ff, batch, w, HEADS, threshold=0.05)
    skipped = torch.where(cut["kept"], torch.zeros_like(w), w)
    assert skipped.sum() > 0 and torch.isnan(cut[K.HEAD_ENERGY][:, 3]).all()
    bound = (skipped * (full[K.HEAD_ENERGY] - cut[K.ENERGY].unsqueeze(-1)).abs()).sum(-1)
    diff = (full[K.ENERGY] - cut[K.ENERGY]).abs()
    assert (diff <= bound + 1e-9).all()
    # and it is exactly that contribution: E - E' = Σ_skipped w (E_h - E')
    exact = (skipped * (full[K.HEAD_ENERGY] - cut[K.ENERGY].unsqueeze(-1))).sum(-1)
    torch.testing.assert_close(full[K.ENERGY] - cut[K.ENERGY], exact, rtol=0, atol=1e-9)
    kw, keep = kept_weights(w, 0.05)
    torch.testing.assert_close(kw.sum(-1), torch.ones(S, dtype=torch.float64))


# ---- router ---------------------------------------------------------------------------------

def _toy_sets(seed, n=40):
    from ase.build import bulk, molecule

    rng = np.random.default_rng(seed)
    metals, mols = [], []
    for i in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.set_chemical_symbols(rng.choice(["Cu", "Ni", "Au"], size=4))
        metals.append(Structure(a.numbers, a.positions, a.cell.array, a.pbc, index=i))
        m = molecule(["CH4", "H2O", "NH3", "CH3OH"][i % 4])
        mols.append(Structure(m.numbers, m.positions, index=i))
    return {"emt": metals, "xtb": mols}


def test_router_learns_a_separable_case_and_round_trips_as_plain_data(tmp_path):
    router, report = fit_router(_toy_sets(0), ["emt", "xtb"], [1, 6, 7, 8, 28, 29, 79],
                                val=_toy_sets(1, 20), epochs=100)
    assert report["val_accuracy"] > report["chance"] + 0.3
    assert report["val_accuracy"] > 0.9
    path = tmp_path / "router.pt"
    torch.save(router.state(), path)
    back = Router.from_state(torch.load(path, weights_only=True))
    s = _toy_sets(2, 4)["emt"] + _toy_sets(2, 4)["xtb"]
    b = collate([structure_to_graph(x, 4.0) for x in s], torch.float32)
    torch.testing.assert_close(back.weights(b), router.weights(b))
    assert (router.weights(b)[:4, 0] > 0.5).all() and (router.weights(b)[4:, 1] > 0.5).all()


# ---- streamed runs ----------------------------------------------------------------------------

def _screener(ff, **kw):
    settings = ScreenSettings(workers=0, progress=False, chunk_size=7, device="cpu",
                              precision="fp64", **kw)
    return Screener(ff, _table(), None, None, settings, "<test>")


def test_killed_and_resumed_run_has_exactly_the_ids_of_an_uninterrupted_one(ff, tmp_path):
    g = CandidateGenerator(SPEC)
    _screener(ff).run(g, tmp_path / "full")
    full = read_results(tmp_path / "full")
    assert full.column("index").to_pylist() == list(range(len(g)))
    assert full.column("id").to_pylist() == [c.id for c in g]

    class Killed(Exception):
        pass

    def kill_after_two(path, seen=[]):  # noqa: B006 - a counter across calls
        seen.append(path)
        if len(seen) == 2:
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        _screener(ff).run(g, out, on_chunk=kill_after_two)
    (out / ".chunk-000000000014-000000000021.parquet.123.tmp").write_bytes(b"half a file")
    summary = _screener(ff).run(g, out)
    assert summary["skipped_chunks"] == 2 and summary["scored"] == len(g) - 14
    resumed = read_results(out)
    assert resumed.column("index").to_pylist() == list(range(len(g)))
    np.testing.assert_allclose(resumed.column("energy").to_numpy(),
                               full.column("energy").to_numpy(), rtol=0, atol=1e-10)
    assert not list(out.glob("*.tmp"))


def test_ranks_take_disjoint_shares(ff, tmp_path):
    g = CandidateGenerator(SPEC)
    for rank in (0, 1):
        _screener(ff).run(g, tmp_path, rank=rank, world=2)
    idx = read_results(tmp_path).column("index").to_pylist()
    assert sorted(idx) == list(range(len(g)))


def test_run_flags_rank_and_forces(ff, tmp_path):
    sc = Screener(ff, _table([1, 6, 8, 9, 22, 28, 29, 38, 40, 56, 79]), None, None,
                  ScreenSettings(workers=0, progress=False, chunk_size=16, device="cpu",
                                 precision="fp64", forces=True), "<test>")
    g = CandidateGenerator(SPEC)
    sc.run(g, tmp_path)
    t = read_results(tmp_path).to_pylist()
    cl = [r for r in t if "Cl" in r["formula"]]
    assert cl and all(r["unknown_elements"] and np.isnan(r["energy"]) for r in cl)
    ok = [r for r in t if not r["unknown_elements"]]
    assert all(np.isfinite(r["energy"]) and r["fmax"] > 0 for r in ok)
    # no router: equal weights, so every row is flagged as low confidence at the 0.5 level
    assert all(r["low_confidence"] for r in ok)
    r = ok[0]
    np.testing.assert_allclose(np.mean([r[f"e_{h}"] for h in HEADS]), r["energy_per_atom"],
                               atol=1e-10)
    best = top(tmp_path, k=3, by="energy_per_atom")
    finite = sorted(x["energy_per_atom"] for x in ok)
    assert [b["energy_per_atom"] for b in best] == finite[:3]
    assert top(tmp_path, k=2, by="spread")[0]["spread"] == max(x["spread"] for x in ok)


def test_formula_and_atom_count_columns_are_those_of_ase(ff, tmp_path):
    from ase.formula import Formula

    sc = Screener(ff, _table([1, 6, 8, 9, 22, 28, 29, 38, 40, 56, 79]), None, None,
                  ScreenSettings(workers=0, progress=False, chunk_size=16, device="cpu",
                                 precision="fp64", max_atoms=40), "<test>")
    g = CandidateGenerator(SPEC)
    sc.run(g, tmp_path)
    rows = read_results(tmp_path).to_pylist()
    assert len(rows) == len(g)
    for r, c in zip(rows, g.iter(0, len(g)), strict=True):
        symbols = [chemical_symbols[z] for z in c.structure.numbers]
        assert r["formula"] == Formula.from_list(symbols).format("hill"), r["id"]
        assert r["n_atoms"] == c.structure.n_atoms


def test_file_source_streams_records_with_ids(ff, tmp_path):
    from ase.build import molecule
    from ase.io import write

    path = tmp_path / "in.extxyz"
    write(path, [molecule(n) for n in ("H2O", "CH4", "NH3")])
    _screener(ff).run(FileCandidates(path), tmp_path / "out")
    t = read_results(tmp_path / "out")
    assert t.column("id").to_pylist() == ["in.extxyz:0", "in.extxyz:1", "in.extxyz:2"]
    assert t.column("formula").to_pylist() == ["H2O", "CH4", "H3N"]


def test_worker_processes_and_bf16_give_the_same_candidates(ff, tmp_path):
    g = CandidateGenerator(SPEC)
    ref = read_results(_run_to(ff, g, tmp_path / "ref", workers=0, precision="fp32"))
    for name, kw in {"workers": {"workers": 2, "precision": "fp32"},
                     "bf16": {"workers": 0, "precision": "bf16"}}.items():
        t = read_results(_run_to(ff, g, tmp_path / name, **kw))
        assert t.column("id").to_pylist() == ref.column("id").to_pylist()
        tol = 1e-6 if name == "workers" else 0.05
        np.testing.assert_allclose(t.column("energy_per_atom").to_numpy(),
                                   ref.column("energy_per_atom").to_numpy(), rtol=0, atol=tol)


def _run_to(ff, g, out, workers, precision):
    import copy

    settings = ScreenSettings(workers=workers, progress=False, chunk_size=16, device="cpu",
                              precision=precision)
    Screener(copy.deepcopy(ff), _table(), None, None, settings, "<test>").run(g, out)
    return out


def test_state_energies_of_many_heads_equal_each_heads_own(ff):
    """The heads' charge/spin state energies come from one shared product; each column must be
    that head's own e₊ q⁺ + e₋ q⁻ + e_u u."""
    charge = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    spin = torch.tensor([0.0, 2.0, 1.0, 3.0, 4.0])
    mods = [ff.model.heads[h] for h in HEADS]
    shared = ff.model._state_offsets(mods, {K.CHARGE: charge, K.SPIN: spin})
    own = torch.cat([m.structure_outputs(charge, spin) for m in mods], dim=-1)
    assert shared.shape == (5, len(HEADS)) and own.abs().max() > 0.1
    torch.testing.assert_close(shared, own, rtol=0, atol=1e-12)
