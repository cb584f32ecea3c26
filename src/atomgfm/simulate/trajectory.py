"""The trajectory file of an MD run or a relaxation: resuming from its last frame, and opening it
for writing (afresh, or appending to a resumed run)."""

from __future__ import annotations

from pathlib import Path


def resume_frame(atoms, trajectory: Path | None):
    """Load the last frame of ``trajectory`` into ``atoms`` (cell and positions) and return that
    frame; None, leaving ``atoms`` as it is, when there is no trajectory or it holds no frame.

    Raises:
        ValueError: the frame's atoms differ from ``atoms`` (count or elements).
    """
    from ase.io.trajectory import Trajectory

    if trajectory is None or not trajectory.exists() or not trajectory.stat().st_size:
        return None
    with Trajectory(str(trajectory)) as tr:
        if not len(tr):
            return None
        last = tr[-1]
    if len(last) != len(atoms) or (last.numbers != atoms.numbers).any():
        raise ValueError(f"{trajectory}: its atoms differ from the input structure; cannot "
                         "resume (choose another trajectory or drop --resume)")
    atoms.set_cell(last.cell)
    atoms.set_positions(last.positions)
    return last


def open_trajectory(path: Path | None, atoms, append: bool):
    """An ASE ``Trajectory`` of ``atoms`` at ``path`` (its folder made), appended to when
    ``append``, else written afresh; None without a path."""
    from ase.io.trajectory import Trajectory

    if not path:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return Trajectory(str(path), "a" if append else "w", atoms)
