"""atomgfm: multi-task atomistic graph foundation models.

One shared message-passing backbone, one energy head per dataset (level of theory), forces and
stress as exact autograd derivatives. See ``docs/`` and ``DESIGN.md`` for the data flow.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Calculator", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import atomgfm` stays cheap (no ASE calculator machinery until asked).
    if name == "Calculator":
        from atomgfm.calculators.ase_calculator import Calculator

        return Calculator
    raise AttributeError(name)
