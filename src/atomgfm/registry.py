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
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; kinds are {KINDS}")

    def deco(obj: Any) -> Any:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = obj
        return obj

    return deco


def _load_builtins() -> None:
    # Importing these modules runs their @register decorators.
    import atomgfm.data.readers  # noqa: F401
    import atomgfm.models.backbones  # noqa: F401


def get(kind: str, name: str) -> Any:
    """Look up a registered object, with the known names in the error."""
    _load_builtins()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}; registered: {names(kind)}") from None


def names(kind: str) -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY[kind])
