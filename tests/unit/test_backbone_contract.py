"""The backbone contract every registered backbone honours, and what the builder passes it."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import numpy as np
import pytest
from ase.build import bulk, molecule

from atomgfm.config.schema import ConfigError, config_from_dict
from atomgfm.data.graph import structure_to_graph
from atomgfm.data.stats import GraphStats, graph_stats
from atomgfm.data.structure import Structure
from atomgfm.models.backbones.base import FEATURE_KINDS, Backbone, BackboneSettings
from atomgfm.models.build import backbone_settings, build_model
from atomgfm.registry import get, names


@pytest.mark.parametrize("name", names("backbone"))
def test_every_backbone_declares_the_contract(name):
    cls = get("backbone", name)
    assert issubclass(cls, Backbone)
    assert issubclass(cls.Settings, BackboneSettings)
    fields = {f.name for f in dataclasses.fields(cls.Settings)}
    assert {"cutoff", "max_charge", "max_spin"} <= fields
    assert set(cls.presets) == {"S", "M", "L"}
    for preset in cls.presets.values():
        assert set(preset) <= fields
    assert cls.feature_kind in FEATURE_KINDS
    space = cls.search_space()
    assert space and set(space) <= fields
    for spec in space.values():
        assert "choices" in spec or spec["range"][0] < spec["range"][1]
    ff = build_model({"backbone": name, "preset": "S"}, ["a"])
    max_charge, max_spin = ff.backbone.charge_spin_range
    assert max_charge >= 1 and max_spin >= 1
    assert ff.cutoff == backbone_settings({"backbone": name, "preset": "S"}).cutoff


def test_presets_then_kwargs_override_defaults():
    s = backbone_settings({"backbone": "painn", "preset": "L", "backbone_kwargs": {"cutoff": 4.0}})
    assert (s.num_features, s.num_layers, s.cutoff) == (128, 4, 4.0)


def test_settings_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"config.model.backbone_kwargs.num_features: expected "
                                          r"an integer, got 'wide'"):
        config_from_dict({"model": {"backbone_kwargs": {"num_features": "wide"}}})
    with pytest.raises(ConfigError, match=r"config.model.backbone_kwargs: unknown key\(s\) "
                                          r"\['num_feature'\]; allowed: \['cutoff', "):
        config_from_dict({"model": {"backbone_kwargs": {"num_feature": 64}}})
    with pytest.raises(ConfigError, match=r"config.model.preset: 'XL' is not a preset of "
                                          r"backbone 'painn'; choose from \['L', 'M', 'S'\]"):
        config_from_dict({"model": {"preset": "XL"}})
    with pytest.raises(ConfigError, match=r"config.model.backbone: .*unknown backbone 'nequip'; "
                                          r"registered: \["):
        config_from_dict({"model": {"backbone": "nequip"}})


def test_graph_stats_are_counted_exactly():
    water = molecule("H2O")  # at 1.2 Å: O-H bonds only, H-H (1.5 Å) excluded
    g = structure_to_graph(Structure(water.numbers, water.positions), 1.2)
    cu = bulk("Cu", "fcc", a=3.6)  # 12 neighbours at 2.55 Å
    g2 = structure_to_graph(Structure(cu.numbers, cu.positions, cu.cell.array, cu.pbc), 3.0)
    stats = graph_stats([g, g2])
    assert stats.elements == [1, 8, 29]
    assert stats.degree_histogram == [0, 2, 1] + [0] * 9 + [1]
    assert (stats.n_atoms, stats.n_edges) == (4, 4 + 12)
    assert stats.avg_num_neighbors == pytest.approx(16 / 4)
    assert GraphStats.from_dict(stats.to_dict()) == stats


def test_builder_passes_elements_and_stats_to_the_backbone():
    """A backbone module dropped into models/backbones/ registers itself and receives the
    training elements and statistics from the builder."""
    import atomgfm.models.backbones as pkg
    from atomgfm import registry

    source = textwrap.dedent('''
        from dataclasses import dataclass
        import torch
        from atomgfm import keys as K
        from atomgfm.models.backbones.base import Backbone, setting
        from atomgfm.registry import register

        @dataclass
        class Settings:
            cutoff: float = setting(3.0, range=(2.0, 5.0))
            width: int = setting(4, range=(2, 8))

        @register("backbone", "probe")
        class Probe(Backbone):
            Settings = Settings
            presets = {"S": {"width": 2}, "M": {"width": 4}, "L": {"width": 8}}
            seen = {}

            def __init__(self, cutoff=3.0, width=4, elements=None, stats=None):
                super().__init__()
                Probe.seen.update(elements=elements, stats=stats)
                self.cutoff, self.num_scalar_features = cutoff, width
                self.max_charge, self.max_spin = 2, 3
                self.embed = torch.nn.Embedding(119, width)

            def forward(self, batch):
                return {K.NODE_SCALARS: self.embed(batch[K.ATOMIC_NUMBERS])}
    ''')
    folder = pkg.__path__[0]
    path = f"{folder}/probe_backbone_for_test.py"
    with open(path, "w") as fh:
        fh.write(source)
    try:
        assert "probe_backbone_for_test" in pkg.import_all()
        assert "probe" in names("backbone")
        stats = GraphStats([1, 8], 2.0, [0, 2, 1], 3, 4)
        ff = build_model({"backbone": "probe", "preset": "L"}, ["a"], stats)
        probe = type(ff.backbone)
        assert probe.seen == {"elements": [1, 8], "stats": stats}
        assert ff.backbone.num_scalar_features == 8 and ff.backbone.charge_spin_range == (2, 3)
    finally:
        import os

        os.remove(path)
        registry._REGISTRY["backbone"].pop("probe", None)
        sys.modules.pop("atomgfm.models.backbones.probe_backbone_for_test", None)


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone():
    import torch

    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model({"preset": "S"}, ["x"], seed=7)
    b = build_model({"preset": "S"}, ["x"], seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    c = build_model({"preset": "S"}, ["x"], seed=8)
    w = "model.backbone.embedding.element.weight"
    assert not np.allclose(a.state_dict()[w].numpy(), c.state_dict()[w].numpy())


def test_dataset_heads_must_be_energy_heads():
    with pytest.raises(ValueError, match=r"model.head 'property' is not an energy head"):
        build_model({"preset": "S", "head": "property"}, ["a"])
