"""The solver protocol: a declared order, an NFE count per step, a history state, a plan and one step.

The driver (:func:`expsolver.integrate`) owns the loop, the grid and the NFE accounting; a solver only maps the
state at ``s`` to the state at ``t`` (diffrax ``AbstractSolver.step``, SciPy ``OdeSolver._step_impl``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from .._validation import check_bool, check_int

__all__ = ["Step", "Solver", "MultistepSolver", "multistep_orders", "taylor_weights", "polynomial_terms"]


@dataclass(frozen=True)
class Step:
    """One step of a plan: from time ``s`` to ``t`` with the given order; ``r`` holds the intermediate
    positions ``(rho_{s_i} - rho_s) / h`` of a singlestep method (empty when the solver's defaults apply)."""

    index: int
    s: float
    t: float
    order: int
    r: tuple = field(default=())


class Solver:
    """The solver protocol: what every solver of expsolver, built-in or a user's, implements.

    A solver is a *step rule* for a semi-linear problem (:class:`~expsolver.problems.SemiLinearProblem`): it maps
    the state at ``step.s`` to the state at ``step.t``. The loop, the grid, the NFE count, the intermediates and the
    callbacks belong to :func:`expsolver.integrate` (as diffrax's ``AbstractSolver.step`` and SciPy's
    ``OdeSolver._step_impl`` leave them to their drivers). A subclass sets :attr:`order` and implements
    :meth:`step`; the other methods have defaults that fit a one-step method of one model call per step.

    Attributes
    ----------
    order : int
        Declared global order of a full-order step (local error ``O(h^{order+1})``). The harnesses
        (:mod:`expsolver.convergence`, the order tests) check the measured orders against it.
    carries_history : bool
        True for multistep methods, whose :meth:`init` state holds earlier model values. Such methods need
        starting values; :meth:`plan` gives them lower-order warm-up steps.
    stochastic : bool
        True for solvers of the reverse SDE (:class:`~expsolver.solvers.sde.ReverseDiffusionSDE` problems).
    name : str
        Used in error messages and figure legends.
    """

    order: int = 1
    carries_history: bool = False
    stochastic: bool = False
    name: str = "solver"

    @property
    def steps_order(self) -> int:
        """Order of a full step of the plan (and a multistep history's length): :attr:`order` unless a subclass's steps
        are of another order than the method (UniPC's predictor, the official third-order multistep)."""
        return self.order

    def nfe(self, order: int) -> int:
        """Model evaluations made by one step of the given order (default 1)."""
        return 1

    def init(self, problem, x: torch.Tensor):
        """A fresh state (history) for a new trajectory starting at ``x`` (default ``None``)."""
        return None

    def step(self, problem, x: torch.Tensor, step: Step, state) -> torch.Tensor:
        """Advance ``x`` from ``step.s`` to ``step.t`` (order ``step.order``), updating ``state`` in place.

        The solver may call ``problem.nonlinear`` (one model call each) and must return a new tensor: ``x`` and
        tensors it stored in ``state`` earlier are not to be modified.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement step(problem, x, step, state)")

    def plan(self, timesteps, problem=None) -> list:
        """The steps taken over a grid ``timesteps`` (strictly monotone floats, first = start): by default one step
        of order :attr:`order` per interval. ``problem`` is available to solvers that place intermediate points
        by the problem's time variable."""
        ts = [float(t) for t in timesteps]
        return [Step(i, ts[i], ts[i + 1], self.steps_order) for i in range(len(ts) - 1)]

    def __repr__(self):
        return self.name


def multistep_orders(order: int, n_steps: int, lower_order_final: bool = True,
                     lower_order_final_below: int | None = None) -> list:
    """Orders of the ``n_steps`` steps of a ``order``-step method: ``min(order, i + 1)`` while the history fills
    (warm-up) and, with ``lower_order_final``, ``min(order, n_steps - i)`` at the end (only when
    ``n_steps < lower_order_final_below`` if that is given: the official code's threshold is 10, diffusers' 15)."""
    final = lower_order_final and (lower_order_final_below is None or n_steps < lower_order_final_below)
    return [min(order, i + 1, n_steps - i if final else order) for i in range(n_steps)]


class MultistepSolver(Solver):
    """A multistep solver: one model call per step, at its start, kept in a history of ``(rho, N)`` pairs (most
    recent last, at most ``order`` long); subclasses implement :meth:`update`, the step given that history.

    Parameters (of the built-in subclasses)
    ---------------------------------------
    lower_order_final : bool
        Lower the order of the last steps to ``min(order, steps left)`` (more stable on very few steps).
    lower_order_final_below : int, optional
        Apply ``lower_order_final`` only to grids of fewer steps than this (``compat="official"``: 10).
    """

    carries_history = True
    lower_order_final: bool = True
    lower_order_final_below: int | None = None

    def _set_final(self, lower_order_final, lower_order_final_below):
        self.lower_order_final = check_bool(lower_order_final, "lower_order_final")
        self.lower_order_final_below = (None if lower_order_final_below is None
                                        else check_int(lower_order_final_below, "lower_order_final_below", minimum=1))

    def init(self, problem, x):
        return []

    def init_history(self, problem, x, history):
        """A state (:meth:`init`) whose history already holds ``history``, a list of ``(rho_i, N_i)`` at times
        before ``x``'s (most recent last): starting values computed elsewhere, e.g. from exact states
        (:mod:`expsolver.convergence`). No model call; the next :meth:`step` appends ``N`` at ``x`` and, having the
        full history, can take a step of full order."""
        state = self.init(problem, x)
        state.extend(history)
        return state

    def plan(self, timesteps, problem=None) -> list:
        ts = [float(t) for t in timesteps]
        orders = multistep_orders(self.steps_order, len(ts) - 1, self.lower_order_final, self.lower_order_final_below)
        return [Step(i, ts[i], ts[i + 1], k) for i, k in enumerate(orders)]

    def step(self, problem, x, step: Step, state):
        state.append((problem.rho(step.s), problem.nonlinear(x, step.s)))
        del state[: max(0, len(state) - self.steps_order)]
        return self.update(problem, x, step, state)

    def update(self, problem, x, step: Step, history):
        """The step given the history ``[(rho_i, N_i)]`` (most recent last, at ``step.s``); no model call."""
        raise NotImplementedError(f"{type(self).__name__} must implement update(problem, x, step, history)")


def taylor_weights(nodes) -> np.ndarray:
    """Weights ``W`` with ``h^j N^{(j)}(rho_0) ~ sum_i W[j, i] N(rho_0 + nodes[i] h)`` for ``j < k = len(nodes)``.

    Exact when ``N`` is a polynomial of degree ``< k`` in ``rho``: ``W`` is the inverse of the scaled
    Vandermonde matrix ``V[i, j] = nodes[i]^j / j!`` (float64). The first node is the expansion point, 0.
    Tensor nodes (a grid being optimised, :mod:`expsolver.optimize`) give a float64 tensor, so gradients flow.
    """
    if any(isinstance(u, torch.Tensor) for u in nodes):
        u = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in nodes])
        return torch.linalg.inv(torch.stack([u**j / math.factorial(j) for j in range(u.shape[0])], dim=1))
    return np.array(_taylor_weights_float(tuple(float(u) for u in nodes)))


@lru_cache(maxsize=4096)
def _taylor_weights_float(nodes: tuple) -> tuple:
    """:func:`taylor_weights` for float nodes as a tuple of row tuples, cached: a sampler meets the same nodes
    on every run over the same grid, so each grid's weights are computed once."""
    k = len(nodes)
    V = np.array([[u**j / math.factorial(j) for j in range(k)] for u in nodes])
    return tuple(tuple(row) for row in np.linalg.inv(V).tolist())


def polynomial_terms(integrals, h: float, nodes, values) -> list:
    """Terms ``[(w_i, N_i)]`` of ``sum_j I_j N^{(j)}``, the exact integral of the polynomial through
    ``(nodes[i] h, values[i])`` (``integrals[j] = I_j`` from :meth:`StepCoefficients.integrals`)."""
    k = len(nodes)
    if any(isinstance(u, torch.Tensor) for u in nodes):
        w = taylor_weights(nodes)
    else:
        w = _taylor_weights_float(tuple(float(u) for u in nodes))  # Python floats, cached per grid
    weights = [sum(integrals[j] / h**j * w[j][i] for j in range(k)) for i in range(k)]
    return list(zip(weights, values))
