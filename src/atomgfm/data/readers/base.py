"""Shared pieces of every reader: errors, skip reports, options and the reader spec.

A reader is a function ``records(path, options, format)`` that yields ``(index, build)`` pairs
lazily, where ``build()`` parses and converts one record into a validated
:class:`~atomgfm.data.structure.Structure`. It is registered with :func:`reader`, which files a
:class:`ReaderSpec` (formats, suffixes, backend packages) in the registry; dispatch by suffix or
``format=`` is generated from those specs. :class:`~atomgfm.data.readers.stream.StructureStream`
runs the builds, re-raising or counting failures according to ``on_error``.

Per-record problems (:class:`RecordError`, :class:`StructureError`) are skippable. Errors that
make the *rest* of a file unreadable (lost frame boundaries, a dead ASE iterator, a file that is
not what its suffix says) are :class:`ReaderError` raised by the reader itself and are never
skipped: skipping must not silently drop good records.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ase import Atoms

from atomgfm.data.readers.convert import (  # noqa: F401  (re-exported; calculators use them)
    CHARGE_KEYS,
    ENERGY_KEYS,
    FORCES_KEYS,
    SPIN_KEYS,
    STRESS_KEYS,
    atoms_to_structure,
    charge_and_spin,
)
from atomgfm.data.structure import Structure, StructureError, _where
from atomgfm.registry import register

ON_ERROR = ("raise", "skip")
STORAGE_EXTRA = "pip install 'atomgfm[storage]'"  # the extra with every optional file backend


class ReaderError(ValueError):
    """A file (or a record in it) could not be read; the message names the file."""


class RecordError(ReaderError):
    """One record could not be parsed; skippable. ``reason`` is the short skip-report key."""

    def __init__(self, message: str, reason: str = "parse error") -> None:
        super().__init__(message)
        self.reason = reason


class Omitted(RecordError):
    """A record the corpus itself leaves out of the chosen selection (ANI-1x's NaN energy for a
    level of theory not computed for that conformer, a Transition1x path frame that repeats the
    reactant): counted in the skip report under ``reason`` and never raised, whatever
    ``on_error`` says; it is not a broken file."""

    def __init__(self, message: str, reason: str = "label not computed") -> None:
        super().__init__(message, reason)


where = _where  # the location prefix every per-record message starts with (Structure's own)


def reason_for(exc: Exception) -> str:
    """The skip-report key of a skippable error."""
    return getattr(exc, "reason", "invalid structure")


def with_note(exc: StructureError | RecordError, note: str) -> StructureError | RecordError:
    """The same error (type and reason) with ``note`` appended, e.g. ``" (db row id 7)"``."""
    return type(exc)(f"{exc}{note}", exc.reason)


@dataclass
class SkipReport:
    """What a reader skipped: counts per reason and the first few examples."""

    source: str = ""
    n_records: int = 0  # records seen, good and skipped
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, int, str]] = field(default_factory=list)  # (file, index, message)
    max_examples: int = 5

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, index: int, reason: str, message: str, source: str | None = None) -> None:
        """Count one skipped record; ``source`` is its file when it differs from ``self.source``
        (a folder of files)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append((self.source if source is None else source, index, message))

    def __str__(self) -> str:
        head = f"skipped {self.total} of {self.n_records} records in {self.source or '<memory>'}"
        if not self.counts:
            return head
        parts = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return head + ": " + ", ".join(f"{n} {reason}" for reason, n in parts)


@dataclass
class ReadResult:
    structures: list[Structure]
    skipped: SkipReport

    def __len__(self) -> int:
        return len(self.structures)


@dataclass(frozen=True)
class ReadOptions:
    """Everything a registered reader needs besides the path (factors convert to eV / Å)."""

    dataset: str = ""
    energy_factor: float = 1.0
    length_factor: float = 1.0
    on_error: str = "raise"
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    # Reader-specific settings from a dataset spec (e.g. ANI-1x's ``energy_key``, MPtrj's
    # ``energy``); each reader lists the names it takes in ``ReaderSpec.options``.
    reader_options: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")

    def convert(self, atoms: Atoms, source: str, index: int) -> Structure:
        """One validated record, overlapping atoms included (what every reader's build calls)."""
        structure = atoms_to_structure(
            atoms, dataset=self.dataset, source=source, index=index,
            energy_factor=self.energy_factor, length_factor=self.length_factor,
            energy_key=self.energy_key, forces_key=self.forces_key, stress_key=self.stress_key,
        )
        structure.check_overlapping_atoms()
        return structure


# --- the reader spec that the registry holds --------------------------------------------------

Build = Callable[[], Structure]
Records = Iterator[tuple[int, Build]]
RecordsFn = Callable[[str, ReadOptions, "str | None"], Records]


@dataclass(frozen=True)
class ReaderSpec:
    """A registered reader: what it reads and the function that reads it.

    Attributes:
        name: registry name (``registry.get("reader", name)`` returns this spec).
        records: ``records(path, options, format)`` -> iterator of ``(index, build)``.
        formats: names accepted as ``format=``.
        suffixes: lower-case file suffixes (with the dot) this reader takes.
        requires: importable backend packages; reading without them names what to install.
        check: content test for a file with one of ``suffixes`` (e.g. JSON laid out as an ASE
            database); a file that fails it goes to the next reader listing the suffix.
        recognises: for files whose suffix no reader lists (``POSCAR``, ``OUTCAR``): True when
            this reader can tell the format from the name.
        generic: tried after every specific reader (the ``ase`` reader takes what ASE reads).
        folder_suffixes: the suffixes taken when scanning a folder (default: ``suffixes``); the
            ``ase`` reader leaves out generic ones such as ``.log``, ``.out``, ``.md``.
        options: the ``reader_options`` names this reader takes (others are an error).
    """

    name: str
    records: RecordsFn
    formats: tuple[str, ...]
    suffixes: tuple[str, ...]
    requires: tuple[str, ...] = ()
    check: Callable[[str], bool] | None = None
    recognises: Callable[[str], bool] | None = None
    generic: bool = False
    folder_suffixes: tuple[str, ...] | None = None
    options: tuple[str, ...] = ()

    def takes(self, path: str, suffix: str, in_folder: bool = False) -> bool:
        """Whether this reader takes ``path`` (whose lower-case suffix is ``suffix``)."""
        listed = self.folder_suffixes if in_folder and self.folder_suffixes else self.suffixes
        return suffix in listed and (self.check is None or self.check(path))

    def require(self, path: str) -> None:
        """Raise :class:`ReaderError` naming the package to install when a backend is missing."""
        for package in self.requires:
            try:
                importlib.import_module(package)
            except ImportError:
                raise ReaderError(
                    f"{path}: reading {self.name} files needs the Python package {package!r}, "
                    f"which is not installed: pip install {package} (or {STORAGE_EXTRA})"
                ) from None


def reader(
    name: str,
    *,
    formats: tuple[str, ...],
    suffixes: tuple[str, ...],
    requires: tuple[str, ...] = (),
    check: Callable[[str], bool] | None = None,
    recognises: Callable[[str], bool] | None = None,
    generic: bool = False,
    folder_suffixes: tuple[str, ...] | None = None,
    options: tuple[str, ...] = (),
) -> Callable[[RecordsFn], RecordsFn]:
    """Register ``records`` as the reader ``name`` (a :class:`ReaderSpec` in the registry)."""

    def deco(records: RecordsFn) -> RecordsFn:
        spec = ReaderSpec(name, records, tuple(formats), tuple(s.lower() for s in suffixes),
                          tuple(requires), check, recognises, generic, folder_suffixes,
                          tuple(options))
        register("reader", name)(spec)
        return records

    return deco
