"""Noise schedules: round trips, identities, derivatives, the closed-form formulas and the discrete interpolant."""

import math

import numpy as np
import pytest
import torch

from expsolver import VPCosine, VPDiscrete, VPLinear


def _times(schedule, n=4000):
    lo, hi = schedule.t_min, schedule.T
    ts = torch.cat([torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64),
                    torch.linspace(lo, hi, n, dtype=torch.float64)])
    return ts.clamp(lo, hi)


def test_lambda_round_trip_is_exact(schedule):
    t = _times(schedule)
    back = schedule.inverse_lam(schedule.lam(t))
    assert float(((back - t).abs() / t).max()) <= 1e-12


def test_alpha_sigma_identity_and_monotone_lambda(schedule):
    t = _times(schedule)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    assert float((alpha**2 + sigma**2 - 1).abs().max()) <= 4e-16
    lam = schedule.lam(torch.sort(t).values.unique())
    assert bool((torch.diff(lam) < 0).all())


def test_sigma_has_no_cancellation_near_zero():
    schedule = VPLinear()
    t = 1e-5
    log_alpha = -(20.0 - 0.1) * t * t / 4 - 0.1 * t / 2
    exact_sigma2 = -math.expm1(2 * log_alpha)
    assert schedule.sigma(t) ** 2 == pytest.approx(exact_sigma2, rel=1e-14)


def test_drift_and_diffusion_match_finite_differences(schedule):
    t = torch.linspace(schedule.t_min + 0.01, schedule.T - 0.01, 37, dtype=torch.float64)
    if isinstance(schedule, VPDiscrete):  # piecewise linear: difference inside each segment
        t = (schedule.t_array[10:-10:25] + 0.4 / schedule.total_N)
    dt = 1e-6 if not isinstance(schedule, VPDiscrete) else 1e-7
    fd_f = (schedule.log_alpha(t + dt) - schedule.log_alpha(t - dt)) / (2 * dt)
    assert torch.allclose(schedule.f(t), fd_f, rtol=1e-7, atol=0)
    s2 = lambda u: schedule.sigma(u) ** 2
    fd_g2 = (s2(t + dt) - s2(t - dt)) / (2 * dt) - 2 * schedule.f(t) * s2(t)
    assert torch.allclose(schedule.g2(t), fd_g2, rtol=1e-6, atol=0)


def test_linear_log_alpha_is_the_seed_formula():
    schedule = VPLinear(beta_0=0.1, beta_1=20.0)
    for t in (1e-4, 0.1, 0.5, 1.0):
        assert schedule.log_alpha(t) == pytest.approx(-(20.0 - 0.1) / 4 * t * t - 0.1 / 2 * t, rel=1e-15)


def test_cosine_log_alpha_is_the_iddpm_formula():
    schedule = VPCosine()
    s = 0.008
    for t in (1e-3, 0.3, 0.9):
        direct = math.log(math.cos((t + s) / (1 + s) * math.pi / 2)) - math.log(math.cos(s / (1 + s) * math.pi / 2))
        assert schedule.log_alpha(t) == pytest.approx(direct, rel=1e-12)
    assert math.isfinite(schedule.lam(schedule.T))


def test_discrete_equals_piecewise_linear_interpolant():
    betas = np.linspace(1e-4, 0.02, 1000)
    schedule = VPDiscrete(betas=betas)
    log_alphas = 0.5 * np.cumsum(np.log1p(-betas))
    t_nodes = np.arange(1, 1001) / 1000
    assert np.allclose(schedule.log_alpha(torch.tensor(t_nodes)).numpy(), log_alphas, rtol=1e-14, atol=0)
    t = np.random.default_rng(0).uniform(1e-3, 1.0, 500)
    assert np.allclose(schedule.log_alpha(torch.tensor(t)).numpy(), np.interp(t, t_nodes, log_alphas), rtol=1e-13)
    same = VPDiscrete(alphas_cumprod=np.cumprod(1 - betas))
    assert np.allclose(same.log_alpha(torch.tensor(t)).numpy(), schedule.log_alpha(torch.tensor(t)).numpy(),
                       rtol=1e-12)


def test_float_and_tensor_inputs_keep_their_kind(schedule):
    assert isinstance(schedule.lam(0.5), float)
    for dtype in (torch.float32, torch.float64):
        out = schedule.sigma(torch.tensor([0.2, 0.5], dtype=dtype))
        assert out.dtype == dtype and out.shape == (2,)
    t32 = torch.tensor([0.25], dtype=torch.float32)
    assert schedule.lam(t32).item() == pytest.approx(schedule.lam(float(t32.item())), rel=1e-6)


@pytest.mark.parametrize("make, match", [
    (lambda: VPLinear(beta_0=-0.1), "beta_0"),
    (lambda: VPLinear(beta_0=float("nan")), "beta_0"),
    (lambda: VPLinear(beta_0=1.0, beta_1=0.5), "beta_1"),
    (lambda: VPCosine(T=1.0), "T"),
    (lambda: VPDiscrete(betas=[0.1, -0.2, 0.3]), "betas"),
    (lambda: VPDiscrete(betas=[0.1, float("inf")]), "betas"),
    (lambda: VPDiscrete(alphas_cumprod=[0.9, 0.95]), "alphas_cumprod"),
    (lambda: VPDiscrete(), "betas"),
    (lambda: VPLinear().lam(1.5), "t="),
    (lambda: VPLinear().lam(-0.1), "t="),
    (lambda: VPLinear().alpha(torch.tensor([0.5, 2.0])), "t contains"),
    (lambda: VPLinear().lam("0.5"), "t must be"),
    (lambda: VPDiscrete(betas=np.linspace(1e-4, 0.02, 100)).sigma(1e-3), "t="),
])
def test_bad_input_is_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
