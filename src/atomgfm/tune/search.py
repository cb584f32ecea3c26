"""The campaign driver: DeepHyper's centralised Bayesian optimisation (CBO) over trials run by
parallel evaluators, each stopped early by DeepHyper's stopper, resumable.

    campaign = load_campaign("configs/tune_demo.yaml")
    results = run_campaign(campaign)

The driver asks CBO for one configuration whenever an evaluator is free, writes the trial's
``params.json`` before submitting it, and tells CBO each result as it comes back (minus the best
validation loss, or DeepHyper's ``"F..."`` objective for a failed trial). Resume: finished trials
(those with ``result.json``) are told to the surrogate before the first ask (warm start) and never
rerun; trials that started but never finished are rerun first, under their own ids and
parameters; the total never exceeds ``max_evals``; the stopper compares new trials with the
finished ones too (:func:`seed_stopper`). A worker whose driver died exits at its next
evaluation without writing a result, so a killed campaign leaves no stray trial behind.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import yaml

from atomgfm.config.schema import ConfigError
from atomgfm.tune.campaign import Campaign
from atomgfm.tune.records import (
    TrialResult,
    format_id,
    next_trial_id,
    read_trials,
    trial_dir,
    write_params,
    write_result,
)

log = logging.getLogger(__name__)

# Campaign fields a resumed campaign may change (everything else defines the search).
_MAY_CHANGE = ("max_evals", "evaluators", "threads", "method")


def make_stopper(campaign: Campaign):
    """DeepHyper's stopper for the campaign (None for ``kind: none``); its budget unit is the
    evaluation index, so ``max_steps`` is the evaluations a full trial makes."""
    s = campaign.stopper
    if s.kind == "none":
        return None
    from deephyper.stopper import MedianStopper, SuccessiveHalvingStopper

    full = campaign.evals_per_trial
    if s.kind == "successive_halving":
        return SuccessiveHalvingStopper(max_steps=full, min_steps=s.min_evals,
                                        reduction_factor=s.reduction_factor)
    return MedianStopper(max_steps=full, min_steps=s.min_evals, min_competing=s.min_competing)


def seed_stopper(storage, search_id, campaign: Campaign, finished: list[TrialResult]) -> int:
    """Give a resumed campaign's stopper the finished trials to compare against: for each, a
    job in DeepHyper's storage holding what its stopper recorded live, minus the validation
    loss at each halting budget its curve reached (``_completed_rung_k``; a trial that reached
    rung k's budget was promoted at every earlier rung) and whether it ran the full budget.
    Returns the number of trials seeded."""
    s = campaign.stopper
    if s.kind == "none":
        return 0

    def budget(k: int) -> float:  # the evaluation index of rung k, as each stopper counts it
        if s.kind == "successive_halving":
            return (s.min_evals - 1) + s.reduction_factor ** k
        return s.min_evals + k  # median: every evaluation from min_evals on

    seeded = 0
    for r in finished:
        losses = {c["eval"]: c["val_loss"] for c in r.curve
                  if isinstance(c.get("val_loss"), int | float) and math.isfinite(c["val_loss"])}
        if r.status == "failed" or not losses:
            continue
        job_id = storage.create_new_job(search_id)
        k = 0
        while budget(k) <= max(losses):
            at = min(e for e in losses if e >= budget(k))
            storage.store_job_metadata(job_id, f"_completed_rung_{k}", -losses[at])
            k += 1
        storage.store_job_metadata(job_id, "_completed", r.status == "ok")
        seeded += 1
    return seeded


def _check_same_campaign(out: Path, campaign: Campaign) -> None:
    """A campaign directory belongs to one search: resuming it with another base, space,
    budget or data caps would mix incomparable trials."""
    path = out / "campaign.yaml"
    now = campaign.to_dict()
    if path.exists():
        saved = yaml.safe_load(path.read_text()) or {}
        diff = sorted(k for k in set(now) | set(saved)
                      if k not in _MAY_CHANGE and saved.get(k) != now.get(k))
        if diff:
            raise ConfigError(f"{path}: this campaign directory was started with different "
                              f"{diff}; resume with the same settings (only {list(_MAY_CHANGE)} "
                              "may change) or choose a new out_dir")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(now, sort_keys=False))


class Progress:
    """Counts and best-so-far, one log line per finished trial."""

    def __init__(self, total: int, finished: list[TrialResult]) -> None:
        self.total = total
        self.counts = {"ok": 0, "stopped": 0, "failed": 0}
        self.best: TrialResult | None = None
        for r in finished:
            self.add(r)

    def add(self, r: TrialResult) -> None:
        self.counts[r.status] += 1
        if r.status != "failed" and r.best_val_loss is not None and math.isfinite(
                r.best_val_loss) and (self.best is None
                                      or r.best_val_loss < self.best.best_val_loss):
            self.best = r

    def line(self, r: TrialResult) -> str:
        done = sum(self.counts.values())
        val = f"val {r.best_val_loss:.4f}" if r.best_val_loss is not None else "val -"
        what = r.error if r.status == "failed" else val
        best = (f"best {self.best.best_val_loss:.4f} (trial {self.best.id}, {self.best.family})"
                if self.best else "best -")
        return (f"trial {r.id} {r.family:<8} {r.status:<7} {what} | {r.steps} steps "
                f"{r.seconds:.0f} s | {done}/{self.total} done: {self.counts['ok']} ok, "
                f"{self.counts['stopped']} stopped, {self.counts['failed']} failed | {best}")


def run_campaign(campaign: Campaign) -> list[TrialResult]:
    """Run (or resume) ``campaign`` until ``max_evals`` trials have finished; returns every
    finished trial's result in id order.

    ``campaign.method`` picks DeepHyper's evaluator: ``process`` (local processes, the
    default), ``thread`` (in this process: tests, debugging); ``ray`` or ``mpicomm`` on a
    cluster (docs/tune.md).
    """
    from deephyper.evaluator import Evaluator
    from deephyper.hpo import CBO

    from atomgfm.tune.trial import base_params, run_job

    out = Path(campaign.out_dir)
    _check_same_campaign(out, campaign)
    base = campaign.base_config()
    space = campaign.space_for(base)
    finished, unfinished = read_trials(out)
    finished = finished[: campaign.max_evals]
    progress = Progress(campaign.max_evals, finished)
    left = campaign.max_evals - len(finished)
    log.info("campaign %s: %d trials finished, %d unfinished (rerun), %d to go; %d evaluator(s) "
             "x %d thread(s); space: %s", out, len(finished), len(unfinished), left,
             campaign.evaluators, campaign.threads_per_trial, ", ".join(space.names))
    if left <= 0:
        return finished
    sc = campaign.search
    start = []
    if sc.base_point and not finished and not unfinished:  # a new campaign: the base first
        point, why = base_params(base, space)
        if point is None:
            log.warning("search.base_point: the base config is not a point of this campaign's "
                        "space (%s); starting from random points only", why)
        else:
            start = [point]
    # A resumed search draws from another random stream: CBO does not count the points told to
    # it as sampled, so the campaign's own seed would propose the finished random trials again.
    next_id = next_trial_id(out)
    seed = campaign.seed + next_id
    search = CBO(space.problem(seed=seed), random_state=seed,
                 initial_points=start or None,
                 log_dir=str(out / "deephyper"), checkpoint_history_to_csv=False,
                 surrogate_model=sc.surrogate, acq_func=sc.acq_func,
                 acq_func_kwargs={"kappa": sc.kappa}, n_initial_points=sc.initial_points,
                 acq_optimizer=sc.acq_optimizer, acq_optimizer_kwargs={"n_points": sc.acq_points})
    names = set(space.names)
    if finished:  # warm start: the surrogate learns from every finished trial
        search.tell([(_complete(r.params, names), r.objective) for r in finished])
    def new_evaluator():
        ev = Evaluator.create(
            run_job, method=campaign.method,
            method_kwargs={"num_workers": campaign.evaluators,
                           "run_function_kwargs": {"campaign": campaign.to_dict(),
                                                   "campaign_dir": str(out)}})
        search.check_evaluator(ev)
        ev._stopper = make_stopper(campaign)  # what Search.search() does before its loop
        # the stopper's competitors: the finished trials too (DeepHyper's storage)
        seed_stopper(ev._storage, ev._search_id, campaign, results)
        return ev

    results = list(finished)
    evaluator = new_evaluator()
    pending = sorted(unfinished.items())[:left]
    submitted = 0
    running: dict[str, dict] = {}  # trial id -> params, in flight
    broken: dict[str, int] = {}  # trial id -> times its process pool broke under it

    def finish(tid: str, params: dict, fallback: str) -> None:
        done, _ = read_trials(out)
        r = next((x for x in done if x.id == tid), None)
        if r is None:  # the run function ended without writing its result: record why
            r = TrialResult(tid, params, "failed", error=fallback)
            write_result(trial_dir(out, tid), r)
        search.tell([(_complete(params, names), r.objective)])
        results.append(r)
        progress.add(r)
        log.info("%s", progress.line(r))

    while True:
        while len(running) < campaign.evaluators and submitted < left:
            if pending:
                tid, params = pending.pop(0)
            else:
                params = search.ask(1)[0]
                tid, next_id = format_id(next_id), next_id + 1
            write_params(trial_dir(out, tid), tid, params)  # a kill from now on: rerun it
            evaluator.submit([{**params, "trial_id": tid}])
            running[tid] = params
            submitted += 1
        if not running:
            break
        try:
            jobs = evaluator.gather("BATCH", size=1)
        except Exception as exc:  # noqa: BLE001 - a trial process died (OS OOM killer, signal)
            # The pool is gone with every trial in it, and which one died is unknown: each that
            # has no result yet is run again once; a trial under which a pool breaks twice is
            # recorded as failed.
            log.warning("a trial process died (%s: %s); trials %s run again, a second death "
                        "fails them", type(exc).__name__, exc, sorted(running))
            # its tasks all raise the same error: drop them, or closing it would re-raise it
            evaluator._tasks_done, evaluator._tasks_running = [], []
            evaluator.close()
            for tid, params in sorted(running.items()):
                if (trial_dir(out, tid) / "result.json").exists():  # it finished before the break
                    finish(tid, params, "")
                    continue
                broken[tid] = broken.get(tid, 0) + 1
                if broken[tid] >= 2:
                    finish(tid, params, f"out of memory?: the trial process died twice "
                                        f"({type(exc).__name__}: {exc})")
                else:
                    pending.insert(0, (tid, params))
                    submitted -= 1
            running.clear()
            evaluator = new_evaluator()  # its stopper seeded with the results finished above
            continue
        for job in jobs:
            tid = job.args["trial_id"]
            params = running.pop(tid)
            finish(tid, params, f"error: the trial process ended without a result "
                                f"({job.output})")
    evaluator.close()
    return sorted(results, key=lambda r: r.id)


def _complete(params: dict, names: set[str]) -> dict:
    """``params`` restricted to the space's names (records may hold more, e.g. trial_id)."""
    missing = names - set(params)
    if missing:
        raise ConfigError(f"a recorded trial lacks hyperparameters {sorted(missing)} of this "
                          "campaign's space")
    return {k: params[k] for k in names}
