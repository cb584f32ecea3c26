"""Geometry (and cell) relaxation with any ASE calculator (normally :class:`atomgfm.Calculator`).

    from atomgfm.simulate.relax import RelaxSettings, run_relax
    result = run_relax(atoms, RelaxSettings(optimizer="fire", fmax=0.02, cell=True))
    print(result.message)

Optimisers: ``fire`` or ``bfgs`` (ASE). With ``cell=True`` the cell relaxes too, through ASE's
``FrechetCellFilter`` (at ``pressure_GPa``); convergence is then on the filter's generalised
forces, which include the stress. Each step is logged (energy, largest atomic force, largest
stress component, uncertainty, shortest distance) and the stop rules are checked.

Resumable: with ``resume=True`` and an existing trajectory the run restarts from its last frame
(positions and cell; the optimiser's memory starts afresh).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units
from tqdm.auto import tqdm

from atomgfm.simulate.monitors import RunLog, StopRules, observe
from atomgfm.simulate.trajectory import open_trajectory, resume_frame

logger = logging.getLogger(__name__)

OPTIMIZERS = ("fire", "bfgs")
RELAX_FIELDS = ["step", "epot_eV", "fmax_eV_A", "max_stress_GPa", "volume_A3", "uncertainty",
                "min_distance_A", "head"]


@dataclass
class RelaxSettings:
    """Attributes:
        optimizer: fire | bfgs.
        fmax: convergence threshold on the largest force, eV/Å (with ``cell``: the filter's
            generalised forces, which include the stress times the volume per atom).
        steps: most optimiser steps.
        cell: relax the cell too (FrechetCellFilter); needs a fully periodic structure.
        pressure_GPa: external pressure for the cell relaxation, GPa.
        stop: early-stop rules.
    """

    optimizer: str = "fire"
    fmax: float = 0.05
    steps: int = 500
    cell: bool = False
    pressure_GPa: float = 0.0
    stop: StopRules = field(default_factory=StopRules)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.fmax > 0:
            raise ValueError(f"fmax must be positive, got {self.fmax}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


@dataclass
class RelaxResult:
    """Outcome: converged, steps taken, final energy (eV), largest atomic force (eV/Å), largest
    stress component (GPa, periodic only), the stop message if stopped early."""

    converged: bool
    steps: int
    energy_eV: float
    fmax_eV_A: float
    max_stress_GPa: float | None
    stopped: str | None
    records: list[dict]

    @property
    def message(self) -> str:
        if self.stopped:
            return self.stopped
        stress = ("" if self.max_stress_GPa is None
                  else f", largest stress component {self.max_stress_GPa:.3g} GPa")
        state = "converged" if self.converged else "NOT converged"
        return (f"{state} after {self.steps} steps: energy {self.energy_eV:.6f} eV, largest "
                f"force {self.fmax_eV_A:.3g} eV/Å{stress}")


def run_relax(atoms, settings: RelaxSettings, trajectory: str | Path | None = None,
              log: str | Path | None = None, progress: bool = True,
              resume: bool = False) -> RelaxResult:
    """Relax ``atoms`` (its ``calc`` set) in place; see the module docstring."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE

    s = settings
    if atoms.calc is None:
        raise ValueError("atoms has no calculator: set atoms.calc first")
    periodic = bool(atoms.pbc.all())
    if s.cell and not periodic:
        raise ValueError("cell relaxation needs a structure periodic in all three directions")
    traj_path = Path(trajectory) if trajectory else None
    if resume:
        resume_frame(atoms, traj_path)
    target = (FrechetCellFilter(atoms, scalar_pressure=s.pressure_GPa * units.GPa)
              if s.cell else atoms)
    opt = (FIRE if s.optimizer == "fire" else BFGS)(target, logfile=None)
    traj = open_trajectory(traj_path, atoms, append=resume)
    runlog = RunLog(log, RELAX_FIELDS, append=resume)
    records: list[dict] = []
    stopped, converged, step = None, False, 0
    bar = tqdm(total=s.steps, desc=f"relax {s.optimizer}", disable=not progress, unit="step")
    try:
        for step, conv in enumerate(opt.irun(fmax=s.fmax, steps=s.steps)):
            converged = bool(conv)
            rec = observe(atoms)
            rec.update(step=step, fmax_eV_A=float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
                       max_stress_GPa=(float(np.abs(atoms.get_stress()).max() / units.GPa)
                                       if periodic else None),
                       volume_A3=float(atoms.get_volume()) if periodic else None)
            stopped = s.stop.check(rec)
            records.append(rec)
            runlog.write(rec)
            if traj is not None:
                traj.write(atoms)
            bar.set_postfix(E=f"{rec['epot_eV']:.4f}", fmax=f"{rec['fmax_eV_A']:.3g}",
                            refresh=False)
            if step:
                bar.update(1)
            if stopped:
                logger.warning(stopped)
                break
    finally:
        bar.close()
        runlog.close()
        if traj is not None:
            traj.close()
    last = records[-1]
    return RelaxResult(converged and not stopped, step, last["epot_eV"], last["fmax_eV_A"],
                       last["max_stress_GPa"], stopped, records)
