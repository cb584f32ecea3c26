"""Multi-task energy model: one backbone pass, one head per dataset.

In training every head runs on every atom and the per-atom results are combined by multiplying
with a one-hot dataset mask: all heads stay in the autograd graph, so DDP needs no search for
unused parameters, and a head's output for a foreign atom contributes exactly zero (value and
gradient). In evaluation each head runs only on its own atoms. Both give identical energies.
"""

from __future__ import annotations

import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.models.backbones.base import Backbone
from atomgfm.models.heads import EnergyHead
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import CosineCutoff
from atomgfm.nn.scatter import scatter_sum


class MultiTaskModel(nn.Module):
    """Backbone + ``ModuleDict`` of energy heads keyed by dataset name.

    Args:
        backbone: any registered backbone.
        datasets: dataset names in id order (id = position), from the dataset registry.
        head_hidden: hidden width of each head's MLP.
        head_cls: the head type (registry kind "head"), one instance per dataset.
    """

    def __init__(self, backbone: Backbone, datasets: list[str], head_hidden: int | None = None,
                 head_cls: type[EnergyHead] = EnergyHead):
        super().__init__()
        if not datasets:
            raise ValueError("a multi-task model needs at least one dataset")
        if len(set(datasets)) != len(datasets):
            raise ValueError(f"dataset names must be unique, got {datasets}")
        self.backbone = backbone
        self.dataset_names = list(datasets)
        self.heads = nn.ModuleDict(
            {name: head_cls(backbone.num_scalar_features, head_hidden) for name in datasets})
        self.gate_cutoff = CosineCutoff(backbone.cutoff)

    def isolation_gate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """g_i = 1 - exp(-Σ_j f_cut(r_ij)): 0 for an atom without neighbours, smooth, → 1 when
        coordinated."""
        r = torch.linalg.vector_norm(edge_vectors(batch), dim=-1)
        n = batch[K.ATOMIC_NUMBERS].shape[0]
        coordination = scatter_sum(self.gate_cutoff(r), batch[K.EDGE_INDEX][0], n)
        return 1.0 - torch.exp(-coordination)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = self.backbone(batch)[K.NODE_SCALARS]
        gate = self.isolation_gate(batch).to(s.dtype)
        numbers = batch[K.ATOMIC_NUMBERS]
        atom_ds = batch[K.DATASET][batch[K.BATCH]]
        n_heads = len(self.dataset_names)
        if int(batch[K.DATASET].max()) >= n_heads or int(batch[K.DATASET].min()) < 0:
            raise ValueError(f"dataset id out of range 0..{n_heads - 1} ({self.dataset_names})")
        atom_energy = torch.zeros(numbers.shape[0], dtype=torch.float64, device=s.device)
        for k, head in enumerate(self.heads.values()):
            if self.training:
                atom_energy = atom_energy + head(s, numbers, gate) * (atom_ds == k)
            else:
                idx = torch.nonzero(atom_ds == k).squeeze(-1)
                if idx.numel():
                    atom_energy = atom_energy.index_copy(
                        0, idx, head(s[idx], numbers[idx], gate[idx]))
        # Per-structure charge/spin state energies of each structure's own head, spread evenly
        # over its atoms so that Σ ATOM_ENERGY = ENERGY. No parameters: indexing is DDP-safe.
        offsets = torch.stack([h.state_offset(batch[K.CHARGE], batch[K.SPIN])
                               for h in self.heads.values()], dim=-1)  # (S, H)
        offset = offsets.gather(1, batch[K.DATASET].unsqueeze(-1)).squeeze(-1)
        share = offset / batch[K.N_ATOMS].to(torch.float64)
        atom_energy = atom_energy + torch.index_select(share, 0, batch[K.BATCH])
        n_structs = batch[K.N_ATOMS].shape[0]
        energy = scatter_sum(atom_energy, batch[K.BATCH], n_structs)
        with torch.no_grad():
            refs = torch.stack([h.element_energy for h in self.heads.values()])  # (H, Z)
            reference = scatter_sum(refs[atom_ds, numbers], batch[K.BATCH], n_structs) + offset
        return {K.ENERGY: energy, K.ATOM_ENERGY: atom_energy, K.REFERENCE_ENERGY: reference}
