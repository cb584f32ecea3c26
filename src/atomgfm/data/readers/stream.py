"""Dispatch and lazy reading: ``reader_for``, ``iter_structures``, ``read_structures``.

Which reader takes a file is generated from the specs in the registry (their ``formats``,
``suffixes`` and checks), never from a hand-kept table: a new reader module registers itself and
is found.

    stream = iter_structures("omat24/train/rattled-relax", dataset="omat", on_error="skip")
    for s in stream:            # one validated Structure at a time
        ...
    print(stream.skipped)       # filled as records go by; complete once the stream is exhausted
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from atomgfm import registry
from atomgfm.data.readers.base import (
    Omitted,
    ReaderError,
    ReaderSpec,
    ReadOptions,
    ReadResult,
    RecordError,
    SkipReport,
    reason_for,
)
from atomgfm.data.structure import Structure, StructureError
from atomgfm.units import energy_factor, length_factor

logger = logging.getLogger(__name__)

_SHOWN = 8  # suffixes shown per reader in "unsupported file" errors


def reader_specs() -> list[ReaderSpec]:
    """Registered readers, specific ones first (by name), then generic ones."""
    specs = [registry.get("reader", name) for name in registry.names("reader")]
    return sorted(specs, key=lambda s: (s.generic, s.name))


def _some(items: tuple[str, ...]) -> str:
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f", +{more} more" if more > 0 else "")


def supported(what: str = "suffixes") -> str:
    """One line naming every reader with its ``suffixes``, ``folder_suffixes`` or ``formats``,
    for error messages."""
    return "; ".join(f"{spec.name} ({_some(getattr(spec, what) or spec.suffixes)})"
                     for spec in reader_specs())


def _spec_for(path: str, format: str | None) -> ReaderSpec:
    specs = reader_specs()
    if format is not None:
        for spec in specs:
            if format in spec.formats:
                return spec
        raise ReaderError(f"{path}: unknown format {format!r}; formats: {supported('formats')}")
    suffix = Path(path).suffix.lower()
    for spec in specs:
        if spec.takes(path, suffix):
            return spec
    for spec in specs:
        if spec.recognises is not None and spec.recognises(path):
            return spec
    raise ReaderError(f"{path}: unsupported file (suffix {suffix or 'none'!r}); supported: "
                      f"{supported()}; or pass format=")


def reader_for(path: str | os.PathLike, format: str | None = None) -> str:
    """Name of the registered reader that takes ``path`` (by ``format`` or by suffix)."""
    return _spec_for(os.fspath(path), format).name


def _folder_files(folder: str, format: str | None) -> list[tuple[str, ReaderSpec]]:
    """Files directly in ``folder`` (sorted, hidden ones left out) that a reader takes by suffix
    (its ``folder_suffixes``); with ``format=``, those of that format's reader only."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    files = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
    specs = [_spec_for(folder, format)] if format is not None else reader_specs()
    taken = []
    for f in files:
        suffix = Path(f).suffix.lower()
        spec = next((s for s in specs if s.takes(f, suffix, in_folder=True)), None)
        if spec is not None:
            taken.append((f, spec))
    if not taken:
        raise ReaderError(f"{folder}: a folder with no file a reader takes; supported: "
                          f"{supported('folder_suffixes')}")
    ignored = sorted(set(files) - {f for f, _ in taken})
    if ignored:
        logger.info("%s: reading %d files, ignoring %d others (%s)", folder, len(taken),
                    len(ignored), ", ".join(os.path.basename(f) for f in ignored[:5]))
    return taken


class StructureStream(Iterator[Structure]):
    """Validated :class:`Structure` records of a file or folder, built one at a time.

    Attributes:
        source: the path given (a file or a folder).
        files: the files read, in order.
        skipped: :class:`SkipReport`, filled as records go by; complete once exhausted.

    With ``on_error="raise"`` the first bad record raises when it is reached; with ``"skip"`` it
    is counted in ``skipped``. When the stream ends it raises :class:`ReaderError` if there were
    no records at all, if every record was skipped, or if a label key the caller named was found
    in no record. Close it (or use ``with``) to release an open file early.
    """

    def __init__(self, source: str, files: list[tuple[str, ReaderSpec]], options: ReadOptions,
                 format: str | None) -> None:
        self.source = source
        self.files = [f for f, _ in files]
        self.skipped = SkipReport(source=source)
        self._gen = self._run(files, options, format, os.path.isdir(source))

    def __iter__(self) -> StructureStream:
        return self

    def __next__(self) -> Structure:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> StructureStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, files, options: ReadOptions, format, folder: bool) -> Iterator[Structure]:
        report = self.skipped
        n_good = 0
        labels = {"energy": False, "forces": False, "stress": False}
        for path, spec in files:
            before = report.n_records
            if folder and os.path.getsize(path) == 0:
                logger.warning("%s: empty file, no records (in folder %s)", path, self.source)
                continue
            records = spec.records(path, options, format)
            try:
                for index, build in records:
                    report.n_records += 1
                    try:
                        structure = build()
                    except (StructureError, RecordError) as exc:
                        if options.on_error == "raise" and not isinstance(exc, Omitted):
                            raise
                        report.add(index, reason_for(exc), str(exc), source=path)
                        continue
                    n_good += 1
                    for name, seen in labels.items():
                        labels[name] = seen or getattr(structure, name) is not None
                    yield structure
            finally:  # release the file now (an LMDB environment, an open text file)
                close = getattr(records, "close", None)
                if close is not None:
                    close()
            if report.n_records == before and folder:
                logger.warning("%s: no records (in folder %s)", path, self.source)
        if report.n_records == 0:
            where = (f"{self.source}: no records in any of its {len(files)} files" if folder
                     else f"{self.source}: empty file, no records")
            raise ReaderError(f"{where} (nothing the reader recognises as a structure; "
                              "wrong format?)")
        if n_good == 0:
            examples = "; ".join(msg for _, _, msg in report.examples)
            raise ReaderError(f"{self.source}: every record was skipped ({report}). "
                              f"First: {examples}")
        for name, key in (("energy", options.energy_key), ("forces", options.forces_key),
                          ("stress", options.stress_key)):
            if key is not None and not labels[name]:  # a typo, not a dataset without labels
                raise ReaderError(f"{self.source}: {name}_key={key!r} was not found in any record")


def iter_structures(
    path: str | os.PathLike,
    *,
    dataset: str = "",
    format: str | None = None,
    energy_unit: str = "eV",
    length_unit: str = "Å",
    on_error: str = "raise",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    reader_options: dict | None = None,
) -> StructureStream:
    """Validated ``Structure`` records of ``path`` in eV / Å / e, read lazily.

    ``path`` is a file, or a folder whose files (sorted by name, not recursive) are read in turn,
    each by the reader its suffix selects (``format=`` restricts them to that format); other
    files in the folder are ignored. Released OMat24/OMol25 splits are such folders of
    ``.aselmdb`` files. Arguments are those of :func:`read_structures`. Problems found before
    any record is read (missing path, unsupported file, missing backend package, empty file,
    an unknown reader option) raise here; the rest as the stream reaches them (see
    :class:`StructureStream`).
    """
    extra = dict(reader_options or {})
    keys = {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
    for name in keys:  # label keys may come from the dataset spec's reader_options too
        if name in extra:
            value = extra.pop(name)
            if keys[name] is not None and keys[name] != value:
                raise ReaderError(f"{os.fspath(path)}: {name} given twice ({keys[name]!r} and "
                                  f"reader_options {value!r})")
            keys[name] = value
    energy_key, forces_key, stress_key = keys.values()
    options = ReadOptions(
        dataset=dataset,
        energy_factor=energy_factor(energy_unit),
        length_factor=length_factor(length_unit),
        on_error=on_error,
        energy_key=energy_key,
        forces_key=forces_key,
        stress_key=stress_key,
        reader_options=extra,
    )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        files = _folder_files(path, format)
    else:
        if os.path.getsize(path) == 0:
            raise ReaderError(f"{path}: empty file, no records")
        files = [(path, _spec_for(path, format))]
    for spec in {spec.name: spec for _, spec in files}.values():
        spec.require(path)
        unknown = sorted(set(extra) - set(spec.options))
        if unknown:
            allowed = sorted({*spec.options, *keys})
            raise ReaderError(f"{path}: unknown reader option(s) {unknown} for reader "
                              f"{spec.name!r}; it takes {allowed}")
    return StructureStream(path, files, options, format)


def read_structures(
    path: str | os.PathLike,
    *,
    dataset: str = "",
    format: str | None = None,
    energy_unit: str = "eV",
    length_unit: str = "Å",
    on_error: str = "raise",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    reader_options: dict | None = None,
) -> ReadResult:
    """Read every record of ``path`` (a file or a folder) into validated ``Structure`` records.

    ``energy_unit`` / ``length_unit`` are the file's units (see ``atomgfm.units``); forces are
    converted by energy/length and stress by energy/length³. ``on_error="skip"`` drops records
    that fail to parse or validate and counts them in ``result.skipped``; errors that make the
    rest of a file unreachable are raised either way. ``*_key`` names the label in
    ``atoms.info`` / ``atoms.arrays`` (e.g. ``"REF_energy"``); by default ``energy``,
    ``REF_energy``, ``total_energy`` (forces: ``forces``, ``REF_forces``; stress: ``stress``,
    ``REF_stress``) are tried and more than one present in a record is an error.
    ``reader_options`` are the reader's own settings (``ReaderSpec.options``; the label keys
    may be given there too); an unknown one is an error naming it. This is
    ``list(iter_structures(...))`` with its skip report.
    """
    stream = iter_structures(path, dataset=dataset, format=format, energy_unit=energy_unit,
                             length_unit=length_unit, on_error=on_error, energy_key=energy_key,
                             forces_key=forces_key, stress_key=stress_key,
                             reader_options=reader_options)
    with stream:
        structures = list(stream)
    return ReadResult(structures, stream.skipped)
