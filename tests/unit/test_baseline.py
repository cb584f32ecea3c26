"""The reference baseline (E = Σ e_Z + charge/spin state energies, F = 0, σ = 0) beside which
every evaluation table puts the model: the same numbers from loaded structures and from their
graphs (a store's path), and the numbers a direct computation gives."""

from __future__ import annotations

import numpy as np
import pytest

from atomgfm.data.sources import build_graphs
from atomgfm.inference.evaluate import baseline_metrics, force_std, graph_baseline
from atomgfm.testing.fixtures import tiny_datasets


@pytest.mark.parametrize("split", ["train", "val"])
def test_structures_and_graphs_give_the_same_baseline(split):
    for d in tiny_datasets(n_bulk=8, n_clusters=6):
        structures = d.split(split)
        graphs = build_graphs(structures, 4.0, d.id, progress=False)
        from_graphs, std = graph_baseline({"normalization": d.normalization.to_dict()}, graphs)
        direct = baseline_metrics(d, split)
        assert from_graphs.keys() == direct.keys() and "forces_mae_meV_A" in direct
        for k in direct:
            assert from_graphs[k] == pytest.approx(direct[k], rel=1e-12), k
        assert std == pytest.approx(force_std(d, split), rel=1e-9)

        # against a direct computation
        e = [abs(s.energy - d.normalization.reference_energy(s)) / s.n_atoms
             for s in structures]
        f = np.concatenate([s.forces.ravel() for s in structures])
        assert direct["energy_mae_meV_atom"] == pytest.approx(1000 * np.mean(e), rel=1e-12)
        assert direct["forces_mae_meV_A"] == pytest.approx(1000 * np.mean(np.abs(f)), rel=1e-12)
        assert force_std(d, split) == pytest.approx(np.std(f), rel=1e-9)
        has_stress = [s for s in structures if s.stress is not None]
        assert ("stress_mae_meV_A3" in direct) == bool(has_stress)
        if has_stress:
            st = np.concatenate([np.abs(s.stress).ravel() for s in has_stress])
            assert direct["stress_mae_meV_A3"] == pytest.approx(1000 * st.mean(), rel=1e-12)
