"""Molecular dynamics with any ASE calculator (normally :class:`atomgfm.Calculator`).

    from atomgfm.simulate.md import MDSettings, run_md
    result = run_md(atoms, MDSettings(ensemble="nve", steps=1000, temperature_K=300),
                    trajectory="md.traj", log="md.jsonl")
    print(result.message, result.drift_meV_atom_ps)

Ensembles: ``nve`` (velocity Verlet), ``nvt`` (Langevin), ``npt`` (ASE's isotropic
Martyna-Tobias-Klein barostat with Nosé-Hoover chains, ``IsotropicMTKNPT``; needs stress, so a
fully periodic cell). Every ``log_every`` steps a record goes to the log: step, time (fs),
potential, kinetic and total energy (eV), temperature (K), total-energy change since the start
(meV/atom), uncertainty (eV/Å), head, shortest distance (Å). The stop rules
(:class:`~atomgfm.simulate.monitors.StopRules`) are checked every step.

Resumable: with ``resume=True`` and an existing trajectory, the run continues from its last
frame (positions, momenta, cell; the step is stored in the frame) and the log is cut back to that
step. NVE continues exactly; the Langevin and NPT thermostat states restart from fresh random
numbers (seed + step) and zero thermostat momenta.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units
from tqdm.auto import tqdm

from atomgfm.simulate.monitors import (
    RunLog,
    StopRules,
    drift_rate,
    observe,
    read_log,
    truncate_log,
)
from atomgfm.simulate.trajectory import open_trajectory, resume_frame

logger = logging.getLogger(__name__)

ENSEMBLES = ("nve", "nvt", "npt")
MD_FIELDS = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K",
             "etot_change_meV_atom", "uncertainty", "min_distance_A", "volume_A3", "head"]


@dataclass
class MDSettings:
    """Attributes:
        ensemble: nve | nvt | npt.
        steps: number of MD steps (in total, counting steps done before a resume).
        timestep_fs: fs.
        temperature_K: initial Maxwell-Boltzmann temperature (all ensembles) and thermostat
            target (nvt, npt), K. 0 keeps the atoms' own momenta.
        friction_per_fs: Langevin friction, 1/fs.
        pressure_GPa: npt target pressure, GPa.
        tdamp_fs, pdamp_fs: npt thermostat and barostat time scales, fs.
        seed: random seed of initial velocities and of the Langevin noise.
        log_every, traj_every: steps between log records and between trajectory frames.
        stop: early-stop rules.
    """

    ensemble: str = "nve"
    steps: int = 1000
    timestep_fs: float = 1.0
    temperature_K: float = 300.0
    friction_per_fs: float = 0.01
    pressure_GPa: float = 0.0
    tdamp_fs: float = 100.0
    pdamp_fs: float = 1000.0
    seed: int = 0
    log_every: int = 10
    traj_every: int = 10
    stop: StopRules = field(default_factory=StopRules)

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        for name in ("steps", "log_every", "traj_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep_fs must be positive, got {self.timestep_fs}")
        if self.temperature_K < 0:
            raise ValueError(f"temperature_K must be >= 0, got {self.temperature_K}")


@dataclass
class MDResult:
    """What a run did: steps completed, the stop message (None if it ran to the end), NVE drift
    (least-squares slope of total energy, meV/atom/ps) and largest |ΔE_tot| (meV/atom)."""

    steps: int
    stopped: str | None
    drift_meV_atom_ps: float
    max_etot_change_meV_atom: float
    mean_temperature_K: float
    records: list[dict]

    @property
    def message(self) -> str:
        if self.stopped:
            return self.stopped
        return (f"{self.steps} steps; total-energy drift {self.drift_meV_atom_ps:.4g} "
                f"meV/atom/ps, largest change {self.max_etot_change_meV_atom:.4g} meV/atom, "
                f"mean temperature {self.mean_temperature_K:.1f} K")


def _dynamics(atoms, s: MDSettings, start_step: int):
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT
    from ase.md.verlet import VelocityVerlet

    dt = s.timestep_fs * units.fs
    if s.ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if s.ensemble == "nvt":
        return Langevin(atoms, timestep=dt, temperature_K=s.temperature_K,
                        friction=s.friction_per_fs / units.fs,
                        rng=np.random.default_rng(s.seed + start_step))
    if not atoms.pbc.all():
        raise ValueError("npt needs a cell periodic in all three directions")
    return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=s.temperature_K,
                           pressure_au=s.pressure_GPa * units.GPa, tdamp=s.tdamp_fs * units.fs,
                           pdamp=s.pdamp_fs * units.fs)


def _resume_from(atoms, trajectory: Path | None, log_path: Path | None) -> tuple[int, float | None]:
    """Load the last frame of ``trajectory`` into ``atoms``: the step it was written at, and the
    total energy of the run's first logged step (None without a log)."""
    last = resume_frame(atoms, trajectory)
    if last is None:
        return 0, None
    atoms.set_momenta(last.get_momenta())
    step = int(last.info.get("md_step", 0))
    etot0 = None
    if log_path is not None and log_path.exists():
        truncate_log(log_path, step)
        records = read_log(log_path)
        etot0 = records[0]["etot_eV"] if records else None
    return step, etot0


def run_md(atoms, settings: MDSettings, trajectory: str | Path | None = None,
           log: str | Path | None = None, progress: bool = True,
           resume: bool = False) -> MDResult:
    """Run MD on ``atoms`` (its ``calc`` set); see the module docstring."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    s = settings
    if atoms.calc is None:
        raise ValueError("atoms has no calculator: set atoms.calc first")
    traj_path = Path(trajectory) if trajectory else None
    log_path = Path(log) if log else None
    start, etot0 = _resume_from(atoms, traj_path, log_path) if resume else (0, None)
    if start == 0 and s.temperature_K > 0:
        MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_K,
                                     rng=np.random.default_rng(s.seed))
        Stationary(atoms)
        if not atoms.pbc.any():
            ZeroRotation(atoms)
    dyn = _dynamics(atoms, s, start)
    traj = open_trajectory(traj_path, atoms, append=bool(start))
    runlog = RunLog(log_path, MD_FIELDS, append=bool(start))
    n = len(atoms)
    records: list[dict] = []
    stopped = None
    bar = tqdm(total=s.steps, initial=start, desc=f"md {s.ensemble}", disable=not progress,
               unit="step")
    try:
        for k, _ in enumerate(dyn.irun(steps=s.steps - start)):
            step = start + k
            rec = observe(atoms)
            ekin = float(atoms.get_kinetic_energy())
            rec.update(step=step, time_fs=step * s.timestep_fs, ekin_eV=ekin,
                       etot_eV=rec["epot_eV"] + ekin,
                       temperature_K=float(atoms.get_temperature()),
                       volume_A3=float(atoms.get_volume()) if atoms.pbc.all() else None)
            if etot0 is None:
                etot0 = rec["etot_eV"]
            rec["etot_change_meV_atom"] = 1000.0 * (rec["etot_eV"] - etot0) / n
            stopped = s.stop.check(rec)
            if step % s.log_every == 0 or stopped or step == s.steps:
                records.append(rec)
                if not (start and step == start):  # already in the log
                    runlog.write(rec)
                bar.set_postfix(T=f"{rec['temperature_K']:.0f}K",
                                dE=f"{rec['etot_change_meV_atom']:.3g}meV/at",
                                unc=("-" if rec["uncertainty"] is None
                                     else f"{rec['uncertainty']:.3g}"), refresh=False)
            if traj is not None and (step % s.traj_every == 0 or stopped or step == s.steps):
                if not (start and step == start):  # that frame is already the file's last
                    atoms.info["md_step"] = step
                    traj.write(atoms)
            if step > start:
                bar.update(1)
            if stopped:
                logger.warning(stopped)
                break
    finally:
        bar.close()
        runlog.close()
        if traj is not None:
            traj.close()
    t = np.array([r["time_fs"] for r in records]) / 1000.0
    e = np.array([r["etot_eV"] for r in records]) / n
    change = np.abs(np.array([r["etot_change_meV_atom"] for r in records]))
    done = records[-1]["step"] if records else start
    return MDResult(done, stopped, drift_rate(t, e), float(change.max()) if len(change) else 0.0,
                    float(np.mean([r["temperature_K"] for r in records])) if records else 0.0,
                    records)
