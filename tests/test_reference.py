"""Tests of expsolver.reference: the references are checked against closed forms (the single-Gaussian flow; the
linear ODE ``x' = L x`` with a dense non-normal ``L``, whose solution is ``x0 expm(L t)^T``) and against each other
on a mixture before anything else trusts them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scipy.linalg

from expsolver.gmm import GaussianMixture
from expsolver.models import ModelOutputError, ModelWrapper
from expsolver.problems import DiffusionODE, SemiLinearODE
from expsolver.reference import (
    FIXED_GRID_METHODS,
    SCIPY_METHODS,
    TORCHDIFFEQ_METHODS,
    ReferenceResult,
    reference_solve,
)
from expsolver.schedules import VPCosine, VPDiscrete, VPLinear

T_END = 1e-3
TIGHT = dict(rtol=1e-12, atol=1e-12)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The model calls are tiny (batch 16-64, d <= 3): with several OpenMP threads on a loaded 2-core machine each
    # call becomes ~20x slower (thread hand-off), and these tests make thousands of them.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class CountingModel:
    """Wrap a model and count its calls independently of the library's counter."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype  # noqa: S101 (test helper)
        return self.model(x, t)


def _gaussian(seed: int = 0, d: int = 3) -> GaussianMixture:
    g = np.random.default_rng(seed)
    a = g.normal(size=(d, d))
    cov = a @ a.T / d + 0.05 * np.eye(d)  # full covariance, condition number ~ 10-100
    return GaussianMixture([1.0], [g.normal(size=d)], cov[None])


def _mixture() -> GaussianMixture:
    # Sharp-ish, well separated components: the eps field bends strongly between them at small t.
    return GaussianMixture([0.3, 0.5, 0.2], [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]], [0.1**2, 0.2**2, 0.3**2])


def _x(gm: GaussianMixture, n: int, schedule, t: float, seed: int = 1) -> torch.Tensor:
    return gm.sample(n, generator=torch.Generator().manual_seed(seed), t=t, schedule=schedule)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- accuracy against the closed-form flow ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "backend, method, variable",
    [
        ("scipy", "DOP853", "lambda"),
        ("scipy", "DOP853", "t"),
        ("torchdiffeq", "dopri8", "lambda"),
        ("torchdiffeq", "dopri8", "t"),
    ],
)
def test_single_gaussian_matches_closed_form_flow(backend, method, variable):
    schedule = VPLinear()
    gm = _gaussian()
    x = _x(gm, 16, schedule, 1.0)
    model = CountingModel(gm.as_model(schedule))
    res = reference_solve(model, schedule, x, 1.0, T_END, backend=backend, method=method, variable=variable, **TIGHT)
    assert isinstance(res, ReferenceResult)
    assert res.status == "success" and res.success
    assert res.t_reached == T_END
    assert res.nfe == model.calls > 0
    assert res.x.dtype == x.dtype and res.x.shape == x.shape
    assert _max_err(res.x, gm.flow(x, 1.0, T_END, schedule)) <= 1e-9
    assert (res.backend, res.method, res.variable, res.rtol, res.atol) == (backend, method, variable, 1e-12, 1e-12)


@pytest.mark.parametrize(
    "schedule",
    [VPCosine(), VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000))],
    ids=["cosine", "discrete"],
)
@pytest.mark.parametrize("backend", ["scipy", "torchdiffeq"])
def test_other_schedules_match_closed_form_in_lambda(schedule, backend):
    # VPDiscrete's f(t) is piecewise constant (1000 kinks): in t the adaptive solvers crawl through every kink
    # (DOP853 at rtol=1e-12: ~390k model calls and still only 1.5e-8), in lambda the right-hand side is analytic.
    gm = _gaussian(seed=2)
    t_start = schedule.T
    t_end = max(T_END, schedule.t_min)
    x = _x(gm, 16, schedule, t_start)
    res = reference_solve(gm.as_model(schedule), schedule, x, t_start, t_end, backend=backend, **TIGHT)
    assert res.success
    assert res.nfe < 1000
    assert _max_err(res.x, gm.flow(x, t_start, t_end, schedule)) <= 1e-9


def test_cosine_schedule_in_t_matches_closed_form():
    schedule = VPCosine()
    gm = _gaussian(seed=3)
    x = _x(gm, 16, schedule, schedule.T)
    res = reference_solve(gm.as_model(schedule), schedule, x, schedule.T, T_END, variable="t", **TIGHT)
    assert res.success
    assert _max_err(res.x, gm.flow(x, schedule.T, T_END, schedule)) <= 1e-9


def test_mixture_scipy_and_torchdiffeq_agree():
    schedule = VPLinear()
    gm = _mixture()
    x = _x(gm, 32, schedule, 1.0)
    results = {}
    for backend, method in [("scipy", "DOP853"), ("torchdiffeq", "dopri8")]:
        model = CountingModel(gm.as_model(schedule))
        res = reference_solve(model, schedule, x, 1.0, T_END, backend=backend, method=method, **TIGHT)
        assert res.success
        assert res.nfe == model.calls > 0
        results[backend] = res.x
    assert _max_err(results["scipy"], results["torchdiffeq"]) <= 1e-8
    # The mixture is a genuinely nonlinear problem: the flow moves the samples by O(1).
    assert _max_err(results["scipy"], x) > 0.1


def test_defaults_reach_1e9_within_600_model_calls():
    # The defaults were chosen by a work-precision measurement on 1,000 samples of a 2-D 3-component and a 16-D
    # 4-component mixture (there: 650 and 626 model calls, max errors 3.3e-9 and 1.0e-9; the error norm is an RMS
    # over the batch, so the worst sample's error grows with the batch). This is the small-batch version.
    schedule = VPLinear()
    gm = _mixture()
    x = _x(gm, 64, schedule, 1.0, seed=5)
    tight = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, method="DOP853", rtol=1e-13, atol=1e-13)
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END)
    assert res.success and (res.backend, res.variable) == ("scipy", "lambda")
    assert res.nfe <= 600
    assert _max_err(res.x, tight.x) <= 1e-9


# -- NFE accounting, every method ---------------------------------------------------------------------------------
_ALL_METHODS = [("scipy", m) for m in SCIPY_METHODS] + [("torchdiffeq", m) for m in TORCHDIFFEQ_METHODS]


@pytest.mark.parametrize("backend, method", _ALL_METHODS, ids=[f"{b}-{m}" for b, m in _ALL_METHODS])
@pytest.mark.parametrize("variable", ["lambda", "t"])
def test_nfe_equals_model_calls_and_accuracy_is_sane(backend, method, variable):
    schedule = VPLinear()
    gm = _gaussian(seed=4, d=2)
    x = _x(gm, 4, schedule, 1.0)
    model = CountingModel(gm.as_model(schedule))
    low_order = method in ("adaptive_heun", "fehlberg2", "bosh3")
    kwargs = dict(rtol=1e-4, atol=1e-4) if low_order else dict(rtol=1e-6, atol=1e-6)
    if method in FIXED_GRID_METHODS:
        kwargs["n_steps"] = 100
    res = reference_solve(model, schedule, x, 1.0, T_END, backend=backend, method=method, variable=variable, **kwargs)
    assert res.success
    assert res.nfe == model.calls > 0
    assert res.n_steps is not None and res.n_steps > 0
    if method in FIXED_GRID_METHODS:
        assert res.n_steps == 100
    err = _max_err(res.x, gm.flow(x, 1.0, T_END, schedule))
    assert err < (0.5 if method == "euler" else 5e-2 if low_order else 1e-2), err


def test_fixed_grid_step_size_option_and_nfe_per_step():
    schedule = VPLinear()
    gm = _gaussian(seed=4, d=2)
    x = _x(gm, 4, schedule, 1.0)
    span = schedule.lam(T_END) - schedule.lam(1.0)
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, backend="torchdiffeq", method="rk4",
                          options={"step_size": span / 50})
    assert res.n_steps == 50
    assert res.nfe == 4 * 50  # RK4: four evaluations per step, no start-up call
    assert _max_err(res.x, gm.flow(x, 1.0, T_END, schedule)) < 1e-5


# -- trajectories ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["scipy", "torchdiffeq"])
@pytest.mark.parametrize("variable", ["lambda", "t"])
def test_ts_returns_states_on_the_trajectory(backend, variable):
    schedule = VPLinear()
    gm = _gaussian(seed=6)
    x = _x(gm, 8, schedule, 1.0)
    ts = [1.0, 0.7, 0.3, 0.05, 0.01, T_END]
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, backend=backend, variable=variable, ts=ts,
                          **TIGHT)
    assert res.success
    assert res.xs.shape == (len(ts), *x.shape)
    np.testing.assert_array_equal(res.ts, np.asarray(ts))
    assert torch.equal(res.xs[0], x)
    assert torch.equal(res.xs[-1], res.x)
    for t, xt in zip(ts, res.xs):
        assert _max_err(xt, gm.flow(x, 1.0, t, schedule)) <= 1e-9, t


def test_ts_with_fixed_grid_are_grid_points():
    schedule = VPLinear()
    gm = _gaussian(seed=6, d=2)
    x = _x(gm, 8, schedule, 1.0)
    ts = [0.5, 0.1234, T_END]
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, backend="torchdiffeq", method="rk4",
                          n_steps=200, ts=ts)
    assert res.n_steps == 202  # two output times that are not on the uniform lambda grid are added to it
    assert torch.equal(res.xs[-1], res.x)
    for t, xt in zip(ts, res.xs):
        assert _max_err(xt, gm.flow(x, 1.0, t, schedule)) < 1e-6, t


def test_ts_not_ending_at_t_end():
    schedule = VPLinear()
    gm = _gaussian(seed=6, d=2)
    x = _x(gm, 8, schedule, 1.0)
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, ts=[0.5, 0.2], **TIGHT)
    assert res.xs.shape == (2, 8, 2)
    assert _max_err(res.x, gm.flow(x, 1.0, T_END, schedule)) <= 1e-9
    assert _max_err(res.xs[1], gm.flow(x, 1.0, 0.2, schedule)) <= 1e-9


# -- dtype, shape, partial interval ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["scipy", "torchdiffeq"])
def test_float32_state_keeps_dtype(backend):
    schedule = VPLinear()
    gm = _gaussian(seed=7)
    x64 = _x(gm, 8, schedule, 1.0)
    x = x64.to(torch.float32)
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, backend=backend, rtol=1e-5, atol=1e-5)
    assert res.success
    assert res.x.dtype == torch.float32 and res.x.device == x.device
    assert _max_err(res.x.double(), gm.flow(x64, 1.0, T_END, schedule)) < 1e-3


def test_multi_dimensional_state_and_partial_interval():
    # (batch, *dims) with dims = (2, 2): the model sees the state's shape; times strictly inside the schedule.
    schedule = VPLinear()
    gm = _gaussian(seed=8, d=4)

    def model(x, t):
        return gm.eps(x.reshape(x.shape[0], 4), t, schedule).reshape(x.shape)

    x = _x(gm, 6, schedule, 0.8)
    res = reference_solve(model, schedule, x.reshape(6, 2, 2), 0.8, 0.05, backend="torchdiffeq", **TIGHT)
    assert res.x.shape == (6, 2, 2)
    assert _max_err(res.x.reshape(6, 4), gm.flow(x, 0.8, 0.05, schedule)) <= 1e-9


# -- failures are reported, not hidden -----------------------------------------------------------------------------
def _jump_model(schedule, t_jump=0.5):
    """A model whose output jumps by 1e12 at t_jump: no step size can meet the tolerance across the jump."""

    def model(x, t):
        return x * (1e12 if float(t[0]) < t_jump else 0.0)

    return model


def test_scipy_failure_is_reported_with_last_state():
    schedule = VPLinear()
    x = torch.ones(2, 2, dtype=torch.float64)
    res = reference_solve(_jump_model(schedule), schedule, x, 1.0, T_END)
    assert res.status == "failed" and not res.success
    assert "step size" in res.message
    assert 0.5 <= res.t_reached < 1.0
    assert bool(torch.isfinite(res.x).all())


def test_torchdiffeq_failure_is_reported_with_last_state():
    schedule = VPLinear()
    gm = _gaussian(seed=9, d=2)
    x = _x(gm, 4, schedule, 1.0)
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, backend="torchdiffeq", ts=[0.5, T_END],
                          options={"max_num_steps": 3}, **TIGHT)
    assert res.status == "failed"
    assert "max_num_steps" in res.message
    assert T_END < res.t_reached < 1.0
    assert res.n_steps > 0
    # The reported state is an accepted state of the trajectory, at t_reached.
    assert _max_err(res.x, gm.flow(x, 1.0, res.t_reached, schedule)) < 1e-8
    assert bool(torch.isnan(res.xs[1:]).all())


# -- bad input -----------------------------------------------------------------------------------------------------
def _bad_cases():
    x = torch.zeros(4, 2, dtype=torch.float64)
    return [
        # (keyword overrides, exception, words the message must contain)
        (dict(backend="jax"), ValueError, ["backend", "'jax'", "'scipy'", "'torchdiffeq'"]),
        (dict(method="dopri8"), ValueError, ["method", "'dopri8'", "'DOP853'", "scipy"]),
        (dict(backend="torchdiffeq", method="LSODA"), ValueError, ["method", "'LSODA'", "'dopri5'"]),
        (dict(method=5), ValueError, ["method", "5"]),
        (dict(rtol=0.0), ValueError, ["rtol", "0.0"]),
        (dict(atol=-1e-9), ValueError, ["atol", "-1e-09"]),
        (dict(rtol="tight"), TypeError, ["rtol"]),
        (dict(variable="sigma"), ValueError, ["variable", "'sigma'", "'lambda'", "'t'"]),
        (dict(t_end=1.0), ValueError, ["t_end", "1.0"]),
        (dict(t_end=0.5, t_start=0.2), ValueError, ["t_end", "0.5"]),
        (dict(t_end=0.0), ValueError, ["t_end", "0.0", "valid range"]),
        (dict(t_start=1.5), ValueError, ["t_start", "1.5", "valid range"]),
        (dict(t_start=float("nan")), ValueError, ["t_start", "nan"]),
        (dict(x=np.zeros((4, 2))), TypeError, ["x", "Tensor"]),
        (dict(x=torch.zeros(4, 2, dtype=torch.int64)), TypeError, ["x", "floating"]),
        (dict(x=torch.full((4, 2), float("nan"), dtype=torch.float64)), ValueError, ["x", "NaN"]),
        (dict(model="eps"), TypeError, ["model", "callable"]),
        (dict(schedule="linear"), TypeError, ["schedule", "VPSchedule"]),
        (dict(ts=[0.5, 0.7]), ValueError, ["ts", "decreasing"]),
        (dict(ts=[0.5, 1e-4]), ValueError, ["ts", "inside"]),
        (dict(ts=[]), ValueError, ["ts", "empty"]),
        (dict(n_steps=10), ValueError, ["n_steps", "fixed-grid"]),
        (dict(backend="torchdiffeq", method="rk4"), ValueError, ["n_steps", "step_size", "rk4"]),
        (dict(backend="torchdiffeq", method="rk4", n_steps=0), ValueError, ["n_steps", "0"]),
        (dict(backend="torchdiffeq", method="rk4", n_steps=2.5), TypeError, ["n_steps", "2.5"]),
        (dict(backend="torchdiffeq", method="rk4", n_steps=4, options={"step_size": 0.1}), ValueError,
         ["n_steps", "step_size"]),
        (dict(options={"max_num_steps": 3}), ValueError, ["options", "'max_num_steps'", "'max_step'"]),
        (dict(options={"max_step": -1.0}), ValueError, ["max_step", "-1.0"]),
        (dict(options=[("max_step", 1.0)]), TypeError, ["options", "dict"]),
        (dict(t_eval=[0.5]), TypeError, ["t_eval"]),
        (dict(x=x, model=lambda x, t: x[:, :1]), ValueError, ["model output", "t=", "shape", "(4, 1)"]),
        (dict(x=x, model=lambda x, t: x + float("inf")), ValueError, ["model output", "t=", "NaN or Inf"]),
    ]


@pytest.mark.parametrize("overrides, exc, words", _bad_cases(), ids=lambda v: None)
def test_bad_input_raises_naming_the_argument(overrides, exc, words):
    schedule = VPLinear()
    gm = _gaussian(seed=0, d=2)
    args = dict(model=gm.as_model(schedule), schedule=schedule, x=torch.zeros(4, 2, dtype=torch.float64),
                t_start=1.0, t_end=T_END)
    args.update(overrides)
    with pytest.raises(exc) as info:
        reference_solve(args.pop("model"), args.pop("schedule"), args.pop("x"), args.pop("t_start"),
                        args.pop("t_end"), **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_model_error_is_a_model_output_error_for_both_backends():
    schedule = VPLinear()
    x = torch.zeros(4, 2, dtype=torch.float64)
    for backend in ("scipy", "torchdiffeq"):
        with pytest.raises(ModelOutputError, match=r"t=1\b"):
            reference_solve(lambda x, t: x[:2], schedule, x, 1.0, T_END, backend=backend)


def test_model_assertion_propagates_through_torchdiffeq():
    # torchdiffeq reports its own failures as AssertionError; the model's assertions must not be mistaken for one.
    schedule = VPLinear()

    def model(x, t):
        raise AssertionError("model says no")

    with pytest.raises(AssertionError, match="model says no"):
        reference_solve(model, schedule, torch.zeros(4, 2, dtype=torch.float64), 1.0, T_END, backend="torchdiffeq")


def test_does_not_build_autograd_graph():
    schedule = VPLinear()
    gm = _gaussian(seed=0, d=2)
    x = _x(gm, 4, schedule, 1.0).requires_grad_(True)
    res = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END, rtol=1e-6, atol=1e-6)
    assert not res.x.requires_grad
    assert math.isfinite(res.x.sum().item())


# -- any semi-linear problem --------------------------------------------------------------------------------------
def _upwind(n: int = 24, nu: float = 0.02, a: float = 1.0) -> torch.Tensor:
    """Upwind advection-diffusion with Dirichlet conditions: non-normal, eigenvalues down to about -70."""
    dx = 1.0 / (n + 1)
    L = (np.diag(np.full(n, -2.0 * nu / dx**2 - a / dx)) + np.diag(np.full(n - 1, nu / dx**2), 1)
         + np.diag(np.full(n - 1, nu / dx**2 + a / dx), -1))
    return torch.tensor(L)


@pytest.mark.parametrize("backend, method", [("scipy", "Radau"), ("scipy", "BDF"), ("torchdiffeq", "dopri8")])
def test_a_linear_problem_matches_the_matrix_exponential(backend, method):
    L = _upwind()
    assert float(torch.linalg.norm(L @ L.T - L.T @ L)) > 1.0  # non-normal
    problem = SemiLinearODE(L, lambda x, t: torch.zeros_like(x))
    x0 = torch.randn(3, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = reference_solve(problem, x0, 0.0, 0.5, backend=backend, method=method, rtol=1e-12, atol=1e-12,
                          ts=[0.25, 0.5])
    exact = [x0 @ torch.from_numpy(scipy.linalg.expm(L.numpy() * t)).T for t in (0.25, 0.5)]
    assert res.success and res.nfe == problem.nfe > 0
    assert _max_err(res.x, exact[1]) < 1e-10 and _max_err(res.xs[0], exact[0]) < 1e-10
    assert 0 < res.error_estimate < 1e-9  # the difference to the solve at rtol = atol = 1e-13


def test_backwards_in_time_and_the_jacobians_agree():
    L = torch.tensor([[-3.0, 1.0], [0.5, -2.0]], dtype=torch.float64)
    problem = SemiLinearODE(L, lambda x, t: torch.sin(x) * math.cos(t))
    x1 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    back = reference_solve(problem, x1, 1.0, 0.0, rtol=1e-12, atol=1e-12, ts=[0.5])
    forth = reference_solve(problem, back.x, 0.0, 1.0, rtol=1e-12, atol=1e-12)
    assert _max_err(forth.x, x1) < 1e-9
    auto = reference_solve(problem, x1, 0.0, 1.0, method="Radau", rtol=1e-12, atol=1e-12, error_estimate=False)
    fd = reference_solve(problem, x1, 0.0, 1.0, method="Radau", rtol=1e-12, atol=1e-12, jacobian="fd",
                         error_estimate=False)
    assert auto.error_estimate is None and _max_err(auto.x, fd.x) < 1e-11
    with pytest.raises(ValueError, match=r"ts must be strictly decreasing \(from t_start towards t_end\)"):
        reference_solve(problem, x1, 1.0, 0.0, ts=[0.2, 0.5])


def test_a_diffusion_problem_is_the_diffusion_form():
    schedule = VPLinear()
    gm = _mixture()
    x = _x(gm, 8, schedule, 1.0)
    problem = DiffusionODE(schedule, ModelWrapper(gm.as_model(schedule), schedule), "data")
    a = reference_solve(problem, x, 1.0, T_END, error_estimate=False)
    b = reference_solve(gm.as_model(schedule), schedule, x, 1.0, T_END)
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe and a.variable == "lambda"


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(t_end=0.0), ValueError, ["t_end must differ from t_start"]),
    (dict(variable="lambda"), ValueError, ["variable must be None or 't'"]),
    (dict(jacobian="exact"), ValueError, ["jacobian must be one of"]),
    (dict(error_estimate="yes"), TypeError, ["error_estimate must be True or False"]),
    (dict(method="LSODA"), ValueError, ["method must be one of", "'BDF'"]),
    (dict(tolerance=1e-3), TypeError, ["unexpected keyword", "tolerance"]),
])
def test_bad_problem_input_raises_naming_the_argument(kwargs, exc, words):
    problem = SemiLinearODE(-1.0, lambda x, t: x)
    args = dict(t_start=0.0, t_end=1.0)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        reference_solve(problem, torch.ones(1, 2, dtype=torch.float64), args.pop("t_start"), args.pop("t_end"), **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_a_non_differentiable_problem_asks_for_central_differences():
    problem = SemiLinearODE(-1.0, lambda x, t: torch.from_numpy(np.cos(x.numpy())))
    x = torch.ones(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="jacobian='fd'"):
        reference_solve(problem, x, 0.0, 1.0, method="Radau")
    assert reference_solve(problem, x, 0.0, 1.0, method="Radau", jacobian="fd").success
