"""Few-step end-to-end runs on EMT fixtures: training reduces the loss, resume is exact,
checkpoints are self-describing, and the ASE calculator reproduces the Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomgfm.config.schema import config_from_dict
from atomgfm.models.checkpoint import load_model, read_checkpoint
from atomgfm.registry import names
from atomgfm.testing.fixtures import tiny_datasets
from atomgfm.train.loop import Trainer

MODEL = {"backbone_kwargs": {"num_features": 16, "num_layers": 2, "cutoff": 4.0, "num_rbf": 8}}


def _cfg(out, steps, **train):
    return config_from_dict({"model": MODEL, "data": {"max_atoms_per_batch": 48},
                             "train": {"out_dir": str(out), "max_steps": steps, "eval_every": 4,
                                       "log_every": 2, "progress": False, "warmup_steps": 2,
                                       **train}})


@pytest.fixture(scope="module")
def datasets():
    return tiny_datasets(n_bulk=16, n_clusters=8)


def test_a_step_is_one_adamw_update_of_the_clipped_loss_gradient(tmp_path, datasets):
    """Adam's first step moves every parameter by lr_1 · g / (|g| + eps), with g the loss
    gradient of the batch the sampler drew (recomputed here from the same batch)."""
    from atomgfm.data.graph import collate
    from atomgfm.train.losses import multitask_loss

    trainer = Trainer.from_config(_cfg(tmp_path, 10, precision="fp64", ema_decay=None,
                                       grad_clip=1e9), datasets)
    items = list(trainer.sampler.epoch_items(0)[:0])  # nothing drawn yet
    assert items == [] and trainer.sampler.state_dict()["cursor"] == 0
    state = trainer.sampler.state_dict()
    batch_items = trainer.sampler.next_batch()
    trainer.sampler.load_state_dict(state)  # the step below draws the same batch
    batch = collate([trainer.train_sets[d][i] for d, i in batch_items], torch.float64)
    out = trainer.model(batch, forces=True, stress=bool(batch["has_stress"].any()),
                        create_graph=True)
    loss, _ = multitask_loss(out, batch, trainer.scales, trainer.weights)
    params = {k: p for k, p in trainer.model.named_parameters() if p.requires_grad}
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True),
                     strict=True))
    before = {k: p.detach().clone() for k, p in params.items()}
    lr = trainer.scheduler.get_last_lr()[0]
    rec = trainer.train_step()
    assert rec["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)
    for name, p in params.items():
        g = grads[name] if grads[name] is not None else torch.zeros_like(p)
        expected = before[name] - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-9, atol=1e-12,
                                   msg=f"{name} did not take the AdamW step")


def test_resume_is_exact(tmp_path, datasets):
    straight = Trainer.from_config(_cfg(tmp_path / "a", 8), datasets)
    straight.fit()
    first = Trainer.from_config(_cfg(tmp_path / "b", 8), datasets)
    first.fit(stop_at=4)  # as if the job were killed after its step-4 checkpoint
    resumed = Trainer.from_config(_cfg(tmp_path / "b", 8), datasets)
    assert resumed.step == 4
    resumed.fit()
    for (name, p), q in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=f"{name} differs after resume")
    torch.testing.assert_close(straight.ema.module.state_dict(), resumed.ema.module.state_dict(),
                               rtol=0, atol=0)


def test_checkpoint_is_self_describing(tmp_path, datasets):
    trainer = Trainer.from_config(_cfg(tmp_path, 4), datasets)
    trainer.fit()
    state = read_checkpoint(tmp_path / "best.pt")
    assert [d["name"] for d in state["datasets"]] == ["bulk", "clusters"]
    assert state["elements"] == sorted({int(z) for d in datasets
                                        for s in d.train + d.val for z in s.numbers})
    model, _ = load_model(tmp_path / "best.pt")
    ref = np.asarray(state["datasets"][0]["normalization"]["element_energy"])
    np.testing.assert_array_equal(model.heads["bulk"].element_energy.numpy(), ref)
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "log.jsonl").exists()


def test_calculator_matches_predictor_and_gives_stress(tmp_path, datasets):
    from atomgfm import Calculator
    from atomgfm.calculators.ase_calculator import atoms_to_structure
    from atomgfm.inference.predictor import Predictor

    Trainer.from_config(_cfg(tmp_path, 2), datasets).fit()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=0)
    atoms.calc = Calculator(str(tmp_path / "best.pt"), head="bulk")
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    pred = Predictor.from_checkpoint(tmp_path / "best.pt", device="cpu")
    r = pred.predict([atoms_to_structure(atoms, "bulk")])[0]
    assert e == pytest.approx(r["energy"])
    np.testing.assert_allclose(f, r["forces"], atol=1e-6)
    assert s.shape == (6,) and s[0] == pytest.approx(r["stress"][0, 0])
    with pytest.raises(KeyError, match="unknown head"):
        Calculator(str(tmp_path / "best.pt"), head="nope")
    with pytest.raises(ValueError, match="choose a head"):
        Calculator(str(tmp_path / "best.pt"))


def test_predictor_rejects_unseen_elements(tmp_path, datasets):
    from atomgfm.data.structure import Structure
    from atomgfm.inference.predictor import Predictor

    Trainer.from_config(_cfg(tmp_path, 1), datasets).fit()
    pred = Predictor.from_checkpoint(tmp_path / "last.pt", device="cpu")
    with pytest.raises(ValueError, match=r"record 0: element\(s\) \['U'\] not in the training "
                                         r"elements of head 'bulk'"):
        pred.predict([Structure([92, 29], [[0, 0, 0], [2.5, 0, 0]], dataset="bulk")])


@pytest.mark.parametrize("precision", ["fp64", "bf16"])
def test_other_precisions_train_and_reload(tmp_path, datasets, precision):
    trainer = Trainer.from_config(_cfg(tmp_path, 2, precision=precision), datasets)
    expected = torch.float64 if precision == "fp64" else torch.float32
    assert next(trainer.model.parameters()).dtype == expected
    assert trainer.model.heads["bulk"].element_energy.dtype == torch.float64
    metrics = trainer.fit()
    model, state = load_model(tmp_path / "last.pt")
    assert next(model.parameters()).dtype == expected
    # the reloaded model reproduces the validation errors its checkpoint recorded
    from atomgfm.inference.evaluate import evaluate_graphs

    again = evaluate_graphs(model, trainer.val_sets, trainer.names, precision=precision,
                            device=torch.device("cpu"), dtype=expected,
                            max_atoms=48).compute()
    for name in trainer.names:
        for key, value in state["metrics"][name].items():
            assert again[name][key] == pytest.approx(value, rel=1e-9), (name, key)
            assert metrics[name][key] == pytest.approx(value, rel=1e-9)


def test_relaxation_with_the_calculator_lowers_the_energy(tmp_path, datasets):
    from ase.optimize import BFGS

    from atomgfm import Calculator

    Trainer.from_config(_cfg(tmp_path, 4), datasets).fit()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.1, seed=3)
    atoms.calc = Calculator(str(tmp_path / "best.pt"), head="bulk", precision="fp64")
    e0 = atoms.get_potential_energy()
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=100)  # converged
    assert np.abs(atoms.get_forces()).max() < 0.01 * np.sqrt(3)
    assert atoms.get_potential_energy() < e0


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_non_finite_batch_is_skipped_not_applied(tmp_path, datasets):
    trainer = Trainer.from_config(_cfg(tmp_path, 4), datasets)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    d, i = trainer.sampler.peek()  # the next batch's first structure
    trainer.train_sets[d].graphs[i]["energy"] = np.array([np.nan])  # a corrupted label
    rec = trainer.train_step()
    assert rec["skipped_steps"] == 1
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed on a skipped step"


def test_resume_keeps_one_log_record_per_step(tmp_path, datasets):
    import json

    Trainer.from_config(_cfg(tmp_path, 8), datasets).fit(stop_at=4)
    with open(tmp_path / "log.jsonl", "a") as f:  # what a run killed after step 4 had written
        f.write(json.dumps({"kind": "train", "step": 6, "loss": 1.0}) + "\n")
    Trainer.from_config(_cfg(tmp_path, 8), datasets).fit()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 8


def test_calculator_recomputes_when_charge_changes(tmp_path, datasets):
    from atomgfm import Calculator

    Trainer.from_config(_cfg(tmp_path, 1), datasets).fit()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.calc = Calculator(str(tmp_path / "last.pt"), head="bulk")
    with torch.no_grad():
        atoms.calc.predictor.model.backbone.embedding.charge.weight.normal_()
    e0 = atoms.get_potential_energy()
    atoms.info["charge"] = 1
    with pytest.warns(UserWarning, match="head 'bulk' never trained on charge 1"):
        e1 = atoms.get_potential_energy()  # recomputed: the value a fresh calculator gives
    fresh = atoms.copy()
    fresh.calc = Calculator(str(tmp_path / "last.pt"), head="bulk")
    fresh.calc.predictor.model.load_state_dict(atoms.calc.predictor.model.state_dict())
    with pytest.warns(UserWarning, match="never trained on charge 1"):
        assert e1 == pytest.approx(fresh.get_potential_energy(), abs=1e-9)
    assert abs(e1 - e0) > 1e-6  # and the charge embedding made it a different value


def test_nve_molecular_dynamics_conserves_energy(tmp_path, datasets):
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from atomgfm import Calculator

    Trainer.from_config(_cfg(tmp_path, 4), datasets).fit()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.calc = Calculator(str(tmp_path / "best.pt"), head="bulk", precision="fp64")
    thermalize = getattr(vd, "thermalize_momenta", vd.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=600, rng=np.random.default_rng(0))
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=1.0 * units.fs, logfile=None).run(40)
    drift = abs(atoms.get_total_energy() - e0) / len(atoms)
    assert drift < 1e-3, f"NVE energy drift {drift:.2e} eV/atom over 40 fs"


def test_trainer_takes_a_checkpoint_model_and_new_data(tmp_path, datasets):
    """The documented fine-tuning assembly: model from a checkpoint, data prepared anew, one
    Trainer. It starts from the checkpoint's weights: its first validation equals the
    checkpoint's recorded metrics."""
    from atomgfm.data.sources import prepare_data

    Trainer.from_config(_cfg(tmp_path / "pre", 4), datasets).fit()
    model, state = load_model(tmp_path / "pre" / "best.pt")
    cfg = _cfg(tmp_path / "ft", 2)
    data = prepare_data(cfg.data, model.cutoff, datasets, progress=False)
    trainer = Trainer(model, data, cfg)
    first = trainer.evaluate().compute()
    for name in trainer.names:
        for key, value in state["metrics"][name].items():
            assert first[name][key] == pytest.approx(value, rel=1e-6), (name, key)
    trainer.fit()
    assert read_checkpoint(tmp_path / "ft" / "last.pt")["step"] == 2

    one = prepare_data(cfg.data, model.cutoff, datasets[:1], progress=False)
    with pytest.raises(ValueError, match=r"the model's heads \['bulk', 'clusters'\] are not the "
                                         r"data's datasets \['bulk'\]"):
        Trainer(model, one, cfg)
    from atomgfm import keys as K
    from atomgfm.models.build import build_model

    dimenet = build_model({"backbone": "dimenet", "preset": "S",
                           "backbone_kwargs": {"cutoff": model.cutoff}}, state["datasets"])
    with pytest.raises(ValueError, match=r"needs graph fields \['triplet_index'\] that the data "
                                         r"lacks"):
        Trainer(dimenet, data, cfg)
    assert K.TRIPLET_INDEX in prepare_data(cfg.data, model.cutoff, datasets, progress=False,
                                           needs=dimenet.backbone.needs).needs
    far = prepare_data(cfg.data, 3.0, datasets, progress=False)
    with pytest.raises(ValueError, match="graphs were built at 3.0 Å but the model's cutoff is"):
        Trainer(model, far, cfg)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_steps_and_metrics_go_through_the_reduce_function(tmp_path, datasets):
    """A rank that saw a non-finite loss makes every rank skip the step: simulated with a
    reduce function that adds another rank's 'bad' vote. Metric sums are reduced too."""
    calls = []

    def other_rank_votes_bad(t):
        calls.append(tuple(t.shape))
        if t.numel() == 1:
            t += 1.0  # the other rank's non-finite flag
        else:
            t *= 2  # the other rank saw identical sums and counts: means unchanged
        return t

    trainer = Trainer.from_config(_cfg(tmp_path, 4), datasets, reduce=other_rank_votes_bad)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rec = trainer.train_step()
    assert rec["skipped_steps"] == 1 and calls == [(1,)]
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed on a step another rank skipped"
    plain = Trainer.from_config(_cfg(tmp_path / "plain", 4), datasets).evaluate().compute()
    reduced = trainer.evaluate().compute()
    assert calls[-1] == (2 * 6, 2)  # (datasets x quantities incl. property ones, [sum, count])
    assert reduced.keys() == plain.keys()
    for name in plain:
        assert reduced[name] == pytest.approx(plain[name], rel=1e-12)


@pytest.mark.parametrize("backbone", names("backbone"))
def test_every_backbone_trains_saves_and_reloads(tmp_path, datasets, backbone):
    """Through the seams end to end: prepared data (with what the backbone needs), a model
    built with the training statistics, two steps, a checkpoint, and a reloaded model that
    predicts exactly what the trainer's EMA model predicts."""
    from atomgfm.data.graph import collate
    from atomgfm.inference.predictor import Predictor

    cfg = config_from_dict({
        "model": {"backbone": backbone, "preset": "S", "backbone_kwargs": {"cutoff": 4.0}},
        "data": {"max_atoms_per_batch": 48},
        "train": {"out_dir": str(tmp_path), "max_steps": 2, "eval_every": 2, "log_every": 1,
                  "progress": False, "warmup_steps": 1, "precision": "fp64"}})
    trainer = Trainer.from_config(cfg, datasets)
    trainer.fit()
    state = read_checkpoint(tmp_path / "last.pt")
    assert state["stats"]["elements"] == trainer.elements
    pred = Predictor.from_checkpoint(tmp_path / "last.pt", device="cpu")
    s = datasets[0].val[0]
    r = pred.predict([s], head="bulk")[0]
    batch = collate([trainer.val_sets[0][0]], torch.float64)
    ref = trainer.ema.module(batch, forces=True)
    assert r["energy"] == pytest.approx(float(ref["energy"][0].detach()), abs=1e-9)
    np.testing.assert_allclose(r["forces"], ref["forces"].detach().numpy(), atol=1e-9)
