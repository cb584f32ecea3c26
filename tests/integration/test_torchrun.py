"""``atomgfm train`` under torchrun, no flag: two CPU ranks, SIGKILL mid-run, resume.

Slow (three torchrun launches); run with ``pytest -m slow tests/integration/test_torchrun.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from atomgfm.telemetry.recorder import read_telemetry
from atomgfm.testing.fixtures import write_emt_run_config

pytestmark = pytest.mark.slow
STEPS, EVAL = 40, 20


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    write_emt_run_config(
        root, 12, 8, data={"max_atoms_per_batch": 12, "val_fraction": 0.25},
        train={"out_dir": str(root / "full"), "max_steps": STEPS, "eval_every": EVAL,
               "log_every": 1, "precision": "fp64", "device": "cpu", "ema_decay": None})
    return root


def _torchrun(root, out_dir, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "atomgfm.cli.main", "train", str(root / "config.yaml"), "--out-dir",
           str(out_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kw)


def _train_steps(path):
    if not path.exists():
        return []
    return [r["step"] for r in map(json.loads, path.read_text().splitlines())
            if r.get("kind") == "train"]


def test_torchrun_train_kill_resume(config):
    full = _torchrun(config, config / "full")
    out = full.communicate(timeout=600)[0]
    assert full.returncode == 0, out
    assert "2 ranks (cpu on rank 0), grad_sync ddp" in out
    assert out.count("validation at the last step") == 1  # rank 0 alone prints

    killed = config / "killed"
    proc = _torchrun(config, killed)
    deadline = time.time() + 600
    while not any(s > EVAL for s in _train_steps(killed / "log.jsonl")):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lost = max(_train_steps(killed / "log.jsonl"))
    assert EVAL < lost < STEPS, "the kill must fall between the checkpoint and the end"

    resumed = _torchrun(config, killed)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert _train_steps(killed / "log.jsonl") == list(range(1, STEPS + 1))
    ref = {(r["step"], r["rank"]): r["loss"] for r in read_telemetry(config / "full" /
                                                                     "telemetry.jsonl")}
    got = {(r["step"], r["rank"]): r["loss"] for r in read_telemetry(killed /
                                                                     "telemetry.jsonl")}
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-12), key
