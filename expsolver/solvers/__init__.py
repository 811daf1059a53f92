"""Step rules and the registry of named solver configurations.

Every entry of :data:`REGISTRY` is a :class:`SolverConfig`: the literature's name, the ``sample()`` options that
select it, and its declared order. Order, NFE and parity tests are parametrised over the registry, so a new
solver registered here is covered by the existing tests. Each configuration runs with both
``algorithm_type="dpmsolver"`` (noise prediction) and ``"dpmsolver++"`` (data prediction).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import MultistepSolver, Solver, Step, multistep_orders, polynomial_terms, taylor_weights
from .deis import DEISMultistep
from .dpm_solver import (MULTISTEP_COEFFICIENTS, SOLVER_TYPES, DPMSolverFast, DPMSolverMultistep,
                         DPMSolverSinglestep, singlestep_fast_orders)
from .options import solver_from_options
from .sde import DDPMAncestral, EulerMaruyama, SDEDPMSolverMultistep
from .unipc import UNIPC_VARIANTS, UniPC

__all__ = ["Step", "Solver", "MultistepSolver", "multistep_orders", "DPMSolverSinglestep", "DPMSolverFast",
           "DPMSolverMultistep", "SOLVER_TYPES", "MULTISTEP_COEFFICIENTS", "SolverConfig", "REGISTRY", "register",
           "singlestep_fast_orders", "taylor_weights", "polynomial_terms", "UniPC", "UNIPC_VARIANTS",
           "DEISMultistep", "SDEDPMSolverMultistep", "EulerMaruyama", "DDPMAncestral", "solver_from_options"]


@dataclass(frozen=True)
class SolverConfig:
    """A named solver configuration: the literature's name and the :func:`expsolver.sample` options that select
    it. Its solver object is built from those options by :func:`~expsolver.solvers.options.solver_from_options`,
    the same translation ``sample()`` uses, so an entry cannot run another rule than its options name.

    Attributes
    ----------
    name : str
    options : dict
        Keyword options of :func:`expsolver.sample` that select it (``method``, ``order``, ``solver_type``, ...).
    note : str
    """

    name: str
    options: dict
    note: str = ""

    def make(self):
        """A new solver object of this configuration (for :func:`expsolver.integrate`, ``sample(solver=...)``,
        the convergence harness)."""
        return solver_from_options(**self.options)[0]

    @property
    def order(self) -> int:
        """The declared global order (the solver object's ``order``; 2 for the official third-order multistep,
        whose defect it documents)."""
        return self.make().order

    @property
    def kind(self) -> str:
        """``"multistep"`` for solvers that carry a history, else ``"singlestep"``."""
        return "multistep" if self.make().carries_history else "singlestep"


REGISTRY: dict[str, SolverConfig] = {}


def register(config: SolverConfig) -> SolverConfig:
    """Add ``config`` to :data:`REGISTRY` (``ValueError`` if its name is taken or its options select no solver);
    registered solvers are covered by the registry-driven order, NFE and parity tests."""
    if config.name in REGISTRY:
        raise ValueError(f"solver name {config.name!r} is already registered")
    config.make()  # options that select no solver fail here, not in a test later
    REGISTRY[config.name] = config
    return config


def _register_dpm_solvers():
    for k in (1, 2, 3):
        for solver_type in (("dpmsolver",) if k == 1 else SOLVER_TYPES):
            suffix = "" if solver_type == "dpmsolver" else "-taylor"
            register(SolverConfig(
                name=f"DPM-Solver-{k}" if k == 1 else f"DPM-Solver-{k}S{suffix}",
                options=dict(method="singlestep_fixed", order=k, solver_type=solver_type),
                note="DDIM" if k == 1 else ""))
    for k, solver_type in ((2, "dpmsolver"), (2, "taylor"), (3, "taylor"), (4, "taylor")):
        suffix = "-taylor" if (k == 2 and solver_type == "taylor") else ""
        register(SolverConfig(
            name=f"DPM-Solver-{k}M{suffix}",
            options=dict(method="multistep", order=k, solver_type=solver_type, lower_order_final=False),
            note="exponential Adams-Bashforth (exact integral of the interpolating polynomial)" if k > 2 else ""))
    register(SolverConfig(
        name="DPM-Solver-3M-official",
        options=dict(method="multistep", order=3, solver_type="dpmsolver", lower_order_final=False,
                     compat="official"),
        note="official third-order multistep: D2 is half the needed second difference, so only second order"))


_register_dpm_solvers()


def _register_unipc_and_deis():
    """UniPC (Zhao et al. 2023): UniP-p alone is of order p, UniP-p + UniC of order p + 1 (``rule.update`` applies
    the corrector with one extra model call, so a one-step local error has order ``order + 1`` for both). DEIS tAB-r
    (Zhang & Chen 2023) interpolates r + 1 values in t: order r + 1."""
    for p, variant, corrector in ((1, "bh2", True), (2, "bh1", True), (2, "bh2", True), (3, "bh1", True),
                                  (3, "bh2", True), (2, "bh1", False), (3, "bh2", False)):
        register(SolverConfig(
            name=f"UniPC-{p}-{variant}" if corrector else f"UniP-{p}-{variant}",
            options=dict(method="unipc", order=p, variant=variant, use_corrector=corrector, lower_order_final=False),
            note=f"UniP-{p} predictor + UniC-{p} corrector" if corrector else f"UniP-{p} predictor only"))
    # tAB3 (order 4, ``method="deis", order=4``) works, but in the noise form its error reaches the asymptotic
    # slope only below h ~ 0.02 (like DPM-Solver-4M), which the registry's fitted windows do not resolve.
    for r in (1, 2):
        register(SolverConfig(
            name=f"DEIS-tAB{r}",
            options=dict(method="deis", order=r + 1, lower_order_final=False),
            note="Lagrange interpolation in t, weights by Gauss-Legendre quadrature"))


_register_unipc_and_deis()
