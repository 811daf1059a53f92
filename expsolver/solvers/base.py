"""What every step rule is: a declared order, an NFE count per step, a history state and one step.

The driver (:mod:`expsolver.sample`) owns the loop, the grid and the NFE accounting; a rule only maps the state
at ``s`` to the state at ``t`` (diffrax ``AbstractSolver.step``, SciPy ``OdeSolver._step_impl``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

__all__ = ["Step", "StepRule", "MultistepRule", "taylor_weights", "polynomial_terms"]


@dataclass(frozen=True)
class Step:
    """One step of a plan: from time ``s`` to ``t`` with the given order; ``r`` holds the intermediate
    positions ``(rho_{s_i} - rho_s) / h`` of a singlestep method (empty when the rule's defaults apply)."""

    index: int
    s: float
    t: float
    order: int
    r: tuple = field(default=())


class StepRule:
    """Base class of a step rule.

    Attributes
    ----------
    order : int
        The declared (global) order of a full-order step; lower-order steps are requested through ``Step.order``.
    """

    order: int = 1
    name: str = "step rule"

    def nfe(self, order: int) -> int:
        """Model evaluations made by one step of the given order."""
        raise NotImplementedError

    def init(self, problem, x: torch.Tensor):
        """A fresh history state for a new trajectory."""
        return None

    def step(self, problem, x: torch.Tensor, step: Step, state) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self):
        return self.name


class MultistepRule(StepRule):
    """A multistep rule: one model call per step, at its start, kept in a history of ``(rho, N)`` pairs (most
    recent last, at most ``order`` long); subclasses implement :meth:`update`, the step given that history."""

    def nfe(self, order: int) -> int:
        return 1

    def init(self, problem, x):
        return []

    def step(self, problem, x, step: Step, state):
        state.append((problem.rho(step.s), problem.nonlinear(x, step.s)))
        del state[: max(0, len(state) - self.order)]
        return self.update(problem, x, step, state)

    def update(self, problem, x, step: Step, history):
        """The step given the history ``[(rho_i, N_i)]`` (most recent last, at ``step.s``); no model call."""
        raise NotImplementedError


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
