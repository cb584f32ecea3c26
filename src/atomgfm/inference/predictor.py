"""Batched prediction without ASE: structures in, energies/forces/stress out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.mixing import packed_batches
from atomgfm.data.structure import Structure
from atomgfm.models.checkpoint import load_model
from atomgfm.models.derivatives import ForceField
from atomgfm.precision import autocast, param_dtype, resolve_device

# Batch limits per device type. CPU: measured on the 2-core VM (benchmarks/RESULTS.md): 108-atom
# alloy cells at 5 Å (~4.4k edges each) ran ~3x faster in batches of 10-20k edges than in
# 2048-atom ones (larger per-edge tensors leave the cache and every layer faults in fresh pages);
# molecules (~7 edges per atom) peak at 512-1024 atoms. CUDA: not yet measured; large batches.
BATCH_LIMITS = {"cpu": {"max_atoms": 1024, "max_edges": 16_000, "max_structures": 256},
                "cuda": {"max_atoms": 16_384, "max_edges": 2_000_000, "max_structures": 4096}}


class Predictor:
    """Evaluates a trained force field on ``Structure`` records in size-packed batches.

    Args:
        model: the force field.
        datasets: dataset registry entries (name, id, ...) from the checkpoint.
        elements: atomic numbers seen in training; others are rejected with a clear error.
        precision: fp64 | fp32 | bf16.
    """

    def __init__(self, model: ForceField, datasets: list[dict], elements: list[int],
                 device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        self.device = resolve_device(str(device))
        self.precision = precision
        self.dtype = param_dtype(precision)
        self.model = model.to(self.device, self.dtype).eval()
        self.datasets = {d["name"]: d for d in datasets}
        self.elements = set(int(z) for z in elements)
        self.cutoff = model.cutoff

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto",
                        precision: str | None = None) -> Predictor:
        model, state = load_model(path)
        precision = precision or state["config"]["train"].get("precision", "fp32")
        return cls(model, state["datasets"], state["elements"], device, precision)

    @property
    def heads(self) -> list[str]:
        return list(self.datasets)

    def head_id(self, head: str) -> int:
        if head not in self.datasets:
            raise KeyError(f"unknown head {head!r}; this model has heads {self.heads}")
        return int(self.datasets[head]["id"])

    def check(self, s: Structure, head: str) -> None:
        """Every element must have been in ``head``'s training split: elsewhere the head has no
        reference energy for it and its prediction would be off by that whole reference."""
        allowed = set(self.datasets[head].get("elements", self.elements))
        unknown = sorted(set(s.numbers.tolist()) - allowed)
        if unknown:
            from ase.data import chemical_symbols

            known = [chemical_symbols[z] for z in sorted(allowed)]
            raise ValueError(f"{s.source or '<input>'}, record {s.index}: element(s) "
                             f"{[chemical_symbols[z] for z in unknown]} not in the training "
                             f"elements of head {head!r} {known}")

    def pack(self, graphs: list[dict], **limits) -> list[list[int]]:
        """Index lists of the batches ``predict`` runs: in order, within the device's
        ``BATCH_LIMITS`` (overridable: max_atoms, max_edges, max_structures)."""
        lim = {**BATCH_LIMITS.get(self.device.type, BATCH_LIMITS["cpu"]), **limits}
        return packed_batches([len(g[K.ATOMIC_NUMBERS]) for g in graphs], lim["max_atoms"],
                              lim["max_structures"], [g[K.EDGE_INDEX].shape[1] for g in graphs],
                              lim["max_edges"])

    def predict(self, structures: list[Structure], head: str | None = None, forces: bool = True,
                stress: bool | None = None, **limits) -> list[dict[str, np.ndarray | float]]:
        """Predict each structure with ``head`` (default: the structure's own ``dataset``).

        Returns one dict per structure: energy (eV), forces (n, 3) eV/Å, stress (3, 3) eV/Å³
        (for fully periodic structures when ``stress`` is None or True). ``limits`` override
        the batch limits (max_atoms, max_edges, max_structures).
        """
        graphs = []
        for s in structures:
            name = head or s.dataset
            ds_id = self.head_id(name)
            self.check(s, name)
            graphs.append(structure_to_graph(s, self.cutoff, ds_id, self.model.backbone.needs))
        results: list[dict] = [{} for _ in structures]
        for idx in self.pack(graphs, **limits):
            batch = collate([graphs[i] for i in idx], self.dtype, self.device)
            want_stress = bool(batch[K.PBC].all(1).any()) if stress is None else stress
            # One head for the whole batch: read out only that head, not every head.
            names = sorted({head or structures[i].dataset for i in idx})
            one = ({"heads": names, "weights": torch.ones((len(idx), 1), dtype=torch.float64,
                                                          device=self.device)}
                   if len(names) == 1 else {})
            with autocast(self.precision, self.device):
                out = self.model(batch, forces=forces, stress=want_stress, **one)
            energy = out[K.ENERGY].detach().double().cpu().numpy()
            f = out[K.FORCES].detach().double().cpu().numpy() if forces else None
            st = out[K.STRESS].detach().double().cpu().numpy() if want_stress else None
            start = np.cumsum([0] + [structures[i].n_atoms for i in idx])
            for k, i in enumerate(idx):
                r = {"energy": float(energy[k])}
                if f is not None:
                    r["forces"] = f[start[k]:start[k + 1]]
                if st is not None and structures[i].pbc.all():
                    r["stress"] = st[k]
                results[i] = r
        return results
