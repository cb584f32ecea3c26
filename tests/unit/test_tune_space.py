"""The search space comes from the backbone registry; campaigns narrow it, never widen it."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("deephyper")

from atomgfm import registry  # noqa: E402
from atomgfm.config.schema import ConfigError  # noqa: E402
from atomgfm.models.backbones.base import setting  # noqa: E402
from atomgfm.tune.space import build_space, split_params  # noqa: E402


@pytest.fixture
def throwaway_backbone():
    """A backbone registered by this test alone (a PaiNN with one extra declared setting),
    removed from the registry afterwards."""
    painn = registry.get("backbone", "painn")

    @dataclasses.dataclass
    class ToySettings(painn.Settings):
        gate: str = setting("on", choices=["on", "off"], doc="a throwaway categorical")
        depth: int = setting(2, range=(1, 4), doc="a throwaway integer range")

    class Toy(painn):
        Settings = ToySettings

        def __init__(self, gate="on", depth=2, **kwargs):
            super().__init__(**kwargs)

    registry.register("backbone", "toy_tune")(Toy)
    yield "toy_tune"
    registry._REGISTRY["backbone"].pop("toy_tune", None)


def test_space_covers_every_registered_backbone_and_its_declared_settings():
    space = build_space()
    problem = space.problem(seed=0).space
    families = registry.names("backbone")
    assert list(problem["backbone"].choices) == families
    conditions = {c.child.name: c for c in problem.conditions}
    for fam in families:
        for name, meta in registry.get("backbone", fam).search_space().items():
            if name == "cutoff":
                continue  # shared by every family
            hp = problem[f"{fam}.{name}"]
            if "choices" in meta:
                assert list(getattr(hp, "sequence", None) or hp.choices) == meta["choices"]
            else:
                assert (hp.lower, hp.upper) == tuple(meta["range"])
                assert hp.log == meta["log"]
            cond = conditions[f"{fam}.{name}"]
            assert cond.parent.name == "backbone" and cond.value == fam
    for shared in ("cutoff", "lr", "forces_weight", "temperature"):
        assert shared in problem and shared not in conditions


def test_a_newly_registered_backbone_joins_with_no_edit(throwaway_backbone):
    space = build_space()
    assert throwaway_backbone in space.families
    problem = space.problem(seed=0).space
    assert list(problem["toy_tune.gate"].choices) == ["on", "off"]
    assert (problem["toy_tune.depth"].lower, problem["toy_tune.depth"].upper) == (1, 4)
    # sampled configurations carry its settings only when it is the family drawn
    for cfg in problem.sample_configuration(40):
        d = dict(cfg)
        assert ("toy_tune.gate" in d) == (d["backbone"] == "toy_tune")


def test_campaign_narrows_ranges_and_choices():
    space = build_space(["painn", "egnn"],
                        {"painn.num_features": {"range": [16, 32]},
                         "egnn.vector_channels": {"choices": [0, 8]},
                         "lr": {"value": 0.003}, "cutoff": {"range": [4.0, 4.5]}})
    dims = {d.name: d for d in space.dims}
    assert space.families == ["painn", "egnn"]
    assert dims["painn.num_features"].range == (16, 32)
    assert dims["egnn.vector_channels"].choices == [0, 8]
    assert dims["lr"].fixed and dims["lr"].value == 0.003
    assert dims["cutoff"].range == (4.0, 4.5)
    assert not any(n.startswith("schnet.") for n in dims)
    cfg = dict(space.problem(seed=1).space.sample_configuration())
    assert cfg["lr"] == 0.003 and 4.0 <= cfg["cutoff"] <= 4.5


@pytest.mark.parametrize("override, message", [
    ({"painn.num_features": {"range": [8, 32]}}, "wider than the declared"),
    ({"egnn.vector_channels": {"choices": [0, 7]}}, "outside the declared"),
    ({"painn.width": {"range": [1, 2]}}, "unknown hyperparameter"),
    ({"lr": {"range": [1e-3]}}, "expected [lo, hi]"),
    ({"lr": {"range": [1e-3, 2e-3], "choices": [1e-3]}}, "exactly one of"),
    ({"painn.num_layers": {"range": [1.5, 3]}}, "is an integer"),
])
def test_widening_or_unknown_names_are_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        build_space(["painn", "egnn"], override)


def test_unknown_backbone_and_temperature_without_temperature_mixing():
    with pytest.raises(ConfigError, match="not registered"):
        build_space(["painn", "nosuchnet"])
    with pytest.raises(ConfigError, match="needs data.mixing: temperature"):
        build_space(["painn"], {"temperature": {"range": [1.0, 2.0]}}, temperature=False)
    assert "temperature" not in build_space(["painn"], temperature=False).names


def test_split_params_keeps_the_drawn_family_only():
    family, kwargs, shared = split_params({"backbone": "schnet", "lr": 0.001, "cutoff": 4.2,
                                          "painn.num_features": 16, "schnet.num_rbf": 12})
    assert family == "schnet"
    assert kwargs == {"num_rbf": 12}
    assert shared == {"lr": 0.001, "cutoff": 4.2}
