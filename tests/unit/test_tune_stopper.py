"""A resumed campaign's stopper compares new trials with the finished ones."""

from __future__ import annotations

import pytest

pytest.importorskip("deephyper")

from deephyper.evaluator import RunningJob  # noqa: E402
from deephyper.evaluator.storage import MemoryStorage  # noqa: E402

from atomgfm.tune.campaign import campaign_from_dict  # noqa: E402
from atomgfm.tune.records import TrialResult  # noqa: E402
from atomgfm.tune.search import make_stopper, seed_stopper  # noqa: E402


def _campaign(kind):
    return campaign_from_dict({"base": "unused.yaml", "out_dir": "unused", "backbones": ["painn"],
                               "budget": {"steps": 6, "eval_every": 1},
                               "stopper": {"kind": kind, "min_evals": 1, "reduction_factor": 3,
                                           "min_competing": 1}})


def _finished(tid, loss, evals=6, status="ok"):
    return TrialResult(tid, {"backbone": "painn"}, status, loss, steps=evals,
                       curve=[{"eval": i, "step": i, "val_loss": loss} for i in
                              range(1, evals + 1)])


def _stopped_at(storage, search_id, campaign, losses):
    """The evaluation at which a new trial with these losses is stopped (None: never)."""
    stopper = make_stopper(campaign)
    job = RunningJob(storage.create_new_job(search_id), {}, storage, stopper)
    stopper.job = job
    for i, v in enumerate(losses, start=1):
        job.record(i, -v)
        if job.stopped():
            return i if i < len(losses) else None
    return None


@pytest.mark.parametrize("kind", ["successive_halving", "median"])
def test_finished_trials_are_the_new_trials_competitors(kind):
    c = _campaign(kind)
    worse = [0.5] * 6
    fresh = MemoryStorage()
    fresh_id = fresh.create_new_search()
    assert _stopped_at(fresh, fresh_id, c, worse) is None  # alone: nothing to lose to

    storage = MemoryStorage()
    search_id = storage.create_new_search()
    finished = [_finished("0000", 0.1), _finished("0001", 0.2, evals=2, status="stopped"),
                _finished("0002", None, evals=0, status="failed")]
    assert seed_stopper(storage, search_id, c, finished) == 2
    assert _stopped_at(storage, search_id, c, worse) == 1
    assert _stopped_at(storage, search_id, c, [0.05] * 6) is None  # better: kept


def test_seeded_rungs_follow_the_halving_budgets():
    storage = MemoryStorage()
    search_id = storage.create_new_search()
    seed_stopper(storage, search_id, _campaign("successive_halving"), [_finished("0000", 0.1)])
    # budgets 1, 3, 9 evaluations: the curve (6 evaluations) reached the first two
    assert storage.load_metadata_from_all_jobs(search_id, "_completed_rung_0") == [-0.1]
    assert storage.load_metadata_from_all_jobs(search_id, "_completed_rung_1") == [-0.1]
    assert storage.load_metadata_from_all_jobs(search_id, "_completed_rung_2") == []
    assert seed_stopper(storage, search_id, _campaign("none"), [_finished("0000", 0.1)]) == 0
