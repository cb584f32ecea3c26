"""Backbones: batch -> node features.

Importing this package imports every module in its folder, so a backbone registers itself by
being placed here (``@register("backbone", name)`` on its class); nothing else needs editing.
"""

import importlib
import pkgutil

from atomgfm.models.backbones.base import Backbone

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Backbone"]
