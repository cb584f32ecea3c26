"""One registry for every pluggable part: backbones, heads, readers, losses, neighbour lists.

The builder, the CLI, the hyperparameter search space and the parametrised tests all enumerate it,
so adding a backbone in one place makes it buildable, searchable and tested.

    @register("backbone", "painn")
    class PaiNN(Backbone): ...

    get("backbone", "painn")   # -> the class
    names("backbone")          # -> ["painn", ...]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

KINDS = ("backbone", "head", "reader", "loss", "neighbors")
_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator that files ``obj`` under ``kind``/``name``; names are unique per kind."""
    _check_kind(kind)

    def deco(obj: Any) -> Any:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = obj
        return obj

    return deco


# Importing these modules runs their @register decorators; only the kind asked for is loaded,
# so looking up a reader does not import the models.
_BUILTIN_MODULES = {
    "backbone": ("atomgfm.models.backbones",),
    "head": ("atomgfm.models.heads",),
    "reader": ("atomgfm.data.readers",),
    "loss": ("atomgfm.train.losses",),
    "neighbors": ("atomgfm.data.neighbors",),
}


def _load_builtins(kind: str) -> None:
    import importlib

    for module in _BUILTIN_MODULES.get(kind, ()):
        importlib.import_module(module)


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; kinds are {KINDS}")


def get(kind: str, name: str) -> Any:
    """Look up a registered object, with the known names in the error."""
    _check_kind(kind)
    _load_builtins(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}; registered: {names(kind)}") from None


def names(kind: str) -> list[str]:
    _load_builtins(kind)
    return sorted(_REGISTRY[kind])
