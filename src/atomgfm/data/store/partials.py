"""Additive statistics of a dataset's training records, gathered shard by shard.

Every quantity is a sum over records, so shards (written by different workers, or on different
runs of a resumed conversion) merge by addition, and one record's share can be taken out again
(when the at-least-one-validation-record rule moves it). From the sums come the same numbers
``fit_references`` and ``graph_stats`` compute from lists in memory:

- the reference fit E ≈ A x (A: element counts and charge/spin state columns) from the normal
  equations AᵀA x = Aᵀb, minimum-norm (``lstsq``) like the in-memory fit on A itself, and the RMS
  of residual energy per atom from Σ (b − a·x)²/n² = c − 2 v·x + xᵀ W x (W = Σ a aᵀ/n²,
  v = Σ b a/n², c = Σ b²/n²);
- the force RMS from Σ f² and the component count;
- element counts, (charge, multiplicity) counts, label counts and the degree histogram.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from atomgfm import keys as K
from atomgfm.data.references import Normalization, state_features
from atomgfm.data.structure import MAX_Z, Structure

N_COLS = MAX_Z + 1 + 3  # element columns 0..118 then (q⁺, q⁻, unpaired)


@dataclass
class Partial:
    """Sums over some training records of one dataset (see the module docstring)."""

    n: int = 0
    n_labelled: int = 0
    ata: np.ndarray = field(default_factory=lambda: np.zeros((N_COLS, N_COLS)))
    atb: np.ndarray = field(default_factory=lambda: np.zeros(N_COLS))
    w: np.ndarray = field(default_factory=lambda: np.zeros((N_COLS, N_COLS)))
    v: np.ndarray = field(default_factory=lambda: np.zeros(N_COLS))
    c: float = 0.0
    force_sq: float = 0.0
    force_n: int = 0
    elements: dict[int, int] = field(default_factory=dict)  # Z -> atoms
    states: dict[str, int] = field(default_factory=dict)  # "q,m" -> records
    labels: dict[str, int] = field(default_factory=lambda: {"energy": 0, "forces": 0,
                                                            "stress": 0})
    degree: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_atoms: int = 0
    n_edges: int = 0

    def add(self, s: Structure, graph: dict, sign: int = 1) -> None:
        """Add (``sign`` = 1) or remove (-1) one record with its graph."""
        self.n += sign
        if s.energy is not None:
            a = np.zeros(N_COLS)
            np.add.at(a, s.numbers, 1.0)
            a[MAX_Z + 1:] = state_features(s.charge, s.spin)
            n2 = float(s.n_atoms) ** 2
            self.n_labelled += sign
            self.ata += sign * np.outer(a, a)
            self.atb += sign * s.energy * a
            self.w += sign * np.outer(a, a) / n2
            self.v += sign * s.energy * a / n2
            self.c += sign * s.energy**2 / n2
        if s.forces is not None:
            self.force_sq += sign * float(np.sum(s.forces**2))
            self.force_n += sign * s.forces.size
        for z, k in zip(*np.unique(s.numbers, return_counts=True), strict=True):
            self.elements[int(z)] = self.elements.get(int(z), 0) + sign * int(k)
        key = f"{int(round(s.charge))},{int(round(s.spin))}"
        self.states[key] = self.states.get(key, 0) + sign
        for name in self.labels:
            self.labels[name] += sign * (getattr(s, name) is not None)
        counts = np.bincount(np.bincount(graph[K.EDGE_INDEX][0], minlength=s.n_atoms))
        if len(counts) > len(self.degree):
            self.degree = np.pad(self.degree, (0, len(counts) - len(self.degree)))
        self.degree[: len(counts)] += sign * counts
        self.n_atoms += sign * s.n_atoms
        self.n_edges += sign * int(graph[K.EDGE_INDEX].shape[1])

    def merge(self, other: Partial) -> Partial:
        out = Partial()
        for name in ("n", "n_labelled", "ata", "atb", "w", "v", "c", "force_sq", "force_n",
                     "n_atoms", "n_edges"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        for name in ("elements", "states", "labels"):
            a, b = getattr(self, name), getattr(other, name)
            merged = {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}
            setattr(out, name, {k: v for k, v in merged.items() if v or name == "labels"})
        size = max(len(self.degree), len(other.degree))
        out.degree = (np.pad(self.degree, (0, size - len(self.degree)))
                      + np.pad(other.degree, (0, size - len(other.degree))))
        return out

    # -- JSON: matrices restricted to the columns in use
    def to_dict(self) -> dict:
        cols = np.flatnonzero(np.diag(self.ata) != 0)
        sub = np.ix_(cols, cols)
        return {"n": self.n, "n_labelled": self.n_labelled, "cols": cols.tolist(),
                "ata": self.ata[sub].tolist(), "atb": self.atb[cols].tolist(),
                "w": self.w[sub].tolist(), "v": self.v[cols].tolist(), "c": self.c,
                "force_sq": self.force_sq, "force_n": self.force_n,
                "elements": {str(k): v for k, v in self.elements.items()},
                "states": dict(self.states), "labels": dict(self.labels),
                "degree": self.degree.tolist(), "n_atoms": self.n_atoms, "n_edges": self.n_edges}

    @classmethod
    def from_dict(cls, d: dict) -> Partial:
        p = cls()
        cols = np.asarray(d["cols"], dtype=np.int64)
        sub = np.ix_(cols, cols)
        p.ata[sub] = np.asarray(d["ata"]).reshape(len(cols), len(cols))
        p.w[sub] = np.asarray(d["w"]).reshape(len(cols), len(cols))
        p.atb[cols] = d["atb"]
        p.v[cols] = d["v"]
        p.n, p.n_labelled, p.c = int(d["n"]), int(d["n_labelled"]), float(d["c"])
        p.force_sq, p.force_n = float(d["force_sq"]), int(d["force_n"])
        p.elements = {int(k): int(v) for k, v in d["elements"].items()}
        p.states, p.labels = dict(d["states"]), dict(d["labels"])
        p.degree = np.asarray(d["degree"], dtype=np.int64)
        p.n_atoms, p.n_edges = int(d["n_atoms"]), int(d["n_edges"])
        return p

    # -- results
    def normalization(self, name: str = "") -> Normalization:
        """What ``fit_references`` gives on the same records."""
        if self.n_labelled == 0 and self.force_n == 0:
            raise ValueError(f"dataset {name!r}: no training structure with an energy or "
                             "forces label")
        force_rms = (float(np.sqrt(self.force_sq / self.force_n)) if self.force_n
                     else float("nan"))
        if self.n_labelled == 0:
            return Normalization(np.zeros(MAX_Z + 1), force_rms if force_rms > 1e-9 else 1.0,
                                 float("nan"), force_rms, self.n)
        diag = np.diag(self.ata)
        present = np.zeros(N_COLS, bool)
        present[: MAX_Z + 1] = diag[: MAX_Z + 1] > 0
        present[MAX_Z + 1:] = diag[MAX_Z + 1:] > 0
        idx = np.flatnonzero(present)
        x = np.zeros(N_COLS)
        x[idx] = np.linalg.lstsq(self.ata[np.ix_(idx, idx)], self.atb[idx], rcond=1e-12)[0]
        sq = self.c - 2 * self.v @ x + x @ self.w @ x
        energy_rms = float(np.sqrt(max(sq, 0.0) / self.n_labelled))
        scale = force_rms if self.force_n and force_rms > 1e-6 else energy_rms
        if not scale > 1e-9:
            scale = 1.0
        return Normalization(x[: MAX_Z + 1].copy(), scale, energy_rms, force_rms, self.n,
                             x[MAX_Z + 1:].copy())

    def element_list(self) -> list[int]:
        return sorted(z for z, k in self.elements.items() if k > 0)

    def state_list(self) -> list[tuple[int, int]]:
        return sorted(tuple(int(x) for x in k.split(",")) for k, v in self.states.items() if v)
