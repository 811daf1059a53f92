"""The generic integrators on a non-diffusion semi-linear problem: classical exponential time differencing.

``BernoulliETDProblem``: ``dx/dt = L x + c x^2`` with diagonal ``L = (-0.5, -5, -50)`` (stiff: ``|L| h`` up to 12.5)
in ``rho = t``, exact solution known. The DPM-Solver, UniPC and DEIS step rules run unchanged through
:func:`expsolver.convergence.global_order`: exponential Euler (DPM-Solver-1), ETD Runge-Kutta 2 (DPM-Solver-2
"taylor", Cox & Matthews' ETD2RK for ``r = 1``), exponential Adams 2-4 (DPM-Solver-kM, "corrected"), DEIS (identical
to exponential Adams here), UniP-p and UniPC-p. Global error at ``T = 1`` (max over components) for ``N = 4 .. 256``
steps against the exact solution; the slope over the window chosen by ``fit_order`` must be within 0.15 of the
order (``assert_order``). Multistep methods start from the exact history at ``t = 0, h, ..., (k-2) h``
(``start="exact"``; the driver's lower-order start would cap the global order at 2) and keep their full order to
the end (``lower_order_final=False``, as in the registry: lower-order final steps would cap it too). Runtime ~10 s.
"""

import numpy as np
import pytest
import torch

from expsolver import integrate
from expsolver.convergence import assert_order, global_order
from expsolver.problems import BernoulliETDProblem
from expsolver.solvers import DEISMultistep, DPMSolverMultistep, DPMSolverSinglestep, Solver, Step, UniPC

T = 1.0
N_STEPS = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
FLOOR = 1e-14
X0 = torch.tensor([[0.3, 1.0, 2.0]], dtype=torch.float64)


@pytest.fixture(scope="module")
def problem():
    return BernoulliETDProblem(torch.tensor([-0.5, -5.0, -50.0], dtype=torch.float64), c=1.0)


class _FixedStages(Solver):
    """A singlestep rule with its stages at ``r`` (the Cox-Matthews ETD2RK has ``r1 = 1``, outside the default)."""

    def __init__(self, rule, r):
        self.rule, self.r, self.order, self.name = rule, r, rule.order, f"{rule.name}, r={r}"

    def nfe(self, order):
        return self.rule.nfe(order)

    def step(self, problem, x, step, state):
        return self.rule.step(problem, x, Step(step.index, step.s, step.t, step.order, self.r), state)


CASES = {
    "exponential Euler": (lambda: DPMSolverSinglestep(1), 1),
    "ETD2RK (Cox-Matthews, c2=1)": (lambda: _FixedStages(DPMSolverSinglestep(2, "taylor"), (1.0,)), 2),
    "ETD-RK2 (c2=1/2)": (lambda: _FixedStages(DPMSolverSinglestep(2, "taylor"), (0.5,)), 2),
    "ETD-RK3 (DPM-Solver-3 taylor)": (lambda: DPMSolverSinglestep(3, "taylor"), 3),
    "exponential Adams 2": (lambda: DPMSolverMultistep(2, "taylor", "corrected", lower_order_final=False), 2),
    "exponential Adams 3": (lambda: DPMSolverMultistep(3, "taylor", "corrected", lower_order_final=False), 3),
    "exponential Adams 4": (lambda: DPMSolverMultistep(4, "taylor", "corrected", lower_order_final=False), 4),
    "DEIS tAB2": (lambda: DEISMultistep(3, lower_order_final=False), 3),
    "UniP-2": (lambda: UniPC(2, "bh1", False, lower_order_final=False), 2),
    "UniP-3": (lambda: UniPC(3, "bh2", False, lower_order_final=False), 3),
    "UniPC-1": (lambda: UniPC(1, "bh2", True, lower_order_final=False), 2),
    "UniPC-2": (lambda: UniPC(2, "bh1", True, lower_order_final=False), 3),
    "UniPC-3": (lambda: UniPC(3, "bh2", True, lower_order_final=False), 4),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_global_order(problem, name):
    make_rule, order = CASES[name]
    result = global_order(problem, make_rule(), X0, 0.0, T, N_STEPS, start="exact",
                          reference=lambda times: [problem.exact(X0, 0.0, t) for t in times], statistic="max",
                          floor=FLOOR, name=name)
    assert result.expected == order
    assert_order(result)


def test_exponential_euler_is_exact_for_linear_problem():
    """c = 0: x' = L x is integrated exactly by every exponential integrator (the linear part is exact)."""
    problem = BernoulliETDProblem(torch.tensor([-0.5, -50.0], dtype=torch.float64), c=0.0)
    x0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ts = np.linspace(0.0, T, 5)
    for rule in (DPMSolverSinglestep(1), UniPC(2, "bh1", True), DEISMultistep(2)):
        plan = [Step(i, float(ts[i]), float(ts[i + 1]), min(rule.steps_order, i + 1)) for i in range(4)]
        x = integrate(problem, rule, x0, plan).x
        assert torch.allclose(x, problem.exact(x0, 0.0, T), rtol=1e-14, atol=0)
