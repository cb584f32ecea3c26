"""Per-trial records in ``CAMPAIGN_DIR/trials/<id>/``.

* ``params.json``: the sampled hyperparameters, written before the trial starts (so a killed
  campaign knows what an unfinished trial was and reruns it);
* ``config.yaml``: the resolved run config the trial trained;
* ``curve.jsonl``: one line per evaluation ``{step, seconds, val_loss}``;
* ``result.json``: written last (atomically), so its presence means the trial finished:
  ``{id, params, status: ok|failed|stopped, best_val_loss, steps, seconds, error}``.

``val_loss`` is the Trainer's model-selection score: the mean over datasets of the validation
force MAE divided by that dataset's force RMS (energy MAE / energy RMS where no forces), unitless.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("ok", "stopped", "failed")


@dataclass
class TrialResult:
    id: str
    params: dict[str, Any]
    status: str  # ok | stopped (early, by the stopper) | failed
    best_val_loss: float | None = None
    steps: int = 0
    seconds: float = 0.0
    error: str = ""
    curve: list[dict] = field(default_factory=list)  # read from curve.jsonl, not stored twice

    @property
    def family(self) -> str:
        return str(self.params.get("backbone", "?"))

    @property
    def objective(self) -> float | str:
        """What DeepHyper maximises: minus the best validation loss, or ``"F_<reason>"``."""
        if self.status == "failed" or self.best_val_loss is None \
                or not math.isfinite(self.best_val_loss):
            return "F_" + (self.error.split(":", 1)[0].replace(" ", "_") or "failed")
        return -float(self.best_val_loss)


def trial_dir(campaign_dir: str | Path, trial_id: str) -> Path:
    return Path(campaign_dir) / "trials" / trial_id


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_params(directory: Path, trial_id: str, params: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / "params.json",
                  json.dumps({"id": trial_id, "params": params}, indent=1))


def write_result(directory: Path, result: TrialResult) -> None:
    rec = asdict(result)
    rec.pop("curve")
    _atomic_write(directory / "result.json", json.dumps(rec, indent=1))


def read_curve(directory: Path) -> list[dict]:
    path = Path(directory) / "curve.jsonl"
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {i + 1} is not JSON") from None
    return out


def _read_json(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON record ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return rec


def read_trials(campaign_dir: str | Path) -> tuple[list[TrialResult], dict[str, dict]]:
    """``(finished, unfinished)``: the finished trials' results (in id order) and the
    ``{id: params}`` of trials that started but never wrote ``result.json``."""
    root = Path(campaign_dir) / "trials"
    finished, unfinished = [], {}
    if not root.is_dir():
        return finished, unfinished
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "result.json").exists():
            rec = _read_json(d / "result.json")
            missing = {"id", "params", "status"} - set(rec)
            if missing or rec["status"] not in STATUSES:
                raise ValueError(f"{d / 'result.json'}: not a trial result (missing "
                                 f"{sorted(missing)} or status {rec.get('status')!r} not in "
                                 f"{STATUSES})")
            rec.pop("curve", None)
            try:
                finished.append(TrialResult(**rec, curve=read_curve(d)))
            except TypeError as exc:
                raise ValueError(f"{d / 'result.json'}: not a trial result ({exc})") from None
        elif (d / "params.json").exists():
            rec = _read_json(d / "params.json")
            if "params" not in rec:
                raise ValueError(f"{d / 'params.json'}: no 'params' key")
            unfinished[d.name] = rec["params"]
    return finished, unfinished


def next_trial_id(campaign_dir: str | Path) -> int:
    """One past the largest numeric trial id in the campaign (0 for a new one)."""
    root = Path(campaign_dir) / "trials"
    ids = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(ids, default=-1) + 1


def format_id(n: int) -> str:
    return f"{n:04d}"
