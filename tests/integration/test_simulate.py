"""MD and relaxation through the ASE calculator: NVE conserves energy (fp64 and fp32, a periodic
cell and a molecule), a rattled strained crystal relaxes back, runs stop with a message on the
uncertainty or distance rules, resume continues NVE exactly, and the md/relax verbs write their
trajectory and log."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

from atomgfm.calculators.ase_calculator import Calculator
from atomgfm.cli.main import main
from atomgfm.simulate.md import MDSettings, run_md
from atomgfm.simulate.monitors import StopRules, read_log
from atomgfm.simulate.relax import RelaxSettings, run_relax
from atomgfm.testing.fixtures import emt_clusters, train_tiny_model

# Bounds on |drift| (least-squares slope of E_tot per atom) over 200 steps of 1 fs at 300 K with a
# tiny smooth model; measured ~1e-3 meV/atom/ps in both precisions.
DRIFT_BOUND = {"fp64": 0.05, "fp32": 0.5}  # meV/atom/ps


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(train_tiny_model(tmp_path_factory.mktemp("run"), steps=3))


def _cell():
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))


def _molecule(ckpt, precision):
    """A Cu/Ni/Au cluster relaxed by the model first, so MD starts near a minimum."""
    atoms = emt_clusters(1, seed=7, size=5)[0]
    atoms.calc = Calculator(ckpt, head="clusters", precision=precision, device="cpu",
                            uncertainty=False)
    run_relax(atoms, RelaxSettings(fmax=0.05, steps=300), progress=False)
    return atoms


@pytest.mark.parametrize("precision", ["fp64", "fp32"])
@pytest.mark.parametrize("system", ["cell", "molecule"])
def test_nve_conserves_energy(ckpt, precision, system, tmp_path):
    if system == "cell":
        atoms = _cell()
        atoms.calc = Calculator(ckpt, head="auto", precision=precision, device="cpu",
                                uncertainty=False)
    else:
        atoms = _molecule(ckpt, precision)
    r = run_md(atoms, MDSettings(steps=200, temperature_K=300, log_every=5),
               log=tmp_path / "md.csv", progress=False)
    assert r.stopped is None and r.steps == 200
    assert abs(r.drift_meV_atom_ps) < DRIFT_BOUND[precision], r.message
    assert r.mean_temperature_K > 20  # the atoms do move
    rows = read_log(tmp_path / "md.csv")
    assert [row["step"] for row in rows] == list(range(0, 201, 5))
    assert rows[-1]["etot_change_meV_atom"] == pytest.approx(r.records[-1]["etot_change_meV_atom"])


def test_rattled_strained_crystal_relaxes_back():
    """EMT (a real potential) through run_relax with the cell filter: back to its lattice."""
    ref = bulk("Cu", "fcc", a=3.6, cubic=True)
    ref.calc = EMT()
    assert run_relax(ref, RelaxSettings(fmax=1e-3, cell=True, steps=200, optimizer="bfgs"),
                     progress=False).converged
    a0 = ref.cell.lengths()[0]
    atoms = ref.repeat((2, 1, 1))
    atoms.set_cell(atoms.cell.array @ np.diag([1.04, 0.97, 1.02]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    r = run_relax(atoms, RelaxSettings(fmax=0.005, cell=True, steps=500), progress=False)
    assert r.converged and r.fmax_eV_A < 0.005
    # The filter's cell forces are stress × volume per atom: converged means |σ| < fmax·n/V.
    assert r.max_stress_GPa < 0.005 * len(atoms) / atoms.get_volume() / units.GPa
    np.testing.assert_allclose(atoms.cell.lengths(), [2 * a0, a0, a0], rtol=2e-3)
    np.testing.assert_allclose(atoms.cell.angles(), 90, atol=0.2)


def test_model_relaxation_converges(ckpt, tmp_path):
    atoms = _cell()
    atoms.rattle(0.05, seed=2)
    atoms.calc = Calculator(ckpt, head="bulk", precision="fp64", device="cpu")
    r = run_relax(atoms, RelaxSettings(optimizer="bfgs", fmax=0.01, steps=300),
                  trajectory=tmp_path / "r.traj", log=tmp_path / "r.jsonl", progress=False)
    assert r.converged and r.fmax_eV_A < 0.01
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    assert len(read(tmp_path / "r.traj", ":")) == r.steps + 1
    assert read_log(tmp_path / "r.jsonl")[-1]["step"] == r.steps


def test_stops_on_min_distance_and_uncertainty(ckpt, caplog):
    atoms = _cell()
    atoms.calc = Calculator(ckpt, head="bulk", device="cpu")
    r = run_md(atoms, MDSettings(steps=50, stop=StopRules(min_distance=3.0)), progress=False)
    assert r.steps == 0 and "2.55 Å apart, closer than min_distance 3" in r.stopped
    assert "closer than min_distance" in caplog.text
    cluster = emt_clusters(1, seed=7, size=4)[0]  # both heads cover Cu/Ni/Au: a head spread
    cluster.calc = Calculator(ckpt, head="auto", device="cpu")
    r = run_relax(cluster, RelaxSettings(stop=StopRules(max_uncertainty=1e-6)), progress=False)
    assert not r.converged and "uncertainty" in r.stopped and "exceeds the threshold" in r.stopped
    u = r.records[-1]["uncertainty"]
    assert u > 1e-6 and u == cluster.calc.results["uncertainty"]


def test_resume_continues_nve_exactly(ckpt, tmp_path):
    def fresh():
        atoms = _cell()
        atoms.calc = Calculator(ckpt, head="bulk", precision="fp64", device="cpu",
                                uncertainty=False)
        return atoms

    straight = fresh()
    run_md(straight, MDSettings(steps=30, log_every=5, traj_every=5), progress=False)
    first = fresh()
    run_md(first, MDSettings(steps=15, log_every=5, traj_every=5), trajectory=tmp_path / "t.traj",
           log=tmp_path / "t.jsonl", progress=False)
    resumed = fresh()
    r = run_md(resumed, MDSettings(steps=30, log_every=5, traj_every=5),
               trajectory=tmp_path / "t.traj", log=tmp_path / "t.jsonl", progress=False,
               resume=True)
    assert r.steps == 30
    np.testing.assert_allclose(resumed.positions, straight.positions, atol=1e-9)
    steps = [rec["step"] for rec in read_log(tmp_path / "t.jsonl")]
    assert steps == list(range(0, 31, 5))
    frames = read(tmp_path / "t.traj", ":")
    assert [f.info["md_step"] for f in frames] == list(range(0, 31, 5))


def test_md_and_relax_verbs(ckpt, tmp_path, capsys):
    path = tmp_path / "cu.extxyz"
    cell = _cell()
    cell.rattle(0.03, seed=3)
    write(path, cell)
    rc = main(["md", str(path), "--model", ckpt, "--steps", "10", "--log-every", "2",
               "--ensemble", "nvt", "--out", str(tmp_path / "md"), "--no-progress",
               "--log", str(tmp_path / "md" / "md.csv")])
    assert rc == 0
    rows = read_log(tmp_path / "md" / "md.csv")
    assert len(rows) == 6 and {"temperature_K", "uncertainty", "etot_change_meV_atom"} <= set(
        rows[0])
    assert len(read(tmp_path / "md" / "md.traj", ":")) == 2
    rc = main(["relax", str(path), "--model", ckpt, "--head", "bulk", "--fmax", "0.02",
               "--out", str(tmp_path / "rx"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "converged after" in out
    relaxed = read(tmp_path / "rx" / "relaxed.extxyz")
    assert np.abs(relaxed.get_forces()).max() < 0.02
    rc = main(["md", str(path), "--model", ckpt, "--steps", "5", "--min-distance", "3.0",
               "--out", str(tmp_path / "stop"), "--no-progress"])
    assert rc == 3 and "closer than min_distance" in capsys.readouterr().err
    rc = main(["md", str(tmp_path / "missing.xyz"), "--model", ckpt])
    assert rc == 2 and "missing.xyz" in capsys.readouterr().err
