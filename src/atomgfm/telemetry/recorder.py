"""Per-rank training telemetry as JSON lines: phase times, throughput, peak memory.

At every log interval each rank contributes one row (its phase times per step, structures and
atoms per second, peak memory, mean loss); the rows are gathered through the Trainer's reduce
function (every rank takes part; one small all-reduce per interval) and rank 0 alone writes them
to ``out_dir/telemetry.jsonl``, one record per rank::

    {"kind": "telemetry", "step": 40, "rank": 1, "world_size": 2, "steps": 20,
     "step_ms": 212.4, "structures_per_s": 150.2, "atoms_per_s": 1610.0,
     "phases_ms": {"data": 3.1, "forward": 60.2, "backward": 120.5, "allreduce": 9.8,
                   "optimizer": 4.4, "other": 14.4},
     "peak_mem_mb": 412.0, "mem": "cpu_max_rss", "loss": 0.73}

``phases_ms`` are mean milliseconds per step over the interval; ``other`` is what the step took
outside the timed phases (logging, the progress bar). With DDP the all-reduce overlaps the
backward and is inside ``backward``; ``allreduce`` is the separate flat all-reduce
(``grad_sync: flat``). ``peak_mem_mb``: on CUDA the largest allocation by PyTorch in the interval
(``torch.cuda.max_memory_allocated``, reset after each record); on CPU the process's peak
resident set since it started (``getrusage``; it cannot be reset).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import torch

PHASES = ("data", "forward", "backward", "allreduce", "optimizer")
_FIELDS = ("steps", "seconds", "structures", "atoms", "peak_mem_mb", "loss", *PHASES)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak memory in MiB, what was measured) for ``device``."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"


def trim_jsonl(path: Path, through_step: int) -> None:
    """Keep the records of ``path`` up to ``through_step`` (a resumed run redoes the rest);
    start it empty when ``through_step`` is 0."""
    kept = []
    if through_step > 0 and path.exists():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= through_step]
    path.write_text("".join(line + "\n" for line in kept))


class Telemetry:
    """Gathers every rank's row at each log interval; rank 0 writes them (``path`` None on the
    other ranks). ``record`` is a collective call when ``world_size`` > 1.

    Args:
        path: the JSON-lines file (rank 0), or None.
        rank, world_size: this process's place.
        device: where this rank computes (for peak memory and the reduce tensor).
        reduce: sums a tensor over ranks in place.
        resume_step: records after this step are dropped from an existing file.
    """

    def __init__(self, path: Path | None, rank: int, world_size: int, device: torch.device,
                 reduce, resume_step: int = 0) -> None:
        self.path, self.rank, self.world_size = path, rank, world_size
        self.device, self.reduce = device, reduce
        self.mem_kind = peak_memory_mb(device)[1]
        self._file = None
        if path is not None:
            trim_jsonl(path, resume_step)
            self._file = open(path, "a")

    def record(self, step: int, *, steps: int, seconds: float, structures: int, atoms: int,
               phases_s: dict[str, float], loss: float) -> list[dict]:
        """Gather this interval's rows from every rank; returns the records (all ranks)."""
        mem, _ = peak_memory_mb(self.device)
        mine = [steps, seconds, structures, atoms, mem, loss,
                *(phases_s.get(p, 0.0) for p in PHASES)]
        rows = torch.zeros((self.world_size, len(_FIELDS)), dtype=torch.float64,
                           device=self.device)
        rows[self.rank] = torch.tensor(mine, dtype=torch.float64)
        if self.world_size > 1:
            rows = self.reduce(rows)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        records = [self._record(step, r, dict(zip(_FIELDS, row, strict=True)))
                   for r, row in enumerate(rows.tolist())]
        if self._file is not None:
            for rec in records:
                self._file.write(json.dumps(rec) + "\n")
            self._file.flush()
        return records

    def _record(self, step: int, rank: int, v: dict) -> dict:
        n, secs = max(v["steps"], 1.0), max(v["seconds"], 1e-12)
        phases = {p: round(1000 * v[p] / n, 3) for p in PHASES if v[p] > 0}
        phases["other"] = round(max(1000 * secs / n - sum(phases.values()), 0.0), 3)
        return {"kind": "telemetry", "step": step, "rank": rank, "world_size": self.world_size,
                "steps": int(v["steps"]), "step_ms": round(1000 * secs / n, 3),
                "structures_per_s": round(v["structures"] / secs, 3),
                "atoms_per_s": round(v["atoms"] / secs, 3), "phases_ms": phases,
                "peak_mem_mb": round(v["peak_mem_mb"], 1), "mem": self.mem_kind,
                "loss": v["loss"]}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_telemetry(path: str | Path) -> list[dict]:
    """The telemetry records of a run (``out_dir/telemetry.jsonl``), in file order."""
    with open(path) as f:
        return [r for r in (json.loads(line) for line in f if line.strip())
                if r.get("kind") == "telemetry"]
