"""Campaign validation, one trial's config and data, its budget, and its failure modes."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

pytest.importorskip("deephyper")

from atomgfm import registry  # noqa: E402
from atomgfm.config.schema import ConfigError, load_config  # noqa: E402
from atomgfm.data.mixing import mixing_probabilities  # noqa: E402
from atomgfm.testing.fixtures import write_emt_run_config  # noqa: E402
from atomgfm.tune.campaign import load_campaign  # noqa: E402
from atomgfm.tune.records import read_trials  # noqa: E402
from atomgfm.tune.trial import base_datasets, cap_datasets, run_trial, trial_config  # noqa: E402

PAINN = {"backbone": "painn", "cutoff": 3.8, "lr": 0.004, "forces_weight": 20.0,
         "temperature": 3.0, "painn.num_features": 16, "painn.num_layers": 1,
         "painn.num_rbf": 8, "schnet.num_features": 32}


def _campaign(tmp_path, **over):
    base = write_emt_run_config(
        tmp_path, 16, 4,
        data={"max_atoms_per_batch": 48, "max_structures_per_batch": 8,
              "mixing": "temperature", "temperature": 2.0},
        train={"max_steps": 500, "eval_every": 100, "log_every": 50, "warmup_steps": 50,
               "progress": False})
    raw = {"base": base.name, "out_dir": "campaign", "max_evals": 2, "method": "thread",
           "backbones": ["painn", "schnet"], "budget": {"steps": 4, "eval_every": 2},
           "data": {"max_train_per_dataset": 6, "max_val_per_dataset": 2},
           "stopper": {"kind": "none"}, **over}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("over, message", [
    ({"max_evalz": 3}, "unknown key"),
    ({"budget": {"steps": 4, "seconds": 10}}, "exactly one of steps or seconds"),
    ({"budget": {"seconds": 10}, "stopper": {"kind": "median"}}, "needs budget.steps"),
    ({"stopper": {"kind": "hyperband"}}, "stopper.kind"),
    ({"method": "slurm"}, "method"),
    ({"space": {"lr": {"range": [1e-5, 1e-3]}}}, "wider than the declared"),
    ({"base": "missing.yaml"}, "not found"),
])
def test_campaign_errors_name_the_file_and_key(tmp_path, over, message):
    path = _campaign(tmp_path, **over)
    with pytest.raises(ConfigError, match=message) as err:
        load_campaign(path)
    assert str(path) in str(err.value)


def test_trial_config_applies_params_and_the_trial_budget(tmp_path):
    c = load_campaign(_campaign(tmp_path))
    base = c.base_config()
    cfg = trial_config(base, PAINN, c, tmp_path / "t")
    assert cfg.model.backbone == "painn"
    assert cfg.model.backbone_kwargs == {"cutoff": 3.8, "num_features": 16, "num_layers": 1,
                                         "num_rbf": 8}
    assert cfg.train.lr == 0.004 and cfg.data.temperature == 3.0
    assert all(d.forces_weight == 20.0 for d in cfg.data.datasets)
    assert (cfg.train.max_steps, cfg.train.eval_every, cfg.train.progress) == (4, 2, False)
    assert cfg.train.warmup_steps == 1  # shortened with the budget
    assert cfg.train.ema_decay == 0.0  # horizon 0.1 x 4 steps -> at most 1 step
    c.budget.steps = 150
    assert trial_config(base, PAINN, c, tmp_path).train.ema_decay == pytest.approx(1 - 1 / 15)
    c.budget.steps = 4
    full = trial_config(base, PAINN, None, tmp_path / "p")  # promotion: the base's budget
    assert (full.train.max_steps, full.train.eval_every) == (500, 100)
    other = trial_config(base, {"backbone": "schnet", "schnet.num_features": 40}, c, tmp_path)
    assert other.model.backbone_kwargs == {"num_features": 40} and other.model.preset is None
    with pytest.raises(ConfigError, match="num_featurez"):
        trial_config(base, {"backbone": "painn", "painn.num_featurez": 3}, c, tmp_path)


def test_caps_are_deterministic_and_minorities_stay_oversampled(tmp_path):
    c = load_campaign(_campaign(tmp_path))
    base = c.base_config()
    full = base_datasets(base, c.base)
    a = cap_datasets(full, base, 6, 2, seed=0)
    b = cap_datasets(full, base, 6, 2, seed=0)
    assert [len(d.train) for d in a] == [min(6, len(d.train)) for d in full]
    assert [len(d.val) for d in a] == [min(2, len(d.val)) for d in full]
    for x, y, f in zip(a, b, full, strict=True):
        assert [s.index for s in x.train] == [s.index for s in y.train]
        assert {s.index for s in x.train} <= {s.index for s in f.train}
    other = cap_datasets(full, base, 6, 2, seed=1)
    assert any([s.index for s in x.train] != [s.index for s in y.train]
               for x, y in zip(a, other, strict=True) if len(x.train) < len(full[0].train))
    # the minority dataset (4 clusters, split 3/1) is drawn above its share
    sizes = {d.name: len(d.train) for d in a}
    p = mixing_probabilities(sizes, "temperature", base.data.temperature)
    share = sizes["clusters"] / sum(sizes.values())
    assert p["clusters"] > share


def test_trainer_on_eval_hook_ends_training(tmp_path):
    from atomgfm.config.schema import config_from_dict
    from atomgfm.testing.fixtures import tiny_datasets
    from atomgfm.train.loop import Trainer

    cfg = config_from_dict({"model": {"preset": "S", "backbone_kwargs": {"cutoff": 4.0}},
                            "train": {"out_dir": str(tmp_path), "max_steps": 20,
                                      "eval_every": 2, "progress": False}})
    seen = []
    trainer = Trainer.from_config(cfg, tiny_datasets(n_bulk=6, n_clusters=4))
    trainer.fit(on_eval=lambda step, score, metrics: seen.append((step, score)) or step >= 4)
    assert [s for s, _ in seen] == [2, 4] and trainer.step == 4


def test_trial_records_its_curve_and_result(tmp_path):
    c = load_campaign(_campaign(tmp_path))
    torch.set_num_threads(1)
    stops = []
    r = run_trial("0000", PAINN, c, c.out_dir, report=lambda i, v: stops.append((i, v)) or False)
    assert r.status == "ok" and r.steps == 4 and r.error == ""
    d = tmp_path / "campaign" / "trials" / "0000"
    curve = [json.loads(x) for x in (d / "curve.jsonl").read_text().splitlines()]
    assert [x["step"] for x in curve] == [2, 4]
    assert [i for i, _ in stops] == [1, 2] and stops[-1][1] == curve[-1]["val_loss"]
    assert r.best_val_loss == min(x["val_loss"] for x in curve)
    assert load_config(d / "config.yaml").model.backbone_kwargs["num_features"] == 16
    (done,), unfinished = read_trials(c.out_dir)
    assert done.id == "0000" and done.params == PAINN and not unfinished
    # the stopper's verdict before the full budget: "stopped", at the step it said so
    s = run_trial("0001", PAINN, c, c.out_dir, report=lambda i, v: True)
    assert s.status == "stopped" and s.steps == 2 and s.objective == -s.best_val_loss


@pytest.fixture
def bad_backbones():
    """``rejects``: its constructor refuses its settings; ``nanbone``: NaN features."""
    painn = registry.get("backbone", "painn")

    class Rejects(painn):
        def __init__(self, **kwargs):
            raise ValueError("num_rbf must divide num_features")

    class NaNBone(painn):
        def forward(self, batch):
            out = super().forward(batch)
            return {k: v * float("nan") for k, v in out.items()}

    registry.register("backbone", "rejects")(Rejects)
    registry.register("backbone", "nanbone")(NaNBone)
    yield
    registry._REGISTRY["backbone"].pop("rejects", None)
    registry._REGISTRY["backbone"].pop("nanbone", None)


def test_failed_trials_are_results_with_reasons(tmp_path, bad_backbones):
    c = load_campaign(_campaign(tmp_path))
    torch.set_num_threads(1)
    rej = run_trial("0000", {"backbone": "rejects", "rejects.num_features": 16}, c, c.out_dir)
    assert rej.status == "failed"
    assert rej.error.startswith("invalid config:") and "num_rbf must divide" in rej.error
    assert rej.objective.startswith("F")
    nan = run_trial("0001", {"backbone": "nanbone", "nanbone.num_features": 16}, c, c.out_dir)
    assert nan.status == "failed" and nan.error.startswith("diverged:")
    done, _ = read_trials(c.out_dir)
    assert [(r.id, r.status) for r in done] == [("0000", "failed"), ("0001", "failed")]
    assert (tmp_path / "campaign" / "trials" / "0000" / "error.txt").read_text()


def test_a_time_budget_ends_the_trial_at_the_first_evaluation_past_it(tmp_path):
    c = load_campaign(_campaign(tmp_path, budget={"seconds": 0.01, "eval_every": 1,
                                                  "max_steps": 50}))
    torch.set_num_threads(1)
    r = run_trial("0000", PAINN, c, c.out_dir)
    assert r.status == "ok" and r.steps == 1
    assert load_config(tmp_path / "campaign" / "trials" / "0000" / "config.yaml"
                       ).train.max_steps == 50


def test_the_base_config_is_a_point_of_the_space_when_it_fits(tmp_path):
    from atomgfm.tune.trial import base_params

    c = load_campaign(_campaign(tmp_path))
    base = c.base_config()  # PaiNN preset S (32 features, 2 layers, 12 rbf), cutoff 4 Å
    point, why = base_params(base, c.space_for(base))
    assert why == "" and point["backbone"] == "painn"
    assert (point["painn.num_features"], point["painn.num_layers"], point["painn.num_rbf"],
            point["cutoff"], point["lr"], point["temperature"]) == (32, 2, 12, 4.0,
                                                                   base.train.lr, 2.0)
    assert set(point) == set(c.space_for(base).names)  # inactive families filled in
    assert trial_config(base, point, None, tmp_path).model.backbone_kwargs["num_features"] == 32
    c.space = {"painn.num_features": {"range": [16, 24]}}
    point, why = base_params(base, c.space_for(base))
    assert point is None and "painn.num_features = 32 is outside [16, 24]" in why


def test_the_shipped_demo_campaign_is_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    c = load_campaign(root / "configs" / "tune_demo.yaml")
    base = c.base_config()
    assert c.space_for(base).families == ["painn", "schnet", "egnn"]
    from atomgfm.tune.trial import base_params

    point, why = base_params(base, c.space_for(base))
    assert point is not None, why  # demo.yaml is the campaign's first trial
