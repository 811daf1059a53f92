"""Empirical orders of every registered solver (DESIGN.md Sec. 4), in float64 with fixed seeds.

The protocol (problem, reference, error statistic, step ranges, floors, exact starting values of multistep
rules, the fit) is :mod:`analysis.verification`, the same code that produces the orders of
``paper_figs/summary.json``; this file asserts its results. In short: the 2-D three-component mixture of
:func:`analysis.targets.verification_target` with its exact noise prediction, linear VP schedule, SciPy DOP853
reference at rtol = atol = 1e-12, median per-sample L2 error, slopes from :func:`analysis.order.fit_order` over
its automatically chosen window, tolerance 0.15:

* local: one step of size h from the exact state at ``lam_s = 0``; slope ``order + 1``;
* global: the whole path from t = 1 to t = 1e-3 on a logSNR grid of 4 to 1024 steps; slope ``order``; multistep
  rules from exact starting values, and DPM-Solver-2M/3M also through ``sample()``'s own lower-order warm-up.

The official third-order multistep is registered with order 2: its measured orders (2 global, 3 local) document
the defect (tests/test_coefficients.py shows the halved second difference).
"""

import pytest

from analysis.verification import (ALGORITHM_TYPES, ORDER_TOL, WARM_UP_SOLVERS, VerificationProblem,
                                   measure_global_order, measure_local_order)
from expsolver.solvers import REGISTRY

CONFIGS = sorted(REGISTRY)


@pytest.fixture(scope="module")
def vp():
    return VerificationProblem()


def _assert_order(m):
    assert m.fit.reliable, (m.fit.reason, m.errors.tolist())
    assert abs(m.fit.slope - m.expected) <= ORDER_TOL, (m.fit.slope, m.fit.window, m.errors.tolist())
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
