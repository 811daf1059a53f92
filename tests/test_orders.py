"""Empirical orders of every registered solver, in float64 with fixed seeds.

The protocol (problem, reference, error statistic, step ranges, floors, exact starting values of multistep
rules) is :mod:`analysis.verification`, the same code that produces the orders of ``paper_figs/summary.json``; it
measures through :mod:`expsolver.convergence` (``local_order``, ``global_order``, ``fit_order``) and this file
asserts its results with ``assert_order``'s tolerance. In short: the 2-D three-component mixture of
:func:`analysis.targets.verification_target` with its exact noise prediction, linear VP schedule, SciPy DOP853
reference at rtol = atol = 1e-12, median per-sample L2 error, slopes over the fit's automatically chosen window,
tolerance 0.15:

* local: one step of size h from the exact state at ``lam_s = 0``; slope ``order + 1``;
* global: the whole path from t = 1 to t = 1e-3 on a logSNR grid of 4 to 1024 steps; slope ``order``; multistep
  rules from exact starting values (the model evaluated at the exact states), and DPM-Solver-2M/3M also with the
  driver's own lower-order warm-up.

The official third-order multistep is registered with order 2: its measured orders (2 global, 3 local) document
the defect (tests/test_coefficients.py shows the halved second difference).
"""

import pytest

from analysis.verification import (ALGORITHM_TYPES, ORDER_TOL, WARM_UP_SOLVERS, VerificationProblem,
                                   measure_global_order, measure_local_order)
from expsolver.convergence import ConvergenceResult, assert_order
from expsolver.solvers import REGISTRY

CONFIGS = sorted(REGISTRY)


@pytest.fixture(scope="module")
def vp():
    return VerificationProblem()


def _assert_order(m):
    result = ConvergenceResult(solver=m.solver, kind=m.kind, start=m.start, hs=m.hs, errors=m.errors, nfe=m.nfe,
                               fit=m.fit, expected=m.expected)
    assert_order(result, tol=ORDER_TOL)
    assert m.agrees


@pytest.mark.parametrize("algorithm_type", ALGORITHM_TYPES)
@pytest.mark.parametrize("name", CONFIGS)
def test_global_order(vp, name, algorithm_type):
    m = measure_global_order(vp, name, algorithm_type)
    assert m.expected == REGISTRY[name].order
    _assert_order(m)


@pytest.mark.parametrize("algorithm_type", ALGORITHM_TYPES)
@pytest.mark.parametrize("name", WARM_UP_SOLVERS)
def test_global_order_with_the_default_warm_up(vp, name, algorithm_type):
    """``sample()`` itself (lower-order warm-up steps) keeps orders 2 and 3 down to the reference floor."""
    _assert_order(measure_global_order(vp, name, algorithm_type, start="warm-up"))


@pytest.mark.parametrize("algorithm_type", ALGORITHM_TYPES)
@pytest.mark.parametrize("name", CONFIGS)
def test_local_order(vp, name, algorithm_type):
    m = measure_local_order(vp, name, algorithm_type)
    assert m.expected == REGISTRY[name].order + 1
    _assert_order(m)
