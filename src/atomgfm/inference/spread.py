"""Predictions with an uncertainty: the spread across heads and across an ensemble.

    sp = SpreadPredictor.from_checkpoints(["best.pt", "seed1.pt"], device="cpu")
    results = sp.predict(structures, head="auto")    # one packed forward per batch and member

For each structure, the **head spread** compares the heads whose training elements cover it (one
encode, every such head read out, ``forward(..., per_head=True)``): energies are compared after
removing each head's own reference energy (levels of theory differ by constant atomic energies
that say nothing about reliability), forces directly. A structure covered by one head only has a
head spread of zero. The **ensemble spread** compares the chosen head across checkpoints trained
separately (other seeds or data orders); with an ensemble, energy and forces are the members' mean.

Per-atom force spread is the deviation norm σ_i = sqrt(mean_k |F_ik − mean_k F_ik|²) (eV/Å), energy
spread the standard deviation of the per-atom energy (eV/atom). ``uncertainty`` is
max_i sqrt(σ_i,heads² + σ_i,ensemble²), eV/Å: the largest atomic force disagreement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.structure import Structure
from atomgfm.inference.head_choice import HeadChooser, covers, make_chooser
from atomgfm.inference.predictor import Predictor
from atomgfm.models.checkpoint import load_model
from atomgfm.precision import autocast


def load_predictor(path: str | Path, device: str = "auto",
                   precision: str | None = None) -> tuple[Predictor, dict]:
    """A ``Predictor`` and the checkpoint state it came from (for its router, if any)."""
    model, state = load_model(path)
    precision = precision or state["config"]["train"].get("precision", "fp32")
    return Predictor(model, state["datasets"], state["elements"], device, precision), state


def _deviation(x: np.ndarray) -> np.ndarray:
    """σ over the last axis (members): (n, 3, k) -> (n,) deviation norm; (k,) -> scalar std."""
    if x.shape[-1] < 2:
        return np.zeros(x.shape[:-2]) if x.ndim == 3 else np.float64(0.0)
    dev = x - x.mean(-1, keepdims=True)
    if x.ndim == 3:
        return np.sqrt((dev ** 2).sum(1).mean(-1))
    return np.sqrt((dev ** 2).mean(-1))


class SpreadPredictor:
    """Predictions by a chosen head, with head and ensemble spreads.

    Args:
        members: one Predictor per checkpoint (the first is the main model); all must have the
            heads that are asked for.
        chooser: picks a head per structure for ``head="auto"``.
    """

    def __init__(self, members: list[Predictor], chooser: HeadChooser) -> None:
        if not members:
            raise ValueError("SpreadPredictor needs at least one model")
        self.members = members
        self.chooser = chooser
        main = members[0]
        self.energy_heads = [n for n in main.heads
                             if getattr(main.model.heads[n], "kind", "energy") == "energy"]

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path], device: str = "auto",
                         precision: str | None = None) -> SpreadPredictor:
        loaded = [load_predictor(p, device, precision) for p in paths]
        main = loaded[0][0]
        for (p, _), path in zip(loaded[1:], paths[1:], strict=True):
            missing = sorted(set(main.heads) - set(p.heads))
            if missing:
                raise ValueError(f"{path}: ensemble member lacks head(s) {missing} of {paths[0]}")
        return cls([p for p, _ in loaded], make_chooser(loaded[0][1]))

    @property
    def main(self) -> Predictor:
        return self.members[0]

    def heads_for(self, structures: list[Structure], head: str | list[str] | None) -> list[str]:
        """One head name per structure: a name for all, a list (one each), "auto" (the
        chooser) or None (each structure's own ``dataset``)."""
        if head == "auto":
            return self.chooser.choose(structures)
        if head is None:
            names = [s.dataset for s in structures]
        elif isinstance(head, str):
            names = [head] * len(structures)
        else:
            names = list(head)
            if len(names) != len(structures):
                raise ValueError(f"{len(names)} heads for {len(structures)} structures")
        for s, name in zip(structures, names, strict=True):
            self.main.head_id(name)  # unknown names: a KeyError listing the heads
            self.main.check(s, name)
        return names

    def spread_heads(self, s: Structure) -> list[str]:
        """The energy heads whose training elements cover ``s`` (those compared)."""
        return [n for n in self.energy_heads if covers(self.main.datasets[n], s)]

    def predict(self, structures: list[Structure], head: str | list[str] | None = "auto",
                forces: bool = True, stress: bool | None = None, uncertainty: bool = True,
                **limits) -> list[dict]:
        """One dict per structure: energy (eV), forces (n, 3) eV/Å, stress (3, 3) eV/Å³ (fully
        periodic structures, when ``stress`` is None or True), head (the name used), and with
        ``uncertainty``: spread_heads (names compared), energy_spread_heads (eV/atom),
        forces_spread_heads (n,) eV/Å, energy_spread_ensemble, forces_spread_ensemble and
        uncertainty (eV/Å; see the module docstring)."""
        names = self.heads_for(structures, head)
        compared = [self.spread_heads(s) if uncertainty else [n]
                    for s, n in zip(structures, names, strict=True)]
        per_member = [self._member(p, structures, names, compared, forces, stress, limits)
                      for p in self.members]
        results = []
        for i, s in enumerate(structures):
            rs = [m[i] for m in per_member]
            r = {"head": names[i], "energy": float(np.mean([x["energy"] for x in rs]))}
            if forces:
                r["forces"] = np.mean([x["forces"] for x in rs], axis=0)
            if "stress" in rs[0]:
                r["stress"] = np.mean([x["stress"] for x in rs], axis=0)
            if uncertainty:
                r.update(self._spreads(s, rs, compared[i], forces))
            results.append(r)
        return results

    def _spreads(self, s: Structure, rs: list[dict], compared: list[str], forces: bool) -> dict:
        main = rs[0]
        out = {"spread_heads": compared,
               "energy_spread_heads": float(_deviation(main["head_learned"]) / s.n_atoms),
               "energy_spread_ensemble": float(
                   _deviation(np.array([x["energy"] for x in rs])) / s.n_atoms)}
        if forces:
            fh = _deviation(main["head_forces"])
            fe = _deviation(np.stack([x["forces"] for x in rs], axis=-1))
            out["forces_spread_heads"], out["forces_spread_ensemble"] = fh, fe
            out["uncertainty"] = float(np.sqrt(fh ** 2 + fe ** 2).max()) if s.n_atoms else 0.0
        else:
            out["uncertainty"] = float(np.hypot(out["energy_spread_heads"],
                                                out["energy_spread_ensemble"]))
        return out

    def _member(self, p: Predictor, structures, names, compared, forces, stress, limits):
        graphs = [structure_to_graph(s, p.cutoff, p.head_id(n), p.model.backbone.needs)
                  for s, n in zip(structures, names, strict=True)]
        results: list[dict] = [{} for _ in structures]
        for idx in p.pack(graphs, **limits):
            batch = collate([graphs[i] for i in idx], p.dtype, p.device)
            want_stress = bool(batch[K.PBC].all(1).any()) if stress is None else stress
            used = {names[i] for i in idx} | {h for i in idx for h in compared[i]}
            heads = [h for h in self.energy_heads if h in used]
            col = {h: k for k, h in enumerate(heads)}
            w = torch.zeros((len(idx), len(heads)), dtype=torch.float64, device=p.device)
            for row, i in enumerate(idx):
                w[row, col[names[i]]] = 1.0
            per_head = len(heads) > 1 and any(len(compared[i]) > 1 for i in idx)
            with autocast(p.precision, p.device):
                out = p.model(batch, forces=forces, stress=want_stress, heads=heads, weights=w,
                              per_head=per_head)
            with torch.no_grad():
                ref = p.model.model.reference(batch, heads).double().cpu().numpy()  # (S, H)
            energy = out[K.ENERGY].detach().double().cpu().numpy()
            f = out[K.FORCES].detach().double().cpu().numpy() if forces else None
            st = out[K.STRESS].detach().double().cpu().numpy() if want_stress else None
            he = out[K.HEAD_ENERGY].detach().double().cpu().numpy() if per_head else None
            hf = (out[K.HEAD_FORCES].detach().double().cpu().numpy()
                  if per_head and forces else None)
            start = np.cumsum([0] + [structures[i].n_atoms for i in idx])
            for row, i in enumerate(idx):
                a, b = start[row], start[row + 1]
                cols = [col[h] for h in compared[i]]
                r = {"energy": float(energy[row])}
                if f is not None:
                    r["forces"] = f[a:b]
                if st is not None and structures[i].pbc.all():
                    r["stress"] = st[row]
                if he is not None and len(cols) > 1:
                    r["head_learned"] = he[row, cols] - ref[row, cols]
                    if hf is not None:
                        r["head_forces"] = hf[a:b][:, :, cols]
                else:  # one head compared: no spread
                    r["head_learned"] = np.array([energy[row] - ref[row, col[names[i]]]])
                    if f is not None:
                        r["head_forces"] = f[a:b][:, :, None]
                results[i] = r
        return results
