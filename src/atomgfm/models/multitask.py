"""Multi-task energy model: encode once, read out any set of heads, combine per structure.

    features = model.encode(batch)                      # the backbone, once
    per_atom = model.readout(features, batch, heads)    # (n_atoms, n_heads) float64 eV
    out = model(batch)                                  # each structure's own head
    out = model(batch, heads=[...], weights=w)          # a blend: w (n_structs, n_heads)

Training and evaluation use the same path: every chosen head runs on every atom (heads of one
class as one batched product) and each structure's energy is the weighted sum of its heads'
energies, with one-hot weights from ``DATASET`` by default. Weights multiply, they never index, so
all heads stay in the autograd graph (DDP needs no unused-parameter search) and a head's output
for a foreign atom contributes exactly zero, value and gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.models.backbones.base import Backbone
from atomgfm.models.heads import EnergyHead, Head
from atomgfm.nn.geometry import edge_vectors
from atomgfm.nn.radial import CosineCutoff
from atomgfm.nn.scatter import scatter_sum


class MultiTaskModel(nn.Module):
    """Backbone + ``ModuleDict`` of heads keyed by dataset name.

    Args:
        backbone: any registered backbone.
        datasets: dataset names in id order (id = position), from the dataset registry.
        head_hidden: hidden width of each head's MLP.
        head_cls: the head type (registry kind "head"), one instance per dataset.
    """

    def __init__(self, backbone: Backbone, datasets: list[str], head_hidden: int | None = None,
                 head_cls: type[Head] = EnergyHead):
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

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    def isolation_gate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """g_i = 1 - exp(-Σ_j f_cut(r_ij)): 0 for an atom without neighbours, smooth, → 1 when
        coordinated."""
        r = torch.linalg.vector_norm(edge_vectors(batch), dim=-1)
        n = batch[K.ATOMIC_NUMBERS].shape[0]
        coordination = scatter_sum(self.gate_cutoff(r), batch[K.EDGE_INDEX][0], n)
        return 1.0 - torch.exp(-coordination)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One backbone pass: NODE_SCALARS (n_atoms, F) [+ NODE_VECTORS ...] and GATE (n_atoms,)."""
        features = dict(self.backbone(batch))
        features[K.GATE] = self.isolation_gate(batch).to(features[K.NODE_SCALARS].dtype)
        return features

    def head_names(self, heads: list[str] | None) -> list[str]:
        if heads is None:
            return self.dataset_names
        unknown = [h for h in heads if h not in self.heads]
        if unknown or not heads:
            raise KeyError(f"unknown head(s) {unknown}; this model has {self.dataset_names}")
        return list(heads)

    def readout(self, features: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                heads: list[str] | None = None) -> torch.Tensor:
        """Per-atom energies of each chosen energy head, (n_atoms, n_heads) float64 eV: element
        references, the learned part, and each structure's charge/spin state energy spread evenly
        over its atoms (so that a structure's atoms sum to its energy)."""
        names = self.head_names(heads)
        mods = [self.heads[n] for n in names]
        other = [n for n, m in zip(names, mods, strict=True) if m.kind != "energy"]
        if other:
            raise ValueError(f"readout gives energies; {other} are not energy heads")
        s, gate, numbers = features[K.NODE_SCALARS], features[K.GATE], batch[K.ATOMIC_NUMBERS]
        per_atom = _by_class(mods, lambda cls, hs: cls.stacked(hs, s, numbers, gate))  # (n, H)
        offsets = self._state_offsets(mods, batch)  # (S, H)
        share = offsets / batch[K.N_ATOMS].to(torch.float64).unsqueeze(-1)
        return per_atom + torch.index_select(share, 0, batch[K.BATCH])

    def _state_offsets(self, mods: list[Head], batch) -> torch.Tensor:
        """(S, H) float64 eV: each head's charge/spin state energy, heads of one class at once."""
        charge, spin = batch[K.CHARGE], batch[K.SPIN]
        return _by_class(mods, lambda cls, hs: cls.stacked_structure_outputs(hs, charge, spin))

    def reference(self, batch: dict[str, torch.Tensor],
                  heads: list[str] | None = None) -> torch.Tensor:
        """(n_structs, n_heads) float64 eV: what each head's references alone give."""
        mods = [self.heads[n] for n in self.head_names(heads)]
        refs = torch.stack([m.element_energy for m in mods], dim=-1)  # (Z, H)
        per_atom = torch.index_select(refs, 0, batch[K.ATOMIC_NUMBERS])
        n_structs = batch[K.N_ATOMS].shape[0]
        return scatter_sum(per_atom, batch[K.BATCH], n_structs) + self._state_offsets(mods, batch)

    def own_head_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One-hot (n_structs, n_datasets) float64 from each structure's DATASET id."""
        ds = batch[K.DATASET]
        n_heads = len(self.dataset_names)
        if ds.numel() and (int(ds.max()) >= n_heads or int(ds.min()) < 0):
            raise ValueError(f"dataset id out of range 0..{n_heads - 1} ({self.dataset_names})")
        return nn.functional.one_hot(ds, n_heads).to(torch.float64)

    def property(self, features: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                 head: str) -> torch.Tensor:
        """A structure-level head's output, (n_structs, out_dim) float64."""
        m = self.heads[self.head_names([head])[0]]
        atoms = m.atom_outputs(features[K.NODE_SCALARS], batch[K.ATOMIC_NUMBERS], features[K.GATE])
        n_structs = batch[K.N_ATOMS].shape[0]
        pooled = scatter_sum(atoms, batch[K.BATCH], n_structs)
        if m.reduce == "mean":
            pooled = pooled / batch[K.N_ATOMS].to(pooled.dtype).unsqueeze(-1)
        return pooled + m.structure_outputs(batch[K.CHARGE], batch[K.SPIN])

    def forward(self, batch: dict[str, torch.Tensor], heads: list[str] | None = None,
                weights: torch.Tensor | None = None,
                per_head: bool = False) -> dict[str, torch.Tensor]:
        """Energies combined per structure.

        Args:
            heads: heads to read out (default: all, in id order).
            weights: (n_structs, n_heads) blend of the heads per structure; default one-hot of
                each structure's DATASET (needs ``heads`` None).
            per_head: also return HEAD_ENERGY (n_structs, n_heads), each head on its own, and
                HEAD_WEIGHTS, the weights used.

        Returns ENERGY (n_structs,) float64 eV, ATOM_ENERGY (n_atoms,), REFERENCE_ENERGY.
        """
        names = self.head_names(heads)
        features = self.encode(batch)
        props = [n for n in names if self.heads[n].kind != "energy"]
        extra = {}
        if props:  # structure-level property heads (fine-tuning): each structure's own head
            if heads is not None or weights is not None:
                raise ValueError(f"{props} are property heads: read them with model.property "
                                 "or through each structure's own head (heads=None)")
            own = self.own_head_weights(batch)
            keep = [k for k, n in enumerate(names) if n not in props]
            extra = self._own_properties(features, batch, props, own)
            names, weights = [names[k] for k in keep], own[:, keep]
            if not names:  # no energy head: a zero energy that still depends on the positions
                zero = (features[K.NODE_SCALARS].sum(-1) * 0).to(torch.float64)
                n_structs = batch[K.N_ATOMS].shape[0]
                return {K.ENERGY: scatter_sum(zero, batch[K.BATCH], n_structs),
                        K.ATOM_ENERGY: zero,
                        K.REFERENCE_ENERGY: torch.zeros(n_structs, dtype=torch.float64,
                                                        device=zero.device), **extra}
        per_atom = self.readout(features, batch, names)  # (n, H)
        if weights is None:
            if heads is not None and names != self.dataset_names:
                raise ValueError("weights are required when reading out a subset of heads")
            weights = self.own_head_weights(batch)
        weights = weights.to(torch.float64)
        n_structs = batch[K.N_ATOMS].shape[0]
        if weights.shape != (n_structs, len(names)):
            raise ValueError(f"weights must have shape (n_structs, n_heads) = "
                             f"{(n_structs, len(names))}, got {tuple(weights.shape)}")
        atom_energy = (per_atom * torch.index_select(weights, 0, batch[K.BATCH])).sum(-1)
        out = {K.ENERGY: scatter_sum(atom_energy, batch[K.BATCH], n_structs),
               K.ATOM_ENERGY: atom_energy}
        with torch.no_grad():
            out[K.REFERENCE_ENERGY] = (self.reference(batch, names) * weights).sum(-1)
        if per_head:
            out[K.HEAD_ENERGY] = scatter_sum(per_atom, batch[K.BATCH], n_structs)
            out[K.HEAD_WEIGHTS] = weights
        out.update(extra)
        return out

    def _own_properties(self, features, batch, props: list[str],
                        own: torch.Tensor) -> dict[str, torch.Tensor]:
        """PROPERTY_OUTPUT and PROPERTY_TASK of each structure's own property head (zero and 0
        for structures of energy heads); ``own`` is the one-hot (n_structs, n_datasets)."""
        codes = {"regression": 1, "classification": 2}
        value = torch.zeros(own.shape[0], dtype=torch.float64, device=own.device)
        task = torch.zeros(own.shape[0], dtype=torch.long, device=own.device)
        for name in props:
            w = own[:, self.dataset_names.index(name)]
            value = value + w * self.property(features, batch, name)[:, 0]
            task = task + w.long() * codes[getattr(self.heads[name], "task", "regression")]
        return {K.PROPERTY_OUTPUT: value, K.PROPERTY_TASK: task}


def _by_class(mods: list[Head], stacked) -> torch.Tensor:
    """(rows, H) float64: column k from head ``mods[k]``, the heads of each class computed at
    once by ``stacked(cls, heads)`` -> (rows, 1, len(heads)) (the class's batched product)."""
    columns: list[torch.Tensor | None] = [None] * len(mods)
    groups: dict[type, list[int]] = {}
    for k, m in enumerate(mods):
        groups.setdefault(type(m), []).append(k)
    for cls, idx in groups.items():
        out = stacked(cls, [mods[k] for k in idx])[:, 0]  # (rows, len(idx))
        for c, k in enumerate(idx):
            columns[k] = out[:, c]
    return torch.stack(columns, dim=-1)
