"""Bridges between expsolver and other libraries, each an optional extra.

* :mod:`expsolver.integrations.diffusers` (``pip install expsolver[diffusers]``): expsolver's solvers as a
  diffusers scheduler, and diffusers' noise schedules and time grids as expsolver schedules and grids.

Importing this package imports none of them: each submodule imports its library when it is imported itself.
"""

__all__: list = []
