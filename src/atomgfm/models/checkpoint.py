"""Self-describing checkpoints: weights + resolved config + dataset registry + elements.

A checkpoint never depends on the order of datasets in a config: the registry inside it maps
dataset names to head ids, references and scales. Writes are atomic (temp file + rename), so a
killed job never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from atomgfm.models.build import build_model
from atomgfm.models.derivatives import ForceField

FORMAT = "atomgfm-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (must hold model, config, datasets, elements)."""
    for key in ("model", "config", "datasets", "elements"):
        if key not in state:
            raise KeyError(f"checkpoint state lacks {key!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an atomgfm checkpoint (format {state.get('format')!r})")
    return state


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               use_ema: bool = True) -> tuple[ForceField, dict]:
    """Rebuild the force field from a checkpoint; returns (model in eval mode, checkpoint dict).

    EMA weights are used when the checkpoint has them and ``use_ema`` is set.
    """
    state = read_checkpoint(path, map_location)
    names = [d["name"] for d in sorted(state["datasets"], key=lambda d: d["id"])]
    model = build_model(state["config"]["model"], names)
    if state["config"]["train"].get("precision") == "fp64":
        model = model.double()  # before loading, so fp64 weights are not rounded to fp32
    weights = state.get("ema") if use_ema and state.get("ema") is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the model its config describes (written by "
                         f"an incompatible atomgfm version?): {exc}") from None
    return model.eval(), state
