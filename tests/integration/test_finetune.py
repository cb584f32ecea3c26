"""Fine-tuning end to end on EMT fixtures: a tiny model pretrained in the module fixture (seconds),
downstream files written as extxyz, runs of a few steps."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.io import write

from atomgfm.config.schema import ConfigError
from atomgfm.demo.downstream import _stability_label, new_crystal
from atomgfm.demo.molecules import attach_labels
from atomgfm.finetune import UnseenElementsWarning, finetune, load_finetune_config
from atomgfm.models.checkpoint import load_model, read_checkpoint
from atomgfm.testing.fixtures import emt_bulk, emt_clusters

MODEL = {"backbone": "painn",
         "backbone_kwargs": {"num_features": 16, "num_layers": 2, "cutoff": 4.0, "num_rbf": 8}}
TRAIN = {"eval_every": 1000, "log_every": 2, "progress": False, "warmup_steps": 2, "lr": 3e-3}


def _labelled(atoms_list):
    for a in atoms_list:
        a.calc = EMT()
        attach_labels(a, a.get_potential_energy(), a.get_forces(),
                      a.get_stress() if a.pbc.all() else None)
    return atoms_list


def _write_config(path, cfg: dict):
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A pretrained tiny model (bulk alloys + clusters) and downstream files."""
    from atomgfm.config.schema import load_config
    from atomgfm.train.loop import Trainer

    root = tmp_path_factory.mktemp("finetune")
    write(root / "bulk.extxyz", _labelled(emt_bulk(24, seed=0)), format="extxyz")
    write(root / "clusters.extxyz", _labelled(emt_clusters(12, seed=1)), format="extxyz")
    pre = _write_config(root / "pre.yaml", {
        "data": {"datasets": [{"name": "bulk", "path": "bulk.extxyz"},
                              {"name": "clusters", "path": "clusters.extxyz"}],
                 "val_fraction": 0.25, "max_atoms_per_batch": 64},
        "model": MODEL, "train": {**TRAIN, "out_dir": str(root / "pre"), "max_steps": 16}})
    Trainer.from_config(load_config(pre)).fit()
    rng = np.random.default_rng(3)
    crystals = [new_crystal(rng) for _ in range(16)]
    write(root / "new.extxyz", _labelled([c.copy() for c in crystals]), format="extxyz")
    write(root / "stable.extxyz", [_stability_label(c) for c in crystals], format="extxyz")
    mols = []
    for name in ("CH4", "C2H6", "CH3OH", "H2O") * 3:
        m = molecule(name)
        m.positions += rng.normal(0, 0.05, m.positions.shape)
        mols.append(m)
    write(root / "mols.extxyz", _labelled(mols), format="extxyz")
    return root


def _ft(world, name, datasets, regime="full", steps=6, train=None, data=None, **ft):
    train = train or {}
    cfg = {"finetune": {"checkpoint": "pre/best.pt", "regime": regime, **ft},
           "data": {"datasets": datasets, "val_fraction": 0.25, "max_atoms_per_batch": 64,
                    **(data or {})},
           "train": {**TRAIN, "out_dir": str(world / name), "max_steps": steps, **train}}
    return load_finetune_config(_write_config(world / f"{name}.yaml", cfg))


NEW = [{"name": "new_emt", "path": "new.extxyz", "level_of_theory": "EMT"}]


def test_frozen_really_freezes(world):
    result = finetune(_ft(world, "frozen", NEW, regime="frozen"))
    pre, _ = load_model(world / "pre" / "best.pt")
    tuned = read_checkpoint(result.checkpoint)
    last = read_checkpoint(world / "frozen" / "last.pt")
    for key, value in pre.state_dict().items():
        if key.startswith("model.backbone."):
            assert torch.equal(tuned["model"][key], value), key
            assert torch.equal(last["model"][key], value), key  # the raw weights, not the EMA
    head = "model.heads.new_emt.mlp.0.weight"
    start = pre.state_dict()[f"model.heads.{result.head_init['new_emt']['from']}.mlp.0.weight"]
    assert not torch.equal(tuned["model"][head], start), "the new head did not train"
    groups = [len(g["params"]) for g in last["optimizer"]["param_groups"]]
    n_head_params = sum(1 for k in last["model"] if ".heads." in k and "mlp" in k)
    assert sum(groups) == n_head_params  # the backbone is not in the optimiser


def test_new_head_starts_at_the_error_of_the_head_it_copies(world):
    from atomgfm.data.graph import collate
    from atomgfm.finetune.data import load_new_datasets
    from atomgfm.finetune.heads import fit_candidates

    cfg = _ft(world, "init", NEW, steps=1)
    result = finetune(cfg)
    init = result.head_init["new_emt"]
    scores = {c["head"]: c["score"] for c in init["candidates"]}
    assert init["from"] == min(scores, key=scores.get)
    # independently: the source head of the pretrained model on the validation split, with
    # the references refitted on the training split
    pre, _ = load_model(world / "pre" / "best.pt")
    (d,) = load_new_datasets(cfg.data)
    from atomgfm.data.sources import build_graphs

    fits = fit_candidates(pre, d, build_graphs(d.train, pre.cutoff, 0, progress=False),
                          ["bulk", "clusters"])
    fit, src = fits[init["from"]], init["from"]
    graphs = build_graphs(d.val, pre.cutoff, 0, progress=False)
    batch = collate([graphs[i] for i in range(len(graphs))])
    weights = torch.ones((len(graphs), 1), dtype=torch.float64)
    out = pre(batch, forces=True, heads=[src], weights=weights)
    ref_old = pre.model.reference(batch, [src])[:, 0].numpy()
    numbers = np.split(batch["atomic_numbers"].numpy(), np.cumsum(batch["n_atoms"].numpy())[:-1])
    ref_new = np.array([fit.element_energy[z].sum() for z in numbers])
    e = out["energy"].detach().numpy() - ref_old + ref_new
    n = batch["n_atoms"].numpy()
    e_mae = 1000 * np.mean(np.abs(e - batch["energy"].numpy()) / n)
    f_mae = 1000 * np.mean(np.abs(out["forces"].detach().numpy() - batch["forces"].numpy()))
    start = result.start_metrics["new_emt"]
    assert start["forces_mae_meV_A"] == pytest.approx(f_mae, rel=1e-4)
    assert start["energy_mae_meV_atom"] == pytest.approx(e_mae, rel=1e-4, abs=1e-3)


def test_finetuned_checkpoint_loads_in_calculator_evaluate_and_finetune(world):
    import atomgfm
    from atomgfm.inference.evaluate import evaluate_checkpoint

    result = finetune(_ft(world, "full", NEW, steps=6, replay=0.3,
                          backbone_lr_multiplier=0.3, backbone_warmup_steps=3))
    state = read_checkpoint(result.checkpoint)
    assert [d["name"] for d in state["datasets"]] == ["bulk", "clusters", "new_emt"]
    assert set(result.forgetting) == {"bulk", "clusters"}
    forgetting = json.loads((world / "full" / "forgetting.json").read_text())
    assert forgetting["bulk"]["before"]["forces_mae_meV_A"] > 0
    atoms = new_crystal(np.random.default_rng(9))
    atoms.calc = atomgfm.Calculator(str(result.checkpoint), head="new_emt")
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (len(atoms), 3)
    ev = evaluate_checkpoint(result.checkpoint, out_dir=world / "full_eval")
    assert {"bulk", "clusters", "new_emt"} <= set(ev.metrics)
    assert ev.metrics["new_emt"]["forces_mae_meV_A"] == pytest.approx(
        result.metrics["new_emt"]["forces_mae_meV_A"], rel=1e-4)
    cfg = _ft(world, "again", [{"name": "stable", "path": "stable.extxyz",
                                "task": "classification", "property_key": "stable"}], steps=3)
    cfg.finetune.checkpoint = str(result.checkpoint)
    again = finetune(cfg)
    names = [d["name"] for d in read_checkpoint(again.checkpoint)["datasets"]]
    assert names == ["bulk", "clusters", "new_emt", "stable"]
    assert "accuracy" in again.metrics["stable"] and "roc_auc" in again.metrics["stable"]


def test_property_heads_learn(world):
    datasets = [{"name": "e_form", "path": "stable.extxyz", "task": "regression",
                 "property_key": "formation_energy"},
                {"name": "stable", "path": "stable.extxyz", "task": "classification",
                 "property_key": "stable"}]
    # every training structure in every batch (full batch), so the loss is not batch noise
    finetune(_ft(world, "props", datasets, regime="frozen", steps=20,
                 data={"max_atoms_per_batch": 4096, "max_structures_per_batch": 256}))
    log = [json.loads(x) for x in (world / "props" / "log.jsonl").read_text().splitlines()]
    losses = [r["property"] for r in log if r.get("kind") == "train"]
    assert len(losses) == 10 and losses[-1] < 0.9 * losses[0]
    assert max(losses[5:]) < min(losses[:2])  # the second half below the start


def test_bad_input_messages(world):
    cfg = _ft(world, "bad", NEW)
    cfg.finetune.checkpoint = str(world / "nope.pt")
    with pytest.raises(FileNotFoundError, match="finetune.checkpoint.*nope.pt"):
        finetune(cfg)
    with pytest.raises(KeyError, match="'alloys' is not an energy head.*bulk"):
        finetune(_ft(world, "bad", NEW, head_init="alloys"))
    raw = {"finetune": {"checkpoint": "pre/best.pt"}, "data": {"datasets": NEW},
           "model": {**MODEL, "backbone_kwargs": {**MODEL["backbone_kwargs"], "num_layers": 3}},
           "train": {"out_dir": str(world / "bad")}}
    with pytest.raises(ConfigError, match="num_layers: config 3, checkpoint 2"):
        finetune(load_finetune_config(_write_config(world / "bad.yaml", raw)))
    mols = [{"name": "mols", "path": "mols.extxyz"}]
    with pytest.raises(ValueError, match="never saw \\(H, C, O\\).*frozen"):
        finetune(_ft(world, "bad", mols, regime="frozen"))
    with pytest.warns(UnseenElementsWarning, match="never saw \\(H, C, O\\)"):
        finetune(_ft(world, "mols_full", mols, steps=1))
    with pytest.raises(ConfigError, match="regime: 'partial' is not scratch"):
        _ft(world, "bad", NEW, regime="partial")
    missing = [{"name": "p", "path": "new.extxyz", "task": "regression", "property_key": "gap"}]
    with pytest.raises(ValueError, match="new.extxyz, record 0 .*no info key 'gap'"):
        finetune(_ft(world, "bad", missing))


def test_scratch_has_only_new_heads_and_fresh_weights(world):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenElementsWarning)
        result = finetune(_ft(world, "scratch", NEW, regime="scratch", steps=2))
    state = read_checkpoint(result.checkpoint)
    assert [d["name"] for d in state["datasets"]] == ["new_emt"]
    assert result.forgetting == {} and result.head_init == {}
