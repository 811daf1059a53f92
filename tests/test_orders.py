"""Empirical orders of every registered solver (DESIGN.md Sec. 4), in float64 with fixed seeds.

Problem: the 2-D three-component mixture of ``conftest.make_mixture_2d`` (not a single Gaussian, so the leading
error terms do not vanish) with its exact noise prediction, linear VP schedule. Reference: SciPy DOP853 in the
lambda variable at rtol = atol = 1e-12, itself verified against the closed-form single-Gaussian flow and against
torchdiffeq dopri8 in tests/test_reference.py. Error statistic: the median over samples of the per-sample L2 error
(samples near a mode boundary make RMS slopes erratic). Slopes come from ``analysis.order.fit_order``: a fit of
log error on log of the actual lambda step over an automatically chosen asymptotic window; tolerance 0.15.

* local: one step of size h from the exact state at ``lam_s = 0`` (multistep rules get the exact history at
  ``lam_s - h, lam_s - 2h, ...``); slope ``order + 1``;
* global: the whole path from t = 1 to t = 1e-3 on a logSNR grid of 4 to 1024 steps (stopping once the error
  reaches the reference's floor), ``lower_order_final`` off; slope ``order``. The sharp components make the
  higher-order methods pre-asymptotic until small steps (DPM-Solver-4M in the noise form needs h < 0.03,
  about 300 steps), which is why the grid goes that far. Multistep rules start from exact values at the first
  ``order - 1`` grid points (the standard convergence test of a multistep method): with the driver's
  lower-order warm-up, the first (first-order) step adds an ``O(h^2)`` global term. Its constant is tiny here,
  because the prediction varies like ``e^{2 lam}`` near ``lam_start = -5``, but it surfaces as a floor near
  1e-9 for DPM-Solver-4M at 500-1000 steps. ``test_global_order_with_the_default_warm_up`` checks that the
  driver's own path keeps orders 2 and 3.

The official third-order multistep is registered with order 2: its measured orders (2 global, 3 local) document
the defect (tests/test_coefficients.py shows the halved second difference).
"""

import numpy as np
import pytest
import torch

from analysis.order import fit_order
from expsolver import VPLinear, integrate, reference_solve, sample
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE
from expsolver.sample import plan_steps
from expsolver.solvers import REGISTRY, Step

from conftest import make_mixture_2d

ALGORITHMS = ("dpmsolver", "dpmsolver++")
CONFIGS = sorted(REGISTRY)
TOL = 0.15
REF_TOL = 1e-12
N_SAMPLES = 64
LAM_S = 0.0
LOCAL_H = 0.8 * 2.0 ** (-np.arange(17) / 2.0)  # 0.8 down to 0.003
GLOBAL_STEPS = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# Global errors below this are at the reference's accuracy (DOP853 at 1e-12): finer grids carry no information.
ERROR_FLOOR = 1e-10
# One-step errors compare two states of the same reference trajectory, whose errors largely cancel: measured
# local errors keep their asymptotic slope down to ~1e-12, so the local floor is lower.
LOCAL_FLOOR = 1e-12


@pytest.fixture(scope="module")
def setup():
    mixture, schedule = make_mixture_2d(), VPLinear()
    model = mixture.as_model(schedule)
    x = torch.randn(N_SAMPLES, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return mixture, schedule, model, x


@pytest.fixture(scope="module")
def global_reference(setup):
    _, schedule, model, x = setup
    return reference_solve(model, schedule, x, 1.0, 1e-3, method="DOP853", rtol=REF_TOL, atol=REF_TOL).x


@pytest.fixture(scope="module")
def local_reference(setup):
    """Exact states at lam_s + h and lam_s - m h (m = 0..3) for every h, from one reference trajectory."""
    _, schedule, model, x = setup
    lams = sorted({LAM_S} | {LAM_S + h for h in LOCAL_H} | {LAM_S - m * h for h in LOCAL_H for m in (1, 2, 3)})
    ts = [schedule.inverse_lam(float(v)) for v in lams]
    result = reference_solve(model, schedule, x, 1.0, ts[-1], method="DOP853", rtol=REF_TOL, atol=REF_TOL,
                             ts=[1.0] + ts)
    states = {lam: result.xs[i + 1] for i, lam in enumerate(lams)}
    return lambda lam: states[min(states, key=lambda v: abs(v - lam))]


def _median_error(x, ref):
    return float((x - ref).reshape(x.shape[0], -1).norm(dim=1).median())


def _multistep_from_exact_start(config, schedule, model, x, algorithm_type, n):
    """The multistep path with exact starting values: the rule's own steps run from the reference states at the
    first ``order - 1`` grid points (filling its history with exact model values), then from its own states."""
    plan = plan_steps("multistep", schedule, n, config.options["order"], "logSNR", 1.0, 1e-3, False, None)
    k = config.options["order"]
    ts = [plan[0].s] + [st.t for st in plan[: k - 1]]
    exact = reference_solve(model, schedule, x, 1.0, ts[-1], method="DOP853", rtol=REF_TOL, atol=REF_TOL,
                            ts=ts).xs if k > 1 else [x]
    prediction = "noise" if algorithm_type == "dpmsolver" else "data"
    problem = DiffusionODE(schedule, ModelWrapper(model, schedule), prediction)
    rule = config.make_rule()
    state = rule.init(problem, x)
    for i in range(k - 1):
        rule.step(problem, exact[i], plan[i], state)  # fills the history; the result is replaced by exact[i + 1]
    return integrate(problem, rule, plan[k - 1:], exact[k - 1], state=state)


@pytest.mark.parametrize("algorithm_type", ALGORITHMS)
@pytest.mark.parametrize("name", CONFIGS)
def test_global_order(setup, global_reference, name, algorithm_type):
    config = REGISTRY[name]
    _, schedule, model, x = setup
    span = schedule.lam(1e-3) - schedule.lam(1.0)
    hs, errors = [], []
    for n in GLOBAL_STEPS:
        if config.kind == "singlestep":
            result = sample(model, schedule, x, steps=n * config.options["order"], t_start=1.0, t_end=1e-3,
                            skip_type="logSNR", algorithm_type=algorithm_type, **config.options)
            x_end = result.x
        else:
            x_end = _multistep_from_exact_start(config, schedule, model, x, algorithm_type, n)
        hs.append(span / n)
        errors.append(_median_error(x_end, global_reference))
        if errors[-1] < ERROR_FLOOR:
            break
    fit = fit_order(hs, errors, expected=config.order, floor=ERROR_FLOOR / 10)
    assert fit.reliable, fit.reason
    assert abs(fit.slope - config.order) <= TOL, (fit.slope, fit.window, errors)


@pytest.mark.parametrize("algorithm_type", ALGORITHMS)
@pytest.mark.parametrize("name", ["DPM-Solver-2M", "DPM-Solver-3M"])
def test_global_order_with_the_default_warm_up(setup, global_reference, name, algorithm_type):
    """``sample()`` itself (lower-order warm-up steps) keeps orders 2 and 3 down to the reference floor."""
    config = REGISTRY[name]
    _, schedule, model, x = setup
    span = schedule.lam(1e-3) - schedule.lam(1.0)
    hs, errors = [], []
    for n in GLOBAL_STEPS:
        result = sample(model, schedule, x, steps=n, t_start=1.0, t_end=1e-3, skip_type="logSNR",
                        algorithm_type=algorithm_type, **config.options)
        hs.append(span / n)
        errors.append(_median_error(result.x, global_reference))
        if errors[-1] < ERROR_FLOOR:
            break
    fit = fit_order(hs, errors, expected=config.order, floor=ERROR_FLOOR / 10)
    assert fit.reliable and abs(fit.slope - config.order) <= TOL, (fit.slope, fit.window, errors)


@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("name", CONFIGS)
def test_local_order(setup, local_reference, name, prediction):
    config = REGISTRY[name]
    _, schedule, model, _ = setup
    rule = config.make_rule()
    k = config.options["order"]
    errors = []
    for h in LOCAL_H:
        problem = DiffusionODE(schedule, ModelWrapper(model, schedule), prediction)
        s, t = schedule.inverse_lam(LAM_S), schedule.inverse_lam(LAM_S + float(h))
        x_s = local_reference(LAM_S)
        step = Step(0, s, t, k)
        if config.kind == "multistep":
            lams = [LAM_S - m * float(h) for m in range(k - 1, -1, -1)]
            history = [(problem.rho(schedule.inverse_lam(v)),
                        problem.nonlinear(local_reference(v), schedule.inverse_lam(v))) for v in lams]
            history[-1] = (problem.rho(s), history[-1][1])
            x_t = rule.update(problem, x_s, step, history)
        else:
            x_t = rule.step(problem, x_s, step, rule.init(problem, x_s))
        errors.append(_median_error(x_t, local_reference(LAM_S + float(h))))
    fit = fit_order(LOCAL_H, errors, expected=config.order + 1, floor=LOCAL_FLOOR / 10)
    assert fit.reliable, fit.reason
    assert abs(fit.slope - (config.order + 1)) <= TOL, (fit.slope, fit.window, errors)
