"""A hyperparameter campaign on the demo corpus, then the demo config at the same budget.

    python benchmarks/tuning.py [--campaign configs/tune_demo.yaml] [--max-evals 12]
        [--steps 150] [--evaluators 2] [--out-dir /tmp/atomgfm_tuning] [--fresh]

Runs (or resumes) the campaign (DeepHyper CBO, successive-halving stopper, parallel local
processes), prints the ranked table and the trajectory plot's path, then trains the demo config
(configs/demo.yaml's model, optimiser and mixing) on the same capped data for the same step
budget as one trial, and prints the best trial's validation loss against it. The validation
loss is the Trainer's model-selection score: mean over datasets of force MAE / force RMS
(unitless, lower is better), EMA weights. Equal steps, so the comparison holds under load; the
wall times printed do not.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from atomgfm.tune.campaign import load_campaign  # noqa: E402
from atomgfm.tune.report import report  # noqa: E402
from atomgfm.tune.search import run_campaign  # noqa: E402
from atomgfm.tune.trial import run_trial  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--campaign", default=str(ROOT / "configs" / "tune_demo.yaml"))
    p.add_argument("--out-dir", default="/tmp/atomgfm_tuning", help="the campaign directory")
    p.add_argument("--max-evals", type=int, help="override the campaign's max_evals")
    p.add_argument("--steps", type=int, help="override the per-trial step budget")
    p.add_argument("--evaluators", type=int, help="override the campaign's evaluators")
    p.add_argument("--fresh", action="store_true", help="delete --out-dir first")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("atomgfm").setLevel(logging.INFO)
    c = load_campaign(args.campaign)
    c.out_dir = args.out_dir
    if args.max_evals:
        c.max_evals = args.max_evals
    if args.steps:
        c.budget.steps = args.steps
    if args.evaluators:
        c.evaluators = args.evaluators
    if args.fresh and Path(c.out_dir).exists():
        shutil.rmtree(c.out_dir)
    import torch

    print(f"# campaign {args.campaign}: {c.max_evals} trials, {c.evaluators} evaluators x "
          f"{c.threads_per_trial} threads, {c.budget.steps} steps (eval every "
          f"{c.budget.eval_every}), caps {c.data.max_train_per_dataset}/"
          f"{c.data.max_val_per_dataset} per dataset, stopper {c.stopper.kind}; torch "
          f"{torch.__version__}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
          flush=True)
    t0 = time.perf_counter()
    results = run_campaign(c)
    t_campaign = time.perf_counter() - t0
    rows = report(c.out_dir, echo=print)
    print(f"campaign: {len(results)} trials in {t_campaign:.0f} s wall; trajectories: "
          f"{Path(c.out_dir) / 'trajectories.png'}", flush=True)

    ref_dir = Path(c.out_dir) / "reference_demo_config"
    c.evaluators = 1  # alone now: all the cores a trial would share
    t1 = time.perf_counter()
    ref = run_trial("demo", {}, c, c.out_dir, directory=ref_dir)
    t_ref = time.perf_counter() - t1
    if ref.status == "failed":
        print(f"demo config failed: {ref.error}")
        sys.exit(1)
    best = next((r for r in rows if r["status"] != "failed"), None)
    print(f"demo config ({ref_dir}): val loss {ref.best_val_loss:.4f} after {ref.steps} steps "
          f"({t_ref:.0f} s, {c.threads_per_trial} threads)")
    if best is None:
        print("no trial finished")
        sys.exit(1)
    verdict = "beats" if best["best_val_loss"] < ref.best_val_loss else "does not beat"
    print(f"best trial {best['trial']} ({best['backbone']}, {best['status']}, {best['steps']} "
          f"steps): val loss {best['best_val_loss']:.4f} {verdict} the demo config's "
          f"{ref.best_val_loss:.4f} at {ref.steps} steps (ratio "
          f"{best['best_val_loss'] / ref.best_val_loss:.3f}); settings: {best['settings']}")
    print(f"total wall time {time.perf_counter() - t0:.0f} s; load average "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
