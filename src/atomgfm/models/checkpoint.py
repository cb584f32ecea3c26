"""Self-describing checkpoints: weights + resolved config + dataset registry + elements.

A checkpoint never depends on the order of datasets in a config: the registry inside it maps
dataset names to head ids, references and scales. Writes are atomic (temp file + rename), so a
killed job never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from atomgfm.data.stats import GraphStats
from atomgfm.models.build import build_model
from atomgfm.models.derivatives import ForceField

FORMAT = "atomgfm-checkpoint-1"
REQUIRED = ("model", "config", "datasets", "elements")

# What ``torch.load(weights_only=True)`` rebuilds without running code. ``save_checkpoint``
# refuses anything else, so a state that could not be read back fails when it is written.
_LEAVES = (str, int, float, bool, type(None), bytes, complex, torch.dtype, torch.device)
_TENSORS = (torch.Tensor, torch.nn.Parameter)
_CONTAINERS = (dict, OrderedDict, list, tuple, set, torch.Size)


class CheckpointError(ValueError):
    """A file is not a readable atomgfm checkpoint; the one-line message names the file."""


def _check_loadable(value: Any, where: str) -> None:
    """Raise TypeError naming the key path of the first value weights_only could not load."""
    kind = type(value)
    if kind in _LEAVES or kind in _TENSORS:
        return
    if kind in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) not in _LEAVES:
                raise TypeError(f"checkpoint state {where}: key {k!r} of type "
                                f"{type(k).__module__}.{type(k).__qualname__} is not loadable "
                                "with weights_only=True")
            _check_loadable(v, f"{where}[{k!r}]")
        return
    if kind in _CONTAINERS:
        for i, v in enumerate(value):
            _check_loadable(v, f"{where}[{i}]")
        return
    hint = (" (a NumPy value: store torch.from_numpy(a) or a.tolist() / float(x))"
            if kind.__module__.split(".")[0] == "numpy" else "")
    raise TypeError(f"checkpoint state {where}: {kind.__module__}.{kind.__qualname__} cannot be "
                    f"loaded back with weights_only=True{hint}; a checkpoint holds only tensors, "
                    "str, int, float, bool, None and lists, tuples, dicts of them")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (must hold model, config, datasets, elements).

    Every value must be loadable with ``weights_only=True`` (tensors, str, int, float, bool,
    None, and lists/tuples/dicts of them); anything else raises TypeError naming its key path,
    here rather than at resume time. The file appears complete or not at all (temp file in the
    same folder, then ``os.replace``).
    """
    for key in REQUIRED:
        if key not in state:
            raise KeyError(f"checkpoint state lacks {key!r}")
    state = {**state, "format": FORMAT}  # a state read back from a checkpoint may be re-saved
    _check_loadable(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name in the same folder (same file system for the rename; the usual umask
    # permissions, unlike mkstemp's 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _not_a_checkpoint(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: not an atomgfm checkpoint ({reason})")


def _sniff(path: Path) -> str | None:
    """A reason the file cannot be a torch file, judged from its first bytes; None if it may be."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except IsADirectoryError:
        return "a directory"
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if size == 0:
        return "empty file"
    if head.startswith(b"PK"):  # torch's zip format
        if not zipfile.is_zipfile(path):
            return "truncated or corrupt file"
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("/data.pkl") for n in z.namelist()):
                return "a zip archive that is not a torch file"
        return None
    if head[:1] == b"\x80":  # torch's legacy format, or any pickle: never unpickled here
        return "a bare pickle, not a torch zip file"
    return "not a torch file"


def _load_reason(exc: Exception) -> str:
    """A short reason for a failed ``torch.load(weights_only=True)``."""
    msg = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", msg) if isinstance(exc, pickle.UnpicklingError) else None
    if found:
        name = found.group(1)
        return (f"it asks to import {name}; refused: a checkpoint holds only tensors and plain "
                "data, never code or objects")
    if isinstance(exc, EOFError) or "central directory" in msg:
        return "truncated or corrupt file"
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in msg:
        return "it holds something other than tensors and plain data"
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    return f"unreadable: {first[:120]}"


def _load_foundation_checkpoint(path: Path, map_location, first: Exception) -> dict:
    """Checkpoints of the first atomgfm version kept ``np.random.get_state()`` under "rng": one
    uint32 array. Exactly that array type is admitted (no other NumPy type, nothing callable),
    and the key is dropped: the library no longer keeps global RNG state."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # noqa: BLE001 - report the first refusal, it names the import
        raise _not_a_checkpoint(path, _load_reason(first)) from None
    if isinstance(state, dict):
        state.pop("rng", None)
        if _holds_numpy(state):
            raise _not_a_checkpoint(path, _load_reason(first))
    return state


def _holds_numpy(obj) -> bool:
    import numpy as np

    if isinstance(obj, np.ndarray | np.generic):
        return True
    if isinstance(obj, dict):
        return any(_holds_numpy(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_holds_numpy(v) for v in obj)
    return False


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict, loaded as data (``weights_only=True``: no code runs).

    Raises FileNotFoundError when ``path`` does not exist and :class:`CheckpointError` (a
    ValueError) with a one-line ``PATH: not an atomgfm checkpoint (reason)`` for anything else
    that is not a readable checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    reason = _sniff(path)
    if reason:
        raise _not_a_checkpoint(path, reason)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL numpy" not in str(exc):
            raise _not_a_checkpoint(path, _load_reason(exc)) from None
        state = _load_foundation_checkpoint(path, map_location, exc)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a checkpoint", one line
        raise _not_a_checkpoint(path, _load_reason(exc)) from None
    if not isinstance(state, dict):
        raise _not_a_checkpoint(path, f"holds a {type(state).__name__}, not a checkpoint dict")
    if "format" not in state:
        raise _not_a_checkpoint(path, "a dict without the 'format' key")
    if state["format"] != FORMAT:
        raise _not_a_checkpoint(path, f"format {state['format']!r}, expected {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise _not_a_checkpoint(path, f"lacks key(s) {missing}")
    return state


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               use_ema: bool = True) -> tuple[ForceField, dict]:
    """Rebuild the force field from a checkpoint; returns (model in eval mode, checkpoint dict).

    EMA weights are used when the checkpoint has them and ``use_ema`` is set.
    """
    state = read_checkpoint(path, map_location)
    table = sorted(state["datasets"], key=lambda d: d["id"])
    model = build_model(state["config"]["model"], table, GraphStats.from_dict(state.get("stats")))
    if state["config"]["train"].get("precision") == "fp64":
        model = model.double()  # before loading, so fp64 weights are not rounded to fp32
    weights = state.get("ema") if use_ema and state.get("ema") is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the model its config describes (written by "
                         f"an incompatible atomgfm version?): {exc}") from None
    return model.eval(), state
