"""The search space, generated from the backbone registry.

* ``backbone``: a categorical over the registered backbones (or the campaign's list).
* ``<family>.<setting>``: every setting a backbone's ``Settings`` declares a ``range`` or
  ``choices`` for (:meth:`Backbone.search_space`), active only when ``backbone == family``
  (a ConfigSpace condition). A backbone registered anywhere joins with no edit here.
* Shared by every family: ``cutoff`` (Å; every backbone's ``BackboneSettings.cutoff``), ``lr``
  (``train.lr``), ``forces_weight`` (every dataset's force loss weight) and ``temperature``
  (``data.temperature``, the dataset-mixing temperature; only when the base config mixes by
  temperature).

A campaign narrows any of these (``{range: [lo, hi]}``, ``{choices: [...]}``, ``{value: x}`` to fix
one) within the declared bounds; widening is an error naming the hyperparameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from atomgfm.config.schema import ConfigError
from atomgfm.registry import get, names

# Hyperparameters every family shares: name -> (declared range, log scale, what it sets).
SHARED: dict[str, dict[str, Any]] = {
    "lr": {"range": (1e-4, 1e-2), "log": True, "doc": "train.lr (peak learning rate)"},
    "forces_weight": {"range": (1.0, 100.0), "log": True,
                      "doc": "data.datasets[*].forces_weight (force loss weight)"},
    "temperature": {"range": (1.0, 5.0), "log": False,
                    "doc": "data.temperature (mixing p ∝ n^(1/T); needs mixing: temperature)"},
}


@dataclass
class Dimension:
    """One hyperparameter: a ``range`` (int or float, maybe ``log``), ``choices`` or a fixed
    ``value``; ``family`` is the backbone it belongs to (None: shared)."""

    name: str
    default: Any
    range: tuple | None = None
    log: bool = False
    choices: list | None = None
    value: Any = None
    family: str | None = None
    fixed: bool = False


@dataclass
class SearchSpace:
    """The dimensions of a campaign; :meth:`problem` turns them into a DeepHyper ``HpProblem``."""

    families: list[str]
    dims: list[Dimension] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return ["backbone"] + [d.name for d in self.dims]

    def point(self, values: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """A full configuration from ``values`` (``backbone`` and the active hyperparameters),
        inactive families' entries filled with placeholders as DeepHyper fills them; ``(None,
        reason)`` when a value is missing or outside the (narrowed) space."""
        family = values.get("backbone")
        if family not in self.families:
            return None, f"backbone {family!r} is not among {self.families}"
        out: dict[str, Any] = {"backbone": family}
        for d in self.dims:
            active = d.family is None or d.family == family
            if d.fixed:
                out[d.name] = d.value
                if active and d.name in values and values[d.name] != d.value:
                    return None, f"{d.name} = {values[d.name]!r}, the campaign fixes {d.value!r}"
                continue
            if not active:
                out[d.name] = d.choices[0] if d.choices is not None else d.range[0]
                continue
            if d.name not in values:
                return None, f"no value for {d.name}"
            v = values[d.name]
            if d.choices is not None:
                if v not in d.choices:
                    return None, f"{d.name} = {v!r} is not among {d.choices}"
            elif not d.range[0] <= v <= d.range[1]:
                return None, f"{d.name} = {v!r} is outside {list(d.range)}"
            elif isinstance(d.range[0], int) and isinstance(d.range[1], int):
                v = int(v)
            out[d.name] = v
        return out, ""

    def problem(self, seed: int | None = None):
        """A DeepHyper ``HpProblem`` (ConfigSpace underneath) with the family conditions."""
        import ConfigSpace as cs
        from deephyper.hpo import HpProblem

        problem = HpProblem(seed=seed)
        family = problem.add_hyperparameter(list(self.families), "backbone",
                                            default_value=self.families[0])
        for d in self.dims:
            if d.fixed:
                hp = problem.add_hyperparameter(d.value, d.name)
            elif d.choices is not None:
                default = d.default if d.default in d.choices else d.choices[0]
                hp = problem.add_hyperparameter(list(d.choices), d.name, default_value=default)
            else:
                lo, hi = d.range
                is_int = isinstance(lo, int) and isinstance(hi, int)
                default = min(max(d.default, lo), hi)
                default = int(round(default)) if is_int else float(default)
                bounds = (lo, hi) if is_int else (float(lo), float(hi))
                hp = problem.add_hyperparameter(
                    (*bounds, "log-uniform" if d.log else "uniform"), d.name,
                    default_value=default)
            if d.family is not None and len(self.families) > 1:
                problem.add_condition(cs.EqualsCondition(hp, family, d.family))
        return problem


def _narrow(name: str, declared: dict[str, Any], override: Any, where: str) -> dict[str, Any]:
    """The declared ``range``/``choices`` of ``name`` narrowed by the campaign's ``override``."""
    if not isinstance(override, dict):
        raise ConfigError(f"{where}.{name}: expected a mapping with range, choices or value, "
                          f"got {override!r}")
    unknown = set(override) - {"range", "choices", "value", "log"}
    if unknown or len(set(override) & {"range", "choices", "value"}) != 1:
        raise ConfigError(f"{where}.{name}: give exactly one of range: [lo, hi], choices: [...] "
                          f"or value: x (and optionally log: true|false); got {sorted(override)}")
    out = dict(declared)
    if "value" in override:
        v = override["value"]
        if not _inside(v, declared):
            raise ConfigError(f"{where}.{name}: value {v!r} is outside the declared "
                              f"{_describe(declared)}")
        out.update(value=v, fixed=True)
    elif "choices" in override:
        ch = override["choices"]
        if not isinstance(ch, list) or not ch:
            raise ConfigError(f"{where}.{name}.choices: expected a non-empty list, got {ch!r}")
        bad = [c for c in ch if not _inside(c, declared)]
        if bad:
            raise ConfigError(f"{where}.{name}.choices: {bad} outside the declared "
                              f"{_describe(declared)}")
        out.update(choices=list(ch), range=None)
    else:
        rg = override["range"]
        if declared.get("range") is None:
            raise ConfigError(f"{where}.{name}: declared as choices {declared['choices']}; narrow "
                              "it with choices: [...], not range")
        if (not isinstance(rg, list | tuple) or len(rg) != 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in rg)
                or not rg[0] < rg[1]):
            raise ConfigError(f"{where}.{name}.range: expected [lo, hi] numbers with lo < hi, "
                              f"got {rg!r}")
        lo, hi = declared["range"]
        if rg[0] < lo or rg[1] > hi:
            raise ConfigError(f"{where}.{name}.range: {list(rg)} is wider than the declared "
                              f"[{lo}, {hi}]; a campaign may only narrow a range")
        if isinstance(lo, int) and isinstance(hi, int):
            if rg[0] != int(rg[0]) or rg[1] != int(rg[1]):
                raise ConfigError(f"{where}.{name}.range: {name} is an integer; got {list(rg)}")
            rg = (int(rg[0]), int(rg[1]))
        else:
            rg = (float(rg[0]), float(rg[1]))
        out["range"] = tuple(rg)
    if "log" in override:
        if not isinstance(override["log"], bool):
            raise ConfigError(f"{where}.{name}.log: expected true or false")
        out["log"] = override["log"]
    return out


def _inside(v: Any, declared: dict[str, Any]) -> bool:
    if declared.get("choices") is not None:
        return v in declared["choices"]
    lo, hi = declared["range"]
    return (isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi
            and (not isinstance(lo, int) or not isinstance(hi, int) or v == int(v)))


def _describe(declared: dict[str, Any]) -> str:
    if declared.get("choices") is not None:
        return f"choices {declared['choices']}"
    return f"range {list(declared['range'])}"


def build_space(backbones: list[str] | None = None, overrides: dict[str, Any] | None = None,
                temperature: bool = True, where: str = "campaign.space") -> SearchSpace:
    """The search space over ``backbones`` (default: every registered one).

    Args:
        backbones: the families to search (each must be registered).
        overrides: ``{name: {range|choices|value: ...}}`` narrowing hyperparameters; names are
            ``lr``, ``cutoff``, ``forces_weight``, ``temperature`` and ``<family>.<setting>``.
        temperature: include the mixing temperature (the base config mixes by temperature).
    """
    registered = names("backbone")
    families = list(registered if backbones is None else backbones)
    if not families:
        raise ConfigError("campaign.backbones: the list is empty; name at least one backbone")
    unknown = [f for f in families if f not in registered]
    if unknown:
        raise ConfigError(f"campaign.backbones: {unknown} not registered; registered backbones "
                          f"are {registered}")
    if len(set(families)) != len(families):
        raise ConfigError(f"campaign.backbones: names repeat in {families}")
    declared: dict[str, dict[str, Any]] = {}
    cutoffs = []
    for fam in families:
        for setting, meta in get("backbone", fam).search_space().items():
            if setting == "cutoff":  # shared: one cutoff however many families
                cutoffs.append(meta)
                continue
            declared[f"{fam}.{setting}"] = {**meta, "family": fam}
    shared = {k: dict(v) for k, v in SHARED.items() if k != "temperature" or temperature}
    if cutoffs:  # the narrowest range every family accepts
        lo = max(m["range"][0] for m in cutoffs)
        hi = min(m["range"][1] for m in cutoffs)
        shared["cutoff"] = {"range": (float(lo), float(hi)), "log": False,
                            "default": cutoffs[0]["default"]}
    for k, v in shared.items():
        v.setdefault("default", math.sqrt(v["range"][0] * v["range"][1]) if v["log"]
                     else (v["range"][0] + v["range"][1]) / 2)
        v.pop("doc", None)
        declared[k] = {**v, "family": None}
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - set(declared))
    if bad:
        hint = ("temperature needs data.mixing: temperature in the base config; "
                if "temperature" in bad and not temperature else "")
        raise ConfigError(f"{where}: unknown hyperparameter(s) {bad}; {hint}the space has "
                          f"{sorted(declared)}")
    dims = []
    for name in sorted(declared, key=lambda n: (declared[n]["family"] is not None, n)):
        meta = declared[name]
        if name in overrides:
            meta = _narrow(name, meta, overrides[name], where)
        dims.append(Dimension(name=name, default=meta.get("default"), range=meta.get("range"),
                              log=bool(meta.get("log", False)), choices=meta.get("choices"),
                              value=meta.get("value"), family=meta["family"],
                              fixed=bool(meta.get("fixed", False))))
    return SearchSpace(families, dims)


def split_params(params: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(family, backbone_kwargs, shared)`` from a sampled configuration: the family's own
    settings (inactive families' and NaN entries dropped) and the shared hyperparameters."""
    family = params["backbone"]
    kwargs, shared = {}, {}
    for k, v in params.items():
        if k == "backbone" or v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if "." in k:
            fam, setting = k.split(".", 1)
            if fam == family:
                kwargs[setting] = v
        else:
            shared[k] = v
    return family, kwargs, shared
