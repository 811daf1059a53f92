"""The generic integrators on a non-diffusion semi-linear problem: classical exponential time differencing.

``BernoulliETDProblem``: ``dx/dt = L x + c x^2`` with diagonal ``L = (-0.5, -5, -50)`` (stiff: ``|L| h`` up to 12.5)
in ``rho = t``, exact solution known. The DPM-Solver, UniPC and DEIS step rules run unchanged through the
driver's loop :func:`expsolver.integrate` with a plan of increasing times: exponential Euler
(DPM-Solver-1), ETD Runge-Kutta 2 (DPM-Solver-2 "taylor", Cox & Matthews' ETD2RK for ``r = 1``), exponential
Adams 2-4 (DPM-Solver-kM, "corrected"), DEIS (identical to exponential Adams here), UniP-p and UniPC-p. Global
error at ``T = 1`` (max over components) for ``N = 4 .. 256`` steps; the slope of log error against log h over
the window chosen by ``analysis.order.fit_order`` must be within 0.15 of the order. Multistep methods start from
the exact history at ``t = 0, h, ..., (k-2) h`` (a lower-order start would cap the global order at 2).
DEIS equals exponential Adams on this problem (tests/test_deis.py). Runtime ~10 s.
"""

import numpy as np
import pytest
import torch

from analysis.order import fit_order
from expsolver.problems import BernoulliETDProblem
from expsolver import integrate
from expsolver.solvers import DEISMultistep, DPMSolverMultistep, DPMSolverSinglestep, Solver, Step, UniPC

TOL = 0.15
T = 1.0
N_STEPS = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
FLOOR = 1e-14


@pytest.fixture(scope="module")
def problem():
    return BernoulliETDProblem(torch.tensor([-0.5, -5.0, -50.0], dtype=torch.float64), c=1.0)


X0 = torch.tensor([[0.3, 1.0, 2.0]], dtype=torch.float64)


class _ExactHistory(Solver):
    """A multistep rule whose history starts with exact values (the driver's loop is unchanged)."""

    def __init__(self, rule, history):
        self.rule, self.history, self.order = rule, history, rule.order

    def nfe(self, order):
        return self.rule.nfe(order)

    def init(self, problem, x):
        state = self.rule.init(problem, x)
        state.extend(self.history)
        return state

    def step(self, problem, x, step, state):
        return self.rule.step(problem, x, step, state)


def _global_errors(problem, make_rule, k, multistep, r=()):
    hs, errors = [], []
    exact_end = problem.exact(X0, 0.0, T)
    for n in N_STEPS:
        ts = np.linspace(0.0, T, n + 1)
        start = k - 1 if multistep else 0
        plan = [Step(i, float(ts[i]), float(ts[i + 1]), k, r) for i in range(start, n)]
        rule = make_rule()
        if multistep:
            history = [(float(ts[j]), problem.nonlinear(problem.exact(X0, 0.0, float(ts[j])), float(ts[j])))
                       for j in range(k - 1)]
            rule = _ExactHistory(rule, history)
        x = integrate(problem, rule, problem.exact(X0, 0.0, float(ts[start])), plan).x
        hs.append(T / n)
        errors.append(float((x - exact_end).abs().max()))
    return hs, errors


CASES = {
    "exponential Euler": (lambda: DPMSolverSinglestep(1), 1, False, (), 1),
    "ETD2RK (Cox-Matthews, c2=1)": (lambda: DPMSolverSinglestep(2, "taylor"), 2, False, (1.0,), 2),
    "ETD-RK2 (c2=1/2)": (lambda: DPMSolverSinglestep(2, "taylor"), 2, False, (0.5,), 2),
    "ETD-RK3 (DPM-Solver-3 taylor)": (lambda: DPMSolverSinglestep(3, "taylor"), 3, False, (), 3),
    "exponential Adams 2": (lambda: DPMSolverMultistep(2, "taylor", "corrected"), 2, True, (), 2),
    "exponential Adams 3": (lambda: DPMSolverMultistep(3, "taylor", "corrected"), 3, True, (), 3),
    "exponential Adams 4": (lambda: DPMSolverMultistep(4, "taylor", "corrected"), 4, True, (), 4),
    "DEIS tAB2": (lambda: DEISMultistep(3), 3, True, (), 3),
    "UniP-2": (lambda: UniPC(2, "bh1", False), 2, True, (), 2),
    "UniP-3": (lambda: UniPC(3, "bh2", False), 3, True, (), 3),
    "UniPC-1": (lambda: UniPC(1, "bh2", True), 1, True, (), 2),
    "UniPC-2": (lambda: UniPC(2, "bh1", True), 2, True, (), 3),
    "UniPC-3": (lambda: UniPC(3, "bh2", True), 3, True, (), 4),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_global_order(problem, name):
    make_rule, k, multistep, r, order = CASES[name]
    hs, errors = _global_errors(problem, make_rule, k, multistep, r)
    fit = fit_order(hs, errors, expected=order, floor=FLOOR)
    assert fit.reliable, fit.reason
    assert abs(fit.slope - order) <= TOL, (fit.slope, fit.window, errors)


def test_exponential_euler_is_exact_for_linear_problem():
    """c = 0: x' = L x is integrated exactly by every exponential integrator (the linear part is exact)."""
    problem = BernoulliETDProblem(torch.tensor([-0.5, -50.0], dtype=torch.float64), c=0.0)
    x0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ts = np.linspace(0.0, T, 5)
    for rule in (DPMSolverSinglestep(1), UniPC(2, "bh1", True), DEISMultistep(2)):
        plan = [Step(i, float(ts[i]), float(ts[i + 1]), min(rule.steps_order, i + 1)) for i in range(4)]
        x = integrate(problem, rule, x0, plan).x
        assert torch.allclose(x, problem.exact(x0, 0.0, T), rtol=1e-14, atol=0)
