"""The driver: the one loop that runs every solver on every semi-linear problem.

:func:`integrate` takes a problem (:class:`~expsolver.problems.SemiLinearProblem`), a solver (any object of the
protocol :class:`~expsolver.solvers.base.Solver`, a user's included), an initial state and either a time grid or an
:class:`AdaptiveController`. It asks the solver for its plan, calls its ``step`` once per step, counts the model
calls, checks the state, keeps intermediates and calls a per-step callback. :func:`expsolver.sample` translates the
official option names into (problem, solver, grid) and calls it; so do the harnesses of
:mod:`expsolver.convergence` and the grid optimiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._validation import check_bool
from .models import ModelAutogradError, ModelOutputError
from .problems import SemiLinearProblem
from .solvers.base import Step
from .stepsize import AdaptiveController

__all__ = ["integrate", "Solution", "AdaptiveController", "NonFiniteStateError", "check_solver"]


class NonFiniteStateError(ValueError):
    """The state became NaN or Inf during sampling."""


@dataclass
class Solution:
    """Result of :func:`integrate`.

    Attributes
    ----------
    x : torch.Tensor
        Final state, shape ``(batch, *dims)``.
    nfe : int
        Model calls made by this integration (``problem.nfe`` after minus before; rejected adaptive steps
        included).
    timesteps : numpy.ndarray
        The accepted step times (float64), start first.
    orders : list of int
        The order of every accepted step.
    intermediates : list of torch.Tensor or None
        The state at every accepted step time, the initial state first (``return_intermediates=True``).
    n_rejected : int
        Rejected steps (adaptive only).
    """

    x: torch.Tensor
    nfe: int
    timesteps: np.ndarray
    orders: list
    intermediates: list | None = None
    n_rejected: int = 0


_PROTOCOL = ("order", "nfe", "init", "step", "plan")


def check_solver(solver, name: str = "solver"):
    """``solver`` if it implements the solver protocol (:class:`~expsolver.solvers.base.Solver`), else a
    ``TypeError`` naming what is missing."""
    missing = [a for a in _PROTOCOL if not hasattr(solver, a)]
    if missing or isinstance(solver, type):
        what = "a class, not an instance" if isinstance(solver, type) else f"it lacks {', '.join(missing)}"
        raise TypeError(f"{name} must implement the solver protocol (expsolver.solvers.Solver: order, nfe, init, "
                        f"step, plan); got {solver!r}: {what}")
    return solver


def integrate(problem, solver, x: torch.Tensor, timesteps, *, callback=None, return_intermediates: bool = False,
              check_finite: bool = True, state=None) -> Solution:
    """Integrate ``problem`` from the state ``x`` with ``solver``: the one loop of expsolver.

    Parameters
    ----------
    problem : SemiLinearProblem
        ``dx/dt = L x + N(x, t)`` in the form of :mod:`expsolver.problems` (the diffusion ODE or SDE,
        :class:`~expsolver.SemiLinearODE`, a user's subclass).
    solver : Solver
        Any object of the solver protocol (:class:`~expsolver.solvers.base.Solver`).
    x : torch.Tensor
        Initial state at the first time, shape ``(batch, *dims)``.
    timesteps : sequence of float, list of Step, or AdaptiveController
        A grid (strictly monotone; the solver's :meth:`~expsolver.solvers.base.Solver.plan` turns it into steps),
        an explicit plan (a list of :class:`~expsolver.solvers.base.Step`), or a step-size controller for a solver
        with an ``embedded_step`` method (:class:`~expsolver.solvers.DPMSolverSinglestep` of order 2 or 3).
    callback : callable, optional
        ``callback(info)`` after every accepted step, ``info`` a dict with ``"step"`` (index), ``"t"``, ``"x"`` (the
        new state) and ``"prediction"`` (the problem's latest model value, e.g. the data prediction of the
        DPM-Solver++ form; ``None`` if the problem does not record one).
    return_intermediates : bool
        Keep the state at every accepted step time in :attr:`Solution.intermediates`.
    check_finite : bool
        Raise :class:`NonFiniteStateError` naming the step and time when the state becomes NaN or Inf.
    state : optional
        Continue a solver's history (e.g. a multistep history filled from exact starting values) instead of
        ``solver.init(problem, x)``.

    Returns
    -------
    Solution
    """
    if not isinstance(problem, SemiLinearProblem):
        raise TypeError(f"problem must be a SemiLinearProblem (expsolver.problems), got {type(problem).__name__}")
    check_solver(solver)
    check_finite = check_bool(check_finite, "check_finite")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    nfe_before = problem.nfe
    record = _Recorder(problem, callback, check_finite, [x] if check_bool(return_intermediates,
                                                                           "return_intermediates") else None)
    if isinstance(timesteps, AdaptiveController):
        x, ts, orders, n_rejected = _integrate_adaptive(problem, solver, x, timesteps, record)
        return Solution(x, problem.nfe - nfe_before, ts, orders, record.intermediates, n_rejected)
    plan = _as_plan(solver, timesteps, problem)
    state = solver.init(problem, x) if state is None else state
    for step in plan:
        try:
            x = solver.step(problem, x, step, state)
        except (ModelOutputError, ModelAutogradError) as error:  # say which step (the model holds no step index)
            raise type(error)(f"{error} (step {step.index})") from error.__cause__
        record(x, step.index, step.t)
    ts = np.array([_as_float(plan[0].s)] + [_as_float(step.t) for step in plan]) if plan else np.array([])
    return Solution(x, problem.nfe - nfe_before, ts, [step.order for step in plan], record.intermediates)


def _as_plan(solver, timesteps, problem) -> list:
    if isinstance(timesteps, (list, tuple)) and timesteps and all(isinstance(s, Step) for s in timesteps):
        return list(timesteps)
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__len__"):
        raise TypeError(f"timesteps must be a sequence of times, a list of Step or an AdaptiveController, "
                        f"got {type(timesteps).__name__}")
    ts = np.asarray(timesteps.detach().cpu() if isinstance(timesteps, torch.Tensor) else timesteps)
    if ts.ndim != 1 or ts.size < 2 or not np.issubdtype(ts.dtype, np.floating) and not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"timesteps must be a 1-D sequence of at least 2 real times, got shape {ts.shape}, "
                         f"dtype {ts.dtype}")
    ts = ts.astype(np.float64)
    d = np.diff(ts)
    if not np.all(np.isfinite(ts)) or not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError("timesteps must be finite and strictly monotone")
    return solver.plan(ts, problem)


def _as_float(t) -> float:
    """A step time as a float (times are 0-dim tensors on a differentiable grid)."""
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


class _Recorder:
    """What happens after every accepted step: the finiteness check, the intermediates, the callback."""

    def __init__(self, problem, callback, check_finite, intermediates):
        self.problem, self.callback, self.check_finite, self.intermediates = problem, callback, check_finite, intermediates

    def __call__(self, x, index, t):
        if self.check_finite and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise NonFiniteStateError(f"the state became NaN or Inf at step {index} (t={t:.6g})")
        if self.intermediates is not None:
            self.intermediates.append(x)
        if self.callback is not None:
            self.callback({"step": index, "t": t, "x": x, "prediction": getattr(self.problem, "latest", None)})


def _integrate_adaptive(problem, solver, x, control: AdaptiveController, record):
    """The accept/reject loop of an embedded pair under ``control`` (see :class:`AdaptiveController`)."""
    if not hasattr(solver, "embedded_step"):
        raise TypeError(f"an AdaptiveController needs a solver with an embedded error estimate (embedded_step), "
                        f"e.g. DPMSolverSinglestep(order=2 or 3); got {solver!r}")
    order = solver.order
    t_end, s = control.t_end, control.t_start
    rho_s, rho_end = problem.rho(s), problem.rho(t_end)
    h = control.h_init if control.official else min(control.h_init, rho_end - rho_s)
    x_prev, ts, orders, n_rejected = x, [s], [], 0
    state = solver.init(problem, x)
    for index in range(control.max_steps):
        if control.finished(s):
            break
        if not control.official and 1.01 * h >= rho_end - rho_s:
            h, t = rho_end - rho_s, t_end
        else:
            t = problem.t_of_rho(rho_s + h)
        try:
            x_high, x_low = solver.embedded_step(problem, x, Step(index, s, t, order), state)
        except (ModelOutputError, ModelAutogradError) as error:
            raise type(error)(f"{error} (step {index})") from error.__cause__
        err = control.error(x_high, x_low, x_prev)
        if not math.isfinite(err):
            raise NonFiniteStateError(f"adaptive step {index} at t={s:.6g} produced a non-finite error estimate")
        if err <= 1.0:
            x, x_prev, s = x_high, x_low, t
            rho_s = problem.rho(s)
            ts.append(t)
            orders.append(order)
            record(x, index, t)
        else:
            n_rejected += 1
        h = control.next_h(h, err, order, rho_end - rho_s)
    else:
        raise RuntimeError(f"adaptive solver did not reach t_end={t_end} in {control.max_steps} steps")
    return x, np.array(ts), orders, n_rejected
