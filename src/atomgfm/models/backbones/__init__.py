"""Backbones: batch -> node features. Importing this package registers every built-in one."""

from atomgfm.models.backbones.base import Backbone
from atomgfm.models.backbones.painn import PaiNN

__all__ = ["Backbone", "PaiNN"]
