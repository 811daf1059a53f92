"""Stress: no NaN/Inf anywhere over NFE 1..1000 x every method x three schedules x t_end in {1e-3, 1e-4, 1e-5}.

Scenarios: ``VPLinear``, ``VPCosine`` (``t_start = T = 0.9946``, where ``alpha_T ~ 0.0085``, and just below it)
and ``VPDiscrete(betas=linspace(1e-4, 0.02, 1000))``, with ``t_end`` clipped to each schedule's ``t_min``
(1e-5, 1e-5 and 1e-3: the discrete schedule's three end times coincide). Methods: ``singlestep``,
``singlestep_fixed``, ``multistep``, ``unipc``, ``deis`` (every order) and ``adaptive`` (orders 2, 3), with noise
and data prediction; the skip type cycles through all four with the NFE.

"Anywhere" is checked three ways: ``sample(check_finite=True)`` raises on a NaN/Inf model output (every stage
value) or state (every step); every :class:`StepCoefficients` built during the runs (``h``, ``linear``,
``scale``, ``z`` and the phi-integrals ``I_0..I_3``) is finite with ``h > 0``; and every plan the driver makes
is strictly decreasing in ``t`` with every lambda step > 0 and singlestep ratios ``0 < r_1 < r_2 < 1``.

The model is the exact noise prediction of a 2-component isotropic mixture written out for one time per call
(checked against :class:`GaussianMixture` below): ~4x cheaper than the general class, which keeps this file
in CI. Runtime (CPU time, one thread): ~15 s without the ``slow`` part, ~30 s with it (60 s wall on a loaded
2-core machine).
"""

import math

import numpy as np
import pytest
import torch

from expsolver import GaussianMixture, VPCosine, VPDiscrete, VPLinear, sample
from expsolver.grids import SKIP_TYPES
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE
from expsolver.sampling import sampling_grid
from expsolver.solvers import solver_from_options

SCHEDULES = {
    "linear": VPLinear(),
    "cosine": VPCosine(),
    "discrete": VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000)),
}
WEIGHTS, MEANS, VARIANCES = [0.6, 0.4], [[1.0, 0.0], [-1.0, 0.5]], [0.05, 0.1]
MIXTURE = GaussianMixture(WEIGHTS, MEANS, VARIANCES)


def _scenarios():
    out = []
    for name, schedule in SCHEDULES.items():
        t_ends = sorted({max(t, schedule.t_min) for t in (1e-3, 1e-4, 1e-5)}, reverse=True)
        out += [(name, schedule.T, t_end) for t_end in t_ends]
    out.append(("cosine", VPCosine().T - 1e-7, 1e-5))  # a start just below the cosine schedule's end
    return out


SCENARIOS = _scenarios()
SCENARIO_IDS = [f"{n}-{ts:.7g}-{te:g}" for n, ts, te in SCENARIOS]
FIXED = ([("multistep", k) for k in (1, 2, 3, 4)] + [("singlestep", k) for k in (1, 2, 3)]
         + [("singlestep_fixed", k) for k in (1, 2, 3)] + [("unipc", k) for k in (1, 2, 3)]
         + [("deis", k) for k in (1, 2, 3)])
ALGORITHMS = ("dpmsolver", "dpmsolver++")
FAST_NFES = (1, 2, 3, 4, 5, 6, 8, 10, 14, 20)
SLOW_NFES = (30, 50, 100, 200)
LONG_NFES = (500, 1000)


class MixtureEps:
    """Exact ``eps(x, t) = sigma_t sum_k r_k (x - alpha_t mu_k) / c_k``, ``c_k = alpha_t^2 v_k + sigma_t^2``, for an
    isotropic mixture, at one time per call (what samplers pass)."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.mu = torch.tensor(MEANS, dtype=torch.float64)
        self.var = torch.tensor(VARIANCES, dtype=torch.float64)
        self.log_w = torch.log(torch.tensor(WEIGHTS, dtype=torch.float64))

    def __call__(self, x, t):
        log_alpha = self.schedule.log_alpha_float(float(t[0]))
        alpha, sigma = math.exp(log_alpha), math.sqrt(-math.expm1(2.0 * log_alpha))
        c = alpha * alpha * self.var + sigma * sigma  # (K,)
        diff = x.unsqueeze(1) - alpha * self.mu  # (batch, K, d)
        d = x.shape[1]
        logits = self.log_w - 0.5 * (diff * diff).sum(-1) / c - 0.5 * d * torch.log(c)
        r = torch.softmax(logits, dim=-1)
        return sigma * (r.unsqueeze(-1) * diff / c.unsqueeze(-1)).sum(1)


@pytest.fixture
def coefficient_log(monkeypatch):
    """Checks every StepCoefficients made by DiffusionODE while the test runs; returns the count."""
    original = DiffusionODE.coefficients
    seen = {"n": 0}

    def checked(self, s, t):
        c = original(self, s, t)
        values = [c.h, c.linear, c.scale, c.z] + list(c.integrals(4))
        if not (c.h > 0 and all(math.isfinite(v) for v in values)):
            raise AssertionError(f"bad coefficients for s={s!r} -> t={t!r}: {c}")
        seen["n"] += 1
        return c

    monkeypatch.setattr(DiffusionODE, "coefficients", checked)
    return seen


def _x(schedule, t_start, n=2):
    x = MIXTURE.sample(n, torch.Generator().manual_seed(7), t=t_start, schedule=schedule)
    x[-1] *= 3.0  # one sample far out in the tails
    return x


def _runs(nfes, methods=FIXED, alternate=False):
    """Run options: every method and order at every NFE, both prediction types (``alternate``: one of them,
    alternating with NFE and order, to halve the cost of the large budgets)."""
    for nfe in nfes:
        for method, order in methods:
            if method not in ("singlestep",) and nfe < order:
                continue
            for algorithm_type in ((ALGORITHMS[(nfe + order) % 2],) if alternate else ALGORITHMS):
                yield dict(steps=nfe, method=method, order=order, algorithm_type=algorithm_type,
                           skip_type=SKIP_TYPES[(nfe + order) % len(SKIP_TYPES)])


def _sweep(scenario, runs):
    name, t_start, t_end = scenario
    schedule = SCHEDULES[name]
    model = MixtureEps(schedule)
    x = _x(schedule, t_start)
    n = 0
    for options in runs:
        result = sample(model, schedule, x, t_start=t_start, t_end=t_end, check_finite=True, **options)
        assert bool(torch.isfinite(result.x).all()), options
        assert np.all(np.isfinite(result.timesteps)) and result.timesteps[-1] == t_end, options
        n += 1
    return n


def test_cheap_model_is_the_mixture_eps():
    for schedule in SCHEDULES.values():
        x = _x(schedule, schedule.T, n=5)
        for t in (schedule.T, 0.5, 1e-2, schedule.t_min):
            tt = torch.full((5,), t, dtype=torch.float64)
            assert torch.allclose(MixtureEps(schedule)(x, tt), MIXTURE.eps(x, t, schedule), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
def test_fixed_grid_methods_small_nfe(scenario, coefficient_log):
    assert _sweep(scenario, _runs(FAST_NFES)) > 0
    assert coefficient_log["n"] > 0


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
@pytest.mark.parametrize("order", [2, 3])
def test_adaptive(scenario, order, coefficient_log):
    name, t_start, t_end = scenario
    schedule = SCHEDULES[name]
    model = MixtureEps(schedule)
    x = _x(schedule, t_start)
    for algorithm_type in ALGORITHMS:
        for tol in (dict(), dict(atol=1e-4, rtol=1e-4)):
            result = sample(model, schedule, x, method="adaptive", order=order, algorithm_type=algorithm_type,
                            t_start=t_start, t_end=t_end, **tol)
            assert bool(torch.isfinite(result.x).all())
            assert result.timesteps[-1] == t_end  # lands exactly on t_end (the official stop can end early)
            assert np.all(np.diff(result.timesteps) < 0)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
def test_fixed_grid_methods_large_nfe(scenario, coefficient_log):
    assert _sweep(scenario, _runs(SLOW_NFES, alternate=True)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_fixed_grid_methods_nfe_up_to_1000(name, coefficient_log):
    schedule = SCHEDULES[name]
    scenario = (name, schedule.T, schedule.t_min)
    methods = [("multistep", 3), ("singlestep", 3), ("singlestep_fixed", 2), ("unipc", 2)]
    assert _sweep(scenario, _runs(LONG_NFES, methods=methods, alternate=True)) > 0


# -- plans and coefficients without a model --------------------------------------------------------------------
PLANNERS = [("multistep", k) for k in (1, 2, 3, 4)] + [("singlestep", k) for k in (1, 2, 3)] + [
    ("singlestep_fixed", k) for k in (1, 2, 3)]
PLAN_NFES = tuple(range(1, 21)) + (24, 30, 40, 64, 100, 200, 1000)


def _check_plan(schedule, plan, problem, context):
    ts = np.array([plan[0].s] + [st.t for st in plan])
    assert np.all(np.diff(ts) < 0), context
    assert np.all(np.diff(schedule.lams_of(ts)) > 0), context
    for st in plan:
        assert all(a < b for a, b in zip((0.0,) + st.r, st.r + (1.0,))), (context, st)
        problem.coefficients(st.s, st.t)  # checked by the fixture
        lam_s = problem.rho(st.s)
        h = problem.rho(st.t) - lam_s
        for r in st.r:
            problem.coefficients(st.s, problem.t_of_rho(lam_s + r * h))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
def test_plans_are_strictly_monotone_with_finite_coefficients(scenario, coefficient_log):
    """Every plan for NFE 1..20 and a few up to 1000, every planner and skip type: strictly decreasing times,
    every lambda step > 0, ordered singlestep ratios, and finite coefficients (with ``h > 0``) for every step
    and every intermediate point."""
    name, t_start, t_end = scenario
    schedule = SCHEDULES[name]
    problem = DiffusionODE(schedule, ModelWrapper(MixtureEps(schedule), schedule), "noise")
    data_problem = DiffusionODE(schedule, ModelWrapper(MixtureEps(schedule), schedule), "data")
    for nfe in PLAN_NFES:
        for method, order in PLANNERS:
            if method != "singlestep" and nfe < order:
                continue
            skip_type = SKIP_TYPES[(nfe + order) % len(SKIP_TYPES)]
            solver, _ = solver_from_options(method, order, skip_type=skip_type)
            n = nfe // order if method == "singlestep_fixed" else nfe
            plan = solver.plan(sampling_grid(schedule, skip_type, t_start, t_end, n), problem)
            context = (method, order, nfe, skip_type)
            _check_plan(schedule, plan, problem, context)
            if nfe % 7 == 0:
                _check_plan(schedule, plan, data_problem, context)
    assert coefficient_log["n"] > 1000


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_schedule_quantities_are_finite_over_the_whole_range(name, dtype):
    """``log_alpha, alpha, sigma, lam, f, g2`` and the inverse at ``t_min`` (1e-5 linear and cosine, 1e-3
    discrete), at ``T`` and on a log-spaced grid between, as floats and as tensors of either dtype."""
    schedule = SCHEDULES[name]
    ts = np.unique(np.concatenate([np.geomspace(schedule.t_min, schedule.T, 301), [schedule.t_min, schedule.T]]))
    tensor = torch.tensor(ts, dtype=dtype).clamp(schedule.t_min, schedule.T)
    for fn in (schedule.log_alpha, schedule.alpha, schedule.sigma, schedule.lam, schedule.f, schedule.g2):
        values = fn(tensor)
        assert values.dtype == dtype and bool(torch.isfinite(values).all()), fn.__name__
        assert all(math.isfinite(fn(float(t))) for t in (schedule.t_min, schedule.T)), fn.__name__
    assert bool((schedule.sigma(tensor) > 0).all()) and bool((schedule.alpha(tensor) > 0).all())
    back = schedule.inverse_lam(schedule.lam(torch.tensor(ts, dtype=torch.float64)))
    assert bool(torch.isfinite(back).all())
    # The single largest step: the whole interval at once (h ~ 12 in lambda for the linear schedule).
    problem = DiffusionODE(schedule, ModelWrapper(MixtureEps(schedule), schedule), "noise")
    for prediction in ("noise", "data"):
        problem = DiffusionODE(schedule, ModelWrapper(MixtureEps(schedule), schedule), prediction)
        c = problem.coefficients(schedule.T, schedule.t_min)
        assert c.h > 0 and all(math.isfinite(v) for v in [c.linear, c.scale] + list(c.integrals(4)))


def test_mixture_predictions_are_finite_at_the_extremes():
    """The analytic target itself at ``t_min`` and ``T`` for points far in the tails (no overflow in the
    responsibilities: log-sum-exp)."""
    x = torch.tensor([[0.0, 0.0], [30.0, -40.0], [-1e3, 1e3]], dtype=torch.float64)
    for schedule in SCHEDULES.values():
        for t in (schedule.t_min, schedule.T):
            for fn in (MIXTURE.eps, MIXTURE.data, MIXTURE.score, MIXTURE.log_prob):
                assert bool(torch.isfinite(fn(x, t, schedule)).all()), (schedule, t, fn.__name__)
