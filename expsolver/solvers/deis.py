"""DEIS tAB: the exponential Adams-Bashforth of Zhang & Chen (2023) that interpolates in the original time ``t``.

DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", eq. (14) and Sec. 4)
keeps the exact linear part and replaces the nonlinear term by the Lagrange polynomial through the last ``k``
values *in the original time t* (tAB-(k-1)), not in the integration variable ``rho`` (``lam``) as DPM-Solver's
multistep does. In the semi-linear form of :mod:`expsolver.problems`,

    x_t = linear * x_s + scale * sum_j w_j N_j,     w_j = int_0^h e^{z (h - u)} l_j(tau(rho_s + u)) du,        (1)

where ``tau(rho) = problem.t_of_rho(rho)`` is the problem's own time and ``l_j`` is the Lagrange basis polynomial
in ``tau`` through the history times ``tau_j``. For the diffusion ODE (``rho = lam``) ``l_j(tau(lam))`` is not a
polynomial in ``lam``, so (1) has no closed form; the DEIS reference code approximates it by a Riemann sum. Here it
is computed by Gauss-Legendre quadrature in ``u`` with :data:`DEIS_QUADRATURE_NODES` nodes in float64: the
integrand is analytic on the step (``tau(lam)`` is analytic for the continuous schedules), so the rule converges
geometrically; the tests check it agrees with a 4x finer rule and with adaptive quadrature to ~1e-14 relative.
When ``rho = t`` (classical exponential time differencing, e.g. :class:`~expsolver.problems.BernoulliETDProblem`)
``l_j`` is a polynomial of degree ``k - 1 < nodes`` in ``u`` and the rule is exact: DEIS then *is* the exponential
Adams-Bashforth method (:class:`~expsolver.solvers.DPMSolverMultistep`, ``"corrected"``).

Order ``k`` (``k`` values, tAB-(k-1)): local error ``O(h^{k+1})``, global ``O(h^k)``; one NFE per step. ``k = 1`` is
DDIM (exponential Euler).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._validation import check_int
from ..phi_functions import phis
from ..problems import combine
from .base import MultistepSolver, Step

__all__ = ["DEISMultistep", "deis_weights", "DEIS_QUADRATURE_NODES", "DEIS_MAX_ORDER"]

DEIS_QUADRATURE_NODES = 32
DEIS_MAX_ORDER = 4


@functools.lru_cache(maxsize=8)
def _gauss_legendre(n_nodes: int) -> tuple:
    """Gauss-Legendre nodes and weights on ``[-1, 1]`` (computed once per ``n_nodes``: an eigenvalue problem)."""
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    x.flags.writeable = w.flags.writeable = False
    return x, w


def deis_weights(problem, s: float, c, taus, n_nodes: int = DEIS_QUADRATURE_NODES) -> list:
    """The weights ``w_j`` of (1) for a step from ``s`` with coefficients ``c`` and interpolation times ``taus``.

    Parameters
    ----------
    problem : SemiLinearProblem
        Supplies ``rho`` and ``t_of_rho`` (the interpolation variable ``tau = t_of_rho(rho)``).
    s : float
        Start time of the step.
    c : StepCoefficients
        ``problem.coefficients(s, t)`` (``z`` may be a tensor for diagonal linear parts).
    taus : sequence of float
        Distinct times of the interpolation points.
    n_nodes : int
        Gauss-Legendre nodes on ``[0, h]``.

    Returns
    -------
    list
        ``w_j`` (floats, or tensors when ``z`` is a tensor), in the order of ``taus``.
    """
    n_nodes = check_int(n_nodes, "n_nodes", minimum=1)
    taus = np.asarray([float(v) for v in taus], dtype=np.float64)
    h = float(c.h)
    x_gl, w_gl = _gauss_legendre(n_nodes)
    us = 0.5 * h * (x_gl + 1.0)
    rho_s = float(problem.rho(s))
    tau_nodes = np.array([s if u == 0.0 else problem.t_of_rho(rho_s + float(u)) for u in us])
    basis = np.ones((len(taus), n_nodes))
    for j in range(len(taus)):
        for i in range(len(taus)):
            if i != j:
                basis[j] *= (tau_nodes - taus[i]) / (taus[j] - taus[i])
    if isinstance(c.z, float):
        kernels = np.exp(c.z * (h - us))  # e^{z (h - u_q)}
        return [float(np.sum(0.5 * h * w_gl * basis[j] * kernels)) for j in range(len(taus))]
    z = c.z
    offsets = torch.as_tensor(h - us, dtype=torch.float64, device=z.device).reshape((-1,) + (1,) * z.ndim)
    kernels = phis(0, z.to(torch.float64).unsqueeze(0) * offsets)[0]  # (n_nodes, *z.shape)
    coefs = torch.as_tensor(0.5 * h * w_gl * basis, dtype=torch.float64, device=z.device)  # (k, n_nodes)
    return [torch.tensordot(coefs[j], kernels, dims=1).to(z.dtype) for j in range(len(taus))]


class DEISMultistep(MultistepSolver):
    """DEIS tAB-(order-1): exponential multistep with Lagrange interpolation in the problem's time (see module).

    Parameters
    ----------
    order : int
        Number of interpolation values ``k`` (1 to :data:`DEIS_MAX_ORDER`); global order ``k``.
    n_nodes : int
        Gauss-Legendre nodes per step for the weights (1).
    lower_order_final, lower_order_final_below
        See :class:`~expsolver.solvers.base.MultistepSolver`.
    """

    def __init__(self, order: int = 2, n_nodes: int = DEIS_QUADRATURE_NODES, *, lower_order_final: bool = True,
                 lower_order_final_below: int | None = None):
        self.order = check_int(order, "order", minimum=1, maximum=DEIS_MAX_ORDER)
        self.n_nodes = check_int(n_nodes, "n_nodes", minimum=1)
        self._set_final(lower_order_final, lower_order_final_below)
        self.name = f"DEIS tAB{order - 1}"

    def update(self, problem, x, step: Step, history):
        """The step given the history ``[(rho_i, N_i)]`` (most recent last, at ``step.s``); no model call."""
        order = step.order
        if not 1 <= order <= len(history):
            raise ValueError(f"step {step.index}: order {order} needs {order} history values, have {len(history)}")
        c = problem.coefficients(step.s, step.t)
        recent = history[-order:]
        taus = [problem.t_of_rho(rho) for rho, _ in recent[:-1]] + [step.s]
        if order == 1:
            return combine(c, x, [(c.integrals(1)[0], recent[0][1])])
        weights = deis_weights(problem, step.s, c, taus, self.n_nodes)
        return combine(c, x, list(zip(weights, [n for _, n in recent])))
