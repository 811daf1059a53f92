"""Coefficients before slopes: each step rule against an independently written closed form, exactness for
predictions constant (or polynomial of low degree) in lambda, and schedule independence at fixed lambda grid."""

import math

import numpy as np
import pytest
import torch
import mpmath

from expsolver import VPCosine, VPLinear, sample
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE
from expsolver.solvers import DPMSolverMultistep, DPMSolverSinglestep, Step

from conftest import make_mixture_2d

SCHEDULE = VPLinear()
MIXTURE = make_mixture_2d()


def _x(n=8, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sched(t):
    a, s = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
    return a, s, math.log(a / s)


def _eps(x, t):
    return MIXTURE.eps(x, t, SCHEDULE)


def _x0(x, t):
    return MIXTURE.data(x, t, SCHEDULE)


def _problem(prediction):
    return DiffusionODE(SCHEDULE, ModelWrapper(MIXTURE.as_model(SCHEDULE), SCHEDULE), prediction)


def _close(a, b, tol=1e-12):
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


S, T = 0.6, 0.35


def test_dpm_solver_1_is_ddim_in_its_original_form():
    x = _x()
    a_s, s_s, _ = _sched(S)
    a_t, s_t, _ = _sched(T)
    eps = _eps(x, S)
    ddim = a_t * (x - s_s * eps) / a_s + s_t * eps  # Song et al. 2021, eq. (12) with sigma = 0
    for prediction in ("noise", "data"):
        out = DPMSolverSinglestep(1).step(_problem(prediction), x, Step(0, S, T, 1))
        assert _close(out, ddim)


@pytest.mark.parametrize("r1", [0.5, 0.3])
def test_dpm_solver_2_noise_form_closed_form(r1):
    """DPM-Solver-2, Lu et al. 2022a Alg. 1 (the k = 2 formula)."""
    x = _x()
    a_s, s_s, l_s = _sched(S)
    a_t, s_t, l_t = _sched(T)
    h = l_t - l_s
    s1 = SCHEDULE.inverse_lam(l_s + r1 * h)
    a_1, s_1, _ = _sched(s1)
    e_s = _eps(x, S)
    u = a_1 / a_s * x - s_1 * math.expm1(r1 * h) * e_s
    e_1 = _eps(u, s1)
    expected = a_t / a_s * x - s_t * math.expm1(h) * e_s - s_t / (2 * r1) * math.expm1(h) * (e_1 - e_s)
    out = DPMSolverSinglestep(2, "dpmsolver").step(_problem("noise"), x, Step(0, S, T, 2, (r1,)))
    assert _close(out, expected)


def test_dpm_solver_3_noise_form_closed_form():
    """DPM-Solver-3, Lu et al. 2022a Alg. 2 (r1 = 1/3, r2 = 2/3)."""
    x = _x()
    r1, r2 = 1 / 3, 2 / 3
    a_s, s_s, l_s = _sched(S)
    a_t, s_t, l_t = _sched(T)
    h = l_t - l_s
    s1, s2 = SCHEDULE.inverse_lam(l_s + r1 * h), SCHEDULE.inverse_lam(l_s + r2 * h)
    (a_1, s_1, _), (a_2, s_2, _) = _sched(s1), _sched(s2)
    e_s = _eps(x, S)
    u1 = a_1 / a_s * x - s_1 * math.expm1(r1 * h) * e_s
    d1 = _eps(u1, s1) - e_s
    u2 = a_2 / a_s * x - s_2 * math.expm1(r2 * h) * e_s - s_2 * r2 / r1 * (math.expm1(r2 * h) / (r2 * h) - 1) * d1
    d2 = _eps(u2, s2) - e_s
    expected = a_t / a_s * x - s_t * math.expm1(h) * e_s - s_t / r2 * (math.expm1(h) / h - 1) * d2
    out = DPMSolverSinglestep(3, "dpmsolver").step(_problem("noise"), x, Step(0, S, T, 3))
    assert _close(out, expected)


def test_dpm_solver_pp_2s_closed_form():
    """DPM-Solver++(2S), Lu et al. 2022b Alg. 1: D = (1 - 1/(2r)) x0(s) + 1/(2r) x0(u)."""
    x = _x()
    r = 0.5
    a_s, s_s, l_s = _sched(S)
    a_t, s_t, l_t = _sched(T)
    h = l_t - l_s
    s1 = SCHEDULE.inverse_lam(l_s + r * h)
    a_1, s_1, _ = _sched(s1)
    x0_s = _x0(x, S)
    u = s_1 / s_s * x - a_1 * math.expm1(-r * h) * x0_s
    D = (1 - 1 / (2 * r)) * x0_s + 1 / (2 * r) * _x0(u, s1)
    expected = s_t / s_s * x - a_t * math.expm1(-h) * D
    out = DPMSolverSinglestep(2, "dpmsolver").step(_problem("data"), x, Step(0, S, T, 2, (r,)))
    assert _close(out, expected)


def test_dpm_solver_pp_2m_closed_form():
    """DPM-Solver++(2M), Lu et al. 2022b Alg. 2: D = (1 + 1/(2r)) x0_{i-1} - 1/(2r) x0_{i-2}, r = h_{i-1}/h_i."""
    x_prev, x = _x(seed=1), _x(seed=2)
    t_prev = 0.8
    _, _, l_p = _sched(t_prev)
    a_s, s_s, l_s = _sched(S)
    a_t, s_t, l_t = _sched(T)
    h, h_prev = l_t - l_s, l_s - l_p
    r = h_prev / h
    x0_p, x0_s = _x0(x_prev, t_prev), _x0(x, S)
    D = (1 + 1 / (2 * r)) * x0_s - 1 / (2 * r) * x0_p
    expected = s_t / s_s * x - a_t * math.expm1(-h) * D
    problem = _problem("data")
    history = [(problem.rho(t_prev), x0_p), (problem.rho(S), x0_s)]
    out = DPMSolverMultistep(2, "dpmsolver").update(problem, x, Step(0, S, T, 2), history)
    assert _close(out, expected)


def test_official_3m_d2_is_half_the_second_difference():
    """The official third-order multistep weights equal the corrected ones with D2 halved: the documented defect."""
    problem = _problem("data")
    ts = (0.9, 0.75, S)
    xs = [_x(seed=k) for k in range(3)]
    history = [(problem.rho(t), _x0(x, t)) for t, x in zip(ts, xs)]
    step = Step(0, S, T, 3)
    official = DPMSolverMultistep(3, coefficients="official").update(problem, xs[-1], step, history)
    corrected = DPMSolverMultistep(3, coefficients="corrected").update(problem, xs[-1], step, history)
    (l2, n2), (l1, n1), (l0, n0) = history
    c = problem.coefficients(S, T)
    r0, r1 = (l0 - l1) / c.h, (l1 - l2) / c.h
    d2 = ((n0 - n1) / r0 - (n1 - n2) / r1) / (r0 + r1)  # the official D2
    i2 = c.integrals(3)[2]
    assert _close(corrected - official, c.scale * i2 / c.h**2 * d2)


# -- exactness ---------------------------------------------------------------------------------------------------

def _lam(t):
    return SCHEDULE.lam(t)


def _polynomial_model(coeffs, model_type):
    """A model whose prediction (noise or x0) is ``sum_j c_j lam(t)^j``, independent of x."""
    def model(x, t):
        lam = SCHEDULE.lam(t)[:, None]
        value = sum(c * lam**j for j, c in enumerate(coeffs))
        return value.expand_as(x).clone()
    return model


def _exact_polynomial_solution(x, t_start, t_end, coeffs, prediction):
    l_s, l_t = _lam(t_start), _lam(t_end)
    p = lambda lam: sum(c * lam**j for j, c in enumerate(coeffs))
    sign = -1 if prediction == "noise" else 1
    with mpmath.workdps(30):
        integral = float(mpmath.quad(lambda lam: mpmath.exp(sign * lam) * p(lam), [l_s, l_t]))
    if prediction == "noise":  # x_t = alpha_t/alpha_s x_s - alpha_t int e^{-lam} eps dlam
        return SCHEDULE.alpha(t_end) / SCHEDULE.alpha(t_start) * x - SCHEDULE.alpha(t_end) * integral
    # x_t = sigma_t/sigma_s x_s + sigma_t int e^{lam} x0 dlam
    return SCHEDULE.sigma(t_end) / SCHEDULE.sigma(t_start) * x + SCHEDULE.sigma(t_end) * integral


FIXED = [(m, k, st) for m in ("singlestep_fixed", "multistep") for k in (1, 2, 3) for st in ("dpmsolver", "taylor")]


@pytest.mark.parametrize("algorithm_type", ["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("method, order, solver_type", FIXED + [("singlestep", 3, "dpmsolver"), ("multistep", 4, "taylor")])
def test_every_rule_is_exact_for_constant_prediction(method, order, solver_type, algorithm_type):
    model_type = "noise" if algorithm_type == "dpmsolver" else "x_start"
    prediction = "noise" if algorithm_type == "dpmsolver" else "data"
    coeffs = (0.7,)
    x = _x()
    out = sample(_polynomial_model(coeffs, model_type), SCHEDULE, x, steps=6, order=order, method=method,
                 solver_type=solver_type, algorithm_type=algorithm_type, model_type=model_type, skip_type="logSNR")
    assert _close(out.x, _exact_polynomial_solution(x, SCHEDULE.T, 1e-3, coeffs, prediction), 1e-11)


@pytest.mark.parametrize("algorithm_type", ["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("order", [2, 3])
def test_taylor_singlestep_is_exact_for_polynomials_below_its_order(order, algorithm_type):
    model_type = "noise" if algorithm_type == "dpmsolver" else "x_start"
    prediction = "noise" if algorithm_type == "dpmsolver" else "data"
    coeffs = (0.3, -0.2, 0.05)[:order]
    x = _x()
    out = sample(_polynomial_model(coeffs, model_type), SCHEDULE, x, steps=order * 4, order=order,
                 method="singlestep_fixed", solver_type="taylor", algorithm_type=algorithm_type,
                 model_type=model_type, skip_type="logSNR")
    assert _close(out.x, _exact_polynomial_solution(x, SCHEDULE.T, 1e-3, coeffs, prediction), 1e-10)


@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_corrected_multistep_is_exact_for_polynomials_below_its_order(order, prediction):
    """One full-order step from an exact history (warm-up steps are lower order by design)."""
    model_type = "noise" if prediction == "noise" else "x_start"
    coeffs = (0.3, -0.2, 0.05, -0.01)[:order]
    model = _polynomial_model(coeffs, model_type)
    problem = DiffusionODE(SCHEDULE, ModelWrapper(model, SCHEDULE, model_type=model_type), prediction)
    history_times = [0.9, 0.8, 0.72, S][-order:]
    x = _x()
    history = [(problem.rho(t), problem.nonlinear(x, t)) for t in history_times]  # N does not depend on x
    rule = DPMSolverMultistep(order, "taylor", "corrected")
    out = rule.update(problem, x, Step(0, S, T, order), history)
    assert _close(out, _exact_polynomial_solution(x, S, T, coeffs, prediction), 1e-11)


def test_official_3m_is_not_exact_for_quadratics():
    """The documented defect, seen as a failed exactness test."""
    coeffs = (0.3, -0.2, 0.05)
    x = _x()
    out = sample(_polynomial_model(coeffs, "x_start"), SCHEDULE, x, steps=12, order=3, method="multistep",
                 algorithm_type="dpmsolver++", model_type="x_start", skip_type="logSNR", lower_order_final=False,
                 compat="official")
    assert not _close(out.x, _exact_polynomial_solution(x, SCHEDULE.T, 1e-3, coeffs, "data"), 1e-6)


@pytest.mark.parametrize("method, order", [("singlestep_fixed", 3), ("multistep", 3), ("singlestep", 2)])
def test_same_lambda_grid_same_result_under_linear_and_cosine(method, order):
    """A VP solver sees the schedule only through lambda (and alpha, sigma, functions of lambda)."""
    x = _x()
    lams = np.linspace(-4.5, 6.0, 10)  # inside both schedules' lambda ranges
    results = []
    for schedule in (VPLinear(), VPCosine()):
        ts = [schedule.inverse_lam(float(v)) for v in lams]
        results.append(sample(MIXTURE.as_model(schedule), schedule, x, timesteps=ts, order=order,
                              method=method).x)
    assert _close(results[0], results[1], 1e-11)
