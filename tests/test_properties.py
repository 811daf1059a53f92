"""Property-based tests (hypothesis): schedule round trips, exact scores, batch invariance, NFE accounting.

Examples are derandomized (the same examples on every run, like a fixed seed) and few (``max_examples`` 15-60);
the whole file runs in ~10 s on one core.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expsolver import GaussianMixture, VPCosine, VPDiscrete, VPLinear, sample

from conftest import make_mixture_2d

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

SCHEDULES = {
    "linear": VPLinear(),
    "cosine": VPCosine(),
    "discrete": VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000)),
}


def _time(schedule, u: float, log_uniform: bool) -> float:
    """A time in ``[t_min, T]``: uniform, or log-uniform (dense near ``t_min``, where lambda varies fastest)."""
    if log_uniform:
        return math.exp(math.log(schedule.t_min) + u * (math.log(schedule.T) - math.log(schedule.t_min)))
    return schedule.t_min + u * (schedule.T - schedule.t_min)


# -- schedules --------------------------------------------------------------------------------------------------
@settings(max_examples=60, **SETTINGS)
@given(name=st.sampled_from(sorted(SCHEDULES)), u=st.floats(0.0, 1.0), log_uniform=st.booleans())
def test_schedule_round_trip_t_lam_t(name, u, log_uniform):
    """``inverse_lam(lam(t)) = t`` to 1e-12 relative (measured worst: 2e-13, cosine), on the float path and the
    tensor path alike, and ``alpha^2 + sigma^2 = 1``."""
    schedule = SCHEDULES[name]
    t = min(max(_time(schedule, u, log_uniform), schedule.t_min), schedule.T)
    lam = schedule.lam(t)
    assert math.isfinite(lam)
    assert abs(schedule.inverse_lam(lam) - t) <= 1e-12 * t
    assert abs(schedule.lam_inverse_float(lam) - t) <= 1e-12 * t
    tensor = schedule.inverse_lam(torch.tensor([lam], dtype=torch.float64))
    assert abs(float(tensor[0]) - t) <= 1e-12 * t
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    assert 0.0 < alpha < 1.0 and 0.0 < sigma < 1.0
    assert abs(alpha * alpha + sigma * sigma - 1.0) <= 1e-15


@settings(max_examples=60, **SETTINGS)
@given(name=st.sampled_from(sorted(SCHEDULES)), u=st.floats(0.0, 1.0), v=st.floats(0.0, 1.0))
def test_schedule_round_trip_lam_t_lam_and_monotone(name, u, v):
    """``lam(inverse_lam(l)) = l`` to 1e-12 over ``[lam(T), lam(t_min)]``, and ``lam`` is strictly decreasing."""
    schedule = SCHEDULES[name]
    lam_lo, lam_hi = schedule.lam(schedule.T), schedule.lam(schedule.t_min)
    lam = lam_lo + u * (lam_hi - lam_lo)
    t = min(max(schedule.inverse_lam(lam), schedule.t_min), schedule.T)
    assert abs(schedule.lam(t) - lam) <= 1e-12 * max(1.0, abs(lam))
    t1, t2 = sorted(_time(schedule, w, True) for w in (u, v))
    if t1 < t2:
        assert schedule.lam(t1) > schedule.lam(t2)


# -- Gaussian mixtures ------------------------------------------------------------------------------------------
def _random_mixture(seed: int, n_comp: int, dim: int, cov_type: str) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.1, 1.0, n_comp)
    means = rng.normal(0.0, 1.5, (n_comp, dim))
    if cov_type == "full":
        a = rng.normal(0.0, 0.5, (n_comp, dim, dim))
        covs = a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(dim)
    elif cov_type == "diag":
        covs = rng.uniform(0.02, 1.0, (n_comp, dim))
    else:
        covs = rng.uniform(0.02, 1.0, n_comp)
    return GaussianMixture(weights, means, covs)


@settings(max_examples=40, **SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n_comp=st.integers(1, 4), dim=st.integers(1, 4),
       cov_type=st.sampled_from(["full", "diag", "iso"]), name=st.sampled_from(sorted(SCHEDULES)),
       u=st.floats(0.0, 1.0))
def test_score_is_the_gradient_of_log_prob(seed, n_comp, dim, cov_type, name, u):
    """``score = grad_x log q_t`` (autograd of the closed-form ``log_prob``) to 1e-9 relative, and the noise and
    data predictions are the score's transforms ``eps = -sigma score``, ``x0 = (x + sigma^2 score) / alpha``."""
    schedule = SCHEDULES[name]
    mixture = _random_mixture(seed, n_comp, dim, cov_type)
    t = min(max(_time(schedule, u, True), schedule.t_min), schedule.T)
    x = mixture.sample(7, torch.Generator().manual_seed(seed % 1000), t=t, schedule=schedule)
    x = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)).requires_grad_()
    (grad,) = torch.autograd.grad(mixture.log_prob(x, t, schedule).sum(), x)
    x = x.detach()
    score = mixture.score(x, t, schedule)
    scale = float(score.abs().max()) + 1.0
    assert float((score - grad).abs().max()) <= 1e-9 * scale
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    assert float((mixture.eps(x, t, schedule) + sigma * score).abs().max()) <= 1e-9 * scale
    data = mixture.data(x, t, schedule)
    assert float((alpha * data - (x + sigma**2 * score)).abs().max()) <= 1e-9 * scale * (1.0 + float(x.abs().max()))


# -- batch invariance of the ODE solvers -----------------------------------------------------------------------
MIXTURE = make_mixture_2d()
DETERMINISTIC = [("multistep", k) for k in (1, 2, 3, 4)] + [("singlestep", k) for k in (1, 2, 3)] + [
    ("singlestep_fixed", k) for k in (1, 2, 3)] + [("unipc", k) for k in (1, 2, 3)] + [("deis", k) for k in (1, 2, 3)]


def per_sample_model(schedule):
    """The exact noise prediction evaluated one sample at a time: bitwise independent of the batch by
    construction, so any batch dependence seen with it comes from the solver."""
    model = MIXTURE.as_model(schedule)

    def call(x, t):
        return torch.cat([model(x[i:i + 1], t[i:i + 1]) for i in range(x.shape[0])])

    return call


def _x(n: int, seed: int, schedule) -> torch.Tensor:
    return MIXTURE.sample(n, torch.Generator().manual_seed(seed), t=schedule.T, schedule=schedule)


@settings(max_examples=25, **SETTINGS)
@given(case=st.sampled_from(DETERMINISTIC), algorithm_type=st.sampled_from(["dpmsolver", "dpmsolver++"]),
       skip_type=st.sampled_from(["logSNR", "time_uniform", "time_quadratic", "karras"]),
       name=st.sampled_from(sorted(SCHEDULES)), steps=st.integers(1, 9), batch=st.integers(2, 6),
       seed=st.integers(0, 10**6), data=st.data())
def test_ode_solvers_are_invariant_to_batch_order_and_split(case, algorithm_type, skip_type, name, steps, batch,
                                                            seed, data):
    """Every deterministic fixed-grid solver treats samples independently: permuting the batch permutes the
    result and running the batch in two parts gives the same result, bitwise."""
    method, order = case
    schedule = SCHEDULES[name]
    steps = max(steps, order)
    model = per_sample_model(schedule)
    x = _x(batch, seed, schedule)
    options = dict(steps=steps, order=order, method=method, algorithm_type=algorithm_type, skip_type=skip_type)
    full = sample(model, schedule, x, **options).x
    perm = torch.tensor(data.draw(st.permutations(range(batch))))
    assert torch.equal(sample(model, schedule, x[perm], **options).x, full[perm])
    cut = data.draw(st.integers(1, batch - 1))
    parts = torch.cat([sample(model, schedule, x[:cut], **options).x, sample(model, schedule, x[cut:], **options).x])
    assert torch.equal(parts, full)


@settings(max_examples=10, **SETTINGS)
@given(order=st.sampled_from([2, 3]), algorithm_type=st.sampled_from(["dpmsolver", "dpmsolver++"]),
       batch=st.integers(2, 6), seed=st.integers(0, 10**6), data=st.data())
def test_adaptive_solver_is_invariant_to_batch_order(order, algorithm_type, batch, seed, data):
    """The adaptive DPM-Solver-12/23 is the documented exception to batch-size invariance: the whole batch
    shares one step size chosen from the *largest* per-sample error (as in the paper, Alg. 4, and the official
    code), so a sample's trajectory depends on which other samples are in its batch. What holds, bitwise: the
    result is permutation-equivariant (the maximum does not depend on order), and repeating the batch (which
    leaves the maximum unchanged) gives the same result for each copy."""
    schedule = SCHEDULES["linear"]
    model = per_sample_model(schedule)
    x = _x(batch, seed, schedule)
    options = dict(order=order, method="adaptive", algorithm_type=algorithm_type)
    full = sample(model, schedule, x, **options)
    perm = torch.tensor(data.draw(st.permutations(range(batch))))
    permuted = sample(model, schedule, x[perm], **options)
    assert torch.equal(permuted.x, full.x[perm])
    assert np.array_equal(permuted.timesteps, full.timesteps)
    doubled = sample(model, schedule, torch.cat([x, x]), **options)
    assert torch.equal(doubled.x, torch.cat([full.x, full.x]))
    assert doubled.timesteps[-1] == full.timesteps[-1] == 1e-3


def test_batched_mixture_model_is_batch_invariant_to_round_off():
    """With the batched ``GaussianMixture`` model itself the invariance holds to round-off, not bitwise: torch's
    CPU softmax over components takes a vectorised exp for the bulk of a batch and a scalar one for the tail,
    which differ in the last bit. Measured worst: 4e-12 absolute (noise-form singlestep, which amplifies it)."""
    schedule = SCHEDULES["cosine"]
    model = MIXTURE.as_model(schedule)
    x = _x(37, 0, schedule)
    perm = torch.randperm(37, generator=torch.Generator().manual_seed(1))
    for method, order in DETERMINISTIC:
        for algorithm_type in ("dpmsolver", "dpmsolver++"):
            options = dict(steps=max(12, order), order=order, method=method, algorithm_type=algorithm_type)
            full = sample(model, schedule, x, **options).x
            assert torch.allclose(sample(model, schedule, x[perm], **options).x, full[perm], rtol=0, atol=1e-10)
            singles = torch.cat([sample(model, schedule, x[i:i + 1], **options).x for i in range(0, 37, 9)])
            assert torch.allclose(singles, full[0:37:9], rtol=0, atol=1e-10)


# -- NFE accounting ---------------------------------------------------------------------------------------------
class CountingModel:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.model(x, t)


METHOD_ORDERS = DETERMINISTIC + [("adaptive", 2), ("adaptive", 3), ("sde-multistep", 1), ("sde-multistep", 2)]


@settings(max_examples=40, **SETTINGS)
@given(case=st.sampled_from(METHOD_ORDERS), steps=st.integers(1, 25), algorithm=st.sampled_from(["noise", "data"]),
       skip_type=st.sampled_from(["logSNR", "time_uniform", "time_quadratic", "karras"]),
       name=st.sampled_from(sorted(SCHEDULES)), t_end_exp=st.integers(3, 5), denoise_to_zero=st.booleans())
def test_nfe_equals_model_calls(case, steps, algorithm, skip_type, name, t_end_exp, denoise_to_zero):
    """``result.nfe`` is the number of model calls actually made, for every method, with its known budget."""
    method, order = case
    schedule = SCHEDULES[name]
    t_end = max(10.0 ** -t_end_exp, schedule.t_min)
    steps = max(steps, order)
    options = dict(steps=steps, order=order, skip_type=skip_type, t_end=t_end, denoise_to_zero=denoise_to_zero)
    if method == "sde-multistep":
        options.update(method="multistep", generator=torch.Generator().manual_seed(0),
                       algorithm_type="sde-dpmsolver++" if algorithm == "data" else "sde-dpmsolver")
    else:
        options.update(method=method, algorithm_type="dpmsolver++" if algorithm == "data" else "dpmsolver")
    model = CountingModel(MIXTURE.as_model(schedule))
    result = sample(model, schedule, _x(4, 0, schedule), **options)
    assert result.nfe == model.calls
    extra = int(denoise_to_zero)
    if method in ("multistep", "singlestep", "unipc", "deis", "sde-multistep"):
        assert result.nfe == steps + extra
    elif method == "singlestep_fixed":
        assert result.nfe == (steps // order) * order + extra
    else:
        assert result.nfe == order * (len(result.timesteps) - 1 + result.n_rejected) + extra
    assert result.timesteps[-1] == pytest.approx(t_end, rel=1e-12)
