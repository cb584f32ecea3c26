"""The backbone contract: a batch in, node features out; no autograd, no datasets.

A backbone class declares, besides its ``forward``:

* ``Settings``: a dataclass of every setting with its default, subclassing
  :class:`BackboneSettings` (``cutoff`` in Å, ``max_charge``, ``max_spin``). A
  field's ``metadata`` may give ``range=(lo, hi)`` (and ``log=True``) or ``choices=[...]``: the
  space the hyperparameter search draws from. The builder parses ``model.backbone_kwargs`` into it,
  so a wrong type or an unknown key is an error that names the key.
* ``presets``: ``{"S": {...}, "M": {...}, "L": {...}}``, overrides of ``Settings`` defaults.
* ``feature_kind``: ``"scalars"`` (invariant features only), ``"vectors"`` (adds
  ``NODE_VECTORS`` (n_atoms, 3, F_v)) or ``"irreps"`` (e3nn irreps in ``NODE_IRREPS``, described
  by the instance's ``irreps_out``). Heads read ``NODE_SCALARS`` in every case.
* ``needs``: batch fields beyond atoms and edges it reads (e.g. ``{keys.TRIPLET_INDEX}``).

Its constructor takes the settings as keywords plus ``elements`` (atomic numbers of the training
splits) and ``stats`` (:class:`~atomgfm.data.stats.GraphStats` of the training graphs: mean
neighbour count, degree histogram), which the builder passes; both may be None (tests, defaults).
It sets ``cutoff``, ``num_scalar_features``, ``num_vector_features``, ``max_charge`` and
``max_spin`` (the total-charge and multiplicity range its embedding covers).

Placing a module under ``models/backbones/`` that decorates its class with
``@register("backbone", name)`` is all it takes: the package imports every module in its folder.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

FEATURE_KINDS = ("scalars", "vectors", "irreps")


class Backbone(nn.Module):
    """Maps a batch dict to node features.

    Subclasses return ``{NODE_SCALARS: (n_atoms, F)[, NODE_VECTORS: (n_atoms, 3, F_v)]}`` from
    ``forward`` and read edge vectors with ``atomgfm.nn.geometry.edge_vectors`` so forces and
    stress flow through positions and cell.
    """

    Settings: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    feature_kind: ClassVar[str] = "scalars"
    needs: ClassVar[frozenset[str]] = frozenset()

    cutoff: float
    num_scalar_features: int
    num_vector_features: int = 0
    max_charge: int = 0
    max_spin: int = 0

    @property
    def charge_spin_range(self) -> tuple[int, int]:
        """(max |total charge| in e, max multiplicity) the model embeds; multiplicity 0 means
        "not given" and is always allowed."""
        return int(self.max_charge), int(self.max_spin)

    @classmethod
    def search_space(cls) -> dict[str, dict[str, Any]]:
        """Each tunable setting with its declared range or choices (from ``Settings`` metadata)."""
        space = {}
        for f in dataclasses.fields(cls.Settings):
            meta = {k: f.metadata[k] for k in ("range", "log", "choices") if k in f.metadata}
            if meta:
                space[f.name] = {"default": f.default, **meta}
        return space

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def setting(default: Any, *, range: tuple | None = None, log: bool = False,
            choices: list | None = None, doc: str = "") -> Any:
    """A ``Settings`` field with its search range (``range=(lo, hi)``, ``log``) or ``choices``."""
    meta: dict[str, Any] = {"doc": doc}
    if range is not None:
        meta["range"] = tuple(range)
        meta["log"] = log
    if choices is not None:
        meta["choices"] = list(choices)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class BackboneSettings:
    """The settings every backbone has; a backbone's ``Settings`` subclasses this dataclass."""

    cutoff: float = setting(5.0, range=(3.5, 6.5), doc="neighbour cutoff, Å")
    max_charge: int = setting(6, doc="total charge embedded: -max_charge..max_charge e")
    max_spin: int = setting(8, doc="multiplicities embedded: 0 (not given) .. max_spin")
