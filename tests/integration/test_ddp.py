"""Data-parallel training for real: two gloo ranks on CPU, fp64, a tiny PaiNN.

Three runs, each two spawned processes:
  full    DDP, 4 steps, checkpoint at step 2 (the reference)
  killed  flat all-reduce, the same config, SIGKILLed when both ranks have done step 3 (after
          the step-2 checkpoint, in the middle of the epoch)
  resumed the killed run started again on its out_dir: redoes steps 3 and 4
The full run must equal one process stepping on the mean gradient of the two ranks' batches (the
same global batch); the resumed run must repeat the full run's losses on both ranks.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from atomgfm.cli.main import main
from atomgfm.config.schema import config_from_dict
from atomgfm.data.graph import collate
from atomgfm.data.mixing import MixedBatchSampler
from atomgfm.telemetry.recorder import read_telemetry
from atomgfm.testing.fixtures import tiny_datasets
from atomgfm.train.distributed import leaving_process_group
from atomgfm.train.loop import Trainer
from atomgfm.train.losses import multitask_loss

STEPS = 4


def _cfg(out_dir, grad_sync="ddp"):
    return config_from_dict({
        "model": {"preset": "S", "backbone_kwargs": {"cutoff": 4.0}},
        "data": {"max_atoms_per_batch": 20},
        "train": {"out_dir": str(out_dir), "max_steps": STEPS, "eval_every": 2, "log_every": 1,
                  "progress": False, "precision": "fp64", "ema_decay": None, "warmup_steps": 2,
                  "device": "cpu", "grad_sync": grad_sync}})


def _data():
    return tiny_datasets(n_bulk=8, n_clusters=6)


def _rank(rank: int, world: int, init_file: str, out_dir: str, grad_sync: str,
          block_at: int | None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=180))
    with leaving_process_group():
        trainer = Trainer.from_config(_cfg(out_dir, grad_sync), _data(), rank=rank,
                                      world_size=world)
        if block_at is not None:  # stand still at this step until the test kills us
            step = trainer.train_step

            def blocking_step():
                if trainer.step == block_at:
                    Path(out_dir, f"standing{rank}").touch()
                    time.sleep(300)
                return step()

            trainer.train_step = blocking_step
        trainer.fit()
        torch.save(trainer.model.state_dict(), f"{out_dir}/rank{rank}.pt")


def _spawn(out: Path, tag: str, grad_sync: str, block_at: int | None = None):
    return mp.spawn(_rank, args=(2, str(out / f"init_{tag}"), str(out), grad_sync, block_at),
                    nprocs=2, join=block_at is None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    full = tmp_path_factory.mktemp("full")
    _spawn(full, "a", "ddp")
    killed = tmp_path_factory.mktemp("killed")
    ctx = _spawn(killed, "b", "flat", block_at=3)
    deadline = time.time() + 240
    while not all((killed / f"standing{r}").exists() for r in (0, 1)):
        assert time.time() < deadline, "the ranks never reached step 3"
        assert all(p.is_alive() for p in ctx.processes), "a rank died before step 3"
        time.sleep(0.2)
    for p in ctx.processes:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    assert not (killed / "rank0.pt").exists()
    killed_log = (killed / "telemetry.jsonl").read_text()
    _spawn(killed, "c", "flat")  # resumes from killed/last.pt (step 2)
    return full, killed, killed_log


def _losses(path: Path) -> dict[tuple[int, int], float]:
    return {(r["step"], r["rank"]): r["loss"] for r in read_telemetry(path)}


def test_two_ranks_equal_one_process_on_the_same_global_batch(runs):
    full, _, _ = runs
    w0, w1 = (torch.load(full / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks diverged"

    # One process, the same global batch: each step both ranks' batches, the mean gradient.
    single = Trainer.from_config(_cfg(full / "single"), _data(), resume=False)
    samplers = [MixedBatchSampler([g.n_atoms for g in single.train_sets], single.sampler.probs,
                                  20, 64, seed=0, rank=r, world_size=2,
                                  edges_per_structure=[g.n_edges for g in single.train_sets])
                for r in (0, 1)]
    params = [p for p in single.model.parameters() if p.requires_grad]
    init = {k: v.clone() for k, v in single.model.state_dict().items()}
    for _ in range(STEPS):
        grads = [torch.zeros_like(p) for p in params]
        for s in samplers:
            batch = collate([single.train_sets[d][i] for d, i in s.next_batch()], torch.float64)
            out = single.model(batch, forces=True, stress=bool(batch["has_stress"].any()),
                               create_graph=True)
            loss, _ = multitask_loss(out, batch, single.scales, single.weights)
            for g, dg in zip(grads, torch.autograd.grad(loss, params), strict=True):
                g += dg / 2
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, single.cfg.train.grad_clip)
        single.optimizer.step()
        single.scheduler.step()
    for k, p in single.model.state_dict().items():
        err = (w0[k] - p).abs().max() / p.abs().max().clamp(min=1e-30)
        assert err < 1e-10, f"{k}: relative difference {err:.2e}"
    assert any(not torch.equal(init[k], w0[k]) for k in w0), "training did not move weights"


def test_killed_mid_epoch_resumes_with_the_same_losses(runs):
    full, killed, killed_log = runs
    before = [json.loads(line)["step"] for line in killed_log.splitlines()]
    assert max(before) == 3  # step 3 ran after the step-2 checkpoint and was lost in the kill
    ref, got = _losses(full / "telemetry.jsonl"), _losses(killed / "telemetry.jsonl")
    assert sorted(got) == sorted(ref) == [(s, r) for s in range(1, STEPS + 1) for r in (0, 1)]
    for key in ref:  # DDP (full) and the flat all-reduce (killed, resumed) agree too
        assert got[key] == pytest.approx(ref[key], rel=1e-12, abs=0), key
    w_full, w_res = torch.load(full / "rank0.pt"), torch.load(killed / "rank0.pt")
    for k in w_full:
        torch.testing.assert_close(w_res[k], w_full[k], rtol=1e-11, atol=1e-14, msg=k)
    # log.jsonl: the killed run's records after the checkpoint were replaced, not duplicated
    steps = [r["step"] for r in map(json.loads, (killed / "log.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == list(range(1, STEPS + 1))


def test_telemetry_per_rank(runs):
    full, killed, _ = runs
    for run, phases in ((full, {"data", "forward", "backward", "optimizer"}),
                        (killed, {"data", "forward", "backward", "allreduce", "optimizer"})):
        recs = read_telemetry(run / "telemetry.jsonl")
        assert {r["rank"] for r in recs} == {0, 1}
        for r in recs:
            assert phases <= set(r["phases_ms"]), (run, r["phases_ms"])
            assert r["world_size"] == 2 and r["step_ms"] > 0 and r["peak_mem_mb"] > 10
            assert r["structures_per_s"] > 0 and r["atoms_per_s"] > r["structures_per_s"]
        # each rank reports its own batches: the two ranks' losses differ
        assert recs[0]["loss"] != recs[1]["loss"]


def test_resuming_with_another_world_size_stops_with_a_message(runs):
    full, _, _ = runs
    with pytest.raises(ValueError, match=r"last\.pt.*2 rank\(s\).*1 rank\(s\)"):
        Trainer.from_config(_cfg(full), _data())


def test_report_writes_curves_and_phase_breakdown(runs, tmp_path, capsys):
    full, _, _ = runs
    assert main(["report", str(full), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| rank | steps | step ms |" in out and "| 1 |" in out
    for name in ("curves.png", "phases.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
