"""The shared benchmark workloads (``../shared/workload.py``: g2 molecules, fcc alloy cells) as a
module, for every benchmark that uses them (run as ``python benchmarks/<name>.py``, which puts
this folder on ``sys.path``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

WORKLOAD = Path(__file__).resolve().parents[2] / "shared" / "workload.py"


def load_workload(path: str | Path = WORKLOAD):
    """The workload file at ``path`` loaded as a module (``molecules(n)``, ``alloys(n)``)."""
    spec = importlib.util.spec_from_file_location("shared_workload", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load workload file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
