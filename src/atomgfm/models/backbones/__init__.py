"""Backbones: batch -> node features.

Importing this package imports every module in its folder, so a backbone registers itself by
being placed here (``@register("backbone", name)`` on its class); nothing else needs editing.
"""

import importlib
import pkgutil

from atomgfm.models.backbones.base import Backbone


def import_all() -> list[str]:
    """Import every backbone module in this folder (idempotent); returns the module names."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
            found.append(module.name)
    return found


import_all()

__all__ = ["Backbone", "import_all"]
