"""What MD and relaxations watch each step: stop rules, the log file, distances, drift.

A run stops, with a message naming the step and the rule, when the calculator's uncertainty
(``calc.results["uncertainty"]``, eV/Å) passes ``max_uncertainty`` or two atoms come closer than
``min_distance`` Å. The log is JSON lines (``.jsonl``/``.json``) or CSV (``.csv``), one record per
logged step, flushed as it is written, so a killed run leaves a readable log.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomgfm.data.neighbors import neighbor_list

#: How far :func:`min_distance` looks (Å); farther nearest neighbours are reported as this.
MIN_DISTANCE_HORIZON = 4.0


def min_distance(atoms, horizon: float = MIN_DISTANCE_HORIZON) -> float:
    """Shortest interatomic distance (Å, periodic images included); ``horizon`` if none is
    shorter (and for a single isolated atom)."""
    nb = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, horizon)
    if not nb.edge_index.shape[1]:
        return float(horizon)
    i, j = nb.edge_index
    d = np.linalg.norm(atoms.positions[j] - atoms.positions[i]
                       + nb.cell_shifts @ atoms.cell.array, axis=1)
    return float(d.min())


@dataclass
class StopRules:
    """When a simulation stops early.

    Attributes:
        max_uncertainty: eV/Å; stop when the calculator's ``uncertainty`` exceeds it (None: off).
        min_distance: Å; stop when two atoms come closer (None: off).
    """

    max_uncertainty: float | None = None
    min_distance: float | None = 0.5

    def __post_init__(self) -> None:
        for name in ("max_uncertainty", "min_distance"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number, got {v!r}")

    def check(self, record: dict) -> str | None:
        """The reason to stop at this record, or None."""
        u, d = record.get("uncertainty"), record.get("min_distance_A")
        if self.max_uncertainty is not None and u is not None and u > self.max_uncertainty:
            return (f"stopped at step {record['step']}: uncertainty {u:.3g} eV/Å exceeds the "
                    f"threshold {self.max_uncertainty:g} eV/Å (max_uncertainty); the model is "
                    "no longer trusted here")
        if self.min_distance is not None and d is not None and d < self.min_distance:
            return (f"stopped at step {record['step']}: two atoms are {d:.3g} Å apart, closer "
                    f"than min_distance {self.min_distance:g} Å (the structure is collapsing)")
        return None


def observe(atoms) -> dict:
    """Per-step quantities every run logs: energies (eV), uncertainty (eV/Å), min distance."""
    calc = atoms.calc
    epot = float(atoms.get_potential_energy())
    rec = {"epot_eV": epot}
    u = calc.results.get("uncertainty") if calc is not None else None
    rec["uncertainty"] = None if u is None else float(u)
    rec["head"] = calc.results.get("head") if calc is not None else None
    rec["min_distance_A"] = min_distance(atoms)
    return rec


class RunLog:
    """Writes records as JSON lines or CSV (by suffix), appending when ``append``."""

    def __init__(self, path: str | Path | None, fields: list[str], append: bool = False) -> None:
        self.path = Path(path) if path else None
        self.fields = fields
        self._file = None
        if self.path is None:
            return
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".json", ".csv"):
            raise ValueError(f"{self.path}: log must end in .jsonl, .json or .csv")
        self.csv = suffix == ".csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (append and self.path.exists() and self.path.stat().st_size)
        self._file = open(self.path, "w" if fresh else "a", newline="")
        self._writer = (csv.DictWriter(self._file, fields, extrasaction="ignore")
                        if self.csv else None)
        if fresh and self.csv:
            self._writer.writeheader()

    def write(self, record: dict) -> None:
        if self._file is None:
            return
        if self.csv:
            self._writer.writerow({k: "" if record.get(k) is None else record[k]
                                   for k in self.fields})
        else:
            self._file.write(json.dumps({k: record.get(k) for k in self.fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(path: str | Path) -> list[dict]:
    """Records of a JSON-lines or CSV log (CSV values as floats where they parse)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        out = []
        for r in rows:
            rec = {}
            for k, v in r.items():
                try:
                    rec[k] = float(v) if v != "" else None
                except ValueError:
                    rec[k] = v
            out.append(rec)
        return out
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_log(path: str | Path, last_step: int) -> None:
    """Drop the records after ``last_step`` (a resumed run rewrites them)."""
    path = Path(path)
    if not path.exists():
        return
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        keep = lines[:1] + [ln for ln in lines[1:]
                            if float(ln.split(",", 1)[0]) <= last_step]
    else:
        with open(path) as f:
            keep = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= last_step]
    path.write_text("".join(keep))


def drift_rate(time_ps: np.ndarray, etot_per_atom_eV: np.ndarray) -> float:
    """Least-squares slope of the total energy per atom, meV/atom/ps (nan with < 2 points)."""
    t, e = np.asarray(time_ps, float), np.asarray(etot_per_atom_eV, float)
    if len(t) < 2 or np.ptp(t) == 0:
        return float("nan")
    return 1000.0 * float(np.polyfit(t, e, 1)[0])
