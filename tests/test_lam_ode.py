"""One diffusion ODE in lambda: the quantities of lam, the step coefficients and the right-hand sides that the
sampler (DiffusionODE in t), the grid optimiser and the reference solutions (LamDiffusionODE in lam) share."""

import math

import numpy as np
import pytest
import torch

import expsolver.optimize as optimize_module
from expsolver import VPCosine, VPDiscrete, VPLinear, reference_solve, sample
from expsolver.models import ModelWrapper
from expsolver.optimize import solve_on_lams
from expsolver.problems import DiffusionODE, LamDiffusionODE
from expsolver.reference import _Rhs
from expsolver.schedules import log_alpha_of_lam, log_sigma_of_lam

from conftest import make_mixture_2d

MIXTURE = make_mixture_2d()
SCHEDULES = {"linear": VPLinear(), "cosine": VPCosine(), "discrete": VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000))}


def _problems(schedule, prediction):
    wrapper = ModelWrapper(MIXTURE.as_model(schedule), schedule)
    return DiffusionODE(schedule, wrapper, prediction), LamDiffusionODE(schedule, wrapper, prediction)


def _x(n=16, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _log_alpha_and_slope(lam):
    lam_t = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
    la_t = log_alpha_of_lam(lam_t)
    la_t.backward()
    return float(la_t.detach()), float(lam_t.grad)


@pytest.mark.parametrize("lam", [-12.0, -5.0, -0.3, 0.0, 1e-9, 2.5, 7.0, 30.0])
def test_log_alpha_and_log_sigma_of_lam(lam):
    la, ls = log_alpha_of_lam(lam), log_sigma_of_lam(lam)
    assert isinstance(la, float) and isinstance(ls, float)
    assert la - ls == pytest.approx(lam, rel=1e-15, abs=1e-15)  # lam = log alpha - log sigma
    assert math.exp(2 * la) + math.exp(2 * ls) == pytest.approx(1.0, rel=1e-15)  # alpha^2 + sigma^2 = 1
    la_t, slope = _log_alpha_and_slope(lam)
    assert la_t == pytest.approx(la, rel=1e-15, abs=1e-300)
    assert float(log_sigma_of_lam(torch.tensor(lam, dtype=torch.float64))) == pytest.approx(ls, rel=1e-15, abs=1e-300)
    if lam != 0.0:
        assert slope == pytest.approx(math.exp(2 * ls), rel=1e-14, abs=1e-300)  # d log alpha / d lam = sigma^2


def test_slope_of_log_alpha_at_lam_zero():
    """At lam = 0 (the kink of a max/abs form of softplus) the slope is still sigma^2 = 1/2."""
    assert _log_alpha_and_slope(0.0)[1] == pytest.approx(0.5, rel=1e-15)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("prediction", ["noise", "data"])
def test_coefficients_in_lam_are_the_sampler_coefficients(name, prediction):
    """The lam problem's coefficients at lam(s), lam(t) are the t problem's at s, t (one method, two maps from the
    time to alpha and sigma), as floats and as differentiable tensors."""
    schedule = SCHEDULES[name]
    in_t, in_lam = _problems(schedule, prediction)
    assert type(in_lam).coefficients is DiffusionODE.coefficients
    ts = [schedule.T, 0.7, 0.31, 0.3, 0.05, 0.004, 2e-3]
    worst = 0.0
    for s, t in zip(ts[:-1], ts[1:]):
        expected = in_t.coefficients(s, t)
        lam_s, lam_t = in_t.rho(s), in_t.rho(t)
        got = in_lam.coefficients(lam_s, lam_t)
        tensors = in_lam.coefficients(torch.tensor(lam_s, dtype=torch.float64),
                                      torch.tensor(lam_t, dtype=torch.float64))
        assert got.h == expected.h and got.z == expected.z == tensors.z
        for field in ("linear", "scale"):
            a, b, c = getattr(expected, field), getattr(got, field), float(getattr(tensors, field))
            assert isinstance(b, float)
            worst = max(worst, abs(b - a) / abs(a), abs(c - a) / abs(a))
        for a, b, c in zip(expected.integrals(3), got.integrals(3), tensors.integrals(3)):
            worst = max(worst, abs(b - a) / abs(a), abs(float(c) - a) / abs(a))
    assert worst <= 1e-15


def test_the_optimiser_integrates_the_lam_diffusion_ode(monkeypatch):
    """solve_on_lams runs the solvers on a LamDiffusionODE (a DiffusionODE), through the same integrate loop."""
    schedule = VPLinear()
    model = MIXTURE.as_model(schedule)
    seen = []
    original = optimize_module.integrate

    def spy(problem, *args, **kwargs):
        seen.append(problem)
        return original(problem, *args, **kwargs)

    monkeypatch.setattr(optimize_module, "integrate", spy)
    x = _x()
    ts = [1.0, 0.5, 0.2, 0.05, 1e-3]
    for algorithm_type in ("dpmsolver", "dpmsolver++"):
        reference = sample(model, schedule, x, timesteps=ts, order=2, algorithm_type=algorithm_type)
        lams = [torch.tensor(v, dtype=torch.float64) for v in schedule.lams_of(ts)]
        endpoints = {float(lams[0]): ts[0], float(lams[-1]): ts[-1]}
        out = solve_on_lams(model, schedule, x, lams, reference.orders, reference.options, endpoints)
        assert torch.allclose(out, reference.x, rtol=0, atol=1e-12)
    assert [type(p) for p in seen] == [LamDiffusionODE, LamDiffusionODE]
    assert all(isinstance(p, DiffusionODE) for p in seen)
    assert [p.prediction for p in seen] == ["noise", "data"]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_reference_right_hand_sides_are_the_problems(name):
    """The reference's right-hand side is the problem's rhs in either variable, and dx/dlam of the lam problem is
    dx/dt of the t problem divided by dlam/dt = -g^2 / (2 sigma^2)."""
    schedule = SCHEDULES[name]
    wrapper = ModelWrapper(MIXTURE.as_model(schedule), schedule)
    t_start, t_end = schedule.T, 2e-3
    in_lam, in_t = _Rhs(wrapper, schedule, "lambda", t_start, t_end), _Rhs(wrapper, schedule, "t", t_start, t_end)
    assert type(in_lam.problem) is LamDiffusionODE and type(in_t.problem) is DiffusionODE
    x = _x()
    for t in (0.8, 0.3, 0.01):
        lam = schedule.lam(t)
        assert torch.equal(in_lam(lam, x), in_lam.problem.rhs(lam, x))
        assert torch.equal(in_t(t, x), in_t.problem.rhs(t, x))
        dlam_dt = -schedule.g2(t) / (2.0 * schedule.sigma(t) ** 2)
        assert torch.allclose(in_t(t, x) / dlam_dt, in_lam(lam, x), rtol=1e-12, atol=0)
        # The lam problem's own map to the model's time (lam_inverse_float) gives the same right-hand side.
        own = LamDiffusionODE(schedule, wrapper).rhs(lam, x)
        assert torch.allclose(own, in_lam(lam, x), rtol=1e-14, atol=1e-14)


def test_reference_solve_of_a_lam_problem_integrates_in_lam():
    """A LamDiffusionODE is integrated in its own time lam and reaches the diffusion form's reference."""
    schedule = VPLinear()
    model = MIXTURE.as_model(schedule)
    x = _x(8)
    t_start, t_end = 1.0, 1e-3
    expected = reference_solve(model, schedule, x, t_start, t_end, rtol=1e-10, atol=1e-10).x
    problem = LamDiffusionODE(schedule, ModelWrapper(model, schedule), "data")
    result = reference_solve(problem, x, schedule.lam(t_start), schedule.lam(t_end), rtol=1e-10, atol=1e-10,
                             error_estimate=False)
    assert result.success and result.nfe == problem.nfe
    assert float((result.x - expected).norm(dim=1).max()) <= 1e-8
