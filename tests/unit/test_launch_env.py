"""torchrun's environment is read without a flag; a partial one is a clear error."""

from __future__ import annotations

import pytest
import torch

from atomgfm.config.schema import ConfigError, config_from_dict
from atomgfm.precision import matmul_tf32
from atomgfm.train.distributed import LaunchEnv, launch_env, rank_device

FULL = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}


def test_torchrun_environment_is_detected():
    assert launch_env({}) is None
    assert launch_env({"PATH": "/bin"}) is None
    assert launch_env(FULL) == LaunchEnv(rank=3, world_size=8, local_rank=1, local_world_size=4)


def test_partial_environment_names_what_is_missing():
    env = {k: v for k, v in FULL.items() if k != "MASTER_PORT"}
    with pytest.raises(ValueError, match="MASTER_PORT missing"):
        launch_env(env)
    with pytest.raises(ValueError, match="RANK=9 of WORLD_SIZE=8"):
        launch_env({**FULL, "RANK": "9"})
    with pytest.raises(ValueError, match="must be integers"):
        launch_env({**FULL, "RANK": "x"})


def test_rank_device():
    assert rank_device("cpu", 3) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert rank_device("auto", 1) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            rank_device("cuda", 0)
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        rank_device("cuda:1", 0)


def test_grad_sync_and_tf32_settings():
    cfg = config_from_dict({"train": {"grad_sync": "flat", "tf32": True}})
    assert cfg.train.grad_sync == "flat" and cfg.train.tf32 is True
    with pytest.raises(ConfigError, match="grad_sync"):
        config_from_dict({"train": {"grad_sync": "allgather"}})
    before = torch.backends.cuda.matmul.allow_tf32
    with matmul_tf32(True, torch.device("cpu")):  # no effect on CPU
        assert torch.backends.cuda.matmul.allow_tf32 == before
