"""DEIS tAB (expsolver.solvers.deis): the quadrature of its weights against independent integrals, exactness for
polynomials in t, identity with the exponential Adams method when rho = t, the driver, and fitted local orders.

Global orders of the registered DEIS configurations are measured by tests/test_orders.py. Runtime ~5 s.
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate as sp_integrate

from analysis.local_error import one_step_errors
from analysis.order import fit_order
from analysis.verification import LOCAL_FLOOR, LOCAL_HS, VerificationProblem
from conftest import make_mixture_2d
from expsolver import VPCosine, VPLinear, sample
from expsolver.models import ModelWrapper
from expsolver.problems import BernoulliETDProblem, DiffusionODE
from expsolver.solvers import DEISMultistep, DPMSolverMultistep, Step
from expsolver.solvers.deis import deis_weights

TOL = 0.15


def _problem(schedule, prediction):
    mixture = make_mixture_2d()
    return DiffusionODE(schedule, ModelWrapper(mixture.as_model(schedule), schedule), prediction)


def _exact_integral(problem, s, c, f):
    """``int_0^h e^{z (h - u)} f(tau(rho_s + u)) du`` by adaptive quadrature (scipy.quad)."""
    rho_s = problem.rho(s)
    value, _ = sp_integrate.quad(lambda u: math.exp(c.z * (c.h - u)) * f(problem.t_of_rho(rho_s + u)), 0.0, c.h,
                                 epsabs=0.0, epsrel=1e-13, limit=200)
    return value


@pytest.mark.parametrize("schedule", [VPLinear(), VPCosine()], ids=["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("lam_s,h", [(-4.0, 1.2), (0.0, 0.8), (3.0, 1.5)])
def test_weights_integrate_polynomials_in_t_exactly(schedule, prediction, lam_s, h):
    """sum_j w_j p(tau_j) equals the integral of the kernel times p(t(lam)) for every polynomial p in t of degree
    < k (so w_j are the exact integrals of the Lagrange basis), to ~1e-13, including the large last steps."""
    problem = _problem(schedule, prediction)
    s, t = schedule.inverse_lam(lam_s), schedule.inverse_lam(lam_s + h)
    c = problem.coefficients(s, t)
    for k in (2, 3, 4):
        taus = [schedule.inverse_lam(lam_s - m * 0.7 * h) for m in range(k - 1, 0, -1)] + [s]
        weights = deis_weights(problem, s, c, taus)
        scale_t = max(abs(v) for v in taus)
        for degree in range(k):
            f = lambda tau, d=degree: (tau / scale_t) ** d
            exact = _exact_integral(problem, s, c, f)
            approx = sum(w * f(tau) for w, tau in zip(weights, taus))
            assert approx == pytest.approx(exact, rel=1e-12, abs=1e-14 * abs(c.integrals(1)[0])), (k, degree)


def test_quadrature_converged():
    """32 Gauss-Legendre nodes agree with 128 to ~1e-15 on the largest step of a 10-step logSNR grid."""
    schedule = VPLinear()
    problem = _problem(schedule, "noise")
    lam_a, lam_b = schedule.lam(1.0), schedule.lam(1e-3)
    h = (lam_b - lam_a) / 10
    s, t = schedule.inverse_lam(lam_b - h), 1e-3
    c = problem.coefficients(s, t)
    taus = [schedule.inverse_lam(lam_b - m * h) for m in (4, 3, 2)] + [s]
    a, b = deis_weights(problem, s, c, taus, 32), deis_weights(problem, s, c, taus, 128)
    scale = max(abs(v) for v in b)
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-14 * scale


@pytest.mark.parametrize("k", [2, 3, 4])
def test_equals_exponential_adams_when_rho_is_t(k):
    """With rho = t (BernoulliETDProblem, diagonal L) the Lagrange basis is a polynomial in u and DEIS is the
    exponential Adams-Bashforth method (DPMSolverMultistep, corrected)."""
    problem = BernoulliETDProblem(torch.tensor([-0.5, -5.0, -40.0], dtype=torch.float64), c=1.0)
    x = torch.tensor([[0.3, 0.8, 1.5]], dtype=torch.float64)
    h = 0.1
    history = [(j * h, problem.nonlinear(problem.exact(x, 0.0, j * h), j * h)) for j in range(k)]
    x_s = problem.exact(x, 0.0, (k - 1) * h)
    step = Step(0, (k - 1) * h, k * h, k)
    a = DEISMultistep(k).update(problem, x_s, step, history)
    b = DPMSolverMultistep(k, "taylor", "corrected").update(problem, x_s, step, history)
    assert torch.allclose(a, b, rtol=1e-13, atol=0)


def test_order_one_is_ddim():
    schedule, mixture = VPLinear(), make_mixture_2d()
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = sample(mixture.as_model(schedule), schedule, x, steps=6, method="deis", order=1)
    b = sample(mixture.as_model(schedule), schedule, x, steps=6, method="multistep", order=1)
    assert torch.equal(a.x, b.x)


def test_driver_and_validation():
    schedule, mixture = VPLinear(), make_mixture_2d()
    model = mixture.as_model(schedule)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = sample(model, schedule, x, steps=7, method="deis", order=3, algorithm_type="dpmsolver")
    assert result.nfe == 7 and result.orders == [1, 2, 3, 3, 3, 2, 1]
    with pytest.raises(ValueError, match="compat"):
        sample(model, schedule, x, method="deis", order=2, compat="official")
    with pytest.raises(ValueError, match="order"):
        sample(model, schedule, x, method="deis", order=5)
    with pytest.raises(ValueError, match="only to method='unipc'"):
        sample(model, schedule, x, method="deis", variant="bh1")
    with pytest.raises(ValueError, match="history"):
        DEISMultistep(3).update(_problem(schedule, "noise"), x, Step(0, 1.0, 0.5, 3), [(0.0, x)])


@pytest.fixture(scope="module")
def vp():
    return VerificationProblem(n_samples=32)


@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("k", [2, 3])
def test_local_order(vp, prediction, k):
    """One step of tAB(k-1) from the exact history (the local protocol of :mod:`analysis.verification`): local
    order k + 1 (RMS over samples; fitted window)."""
    problem = vp.problem("dpmsolver" if prediction == "noise" else "dpmsolver++")
    hs, errors = one_step_errors(DEISMultistep(k), problem, vp.local_state, 0.0, LOCAL_HS)
    rms = [float(np.sqrt(np.mean(e**2))) for e in errors]
    fit = fit_order(hs, rms, expected=k + 1, floor=LOCAL_FLOOR)
    assert fit.reliable, fit.reason
    assert abs(fit.slope - (k + 1)) <= TOL, (fit.slope, fit.window, rms)
