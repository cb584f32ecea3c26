"""New heads for new datasets: initialised from the closest pretrained head, references refitted.

For every candidate energy head h of the pretrained model, on the new dataset's training split:
the head's energies E_h are computed with the pretrained backbone, a correction to its references
(per element, and charge/spin state energies) is fitted by least squares to E − E_h (the
level-of-theory offset; an element absent from the split keeps the head's reference), and what
remains is the candidate's error: the RMS energy residual per atom and the RMS force error.
The closest head has the smallest sum of the two, each divided by the
dataset's own spread (the residual of a references-only fit; the RMS force component). The new
head copies that head's MLP and scale and takes the refitted references, so it starts with
exactly the candidate's error instead of a reset head's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate
from atomgfm.data.mixing import packed_batches
from atomgfm.data.references import fit_references
from atomgfm.data.sources import GraphSource, LoadedDataset

log = logging.getLogger(__name__)


@dataclass
class HeadFit:
    """A candidate head on a new dataset's training split, after the reference refit.

    Attributes:
        head: the pretrained head's name.
        element_energy: (MAX_Z + 1,) refitted element references, eV.
        state_energy: (3,) refitted charge/spin state energies, eV.
        energy_rmse: RMS energy error per atom after the refit, eV/atom (nan without energies).
        force_rmse: RMS force-component error, eV/Å (nan without forces).
        score: energy_rmse / dataset energy spread + force_rmse / dataset force RMS.
    """

    head: str
    element_energy: np.ndarray
    state_energy: np.ndarray
    energy_rmse: float
    force_rmse: float
    score: float

    def summary(self) -> dict:
        return {"head": self.head, "energy_rmse_meV_atom": 1000 * self.energy_rmse,
                "force_rmse_meV_A": 1000 * self.force_rmse, "score": self.score}


def energy_heads(model) -> list[str]:
    return [n for n in model.dataset_names if model.heads[n].kind == "energy"]


@torch.no_grad()
def _learned_parts(model, graphs: GraphSource, heads: list[str], device, dtype,
                   with_forces: bool):
    """Per structure: the energy of every head (H,) and, with forces, its forces (n, 3, H);
    energies alone take no backward pass."""
    model.eval()
    learned, forces = [None] * len(graphs), [None] * len(graphs)
    for idx in packed_batches(graphs.n_atoms, 256, 64, graphs.n_edges, None):
        batch = collate([graphs[i] for i in idx], dtype, device)
        weights = torch.full((len(idx), len(heads)), 1.0 / len(heads), dtype=torch.float64,
                             device=device)
        out = model(batch, forces=with_forces, heads=heads, weights=weights, per_head=True)
        e = out[K.HEAD_ENERGY].double().cpu().numpy()  # (S, H) total energies, eV
        bounds = np.concatenate([[0], np.cumsum(batch[K.N_ATOMS].cpu().numpy())])
        f = out[K.HEAD_FORCES].double().cpu().numpy() if with_forces else None
        for row, i in enumerate(idx):
            learned[i] = e[row]
            if with_forces:
                forces[i] = f[bounds[row]:bounds[row + 1]]
    return learned, forces


class _Subset:
    """The first ``n`` entries of a graph source, with its size manifest."""

    def __init__(self, source: GraphSource, n: int) -> None:
        self.source, self.n = source, min(n, len(source))
        self.n_atoms, self.n_edges = source.n_atoms[:self.n], source.n_edges[:self.n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.source[i]


def fit_candidates(model, dataset: LoadedDataset, graphs: GraphSource, heads: list[str],
                   device="cpu", dtype=torch.float32,
                   max_force_structures: int = 64) -> dict[str, HeadFit]:
    """Every candidate head on ``dataset``'s training split (``graphs`` built from
    ``dataset.train`` in order), references refitted per candidate on the whole split; force
    errors on its first ``max_force_structures`` records (one backward per head each)."""
    structures = dataset.train
    if len(structures) != len(graphs):
        raise ValueError("graphs must be built from the dataset's training split, in order")
    learned, _ = _learned_parts(model, graphs, heads, device, dtype, with_forces=False)
    sample = _Subset(graphs, max_force_structures)
    has_forces = any(s.forces is not None for s in structures[:len(sample)])
    _, forces = (_learned_parts(model, sample, heads, device, dtype, with_forces=True)
                 if has_forces else (None, None))
    base = fit_references(structures, dataset.name)
    f_true = [s.forces for s in structures[:len(sample)] if s.forces is not None]
    force_rms = float(np.sqrt(np.mean(np.concatenate(f_true) ** 2))) if f_true else math.nan
    fits = {}
    for h, name in enumerate(heads):
        # The correction to the head's own references: fitted on what the head misses, so an
        # element or charge state absent from a small training split keeps the head's value
        # (the minimum-norm correction is zero there) instead of a reference of zero.
        residual = [dataclasses.replace(s, energy=s.energy - learned[i][h])
                    if s.energy is not None else s for i, s in enumerate(structures)]
        delta = fit_references(residual, dataset.name)
        head = model.heads[name]
        norm = dataclasses.replace(
            delta, element_energy=head.element_energy.detach().cpu().numpy() + delta.element_energy,
            state_energy=head.state_energy.detach().cpu().numpy() + delta.state_energy)
        f_err = [forces[i][:, :, h] - s.forces for i, s in enumerate(structures[:len(sample)])
                 if s.forces is not None] if has_forces else []
        force_rmse = float(np.sqrt(np.mean(np.concatenate(f_err) ** 2))) if f_err else math.nan
        terms = []
        if math.isfinite(norm.energy_rms):
            terms.append(norm.energy_rms / max(base.energy_rms, 1e-9))
        if math.isfinite(force_rmse):
            terms.append(force_rmse / max(force_rms, 1e-9))
        fits[name] = HeadFit(name, norm.element_energy, norm.state_energy, norm.energy_rms,
                             force_rmse, float(sum(terms)) if terms else math.inf)
    return fits


def choose_head(choice: str, fits: dict[str, HeadFit], dataset: str, available: list[str]) -> str:
    """``auto``: the closest head; a head name: that head (an error naming the heads there are,
    when it is not one)."""
    if choice == "auto":
        best = min(fits.values(), key=lambda f: f.score)
        ranking = ", ".join(f"{f.head} {f.score:.3f}" for f in
                            sorted(fits.values(), key=lambda f: f.score))
        log.info("dataset %s: closest pretrained head %s (score, lower is closer: %s)",
                 dataset, best.head, ranking)
        return best.head
    if choice not in available:
        raise KeyError(f"finetune.head_init for dataset {dataset!r}: {choice!r} is not an energy "
                       f"head of the checkpoint; it has {available}")
    return choice


def copy_head(target, source, fit: HeadFit) -> None:
    """``target`` becomes ``source``'s MLP and scale with the refitted references of ``fit``."""
    target.mlp.load_state_dict(source.mlp.state_dict())
    target.set_normalization(fit.element_energy, float(source.scale), fit.state_energy)
