from __future__ import annotations

import pytest

from atomgfm.config.schema import ConfigError, config_from_dict, load_config


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match=r"config.train: unknown key\(s\) \['lr_max'\]"):
        config_from_dict({"train": {"lr_max": 1.0}})
    with pytest.raises(ConfigError, match=r"datasets\[0\]: unknown key"):
        config_from_dict({"data": {"datasets": [{"name": "a", "path": "a.xyz", "units": "eV"}]}})


def test_missing_required_key_is_an_error():
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['path'\]"):
        config_from_dict({"data": {"datasets": [{"name": "a"}]}})


def test_duplicate_dataset_names_are_errors():
    ds = [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]
    with pytest.raises(ConfigError, match="unique"):
        config_from_dict({"data": {"datasets": ds}})


def test_bad_precision_is_an_error():
    with pytest.raises(ConfigError, match="precision"):
        config_from_dict({"train": {"precision": "fp16"}})


def test_root_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("data:\n  root: ../data\n  datasets: [{name: a, path: a.xyz}]\n")
    cfg = load_config(path)
    assert cfg.data.root == str((tmp_path / "data").resolve())
    assert cfg.data.datasets[0].name == "a"
    assert cfg.to_dict()["data"]["datasets"][0]["forces_weight"] == 10.0
    assert cfg.to_dict()["data"]["datasets"][0]["energy_weight"] == 10.0


def test_values_are_type_checked_and_yaml_strings_converted():
    cfg = config_from_dict({"train": {"lr": "1e-3", "max_steps": 10.0}})
    assert cfg.train.lr == 0.001 and cfg.train.max_steps == 10
    with pytest.raises(ConfigError, match=r"config.train.lr: expected a number, got 'fast'"):
        config_from_dict({"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"config.train.max_steps: expected an integer"):
        config_from_dict({"train": {"max_steps": 10.5}})
    with pytest.raises(ConfigError, match=r"config.train.progress: expected true or false"):
        config_from_dict({"train": {"progress": "yes"}})
    with pytest.raises(ConfigError, match=r"config.model.backbone_kwargs: expected a dict"):
        config_from_dict({"model": {"backbone_kwargs": [1]}})
    assert config_from_dict({"train": {"ema_decay": None}}).train.ema_decay is None
