"""Tests of the exact Gaussian-mixture targets (expsolver.gmm).

Independent checks: the score against autograd of log_prob, log_prob against SciPy's multivariate normal and
against quadrature, the data prediction of one Gaussian against a linear solve, the closed-form flow against the
probability-flow ODE by finite differences, and the sampler against the exact moments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from expsolver.gmm import GaussianMixture
from expsolver.schedules import VPCosine, VPDiscrete, VPLinear

COV_TYPES = ("full", "diag", "iso")
SCHEDULES = {
    "linear": VPLinear(),
    "cosine": VPCosine(),
    "discrete": VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000)),
}
TIMES = (1e-3, 0.1, 0.5, 1.0)


def _clip(t, schedule):
    return min(max(t, schedule.t_min), schedule.T)


def make_mixture(cov_type: str, K: int = 3, d: int = 4, seed: int = 0) -> GaussianMixture:
    """A mixture with well-conditioned random covariances (full ones from random matrices)."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    means = 2.0 * torch.randn(K, d, generator=g, dtype=torch.float64)
    if cov_type == "full":
        a = torch.randn(K, d, d, generator=g, dtype=torch.float64)
        covs = a @ a.transpose(1, 2) / d + 0.2 * torch.eye(d, dtype=torch.float64)
    elif cov_type == "diag":
        covs = torch.rand(K, d, generator=g, dtype=torch.float64) + 0.2
    else:
        covs = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture(weights, means, covs)


def _points(gmm, t, schedule, n=64, seed=1):
    """Samples of q_t plus points far in the tails (large responsibilities contrasts)."""
    x = gmm.sample(n, torch.Generator().manual_seed(seed), t=t, schedule=schedule)
    return torch.cat([x, 3.0 * x[: n // 4]])


def _rel_err(a, b):
    return ((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-300)).max().item()


# -- exactness of the predictions -------------------------------------------------------------------------------
@pytest.mark.parametrize("sched_name", sorted(SCHEDULES))
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_score_is_gradient_of_log_prob(cov_type, sched_name):
    schedule = SCHEDULES[sched_name]
    gmm = make_mixture(cov_type)
    for t in TIMES:
        t = _clip(t, schedule)
        x = _points(gmm, t, schedule).requires_grad_(True)
        (grad,) = torch.autograd.grad(gmm.log_prob(x, t, schedule).sum(), x)
        score = gmm.score(x.detach(), t, schedule)
        assert score.dtype == torch.float64 and score.shape == x.shape
        assert _rel_err(score, grad) <= 1e-10, f"t={t}"


@pytest.mark.parametrize("per_sample_t", [False, True], ids=["scalar_t", "per_sample_t"])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_score_is_differentiable(cov_type, per_sample_t):
    """Autograd through score (no in-place shortcuts then): its Jacobian is the Hessian of log_prob."""
    schedule = VPLinear()
    gmm = make_mixture(cov_type, K=3, d=3, seed=2)
    x = _points(gmm, 0.3, schedule, n=4)
    t = torch.linspace(0.2, 0.4, x.shape[0], dtype=torch.float64) if per_sample_t else 0.3
    jac = torch.autograd.functional.jacobian(lambda u: gmm.score(u, t, schedule).sum(0), x)  # (d, batch, d)
    hess = torch.autograd.functional.jacobian(
        lambda u: torch.autograd.grad(gmm.log_prob(u, t, schedule).sum(), u, create_graph=True)[0].sum(0), x
    )
    torch.testing.assert_close(jac, hess, rtol=1e-10, atol=1e-12)
    per_point = jac.permute(1, 0, 2)  # (batch, d, d): d score_i / d x_j
    torch.testing.assert_close(per_point, per_point.transpose(1, 2), rtol=1e-10, atol=1e-12)


def test_repeated_calls_do_not_share_outputs():
    """Intermediates are reused between calls on CPU; returned tensors must not be."""
    schedule = VPLinear()
    gmm = make_mixture("full")
    x = _points(gmm, 0.5, schedule)
    ts = torch.linspace(0.1, 0.9, x.shape[0], dtype=torch.float64)
    first = [gmm.eps(x, 0.5, schedule), gmm.data(x, ts, schedule), gmm.score(x, 0.2, schedule)]
    kept = [v.clone() for v in first]
    for t in (0.7, ts.flip(0), 1e-3):
        gmm.eps(x, t, schedule), gmm.data(x, t, schedule), gmm.log_prob(2 * x, t, schedule)
    for a, b in zip(first, kept):
        assert torch.equal(a, b)


def test_concurrent_threads_agree_with_serial_calls():
    import threading

    schedule = VPLinear()
    gmm = make_mixture("full")
    xs = [gmm.sample(500, torch.Generator().manual_seed(i), t=0.4, schedule=schedule) for i in range(4)]
    expected = [gmm.eps(x, 0.4, schedule) for x in xs]
    results = [None] * 4

    def work(i):
        for _ in range(20):
            results[i] = gmm.eps(xs[i], 0.4, schedule)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(r, e) for r, e in zip(results, expected))


def test_pickle_round_trip():
    import pickle

    schedule = VPLinear()
    gmm = make_mixture("full")
    x = _points(gmm, 0.5, schedule)
    gmm.eps(x.float(), 0.5, schedule)  # fill the caches
    clone = pickle.loads(pickle.dumps(gmm))
    torch.testing.assert_close(clone.eps(x, 0.5, schedule), gmm.eps(x, 0.5, schedule), rtol=0, atol=0)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_eps_and_data_consistent_with_score(cov_type):
    schedule = VPLinear()
    gmm = make_mixture(cov_type)
    for t in TIMES:
        x = _points(gmm, t, schedule)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        score, eps, data = gmm.score(x, t, schedule), gmm.eps(x, t, schedule), gmm.data(x, t, schedule)
        torch.testing.assert_close(eps, -sigma * score, rtol=1e-13, atol=0.0)
        torch.testing.assert_close(alpha * data + sigma * eps, x, rtol=1e-12, atol=1e-12 * x.abs().max().item())
        # Tweedie in its textbook form (loses digits to cancellation only as alpha -> 0).
        tweedie = (x + sigma**2 * score) / alpha
        assert _rel_err(data, tweedie) <= 1e-12 / alpha


def test_data_of_single_gaussian_is_posterior_mean():
    """E[x0 | xt] = mu + alpha Sigma C^{-1} (x - alpha mu) for q_0 = N(mu, Sigma), by a linear solve."""
    schedule = VPLinear()
    gmm = make_mixture("full", K=1, d=5, seed=3)
    mu, cov = gmm.means[0], gmm.covs[0]
    for t in TIMES:
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        x = _points(gmm, t, schedule)
        c_t = alpha**2 * cov + sigma**2 * torch.eye(5, dtype=torch.float64)
        expected = mu + alpha * torch.linalg.solve(c_t, (x - alpha * mu).T).T @ cov
        assert _rel_err(gmm.data(x, t, schedule), expected) <= 1e-12


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_prob_matches_scipy(cov_type):
    schedule = VPCosine()
    gmm = make_mixture(cov_type, K=3, d=3, seed=4)
    w, mus, covs = gmm.weights.numpy(), gmm.means.numpy(), gmm.covs.numpy()
    for t in (1e-3, 0.3, 0.9):
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        x = _points(gmm, t, schedule, n=8)
        comps = [
            scipy.stats.multivariate_normal(alpha * mus[k], alpha**2 * covs[k] + sigma**2 * np.eye(3)).logpdf(x.numpy())
            for k in range(3)
        ]
        expected = scipy.special.logsumexp(np.stack(comps), b=w[:, None], axis=0)
        np.testing.assert_allclose(gmm.log_prob(x, t, schedule).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_log_prob_integrates_to_one():
    schedule = VPLinear()
    gmm = GaussianMixture([0.2, 0.5, 0.3], [[-2.0], [0.5], [3.0]], [0.1, 0.5, 0.02])
    for t in (1e-3, 0.3):
        density = lambda u: math.exp(gmm.log_prob(torch.tensor([[u]], dtype=torch.float64), t, schedule).item())
        total = sum(scipy.integrate.quad(density, a, b, limit=200)[0] for a, b in [(-np.inf, 0.0), (0.0, np.inf)])
        assert abs(total - 1.0) < 1e-8


def test_per_sample_times_match_scalar_times():
    schedule = VPLinear()
    gmm = make_mixture("full")
    ts = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64).repeat_interleave(5)
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for method in ("log_prob", "score", "eps", "data", "component"):
        batched = getattr(gmm, method)(x, ts, schedule)
        rowwise = torch.cat([getattr(gmm, method)(x[i : i + 1], float(ts[i]), schedule) for i in range(20)])
        torch.testing.assert_close(batched, rowwise, rtol=1e-13, atol=1e-13)
    # A 0-d tensor acts as a scalar time.
    torch.testing.assert_close(gmm.eps(x, torch.tensor(0.3, dtype=torch.float64), schedule), gmm.eps(x, 0.3, schedule))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_float32_close_to_float64(cov_type):
    schedule = VPLinear()
    gmm = make_mixture(cov_type)
    for t in TIMES:
        x = gmm.sample(256, torch.Generator().manual_seed(6), t=t, schedule=schedule)
        for method in ("score", "eps", "data", "log_prob"):
            out64 = getattr(gmm, method)(x, t, schedule)
            out32 = getattr(gmm, method)(x.float(), torch.full((256,), t, dtype=torch.float32), schedule)
            assert out32.dtype == torch.float32
            if method == "log_prob":
                assert (out32.double() - out64).abs().max() <= 1e-5 * out64.abs().max()
            else:
                assert _rel_err(out32.double(), out64) <= 1e-5, (method, t)


def test_component_finds_the_nearest_mode():
    schedule = VPLinear()
    means = torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]], dtype=torch.float64)
    gmm = GaussianMixture([1.0, 1.0, 1.0], means, [0.5, 0.5, 0.5])
    t = 0.01
    comp = gmm.component(schedule.alpha(t) * means + 0.1, t, schedule)
    assert comp.dtype == torch.int64 and comp.tolist() == [0, 1, 2]


def test_as_model_is_eps():
    schedule = VPCosine()
    gmm = make_mixture("diag")
    model = gmm.as_model(schedule)
    x = _points(gmm, 0.4, schedule)
    t = torch.full((x.shape[0],), 0.4, dtype=torch.float64)
    torch.testing.assert_close(model(x, t), gmm.eps(x, 0.4, schedule), rtol=0, atol=0)
    assert "GaussianMixture(K=3, d=4" in repr(model) and repr(schedule) in repr(model)


# -- exact flow of one Gaussian ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_flow_solves_probability_flow_ode(cov_type):
    schedule = VPLinear()
    gmm = make_mixture(cov_type, K=1, d=3, seed=7)
    x_s = gmm.sample(32, torch.Generator().manual_seed(8), t=0.9, schedule=schedule)
    h = 1e-5
    for t in (0.05, 0.3, 0.7):
        x = gmm.flow(x_s, 0.9, t, schedule)
        dxdt = (gmm.flow(x_s, 0.9, t + h, schedule) - gmm.flow(x_s, 0.9, t - h, schedule)) / (2 * h)
        rhs = schedule.f(t) * x + schedule.g2(t) / (2 * schedule.sigma(t)) * gmm.eps(x, t, schedule)
        assert _rel_err(dxdt, rhs) <= 1e-7, f"t={t}"


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_flow_composes_and_is_identity_at_equal_times(cov_type):
    schedule = VPCosine()
    gmm = make_mixture(cov_type, K=1, d=3, seed=9)
    x = gmm.sample(32, torch.Generator().manual_seed(10), t=0.8, schedule=schedule)
    s, u, t = 0.8, 0.35, 1e-3
    direct = gmm.flow(x, s, t, schedule)
    composed = gmm.flow(gmm.flow(x, s, u, schedule), u, t, schedule)
    torch.testing.assert_close(composed, direct, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gmm.flow(x, s, s, schedule), x, rtol=1e-14, atol=1e-14)
    # Backwards in time inverts forwards; per-sample times agree with scalars.
    torch.testing.assert_close(gmm.flow(direct, t, s, schedule), x, rtol=1e-12, atol=1e-12)
    ts = torch.full((32,), t, dtype=torch.float64)
    s_tensor = torch.tensor(s, dtype=torch.float64)
    torch.testing.assert_close(gmm.flow(x, s_tensor, ts, schedule), direct, rtol=1e-14, atol=1e-14)


def test_flow_transports_marginal_moments():
    """The flow pushes q_s to q_t: its (linear) action maps the exact covariance of q_s to that of q_t."""
    schedule = VPLinear()
    gmm = make_mixture("full", K=1, d=3, seed=11)
    s, t = 0.8, 0.1
    eye = torch.eye(3, dtype=torch.float64)
    m_s = gmm.mean(s, schedule)
    jac = gmm.flow(m_s + eye, s, t, schedule) - gmm.flow(m_s.expand(3, 3), s, t, schedule)  # rows: J e_i
    torch.testing.assert_close(gmm.flow(m_s[None], s, t, schedule)[0], gmm.mean(t, schedule), rtol=1e-13, atol=1e-13)
    pushed = jac.T @ gmm.covariance(s, schedule) @ jac
    torch.testing.assert_close(pushed, gmm.covariance(t, schedule), rtol=1e-12, atol=1e-12)


# -- sampling and moments ---------------------------------------------------------------------------------------
def _assert_moments(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, n_se: float = 5.0):
    n = samples.shape[0]
    centred = samples - mean
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert ((centred.mean(0)).abs() <= n_se * se_mean).all(), (centred.mean(0), se_mean)
    products = centred[:, :, None] * centred[:, None, :]  # unbiased for cov since the true mean is used
    se_cov = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() <= n_se * se_cov).all(), (products.mean(0) - cov, se_cov)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_samples_have_exact_moments(cov_type):
    schedule = VPLinear()
    gmm = make_mixture(cov_type, K=3, d=3, seed=12)
    gen = torch.Generator().manual_seed(13)
    _assert_moments(gmm.sample(200_000, gen), gmm.mean(), gmm.covariance())
    for t in (0.2, 0.6):
        samples = gmm.sample(200_000, gen, t=t, schedule=schedule)
        _assert_moments(samples, gmm.mean(t, schedule), gmm.covariance(t, schedule))


def test_sample_reproducible_and_typed():
    gmm = make_mixture("full")
    a = gmm.sample(10, torch.Generator().manual_seed(0))
    b = gmm.sample(10, torch.Generator().manual_seed(0))
    assert a.dtype == torch.float64 and a.shape == (10, 4) and torch.equal(a, b)
    c = gmm.sample(10, torch.Generator().manual_seed(0), dtype=torch.float32, device="cpu")
    assert c.dtype == torch.float32 and torch.equal(c, a.float())


def test_marginal_moments_formula():
    schedule = VPLinear()
    gmm = make_mixture("diag")
    t = 0.4
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    w, mus, covs = gmm.weights, gmm.means, gmm.covs
    m = w @ mus
    second = torch.einsum("k,kde->de", w, covs + mus[:, :, None] * mus[:, None, :])
    torch.testing.assert_close(gmm.mean(), m)
    torch.testing.assert_close(gmm.covariance(), second - torch.outer(m, m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gmm.mean(t, schedule), alpha * m)
    expected = alpha**2 * (second - torch.outer(m, m)) + sigma**2 * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(gmm.covariance(t, schedule), expected, rtol=1e-12, atol=1e-12)


# -- construction -----------------------------------------------------------------------------------------------
def test_parameter_forms_and_input_types():
    means = [[0.0, 1.0], [2.0, -1.0]]
    iso = GaussianMixture(np.array([1.0, 3.0]), np.array(means), [0.5, 2.0])
    diag = GaussianMixture([1.0, 3.0], means, torch.tensor([[0.5, 0.5], [2.0, 2.0]]))
    full_covs = np.stack([0.5 * np.eye(2), 2.0 * np.eye(2)])
    full = GaussianMixture(torch.tensor([1.0, 3.0]), torch.tensor(means), full_covs)
    for gmm in (iso, diag, full):
        assert gmm.K == 2 and gmm.d == 2
        assert gmm.weights.dtype == torch.float64 and gmm.covs.shape == (2, 2, 2)
        torch.testing.assert_close(gmm.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))
        torch.testing.assert_close(gmm.covs, full.covs)
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    schedule = VPLinear()
    torch.testing.assert_close(iso.score(x, 0.2, schedule), full.score(x, 0.2, schedule), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(diag.score(x, 0.2, schedule), full.score(x, 0.2, schedule), rtol=1e-13, atol=1e-13)
    assert repr(full) == "GaussianMixture(K=2, d=2, covs='full')"


def test_zero_weight_component_is_ignored():
    schedule = VPLinear()
    with_zero = GaussianMixture([0.0, 1.0], [[5.0], [0.0]], [1.0, 1.0])
    single = GaussianMixture([1.0], [[0.0]], [1.0])
    x = torch.linspace(-3, 8, 12, dtype=torch.float64)[:, None]
    torch.testing.assert_close(with_zero.log_prob(x, 0.1, schedule), single.log_prob(x, 0.1, schedule))
    torch.testing.assert_close(with_zero.eps(x, 0.1, schedule), single.eps(x, 0.1, schedule))
    assert (with_zero.sample(1000, torch.Generator().manual_seed(0)) < 4.0).all()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    cov_type=st.sampled_from(COV_TYPES),
    t=st.floats(1e-4, 1.0),
    K=st.integers(1, 4),
    d=st.integers(1, 5),
)
def test_noise_and_data_predictions_reassemble_x(seed, cov_type, t, K, d):
    schedule = VPLinear()
    gmm = make_mixture(cov_type, K=K, d=d, seed=seed)
    x = 3.0 * torch.randn(16, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    recon = schedule.alpha(t) * gmm.data(x, t, schedule) + schedule.sigma(t) * gmm.eps(x, t, schedule)
    torch.testing.assert_close(recon, x, rtol=1e-12, atol=1e-12)


# -- bad inputs -------------------------------------------------------------------------------------------------
_W, _M, _C = [0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [1.0, 2.0]
_GOOD = GaussianMixture(_W, _M, _C)
_SINGLE = GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
_S = VPLinear()
_X = torch.zeros(3, 2, dtype=torch.float64)

BAD_INPUTS = {
    "weights negative": (lambda: GaussianMixture([-0.1, 1.0], _M, _C), ValueError, r"weights"),
    "weights all zero": (lambda: GaussianMixture([0.0, 0.0], _M, _C), ValueError, r"weights"),
    "weights 2-D": (lambda: GaussianMixture([[0.5, 0.5]], _M, _C), ValueError, r"weights"),
    "weights nan": (lambda: GaussianMixture([np.nan, 1.0], _M, _C), ValueError, r"weights"),
    "weights empty": (lambda: GaussianMixture([], np.zeros((0, 2)), []), ValueError, r"weights"),
    "means 1-D": (lambda: GaussianMixture(_W, [0.0, 1.0], _C), ValueError, r"means"),
    "means wrong K": (lambda: GaussianMixture(_W, [[0.0, 0.0]], _C), ValueError, r"means"),
    "means inf": (lambda: GaussianMixture(_W, [[np.inf, 0.0], [0.0, 0.0]], _C), ValueError, r"means"),
    "covs wrong K": (lambda: GaussianMixture(_W, _M, [1.0, 1.0, 1.0]), ValueError, r"covs"),
    "covs diag wrong d": (lambda: GaussianMixture(_W, _M, np.ones((2, 3))), ValueError, r"covs"),
    "covs full wrong d": (lambda: GaussianMixture(_W, _M, np.tile(np.eye(3), (2, 1, 1))), ValueError, r"covs"),
    "covs 4-D": (lambda: GaussianMixture(_W, _M, np.ones((2, 2, 2, 2))), ValueError, r"covs"),
    "covs not symmetric": (
        lambda: GaussianMixture(_W, _M, np.array([np.eye(2), [[1.0, 0.5], [0.4, 1.0]]])),
        ValueError,
        r"covs\[1\] is not symmetric",
    ),
    "covs not PD": (
        lambda: GaussianMixture(_W, _M, np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])),
        ValueError,
        r"covs\[1\] is not .*positive definite",
    ),
    "covs singular": (lambda: GaussianMixture(_W, _M, np.array([np.eye(2), np.ones((2, 2))])), ValueError, r"covs"),
    "covs diag zero": (lambda: GaussianMixture(_W, _M, [[1.0, 0.0], [1.0, 1.0]]), ValueError, r"covs"),
    "covs iso negative": (lambda: GaussianMixture(_W, _M, [1.0, -1.0]), ValueError, r"covs"),
    "covs not numbers": (lambda: GaussianMixture(_W, _M, ["a", "b"]), TypeError, r"covs"),
    "x numpy": (lambda: _GOOD.eps(np.zeros((3, 2)), 0.5, _S), TypeError, r"^x must be a torch.Tensor"),
    "x integer": (lambda: _GOOD.eps(torch.zeros(3, 2, dtype=torch.int64), 0.5, _S), TypeError, r"^x "),
    "x 1-D": (lambda: _GOOD.eps(torch.zeros(2, dtype=torch.float64), 0.5, _S), ValueError, r"^x must have shape"),
    "x 3-D": (lambda: _GOOD.score(torch.zeros(3, 2, 1, dtype=torch.float64), 0.5, _S), ValueError, r"^x must"),
    "x wrong d": (lambda: _GOOD.log_prob(torch.zeros(3, 5, dtype=torch.float64), 0.5, _S), ValueError, r"d=2"),
    "x nan": (lambda: _GOOD.data(torch.full((3, 2), np.nan), 0.5, _S), ValueError, r"^x "),
    "t above T": (lambda: _GOOD.eps(_X, 1.5, _S), ValueError, r"^t=1.5 is outside"),
    "t zero": (lambda: _GOOD.eps(_X, 0.0, _S), ValueError, r"^t=0.0 is outside"),
    "t string": (lambda: _GOOD.eps(_X, "0.5", _S), TypeError, r"^t must"),
    "t tensor out of range": (
        lambda: _GOOD.eps(_X, torch.tensor([0.5, 0.5, 2.0], dtype=torch.float64), _S),
        ValueError,
        r"^t contains 2.0",
    ),
    "t tensor wrong shape": (lambda: _GOOD.eps(_X, torch.full((4,), 0.5), _S), ValueError, r"^t must .*shape"),
    "t integer tensor": (lambda: _GOOD.eps(_X, torch.ones(3, dtype=torch.int64), _S), TypeError, r"^t must"),
    "schedule wrong type": (lambda: _GOOD.eps(_X, 0.5, "linear"), TypeError, r"^schedule must"),
    "flow K > 1": (lambda: _GOOD.flow(_X, 0.5, 0.2, _S), ValueError, r"K=2"),
    "flow s out of range": (lambda: _SINGLE.flow(_X, 3.0, 0.2, _S), ValueError, r"^s=3.0 is outside"),
    "flow t tensor out of range": (
        lambda: _SINGLE.flow(_X, 0.5, torch.zeros(3, dtype=torch.float64), _S),
        ValueError,
        r"^t contains",
    ),
    "sample n zero": (lambda: _GOOD.sample(0), ValueError, r"^n must be >= 1"),
    "sample n float": (lambda: _GOOD.sample(1.5), TypeError, r"^n must be an int"),
    "sample t without schedule": (lambda: _GOOD.sample(5, t=0.5), ValueError, r"^schedule is required"),
    "sample schedule without t": (lambda: _GOOD.sample(5, schedule=_S), ValueError, r"pass t="),
    "sample bad generator": (lambda: _GOOD.sample(5, generator=0), TypeError, r"^generator must"),
    "sample t out of range": (lambda: _GOOD.sample(5, t=2.0, schedule=_S), ValueError, r"^t=2.0 is outside"),
    "sample bad dtype": (lambda: _GOOD.sample(5, dtype=torch.int32), TypeError, r"^dtype must"),
    "mean t without schedule": (lambda: _GOOD.mean(0.5), ValueError, r"^schedule is required"),
    "covariance t out of range": (lambda: _GOOD.covariance(-1.0, _S), ValueError, r"^t=-1.0 is outside"),
    "as_model bad schedule": (lambda: _GOOD.as_model(None), TypeError, r"^schedule must"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_raise_naming_the_argument(case):
    call, exc_type, pattern = BAD_INPUTS[case]
    with pytest.raises(exc_type, match=pattern):
        call()


# -- accelerator ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float32_matches_cpu_float64():
    schedule = VPLinear()
    gmm = make_mixture("full")
    x = _points(gmm, 0.5, schedule)
    t = torch.full((x.shape[0],), 0.5, dtype=torch.float32, device="cuda")
    for method in ("score", "eps", "data"):
        out = getattr(gmm, method)(x.float().cuda(), t, schedule)
        assert out.device.type == "cuda" and out.dtype == torch.float32
        assert _rel_err(out.double().cpu(), getattr(gmm, method)(x, 0.5, schedule)) <= 1e-5
    flow_in = make_mixture("full", K=1)
    y = flow_in.sample(16, t=0.9, schedule=schedule, device="cuda")
    assert flow_in.flow(y, 0.9, 0.1, schedule).device.type == "cuda"
