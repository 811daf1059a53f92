"""The official option names of :func:`expsolver.sample` -> a solver object: the one place where solver strings
are resolved. :func:`expsolver.sample` and the registry (:data:`expsolver.solvers.REGISTRY`) both build their
solvers here, so a registry entry cannot run another rule than its options name.
"""

from __future__ import annotations

from .._validation import check_choice
from ..stepsize import AdaptiveController
from .deis import DEISMultistep
from .dpm_solver import DPMSolverFast, DPMSolverMultistep, DPMSolverSinglestep
from .sde import SDE_ALGORITHM_TYPES, DDPMAncestral, EulerMaruyama, SDEDPMSolverMultistep
from .unipc import UniPC

__all__ = ["solver_from_options", "METHODS", "SDE_SCHEMES", "OFFICIAL_LOWER_ORDER_FINAL_STEPS"]

#: The ``method`` values of :func:`expsolver.sample`.
METHODS = ("singlestep", "multistep", "singlestep_fixed", "adaptive", "unipc", "deis")
#: The ``scheme`` values of :func:`expsolver.reverse_sde_sample` and their solvers.
SDE_SCHEMES = {"euler_maruyama": EulerMaruyama, "ddpm_ancestral": DDPMAncestral}
#: Official DPM-Solver applies ``lower_order_final`` only below this many steps (its docstring says 15).
OFFICIAL_LOWER_ORDER_FINAL_STEPS = 10


def solver_from_options(method: str, order: int, solver_type: str = "dpmsolver", *, compat=None,
                        lower_order_final: bool = True, skip_type=None, variant=None, use_corrector=None,
                        algorithm_type: str = "dpmsolver++", noise=None, atol=0.0078, rtol=0.05, h_init=0.05,
                        theta=0.9, t_err=1e-5, t_start=None, t_end=None):
    """The solver object of an official option set (validated by :func:`expsolver.sample`): the only place where option
    strings become solvers.

    Returns ``(solver, controller)``; ``controller`` is an :class:`~expsolver.AdaptiveController` for
    ``method="adaptive"`` (then ``t_start``, ``t_end`` are needed), else ``None``. ``skip_type`` places the
    stages of singlestep methods on a grid of that type inside each step (None with an explicit grid); ``noise``
    is the noise source of an SDE algorithm type.
    """
    method = check_choice(method, "method", METHODS)
    official = compat == "official"
    if algorithm_type in SDE_ALGORITHM_TYPES:
        return SDEDPMSolverMultistep(order, solver_type, noise, lower_order_final=lower_order_final), None
    if method == "multistep":
        below = OFFICIAL_LOWER_ORDER_FINAL_STEPS if official else None
        return DPMSolverMultistep(order, solver_type, "official" if official else "corrected",
                                  lower_order_final=lower_order_final, lower_order_final_below=below), None
    if method == "unipc":
        return UniPC(order, variant, use_corrector, lower_order_final=lower_order_final), None
    if method == "deis":
        return DEISMultistep(order, lower_order_final=lower_order_final), None
    if method == "adaptive":
        control = AdaptiveController(t_start, t_end, atol=atol, rtol=rtol, h_init=h_init, theta=theta, t_err=t_err,
                                     official=official)
        return DPMSolverSinglestep(order, solver_type), control
    if method == "singlestep" and skip_type is not None:
        return DPMSolverFast(order, solver_type, intermediates=skip_type, official_grid=official,
                             outer="logSNR" if skip_type == "logSNR" else "subset"), None
    return DPMSolverSinglestep(order, solver_type, intermediates=skip_type, official_grid=official), None
