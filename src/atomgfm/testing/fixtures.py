"""Tiny labelled fixtures for tests and examples; labels from ASE's EMT (a real calculator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from atomgfm.config.schema import DatasetConfig
from atomgfm.data.references import fit_references
from atomgfm.data.sources import LoadedDataset, split_indices
from atomgfm.data.structure import Structure

METALS = ("Cu", "Ni", "Ag", "Au", "Pd", "Pt", "Al")


def emt_bulk(n: int, seed: int = 0, repeat=(1, 1, 1), elements=METALS) -> list[Atoms]:
    """Rattled random fcc alloy cells (4 atoms × repeat) labelled by EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=3.7 * (1 + rng.uniform(-0.03, 0.03)), cubic=True).repeat(repeat)
        a.set_chemical_symbols(rng.choice(elements, size=len(a)))
        a.positions += rng.normal(0, 0.08, a.positions.shape)
        out.append(a)
    return out


def emt_clusters(n: int, seed: int = 0, size: int = 5, elements=("Cu", "Ni", "Au")) -> list[Atoms]:
    """Small non-periodic metal clusters (no cell) labelled by EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pos = np.cumsum(rng.normal(0, 1.0, (size, 3)), axis=0)
        pos = pos / np.linalg.norm(np.diff(pos, axis=0), axis=1).mean() * 2.5
        out.append(Atoms(rng.choice(elements, size=size), positions=pos))
    return out


def to_structures(atoms_list: list[Atoms], dataset: str, stress: bool = True) -> list[Structure]:
    out = []
    for i, a in enumerate(atoms_list):
        a.calc = EMT()
        periodic = bool(a.pbc.all())
        out.append(Structure(a.numbers, a.positions, a.cell.array, a.pbc,
                             energy=a.get_potential_energy(), forces=a.get_forces(),
                             stress=a.get_stress() if (stress and periodic) else None,
                             dataset=dataset, source=f"<{dataset}>", index=i))
    return out


def tiny_datasets(n_bulk: int = 24, n_clusters: int = 12, seed: int = 0) -> list[LoadedDataset]:
    """Two datasets (periodic alloys with stress, clusters without) ready for a Trainer."""
    sets = [("bulk", to_structures(emt_bulk(n_bulk, seed), "bulk")),
            ("clusters", to_structures(emt_clusters(n_clusters, seed + 1), "clusters"))]
    out = []
    for ds_id, (name, structures) in enumerate(sets):
        tr, va = split_indices(len(structures), 0.25, seed + ds_id)
        train = [structures[i] for i in tr]
        out.append(LoadedDataset(DatasetConfig(name=name, path=f"<{name}>"), ds_id, train,
                                 [structures[i] for i in va], fit_references(train, name),
                                 provenance="fixture"))
    return out


def train_tiny_model(out_dir: str | Path, datasets: list[LoadedDataset] | None = None,
                     steps: int = 2, seed: int = 0) -> Path:
    """Train a tiny model (8 features, 1 layer, cutoff 4 Å, 4 radial functions) for ``steps``
    steps on ``datasets`` (default: ``tiny_datasets(n_bulk=8, n_clusters=4)``) into ``out_dir``;
    returns the path of its ``last.pt``."""
    from atomgfm.config.schema import config_from_dict
    from atomgfm.train.loop import Trainer

    cfg = config_from_dict({
        "model": {"backbone_kwargs": {"num_features": 8, "num_layers": 1, "cutoff": 4.0,
                                      "num_rbf": 4}},
        "data": {"max_atoms_per_batch": 48},
        "train": {"out_dir": str(out_dir), "max_steps": steps, "eval_every": steps,
                  "warmup_steps": 1, "progress": False, "seed": seed}})
    if datasets is None:
        datasets = tiny_datasets(n_bulk=8, n_clusters=4)
    Trainer.from_config(cfg, datasets).fit()
    return Path(out_dir) / "last.pt"


def write_emt_run_config(root: str | Path, n_bulk: int, n_clusters: int, *, data: dict,
                         train: dict) -> Path:
    """``bulk.extxyz`` (``emt_bulk(n_bulk, 0)``) and ``clusters.extxyz``
    (``emt_clusters(n_clusters, 1)``) with EMT energies and forces in ``root``, and
    ``root/config.yaml`` training a preset-S model (cutoff 4 Å) on them, its ``data`` section
    ``data`` plus the two datasets (level of theory EMT), its ``train`` section ``train``;
    returns the config's path."""
    import ase.io
    import yaml

    root = Path(root)
    for name, atoms in (("bulk", emt_bulk(n_bulk, 0)), ("clusters", emt_clusters(n_clusters, 1))):
        for a in atoms:
            a.calc = EMT()
            a.get_potential_energy(), a.get_forces()
        ase.io.write(root / f"{name}.extxyz", atoms, format="extxyz")
    cfg = {"data": {**data, "datasets": [
               {"name": "bulk", "path": "bulk.extxyz", "level_of_theory": "EMT"},
               {"name": "clusters", "path": "clusters.extxyz", "level_of_theory": "EMT"}]},
           "model": {"preset": "S", "backbone_kwargs": {"cutoff": 4.0}},
           "train": train}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root / "config.yaml"


def random_force_field(backbone: str, preset: str = "S", stats=None, seed: int = 0, **settings):
    """A one-head fp64 force field in eval mode with seeded weights and random element references
    (scale 0.7), for backbone unit tests; ``settings`` override the preset."""
    from atomgfm.data.structure import MAX_Z
    from atomgfm.models.build import build_model

    ff = build_model({"backbone": backbone, "preset": preset, "backbone_kwargs": settings},
                     ["a"], stats, seed=seed).double()
    ff.heads["a"].set_normalization(np.random.default_rng(seed).normal(0, 1, MAX_Z + 1), 0.7)
    return ff.eval()


def multi_head_force_field(model_cfg: dict, heads: list[str], seed: int = 1):
    """An fp64 force field in eval mode whose heads differ: random element references, scale
    0.5 + k and state energies per head, and every head weight perturbed (so a mix-up of heads
    cannot pass a test). For screening and readout tests."""
    import torch

    from atomgfm.data.structure import MAX_Z
    from atomgfm.models.build import build_model

    model = build_model(model_cfg, heads, seed=0).double()
    rng = np.random.default_rng(seed)
    for k, head in enumerate(model.heads.values()):
        head.set_normalization(rng.normal(-2, 1, MAX_Z + 1), 0.5 + k,
                               state_energy=rng.normal(0, 0.3, 3))
        with torch.no_grad():
            for p in head.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()
