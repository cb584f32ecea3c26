"""Campaigns end to end: resume without rerunning, failed trials recorded while the campaign goes
on, report and promotion, and (slow) a driver really killed with SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytest.importorskip("deephyper")

from atomgfm import registry  # noqa: E402
from atomgfm.testing.fixtures import write_emt_run_config  # noqa: E402
from atomgfm.tune.campaign import load_campaign  # noqa: E402
from atomgfm.tune.records import read_trials  # noqa: E402
from atomgfm.tune.report import promote, report  # noqa: E402
from atomgfm.tune.search import run_campaign  # noqa: E402

# tiny models around the base config (PaiNN preset S: 32 features, 2 layers, 12 rbf; 4 Å)
TINY = {"cutoff": {"range": [3.5, 4.0]}, "lr": {"range": [1.0e-3, 5.0e-3]},
        "painn.num_features": {"range": [16, 32]}, "painn.num_layers": {"range": [1, 2]},
        "painn.num_rbf": {"range": [8, 12]}}


def write_campaign(root, **over):
    base = write_emt_run_config(
        root, 16, 4,
        data={"max_atoms_per_batch": 48, "max_structures_per_batch": 8,
              "mixing": "temperature", "temperature": 2.0},
        train={"max_steps": 3, "eval_every": 3, "log_every": 3, "warmup_steps": 1,
               "progress": False})
    raw = {"base": base.name, "out_dir": "campaign", "max_evals": 2, "evaluators": 1,
           "method": "thread", "threads": 1, "backbones": ["painn"],
           "budget": {"steps": 4, "eval_every": 2},
           "data": {"max_train_per_dataset": 6, "max_val_per_dataset": 2},
           "stopper": {"kind": "successive_halving", "min_evals": 1},
           "search": {"initial_points": 2}, "space": TINY, **over}
    path = root / "campaign.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _snapshot(out):
    return {p.parent.name: (p.read_text(), p.stat().st_mtime_ns)
            for p in sorted((out / "trials").glob("*/result.json"))}


def test_resume_reruns_only_unfinished_and_respects_max_evals(tmp_path, caplog, capsys):
    # 4 initial points: the resumed search still proposes random points after two finished
    path = write_campaign(tmp_path, search={"initial_points": 4})
    caplog.set_level(logging.INFO, logger="atomgfm")
    first = run_campaign(load_campaign(path))
    out = tmp_path / "campaign"
    assert [r.id for r in first] == ["0000", "0001"]
    base = load_campaign(path).base_config()
    assert first[0].params["painn.num_features"] == 32  # the base config comes first
    assert first[0].params["lr"] == base.train.lr and first[0].params["cutoff"] == 4.0
    assert all(r.status in ("ok", "stopped") for r in first)
    assert "2/2 done" in caplog.text and "best" in caplog.text
    # trial 0001 "was killed": it started (params.json) but never wrote result.json
    params_1 = json.loads((out / "trials" / "0001" / "params.json").read_text())["params"]
    (out / "trials" / "0001" / "result.json").unlink()
    kept = _snapshot(out)
    caplog.clear()
    c = load_campaign(path)
    c.max_evals = 3
    results = run_campaign(c)
    assert "1 trials finished, 1 unfinished (rerun), 2 to go" in caplog.text
    assert [r.id for r in results] == ["0000", "0001", "0002"]
    assert _snapshot(out)["0000"] == kept["0000"]  # finished: never rerun
    assert results[1].params == params_1  # unfinished: rerun with its own parameters
    # a new proposal, not a finished trial's point again (the resumed search's random stream)
    assert results[2].params not in (results[0].params, results[1].params)
    # a finished campaign does nothing more; a different search in the same dir is refused
    assert len(run_campaign(c)) == 3 and _snapshot(out)["0002"]
    c.budget.steps = 6
    with pytest.raises(ValueError, match="different.*budget"):
        run_campaign(c)

    rows = report(out)
    statuses = [r["status"] for r in rows]
    assert statuses == sorted(statuses, key=lambda s: s != "ok")  # full budget first
    for status in ("ok", "stopped"):
        losses = [r["best_val_loss"] for r in rows if r["status"] == status]
        assert losses == sorted(losses)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["trial"] for r in rows if r["settings"].startswith("base config: ")] == ["0000"]
    for name in ("report.csv", "report.md", "trajectories.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "report.md").read_text().count("\n| ") == 3
    summary = promote(out, 1, max_steps=2)
    assert summary[0]["trial"] == rows[0]["trial"] and summary[0]["steps"] == 2
    assert (out / "promoted" / rows[0]["trial"] / "best.pt").exists()  # named by trial
    saved = yaml.safe_load((out / "promoted" / rows[0]["trial"] / "config.yaml").read_text())
    assert saved["data"]["datasets"][0]["path"] == "bulk.extxyz"  # the full data, not capped

    from atomgfm.cli.main import main

    capsys.readouterr()
    assert main(["tune", "report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"   1  {rows[0]['trial']}" in printed and "trajectories.png" in printed
    assert main(["tune", "report"]) == 2
    assert "usage: atomgfm tune report DIR" in capsys.readouterr().err
    assert main(["tune", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["tune", str(path), "--max-evals", "0"]) == 2  # refused, not ignored
    assert "--max-evals must be >= 1" in capsys.readouterr().err
    assert main(["tune", "report", str(out), "--promote", "0"]) == 2
    assert "--promote must be >= 1" in capsys.readouterr().err


@pytest.fixture
def rejects_backbone():
    painn = registry.get("backbone", "painn")

    class Rejects(painn):
        def __init__(self, **kwargs):
            raise ValueError("num_rbf must divide num_features")

    registry.register("backbone", "rejects")(Rejects)
    yield
    registry._REGISTRY["backbone"].pop("rejects", None)


def test_failed_trials_are_recorded_and_the_campaign_goes_on(tmp_path, rejects_backbone):
    space = {**TINY, "rejects.num_features": {"value": 16}, "rejects.num_layers": {"value": 1}}
    path = write_campaign(tmp_path, backbones=["painn", "rejects"], max_evals=4,
                          stopper={"kind": "none"}, space=space, seed=1)
    results = run_campaign(load_campaign(path))
    assert len(results) == 4
    by_family = {f: [r for r in results if r.family == f] for f in ("painn", "rejects")}
    assert by_family["painn"] and by_family["rejects"], "seed 1 draws both families"
    for r in by_family["rejects"]:
        assert r.status == "failed" and "invalid config" in r.error
        assert "num_rbf must divide" in r.error
    assert all(r.status == "ok" for r in by_family["painn"])
    rows = report(tmp_path / "campaign")
    assert [r["status"] for r in rows][-len(by_family["rejects"]):] == \
        ["failed"] * len(by_family["rejects"])


@pytest.mark.slow
def test_a_killed_driver_resumes(tmp_path):
    """SIGKILL the ``atomgfm tune`` process while trial 0001 runs; the rerun reruns 0001 with
    its parameters, keeps 0000 and stops at max_evals."""
    psutil = pytest.importorskip("psutil")
    path = write_campaign(tmp_path, method="process", max_evals=3,
                          budget={"steps": 40, "eval_every": 2}, stopper={"kind": "none"})
    out = tmp_path / "campaign"
    cmd = [sys.executable, "-m", "atomgfm.cli.main", "tune", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "trials" / "0001" / "curve.jsonl").exists():
        assert proc.poll() is None and time.time() < deadline, "campaign ended or hung"
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for child in children:  # the evaluator's worker and storage processes: each by its id
        try:
            child.wait(timeout=30)  # a worker exits by itself at its next evaluation
        except psutil.TimeoutExpired:
            child.kill()
    finished, unfinished = read_trials(out)
    assert [r.id for r in finished] == ["0000"] and list(unfinished) == ["0001"]
    kept = _snapshot(out)["0000"]
    params_1 = json.loads((out / "trials" / "0001" / "params.json").read_text())["params"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    finished, unfinished = read_trials(out)
    assert [r.id for r in finished] == ["0000", "0001", "0002"] and not unfinished
    assert _snapshot(out)["0000"] == kept
    assert finished[1].params == params_1  # rerun with the parameters it started with
    assert "1 trials finished, 1 unfinished (rerun), 2 to go" in done.stderr


@pytest.mark.slow
def test_a_trial_process_killed_by_the_os_is_recorded_as_failed(tmp_path):
    """A trial whose process is SIGKILLed (as the OOM killer does) is run again once, then
    recorded as failed; the campaign goes on to max_evals."""
    painn = registry.get("backbone", "painn")

    class Killed(painn):
        def forward(self, batch):
            os.kill(os.getpid(), signal.SIGKILL)

    registry.register("backbone", "killed")(Killed)
    try:
        space = {**TINY, "killed.num_features": {"value": 16}, "killed.num_layers": {"value": 1}}
        path = write_campaign(tmp_path, method="process", backbones=["killed", "painn"],
                              max_evals=3, stopper={"kind": "none"}, space=space,
                              search={"initial_points": 3, "base_point": False}, seed=0)
        results = run_campaign(load_campaign(path))
    finally:
        registry._REGISTRY["backbone"].pop("killed", None)
    assert len(results) == 3
    killed = [r for r in results if r.family == "killed"]
    assert killed, "seed 0 draws the killed family"
    for r in killed:
        assert r.status == "failed" and "died twice" in r.error
    assert all(r.status == "ok" for r in results if r.family == "painn")
    done, unfinished = read_trials(tmp_path / "campaign")
    assert len(done) == 3 and not unfinished
