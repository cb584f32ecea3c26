"""The parts fine-tuning is built from: property-head metrics and losses on hand-checkable values,
backbone learning-rate groups, property heads through the builder, config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atomgfm import keys as K
from atomgfm.config.schema import ConfigError, TrainConfig, config_from_dict
from atomgfm.inference.metrics import MetricAccumulator, roc_auc
from atomgfm.models.build import build_model
from atomgfm.train.losses import multitask_loss
from atomgfm.train.optim import build_optimizer

MODEL = {"backbone": "painn",
         "backbone_kwargs": {"num_features": 8, "num_layers": 1, "cutoff": 3.0, "num_rbf": 4}}


def _batch(ds, y, has=None):
    n = len(ds)
    return {K.DATASET: torch.tensor(ds), K.N_ATOMS: torch.ones(n, dtype=torch.long),
            K.ENERGY: torch.zeros(n, dtype=torch.float64), K.HAS_ENERGY: torch.zeros(n, dtype=bool),
            K.HAS_FORCES: torch.zeros(n, dtype=bool), K.BATCH: torch.arange(n),
            K.PROPERTY: torch.tensor(y, dtype=torch.float64),
            K.HAS_PROPERTY: torch.ones(n, dtype=bool) if has is None else torch.tensor(has)}


def test_classification_metrics_on_hand_checked_values():
    # logits 2, -1, -0.5, 0.5 for labels 1, 0, 1, 0: predictions 1, 0, 0, 1 -> accuracy 1/2;
    # positive/negative pairs ranked right: (2,-1) (2,0.5) (-0.5,-1) yes, (-0.5,0.5) no -> 3/4
    out = {K.ENERGY: torch.zeros(4, dtype=torch.float64),
           K.PROPERTY_OUTPUT: torch.tensor([2.0, -1.0, -0.5, 0.5], dtype=torch.float64),
           K.PROPERTY_TASK: torch.full((4,), 2)}
    acc = MetricAccumulator(["cls"])
    acc.update(out, _batch([0, 0, 0, 0], [1, 0, 1, 0]))
    m = acc.compute()["cls"]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert roc_auc(np.array([1, 0], bool), np.array([0.3, 0.3])) == pytest.approx(0.5)  # a tie
    assert math.isnan(roc_auc(np.array([1, 1], bool), np.array([0.1, 0.2])))


def test_regression_metrics_and_losses_on_hand_checked_values():
    # dataset 0 regression (errors 1, -3 -> MAE 2, RMSE sqrt(5)); dataset 1 classification
    out = {K.ENERGY: torch.zeros(3, dtype=torch.float64),
           K.PROPERTY_OUTPUT: torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64),
           K.PROPERTY_TASK: torch.tensor([1, 1, 2])}
    batch = _batch([0, 0, 1], [1.0, 3.0, 1.0])
    acc = MetricAccumulator(["reg", "cls"])
    acc.update(out, batch)
    m = acc.compute()
    assert m["reg"] == {"property_mae": pytest.approx(2.0),
                        "property_rmse": pytest.approx(math.sqrt(5))}
    assert m["cls"]["accuracy"] == 0.0  # logit 0 predicts class 0
    scales = torch.tensor([2.0, 1.0], dtype=torch.float64)
    weights = torch.tensor([[1.0, 0, 0], [3.0, 0, 0]], dtype=torch.float64)
    loss, parts = multitask_loss(out, batch, scales, weights)
    # regression ((1/2)² + (3/2)²) · 1, classification BCE(0, 1) = ln 2 · weight 3; mean over 3
    expected = (0.25 + 2.25 + 3 * math.log(2)) / 3
    assert parts["property"] == pytest.approx(expected)
    assert float(loss) == pytest.approx(expected)
    batch[K.HAS_PROPERTY] = torch.tensor([True, False, False])  # masks multiply
    assert multitask_loss(out, batch, scales, weights)[1]["property"] == pytest.approx(0.25)


def test_backbone_groups_get_their_lr_and_warmup_and_frozen_ones_stay_out():
    ff = build_model(MODEL, ["a", "b"], seed=0)
    cfg = config_from_dict({"finetune": {"regime": "full", "backbone_lr_multiplier": 0.1,
                                         "backbone_warmup_steps": 4}})
    tc = TrainConfig(lr=1e-3, warmup_steps=0, max_steps=100, min_lr_ratio=1.0)
    opt, sched = build_optimizer(ff, tc, cfg.finetune)
    backbone = {id(p) for p in ff.backbone.parameters()}
    for g in opt.param_groups:
        in_backbone = {id(p) in backbone for p in g["params"]}
        assert len(in_backbone) == 1
        assert g["initial_lr"] == pytest.approx(1e-4 if in_backbone.pop() else 1e-3)
    lrs = sched.get_last_lr()
    assert sorted(lrs) == pytest.approx(sorted([1e-3, 1e-3, 1e-4 / 4, 1e-4 / 4]))
    ff.pretrained_heads = ["a"]  # a replayed pretraining head moves at the backbone's lr
    opt, _ = build_optimizer(ff, tc, cfg.finetune)
    slow = backbone | {id(p) for p in ff.heads["a"].parameters()}
    for g in opt.param_groups:
        assert {id(p) in slow for p in g["params"]} == {g["initial_lr"] < 1e-3}
    del ff.pretrained_heads
    for p in ff.backbone.parameters():
        p.requires_grad_(False)
    opt, _ = build_optimizer(ff, tc, cfg.finetune)
    assert not {id(p) for g in opt.param_groups for p in g["params"]} & backbone
    assert len(opt.param_groups) == 2


def test_property_heads_rebuild_from_the_registry_entry():
    table = [{"name": "e", "id": 0},
             {"name": "gap", "id": 1, "head": {"type": "property", "task": "regression",
                                               "reduce": "mean", "offset": 1.5, "scale": 0.5}},
             {"name": "ok", "id": 2, "head": {"type": "property", "task": "classification",
                                              "reduce": "sum", "offset": -1.0, "scale": 1.0}}]
    ff = build_model(MODEL, table, seed=0)
    again = build_model(MODEL, table, seed=1)
    again.load_state_dict(ff.state_dict())
    assert ff.heads["gap"].task == "regression" and ff.heads["ok"].reduce == "sum"
    assert float(again.heads["gap"].offset) == 1.5 and float(again.heads["gap"].scale) == 0.5
    assert ff.float().heads["gap"].offset.dtype == torch.float64
    with pytest.raises(ValueError, match="binary"):
        build_model(MODEL, [{"name": "x", "head": {"type": "property", "task": "classification",
                                                    "out_dim": 3}}])


@pytest.mark.parametrize("raw, message", [
    ({"finetune": {"regime": "partial"}}, "regime: 'partial' is not scratch|frozen|full"),
    ({"finetune": {"replay": 1.0}}, "replay: 1.0 is not in"),
    ({"finetune": {"backbone_lr_multiplier": 0}}, "backbone_lr_multiplier must be positive"),
    ({"data": {"datasets": [{"name": "p", "path": "p.xyz", "task": "regression"}]}},
     "needs property_key"),
    ({"data": {"datasets": [{"name": "p", "path": "p.xyz", "task": "ranking"}]}},
     "task: 'ranking' is not energy"),
])
def test_finetune_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)
