"""The driver: NFE accounting, plans, model types, intermediates and bad input."""

import math

import numpy as np
import pytest
import torch

from expsolver import VPDiscrete, VPLinear, sample
from expsolver.models import ModelOutputError
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE
from expsolver.sampling import NonFiniteStateError, sampling_grid
from expsolver.solvers import solver_from_options

from conftest import make_mixture_2d

SCHEDULE = VPLinear()
MIXTURE = make_mixture_2d()


class CountingModel:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.model(x, t)


def _x(n=16):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


CASES = [dict(method=m, order=k, skip_type=sk) for m in ("multistep", "singlestep", "singlestep_fixed")
         for k in (1, 2, 3) for sk in ("logSNR", "time_uniform", "time_quadratic", "karras")]
CASES += [dict(method="adaptive", order=k, skip_type="logSNR") for k in (2, 3)]
CASES += [dict(method="multistep", order=4, skip_type="logSNR")]


@pytest.mark.parametrize("denoise_to_zero", [False, True])
@pytest.mark.parametrize("algorithm_type", ["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_nfe_equals_model_calls(case, algorithm_type, denoise_to_zero):
    model = CountingModel(MIXTURE.as_model(SCHEDULE))
    result = sample(model, SCHEDULE, _x(), steps=11, algorithm_type=algorithm_type,
                    denoise_to_zero=denoise_to_zero, **case)
    assert result.nfe == model.calls
    if case["method"] in ("multistep", "singlestep"):
        assert result.nfe == 11 + denoise_to_zero  # these methods spend exactly the budget
    if case["method"] == "singlestep_fixed":
        assert result.nfe == (11 // case["order"]) * case["order"] + denoise_to_zero
    if case["method"] == "adaptive":
        accepted = len(result.timesteps) - 1
        assert result.nfe == case["order"] * (accepted + result.n_rejected) + denoise_to_zero
    assert result.timesteps[0] == 1.0 and result.timesteps[-1] == pytest.approx(1e-3, rel=1e-9)


def _plan(method, steps, order, compat=None):
    solver, _ = solver_from_options(method, order, compat=compat, skip_type="logSNR")
    problem = DiffusionODE(SCHEDULE, ModelWrapper(MIXTURE.as_model(SCHEDULE), SCHEDULE))
    return solver.plan(sampling_grid(SCHEDULE, "logSNR", 1.0, 1e-3, steps, compat), problem)


def test_multistep_orders_warm_up_and_lower_order_final():
    plan = _plan("multistep", 12, 3)
    assert [st.order for st in plan] == [1, 2] + [3] * 8 + [2, 1]
    official = _plan("multistep", 12, 3, "official")
    assert [st.order for st in official] == [1, 2] + [3] * 10  # official: only below 10 steps
    official_small = _plan("multistep", 8, 3, "official")
    assert [st.order for st in official_small] == [1, 2, 3, 3, 3, 3, 2, 1]


def test_singlestep_fast_allocation_spends_the_budget():
    for steps in range(1, 20):
        for order in (1, 2, 3):
            plan = _plan("singlestep", steps, order)
            assert sum(st.order for st in plan) == steps


def test_intermediates_and_grid():
    result = sample(MIXTURE.as_model(SCHEDULE), SCHEDULE, _x(), steps=6, order=2, return_intermediates=True)
    assert len(result.intermediates) == 7 and result.intermediates[-1] is result.x
    assert np.all(np.diff(result.timesteps) < 0)


def test_explicit_grid_replaces_steps_and_skip_type():
    model, x = MIXTURE.as_model(SCHEDULE), _x()
    default = sample(model, SCHEDULE, x)  # steps=20 on the time-uniform grid, as in the official code
    assert default.nfe == 20 and default.options["skip_type"] == "time_uniform"
    grid = default.timesteps
    explicit = sample(model, SCHEDULE, x, timesteps=grid, t_start=float(grid[0]), t_end=float(grid[-1]), steps=20)
    assert torch.equal(explicit.x, default.x)
    assert explicit.options["steps"] == 20 and explicit.options["skip_type"] is None  # the grid, not a skip type


class RecordingModel:
    """Records the time input of every call."""

    def __init__(self, model):
        self.model, self.times = model, []

    def __call__(self, x, t):
        self.times.append(float(t[0]))
        return self.model(x, t)


@pytest.mark.parametrize("options", [dict(method="multistep", order=3), dict(method="unipc", order=2),
                                     dict(method="deis", order=2)], ids=["3M", "unipc", "deis"])
def test_model_timesteps_are_where_the_model_is_queried(options):
    grid = sample(MIXTURE.as_model(SCHEDULE), SCHEDULE, _x(), steps=6, skip_type="logSNR").timesteps
    same = sample(MIXTURE.as_model(SCHEDULE), SCHEDULE, _x(), timesteps=grid, model_timesteps=grid[:-1], **options)
    assert torch.equal(same.x, sample(MIXTURE.as_model(SCHEDULE), SCHEDULE, _x(), timesteps=grid, **options).x)
    model_ts = grid[:-1] * 0.9
    recorder = RecordingModel(MIXTURE.as_model(SCHEDULE))
    result = sample(recorder, SCHEDULE, _x(), timesteps=grid, model_timesteps=model_ts, **options)
    assert recorder.times == list(model_ts) and result.nfe == 6
    assert result.options["model_timesteps"] == list(model_ts)
    assert np.array_equal(result.timesteps, grid)  # the steps still run on the grid


def test_model_timesteps_in_a_ddim_step():
    """DDIM (DPM-Solver-1, data prediction) with the model queried at tau: x_t = (sigma_t / sigma_s) x_s
    - alpha_t (e^{-h} - 1) x0(x_s, tau), h = lam_t - lam_s on the grid, x0 = (x - sigma_tau eps) / alpha_tau."""
    model, x = MIXTURE.as_model(SCHEDULE), _x()
    s, t, tau = 0.8, 0.3, 0.7
    out = sample(model, SCHEDULE, x, timesteps=[s, t], model_timesteps=[tau], method="multistep", order=1).x
    la = lambda u: float(SCHEDULE.log_alpha(torch.tensor(u, dtype=torch.float64)))  # noqa: E731
    alpha = {u: math.exp(la(u)) for u in (s, t, tau)}
    sigma = {u: math.sqrt(1.0 - alpha[u] ** 2) for u in (s, t, tau)}
    h = math.log(alpha[t] / sigma[t]) - math.log(alpha[s] / sigma[s])
    eps = model(x, torch.full((len(x),), tau, dtype=torch.float64))
    x0 = (x - sigma[tau] * eps) / alpha[tau]
    expected = sigma[t] / sigma[s] * x - alpha[t] * math.expm1(-h) * x0
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("model_type", ["x_start", "v", "score"])
def test_model_types_give_the_same_samples(model_type):
    eps_model = MIXTURE.as_model(SCHEDULE)

    def converted(x, t):
        alpha, sigma = SCHEDULE.alpha(t)[:, None], SCHEDULE.sigma(t)[:, None]
        eps = eps_model(x, t)
        x0 = (x - sigma * eps) / alpha
        return {"x_start": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma}[model_type]

    x = _x()
    reference = sample(eps_model, SCHEDULE, x, steps=10, order=3)
    other = sample(converted, SCHEDULE, x, steps=10, order=3, model_type=model_type)
    assert float((reference.x - other.x).abs().max()) <= 1e-10


def test_discrete_time_input():
    schedule = VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000))
    seen = []

    def model(x, t):
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    sample(model, schedule, _x(), steps=5, order=1, time_input="discrete", skip_type="time_uniform")
    assert seen[0] == pytest.approx(999.0) and min(seen) >= 0.0


def test_float32_state_keeps_dtype_and_accuracy():
    x = _x()
    ref = sample(MIXTURE.as_model(SCHEDULE), SCHEDULE, x, steps=15, order=2)
    out = sample(MIXTURE.as_model(SCHEDULE), SCHEDULE, x.float(), steps=15, order=2)
    assert out.x.dtype == torch.float32
    assert float((out.x.double() - ref.x).abs().max()) <= 1e-4


def _nan_model(x, t):
    out = torch.zeros_like(x)
    if float(t[0]) < 0.5:
        out[0, 0] = math.nan
    return out


BAD = [
    (dict(method="rk4"), ValueError, "method"),
    (dict(algorithm_type="dpm"), ValueError, "algorithm_type"),
    (dict(skip_type="uniform"), ValueError, "skip_type"),
    (dict(solver_type="heun"), ValueError, "solver_type"),
    (dict(order=4, method="singlestep"), ValueError, "order"),
    (dict(order=0), ValueError, "order"),
    (dict(order=2.0), TypeError, "order"),
    (dict(order=1, method="adaptive"), ValueError, "order"),
    (dict(order=3, steps=2, method="multistep"), ValueError, "steps"),
    (dict(steps=0), ValueError, "steps"),
    (dict(t_end=0.0), ValueError, "t_end"),
    (dict(t_end=1.0, t_start=0.5), ValueError, "t_end"),
    (dict(t_start=2.0), ValueError, "t_start"),
    (dict(compat="diffusers"), ValueError, "compat"),
    (dict(atol=-1.0, method="adaptive"), ValueError, "atol"),
    (dict(lower_order_final="yes"), TypeError, "lower_order_final"),
    (dict(stepz=10), TypeError, "stepz"),
    (dict(timesteps=[1.0, 0.5, 0.6, 1e-3]), ValueError, "timesteps"),
    (dict(timesteps=[1.0, 0.5], t_end=1e-3), ValueError, "t_end"),
    (dict(model_type="eps"), ValueError, "model_type"),
]


@pytest.mark.parametrize("kwargs, exc, name", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_options_are_named(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        sample(MIXTURE.as_model(SCHEDULE), SCHEDULE, _x(), **kwargs)


def test_bad_state_and_model_output():
    model = MIXTURE.as_model(SCHEDULE)
    x = _x()
    bad = x.clone()
    bad[0, 0] = math.inf
    with pytest.raises(ValueError, match="x"):
        sample(model, SCHEDULE, bad)
    with pytest.raises(TypeError, match="x"):
        sample(model, SCHEDULE, x.numpy())
    with pytest.raises(ModelOutputError, match="shape"):
        sample(lambda x, t: x[:, :1], SCHEDULE, x)
    with pytest.raises(ModelOutputError, match="must be a torch.Tensor, got ndarray"):
        sample(lambda x, t: x.numpy(), SCHEDULE, x)
    with pytest.raises(ModelOutputError, match=r"step \d+"):
        sample(_nan_model, SCHEDULE, x, steps=10)
    out = sample(_nan_model, SCHEDULE, x, steps=10, check_finite=False)  # opt-out: the user sees the NaN
    assert bool(torch.isnan(out.x).any())
    with pytest.raises(TypeError, match="schedule"):
        sample(model, "linear", x)


def test_state_blow_up_is_reported_with_step():
    def model(x, t):
        return torch.full_like(x, 1e308)

    with pytest.raises(NonFiniteStateError, match=r"step \d+"):
        sample(model, SCHEDULE, _x(), steps=5, algorithm_type="dpmsolver")


def test_check_grid_returns_a_copy():
    """check_grid / the explicit grid of sample() never alias the caller's array (optimize_timesteps pins the end
    points of its checked copy)."""
    from expsolver import check_grid

    grid = np.array([1.0, 0.5, 1e-3])
    checked = check_grid(SCHEDULE, grid)
    checked[0] = 0.7
    assert grid[0] == 1.0
