"""Which head predicts a structure when the caller asks for ``head="auto"``.

Until a router is stored in checkpoints (the screening work), the choice is the head whose
training elements cover the structure. Ties are broken by, in order:

1. the structure's (charge, multiplicity) state was in the head's training split;
2. periodicity: a fully periodic structure prefers heads trained with stress labels (periodic
   data), a molecule or slab prefers heads without;
3. the tightest cover: fewest training elements beyond the structure's own;
4. the largest training split (``n_train``);
5. the lowest head id.

Every decision is logged once per kind of structure (element set, periodicity, state), naming
the chosen head, the other candidates and the rule that decided.

A checkpoint that stores a router (``state["router"] = {"kind": NAME, ...}``) is served by the
factory registered in :data:`ROUTERS` under ``NAME``: ``make_chooser`` is the one seam.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ase.data import chemical_symbols

from atomgfm.data.structure import Structure

log = logging.getLogger(__name__)

RULES = ("charge/spin state seen in training", "periodicity", "tightest element cover",
         "largest training split", "lowest head id")


class HeadChooser(Protocol):
    """Chooses one head name per structure."""

    def choose(self, structures: list[Structure]) -> list[str]: ...


#: Router factories by kind: ``factory(router_state, checkpoint_state) -> HeadChooser``.
ROUTERS: dict[str, Callable[[dict, dict], HeadChooser]] = {}


def covers(entry: dict, s: Structure) -> bool:
    """Whether every element of ``s`` is in the training elements of the head ``entry``."""
    return set(s.numbers.tolist()) <= set(entry.get("elements", ()))


def _symbols(zs) -> str:
    return " ".join(chemical_symbols[int(z)] for z in sorted(zs))


def describe(s: Structure) -> str:
    """``Cu3Au (periodic, charge 0, multiplicity 0)``, how log lines and errors name an input."""
    from ase.formula import Formula

    formula = Formula.from_list([chemical_symbols[int(z)] for z in s.numbers]).format("hill")
    kind = "periodic" if s.pbc.all() else "non-periodic"
    return f"{formula} ({kind}, charge {s.charge:g}, multiplicity {s.spin:g})"


class CoverageChooser:
    """The head whose training elements cover the structure (see the module docstring).

    Args:
        datasets: the checkpoint's dataset registry entries (name, id, elements, states, labels,
            n_train).
    """

    def __init__(self, datasets: list[dict]) -> None:
        self.entries = sorted(datasets, key=lambda d: d["id"])
        self._cache: dict[tuple, str] = {}

    def candidates(self, s: Structure) -> list[str]:
        """Names of the heads covering ``s``, in id order."""
        return [d["name"] for d in self.entries if covers(d, s)]

    def _key(self, d: dict, s: Structure, zs: set[int]) -> tuple:
        state = (int(round(s.charge)), int(round(s.spin)))
        states = d.get("states")
        seen = states is None or state in {(int(q), int(m)) for q, m in states}
        periodic_data = bool(d.get("labels", {}).get("stress", False))
        return (not seen, periodic_data != bool(s.pbc.all()),
                len(set(d.get("elements", ())) - zs), -int(d.get("n_train", 0)), int(d["id"]))

    def choose_one(self, s: Structure) -> str:
        zs = set(s.numbers.tolist())
        cache_key = (frozenset(zs), bool(s.pbc.all()), int(round(s.charge)), int(round(s.spin)))
        if cache_key in self._cache:
            return self._cache[cache_key]
        cands = [d for d in self.entries if covers(d, s)]
        if not cands:
            have = "; ".join(f"{d['name']}: {_symbols(d.get('elements', ()))}"
                             for d in self.entries)
            raise ValueError(f"{s.source or '<input>'}, record {s.index}: head 'auto': no head "
                             f"was trained on all of the elements {_symbols(zs)} of "
                             f"{describe(s)} (training elements per head: {have})")
        ranked = sorted(cands, key=lambda d: self._key(d, s, zs))
        chosen = ranked[0]["name"]
        if len(ranked) > 1:
            a, b = self._key(ranked[0], s, zs), self._key(ranked[1], s, zs)
            rule = RULES[next(i for i in range(len(a)) if a[i] != b[i])]
            log.info("head 'auto' for %s: %r, chosen among the heads covering its elements %s "
                     "by %s", describe(s), chosen, [d["name"] for d in cands], rule)
        else:
            log.info("head 'auto' for %s: %r, the only head covering its elements",
                     describe(s), chosen)
        self._cache[cache_key] = chosen
        return chosen

    def choose(self, structures: list[Structure]) -> list[str]:
        return [self.choose_one(s) for s in structures]


def make_chooser(state: dict) -> HeadChooser:
    """The chooser a checkpoint calls for: its stored router when it has one, else coverage."""
    router = state.get("router")
    if router is None:
        return CoverageChooser(state["datasets"])
    kind = router.get("kind") if isinstance(router, dict) else None
    if kind not in ROUTERS:
        raise ValueError(f"the checkpoint stores a router of kind {kind!r}, which this version "
                         f"of atomgfm cannot use (known: {sorted(ROUTERS)})")
    return ROUTERS[kind](router, state)
