"""Reader ``spice``: the SPICE HDF5 release (``SPICE-2.0.1.hdf5`` and earlier versions).

Layout, as SPICE's ``createSpice.py`` writes it: one top-level group per molecule (named by its
SMILES or a label such as ``[br-]``), each holding

- ``smiles`` (1,) string: the **mapped** SMILES (``[C:1]([H:4])…``), atom ``i`` is map number
  ``i + 1``;
- ``subset`` (1,) string: the source subset (``SPICE PubChem Set 1 Single Points Dataset v1.3``),
  kept as ``info["subset"]``;
- ``atomic_numbers`` (n_atoms,) int16;
- ``conformations`` (n_conf, n_atoms, 3) float32, attribute ``units = "bohr"``;
- ``dft_total_energy`` (n_conf,), ``units = "hartree"``; ``dft_total_gradient`` (n_conf, n_atoms,
  3), ``units = "hartree/bohr"``, the **gradient** dE/dR (forces are its negative); plus
  ``formation_energy``, ``mbis_charges``, … (not read).

SPICE has no charge field: the total charge is the sum of the formal charges of the mapped
SMILES's bracket atoms (``[N+:3]``, ``[O-:7]``, ``[Ca+2:1]``, ``[Fe++]``), parsed here. When the
SMILES is fully mapped, its atom count and each map number's element are checked against
``atomic_numbers``, so a charge is never taken from the wrong molecule. SPICE molecules are closed
shell (its builder rejects radicals), so the multiplicity is 1 unless ``multiplicity`` says
otherwise (0 = not given); an impossible charge/multiplicity is a record error.

Reader options: ``energy_key`` (default ``dft_total_energy``), ``gradient_key`` (default
``dft_total_gradient``; ``null`` for no forces), ``multiplicity`` (default 1). A ``units``
attribute other than the ones above is an error.
"""

from __future__ import annotations

import re
from functools import partial

import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z

from atomgfm.data.readers.base import ReaderError, ReadOptions, Records, reader
from atomgfm.data.readers.corpus import (
    fail_all,
    h5_dataset,
    h5_frame_count,
    h5_peek,
    make_structure,
    native_factors,
    open_h5,
    reader_option,
)

UNITS = {"conformations": "bohr", "energy": "hartree", "gradient": "hartree/bohr"}
_BRACKET = re.compile(r"\[([^\]]*)\]")
_ATOM = re.compile(r"^(\d*)(\*|[A-Z][a-z]?|se|as|te|[bcnops])")
_CHARGE = re.compile(r"([+-]+)(\d*)$")
_MAP = re.compile(r":(\d+)$")


def is_spice_file(path: str) -> bool:
    """An HDF5 file whose first group has ``conformations`` and ``smiles``."""
    peek = h5_peek(path)
    return peek is not None and {"conformations", "smiles"} <= set(peek[1])


def smiles_charge(smiles: str) -> tuple[int, dict[int, str], int]:
    """Total formal charge of a (mapped) SMILES, its ``{map number: element}``, and its number of
    bracket atoms.

    Only bracket atoms carry a charge in SMILES; organic-subset atoms outside brackets are
    neutral. Charges are ``+``, ``-``, ``+n``, ``-n`` or repeated signs (``++``).

    Raises:
        ValueError: an unreadable bracket atom, or a repeated map number.
    """
    total, mapped, n_bracket = 0, {}, 0
    for content in _BRACKET.findall(smiles):
        n_bracket += 1
        body = content
        m = _MAP.search(body)
        if m:
            body = body[: m.start()]
        atom = _ATOM.match(body)
        if atom is None:
            raise ValueError(f"unreadable bracket atom [{content}]")
        c = _CHARGE.search(body)
        if c:
            signs, digits = c.groups()
            if len(set(signs)) != 1 or (digits and len(signs) != 1):
                raise ValueError(f"unreadable charge in [{content}]")
            total += (1 if signs[0] == "+" else -1) * (int(digits) if digits else len(signs))
        if m:
            number = int(m.group(1))
            if number in mapped:
                raise ValueError(f"map number {number} used twice")
            symbol = atom.group(2)
            mapped[number] = symbol if symbol[0].isupper() else symbol.capitalize()
    return total, mapped, n_bracket


@reader("spice", formats=("spice",), suffixes=(".hdf5", ".h5"), requires=("h5py",),
        check=is_spice_file, options=("gradient_key", "multiplicity"))
def spice_records(path: str, options: ReadOptions, format: str | None = None) -> Records:
    """Records of a SPICE-layout HDF5 file, molecule by molecule, conformer by conformer."""
    import h5py

    path = str(path)
    if options.forces_key is not None:
        raise ReaderError(f"{path}: SPICE stores gradients, not forces: name the dataset with "
                          "reader option gradient_key, not forces_key")
    ef, lf = native_factors(path, options, "SPICE", "Hartree", "Bohr")
    energy_key = options.energy_key or "dft_total_energy"
    gradient_key = reader_option(path, options, "gradient_key", "dft_total_gradient",
                                 (str, type(None)))
    multiplicity = reader_option(path, options, "multiplicity", 1, int)
    with open_h5(path) as f:
        index = 0
        for name in f:
            grp = f[name]
            note = f" (group /{name})"
            n_conf = h5_frame_count(grp, "conformations")
            try:
                mol = _molecule(grp, energy_key, gradient_key, h5py)
            except ValueError as exc:
                yield from fail_all(path, index, n_conf, note, str(exc), "malformed group")
                index += n_conf
                continue
            for k in range(len(mol["energy"])):
                yield index, partial(_build, path, index, f" (group /{name}, conformation {k})",
                                     mol, k, ef, lf, multiplicity, options.dataset)
                index += 1


def _text(value) -> str:
    value = np.asarray(value).reshape(-1)
    if value.size != 1:
        raise ValueError(f"expected one string, found {value.size}")
    v = value[0]
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _units(grp, key: str, expected: str) -> None:
    unit = grp[key].attrs.get("units")
    if unit is not None:
        unit = unit.decode() if isinstance(unit, bytes) else str(unit)
        if unit.lower() != expected:
            raise ValueError(f"{key} has units {unit!r}; SPICE files use {expected!r}")


def _molecule(grp, energy_key: str, gradient_key: str | None, h5py) -> dict:
    if not isinstance(grp, h5py.Group):
        raise ValueError("a top-level dataset; SPICE files hold one group per molecule")
    numbers = h5_dataset(grp, "atomic_numbers", 1)
    conf = h5_dataset(grp, "conformations", 3)
    n_conf, n = conf.shape[0], len(numbers)
    if conf.shape[1:] != (n, 3):
        raise ValueError(f"conformations have shape {conf.shape}, expected (n_conf, {n}, 3)")
    energy = h5_dataset(grp, energy_key, 1)
    if energy.shape != (n_conf,):
        raise ValueError(f"{energy_key} has shape {energy.shape}, expected ({n_conf},)")
    _units(grp, "conformations", UNITS["conformations"])
    _units(grp, energy_key, UNITS["energy"])
    gradient = None
    if gradient_key is not None:
        gradient = h5_dataset(grp, gradient_key, 3)
        if gradient.shape != conf.shape:
            raise ValueError(f"{gradient_key} has shape {gradient.shape}, expected {conf.shape}")
        _units(grp, gradient_key, UNITS["gradient"])
    smiles = _text(h5_dataset(grp, "smiles"))
    try:
        charge, mapped, n_bracket = smiles_charge(smiles)
    except ValueError as exc:
        raise ValueError(f"smiles {smiles!r}: {exc}") from None
    if mapped and len(mapped) == n_bracket:  # fully mapped: check it describes these atoms
        if sorted(mapped) != list(range(1, n + 1)):
            raise ValueError(f"smiles {smiles!r} maps {len(mapped)} atoms, atomic_numbers has {n}")
        for number, symbol in mapped.items():
            z = SYMBOL_TO_Z.get(symbol)
            if z != int(numbers[number - 1]):
                raise ValueError(f"smiles {smiles!r}: map number {number} is {symbol} but "
                                 f"atomic_numbers[{number - 1}] is {int(numbers[number - 1])}")
    subset = _text(h5_dataset(grp, "subset")) if "subset" in grp else ""
    return {"numbers": numbers, "conf": conf, "energy": energy, "gradient": gradient,
            "charge": charge, "smiles": smiles, "subset": subset}


def _build(path, index, note, mol, k, ef, lf, multiplicity, dataset):
    g = mol["gradient"]
    return make_structure(
        path, index, note, numbers=mol["numbers"],
        positions=np.asarray(mol["conf"][k], np.float64) * lf,
        energy=float(mol["energy"][k]) * ef,
        forces=None if g is None else -np.asarray(g[k], np.float64) * (ef / lf),
        charge=float(mol["charge"]), spin=float(multiplicity), dataset=dataset,
        info={"smiles": mol["smiles"], "subset": mol["subset"]})
