"""Bad inputs to every public entry point raise a named TypeError/ValueError; none gives a silent wrong result.

One table, one row per bad input: the call, the exception type and a text the message must contain (the name of
the argument at fault, or the misbehaving model's error). The rows complement ``tests/test_validation.py`` (no
row repeats one there) and cover ``expsolver.__all__`` (schedules, ``GaussianMixture`` and its methods,
``sample`` with every option, ``reference_solve``, ``optimize_timesteps``, ``reverse_sde_sample``,
``BrownianPath``, ``time_grid``/``check_grid``, ``phi``/``phis``, ``ModelWrapper``, the problems and step rules,
``integrate``), the denoising-score-matching functions of ``expsolver.dsm`` and ``analysis.order.fit_order``. They
include the inputs whose failure used to be an unrelated message or a NaN: meta tensors, complex and string
arrays, NaN and overflowing phi-function arguments, NaN data rows, a schedule whose ``alpha_T`` underflows, a
model that needs autograd, models that return the wrong device.

Rows marked ``xfail(strict=True)`` need a change outside the modules this table's fixes live in; the reason says
which. Runtime: a few seconds.
"""

import math

import numpy as np
import pytest
import torch

from analysis.order import fit_order
from expsolver import (BernoulliETDProblem, BrownianPath, DiffusionODE, GaussianMixture, ModelWrapper,
                       ReverseDiffusionSDE, SemiLinearProblem, VPCosine, VPDiscrete, VPLinear, check_grid, integrate,
                       optimize_timesteps, phi, phis, reference_solve, reverse_sde_sample, sample, time_grid)
from expsolver.dsm import (NoisePredictorMLP, dsm_loss, excess_dsm_loss, irreducible_dsm_loss,
                           train_noise_predictor)
from expsolver.models import ModelAutogradError, ModelOutputError
from expsolver.solvers import DEISMultistep, DPMSolverMultistep, DPMSolverSinglestep, UniPC
from expsolver.solvers.base import Step
from expsolver.solvers.sde import SDEDPMSolverMultistep

LIN = VPLinear()
MIX = GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [0.1, 0.2])
ONE = GaussianMixture([1.0], [[0.0, 0.0]], [[[0.3, 0.1], [0.1, 0.2]]])
MODEL = MIX.as_model(LIN)
X = torch.zeros(3, 2, dtype=torch.float64)
META = torch.zeros(3, 2, dtype=torch.float64, device="meta")
F64 = dict(dtype=torch.float64)
GRID = [1.0, 0.5, 1e-3]


def _with(x, i, j, value):
    x = x.clone()
    x[i, j] = value
    return x


def _gen():
    return torch.Generator().manual_seed(0)


def _sde(**kwargs):
    return sample(MODEL, LIN, X, algorithm_type="sde-dpmsolver++", **kwargs)


def _optimize(**kwargs):
    options = dict(steps=4, t_start=1.0, t_end=1e-3)
    options.update(kwargs)
    x_train = options.pop("x_train", torch.zeros(64, 2, **F64))
    return optimize_timesteps(MODEL, LIN, x_train, **options)


def _path(**kwargs):
    options = dict(nodes=[-5.0, 0.0, 5.0], shape=(3, 2))
    options.update(kwargs)
    return BrownianPath(options.pop("nodes"), options.pop("shape"), **options)


def _wrapped(model, **kwargs):
    return ModelWrapper(model, LIN, **kwargs)


def _wrong_device(x, t):
    return torch.zeros(x.shape, dtype=x.dtype, device="meta")


def _energy_score(x, t):  # needs autograd inside sample()'s no_grad
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(MIX.log_prob(x, t, LIN).sum(), x)[0]


def _without_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _nan_model(x, t):
    return torch.full_like(x, math.nan)


class _Incomplete(SemiLinearProblem):
    """A problem that forgot most of the interface."""

    def rho(self, t):
        return t


def _integrate_problem_str():
    rule = DPMSolverMultistep(1)
    return integrate("not a problem", rule, [Step(0, 1.0, 0.5, 1)], X)


P = pytest.param
BAD_INPUTS = [
    # -- schedules ---------------------------------------------------------------------------------------------
    P(lambda: VPLinear(beta_1=1e6), ValueError, "beta_1", id="linear-alpha-T-underflows"),
    P(lambda: VPLinear(T=50.0), ValueError, "T=50.0", id="linear-T-too-long"),
    P(lambda: VPLinear(beta_0=True), TypeError, "beta_0", id="linear-beta0-bool"),
    P(lambda: VPLinear(beta_1=None), TypeError, "beta_1", id="linear-beta1-none"),
    P(lambda: VPLinear(beta_0=math.inf), ValueError, "beta_0", id="linear-beta0-inf"),
    P(lambda: VPLinear(T=0.0), ValueError, "T", id="linear-T-zero"),
    P(lambda: VPLinear(beta_0=torch.tensor([0.1, 0.2])), TypeError, "beta_0", id="linear-beta0-vector"),
    P(lambda: VPLinear(beta_0=torch.tensor(0.1, device="meta")), ValueError, "beta_0", id="linear-beta0-meta"),
    P(lambda: VPCosine(s=-0.1), ValueError, "s must", id="cosine-s-negative"),
    P(lambda: VPCosine(s="a"), TypeError, "s must", id="cosine-s-str"),
    P(lambda: VPCosine(T=-1.0), ValueError, "T must", id="cosine-T-negative"),
    P(lambda: VPCosine(T=math.nan), ValueError, "T must", id="cosine-T-nan"),
    P(lambda: VPDiscrete(betas=[0.1]), ValueError, "betas", id="discrete-one-beta"),
    P(lambda: VPDiscrete(alphas_cumprod=[0.5]), ValueError, "alphas_cumprod", id="discrete-one-alpha"),
    P(lambda: VPDiscrete(betas="abc"), TypeError, "betas", id="discrete-betas-str"),
    P(lambda: VPDiscrete(betas=[0.1, 0.2], alphas_cumprod=[0.9, 0.8]), ValueError, "betas", id="discrete-both"),
    P(lambda: VPDiscrete(alphas_cumprod=[0.9, 1.0]), ValueError, "alphas_cumprod", id="discrete-alpha-one"),
    P(lambda: VPDiscrete(betas=[0.0, 0.1]), ValueError, "betas", id="discrete-beta-zero"),
    P(lambda: VPDiscrete(betas=torch.full((4,), 0.1, device="meta")), ValueError, "betas", id="discrete-betas-meta"),
    P(lambda: VPDiscrete(betas=[0.1 + 0.1j, 0.2]), TypeError, "betas", id="discrete-betas-complex"),
    P(lambda: VPDiscrete(alphas_cumprod=[[0.9, 0.8]]), ValueError, "alphas_cumprod", id="discrete-alphas-2d"),
    P(lambda: VPDiscrete(betas=[True, False]), TypeError, "betas", id="discrete-betas-bool"),
    P(lambda: LIN.lam(torch.tensor([0.5], device="meta")), ValueError, "t is a meta tensor", id="lam-t-meta"),
    P(lambda: LIN.alpha(0.5 + 0j), TypeError, "t must", id="alpha-t-complex"),
    P(lambda: LIN.sigma(np.array([0.5, 0.6])), TypeError, "t must", id="sigma-t-numpy"),
    P(lambda: LIN.f(2.0), ValueError, "t=2.0", id="f-t-above-T"),
    P(lambda: LIN.g2(-0.1), ValueError, "t=-0.1", id="g2-t-negative"),
    P(lambda: LIN.log_alpha(torch.tensor([0.5, math.inf])), ValueError, "t contains", id="log-alpha-t-inf"),
    P(lambda: LIN.inverse_lam("1"), TypeError, "lam", id="inverse-lam-str"),
    P(lambda: LIN.inverse_lam(torch.tensor([0.0, math.nan])), ValueError, "lam must be finite",
      id="inverse-lam-tensor-nan"),
    P(lambda: LIN.inverse_lam(torch.tensor([1], dtype=torch.int64)), TypeError, "lam", id="inverse-lam-int-tensor"),
    P(lambda: LIN.check_time(torch.tensor([0.5, 0.6])), ValueError, "t must be a scalar", id="check-time-vector"),
    P(lambda: LIN.check_time(None), TypeError, "t must", id="check-time-none"),
    P(lambda: LIN.check_time(torch.tensor(0.5, device="meta")), ValueError, "t is a meta", id="check-time-meta"),
    P(lambda: VPDiscrete(betas=np.linspace(1e-4, 0.02, 10)).alpha(torch.tensor([1.5])), ValueError, "t contains",
      id="discrete-alpha-above-T"),
    # -- Gaussian mixture ----------------------------------------------------------------------------------------
    P(lambda: GaussianMixture([[1.0]], [[0.0]], [1.0]), ValueError, "weights", id="gmm-weights-2d"),
    P(lambda: GaussianMixture([], np.zeros((0, 1)), []), ValueError, "weights", id="gmm-weights-empty"),
    P(lambda: GaussianMixture([0.0, 0.0], [[0.0], [1.0]], [1.0, 1.0]), ValueError, "weights", id="gmm-weights-zero"),
    P(lambda: GaussianMixture([math.nan], [[0.0]], [1.0]), ValueError, "weights", id="gmm-weights-nan"),
    P(lambda: GaussianMixture([1.0], [[math.nan]], [1.0]), ValueError, "means", id="gmm-means-nan"),
    P(lambda: GaussianMixture([1.0, 1.0], [[0.0]], [1.0, 1.0]), ValueError, "means", id="gmm-means-rows"),
    P(lambda: GaussianMixture([1.0], np.zeros((1, 0)), [1.0]), ValueError, "means", id="gmm-means-no-columns"),
    P(lambda: GaussianMixture([1.0], [[0.0]], np.ones((1, 1, 1, 1))), ValueError, "covs", id="gmm-covs-4d"),
    P(lambda: GaussianMixture([1.0, 1.0], [[0.0], [1.0]], [1.0]), ValueError, "covs", id="gmm-covs-K"),
    P(lambda: GaussianMixture([1.0], [[0.0, 0.0]], np.eye(3)[None]), ValueError, "covs", id="gmm-covs-full-d"),
    P(lambda: GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, -1.0]]), ValueError, "covs", id="gmm-covs-diag-negative"),
    P(lambda: GaussianMixture([1.0], [[0.0]], [0.0]), ValueError, "covs", id="gmm-covs-iso-zero"),
    P(lambda: GaussianMixture([1.0], [[0.0]], "big"), TypeError, "covs", id="gmm-covs-str"),
    P(lambda: GaussianMixture([1.0], torch.zeros(1, 2, device="meta"), [1.0]), ValueError, "means",
      id="gmm-means-meta"),
    P(lambda: GaussianMixture([1.0 + 1j], [[0.0]], [1.0]), TypeError, "weights", id="gmm-weights-complex"),
    P(lambda: MIX.eps(META, 0.5, LIN), ValueError, "x is a meta tensor", id="gmm-eps-x-meta"),
    P(lambda: MIX.log_prob(META, 0.5, LIN), ValueError, "x is a meta tensor", id="gmm-log-prob-x-meta"),
    P(lambda: MIX.score(META, 0.5, LIN), ValueError, "x is a meta tensor", id="gmm-score-x-meta"),
    P(lambda: MIX.data(META, 0.5, LIN), ValueError, "x is a meta tensor", id="gmm-data-x-meta"),
    P(lambda: MIX.component(META, 0.5, LIN), ValueError, "x is a meta tensor", id="gmm-component-x-meta"),
    P(lambda: ONE.flow(META, 1.0, 0.5, LIN), ValueError, "x is a meta tensor", id="gmm-flow-x-meta"),
    P(lambda: MIX.log_prob(torch.zeros(3, 2, dtype=torch.int64), 0.5, LIN), TypeError, "x must",
      id="gmm-log-prob-x-int"),
    P(lambda: MIX.score(torch.zeros(2, **F64), 0.5, LIN), ValueError, "x must", id="gmm-score-x-1d"),
    P(lambda: MIX.data(X, torch.tensor(0.5, device="meta"), LIN), ValueError, "t is a meta", id="gmm-data-t-meta"),
    P(lambda: MIX.data(X, "0.5", LIN), TypeError, "t must", id="gmm-data-t-str"),
    P(lambda: MIX.component(X, 0.5, None), TypeError, "schedule", id="gmm-component-schedule-none"),
    P(lambda: MIX.eps(X, torch.tensor([1, 2, 3]), LIN), TypeError, "t must", id="gmm-eps-t-int-tensor"),
    P(lambda: MIX.eps(X, torch.tensor([0.5, math.nan, 0.5], **F64), LIN), ValueError, "t contains",
      id="gmm-eps-t-nan-entry"),
    P(lambda: MIX.eps(_with(X, 0, 1, math.inf), 0.5, LIN), ValueError, "x contains", id="gmm-eps-x-inf"),
    P(lambda: ONE.flow(X, 1.0, "a", LIN), TypeError, "t must", id="gmm-flow-t-str"),
    P(lambda: ONE.flow(X, 2.0, 0.5, LIN), ValueError, "s=2.0", id="gmm-flow-s-above-T"),
    P(lambda: MIX.sample(2.5), TypeError, "n must", id="gmm-sample-n-float"),
    P(lambda: MIX.sample(3, dtype=torch.int64), TypeError, "dtype", id="gmm-sample-dtype-int"),
    P(lambda: MIX.sample(3, schedule=LIN), ValueError, "schedule", id="gmm-sample-schedule-without-t"),
    P(lambda: MIX.sample(3, t=2.0, schedule=LIN), ValueError, "t=2.0", id="gmm-sample-t-above-T"),
    P(lambda: MIX.mean(t=0.5), ValueError, "schedule", id="gmm-mean-schedule-missing"),
    P(lambda: MIX.covariance(schedule=LIN), ValueError, "without t", id="gmm-covariance-t-missing"),
    P(lambda: MIX.mean(t=1.5, schedule=LIN), ValueError, "t=1.5", id="gmm-mean-t-above-T"),
    P(lambda: MIX.as_model("linear"), TypeError, "schedule", id="gmm-as-model-schedule-str"),
    # -- sample(): state, options, grid ---------------------------------------------------------------------------
    P(lambda: sample(MODEL, LIN, META), ValueError, "x is a meta tensor", id="sample-x-meta"),
    P(lambda: sample(MODEL, LIN, torch.zeros(3, 2, dtype=torch.int64)), TypeError, "x must", id="sample-x-int"),
    P(lambda: sample(MODEL, LIN, torch.tensor(0.0, **F64)), ValueError, "x must", id="sample-x-0d"),
    P(lambda: sample(MODEL, LIN, torch.zeros(3, 2, dtype=torch.complex128)), TypeError, "x must",
      id="sample-x-complex"),
    P(lambda: sample(MODEL, LIN, _with(X, 2, 1, -math.inf)), ValueError, "x contains", id="sample-x-minus-inf"),
    P(lambda: sample(MODEL, LIN, X, order=0), ValueError, "order", id="sample-order-zero"),
    P(lambda: sample(MODEL, LIN, X, order="2"), TypeError, "order", id="sample-order-str"),
    P(lambda: sample(MODEL, LIN, X, order=True), TypeError, "order", id="sample-order-bool"),
    P(lambda: sample(MODEL, LIN, X, method="Multistep"), ValueError, "method", id="sample-method-capitalised"),
    P(lambda: sample(MODEL, LIN, X, algorithm_type="ddim"), ValueError, "algorithm_type", id="sample-algorithm"),
    P(lambda: sample(MODEL, LIN, X, solver_type="heun"), ValueError, "solver_type", id="sample-solver-type"),
    P(lambda: sample(MODEL, LIN, X, skip_type="cosine"), ValueError, "skip_type", id="sample-skip-type"),
    P(lambda: sample(MODEL, LIN, X, compat="diffusers"), ValueError, "compat", id="sample-compat"),
    P(lambda: sample(MODEL, LIN, X, model_type="epsilon"), ValueError, "model_type", id="sample-model-type"),
    P(lambda: sample(MODEL, LIN, X, time_input="int"), ValueError, "time_input", id="sample-time-input"),
    P(lambda: sample(MODEL, LIN, X, lower_order_final="no"), TypeError, "lower_order_final",
      id="sample-lower-order-final-str"),
    P(lambda: sample(MODEL, LIN, X, denoise_to_zero=1), TypeError, "denoise_to_zero", id="sample-denoise-int"),
    P(lambda: sample(MODEL, LIN, X, return_intermediates=None), TypeError, "return_intermediates",
      id="sample-return-intermediates-none"),
    P(lambda: sample(MODEL, LIN, X, method="adaptive", atol=-1.0), ValueError, "atol", id="sample-atol-negative"),
    P(lambda: sample(MODEL, LIN, X, method="adaptive", t_err=0.0), ValueError, "t_err", id="sample-t-err-zero"),
    P(lambda: sample(MODEL, LIN, X, method="adaptive", theta="0.9"), TypeError, "theta", id="sample-theta-str"),
    P(lambda: sample(MODEL, LIN, X, method="adaptive", rtol=math.nan), ValueError, "rtol", id="sample-rtol-nan"),
    P(lambda: sample(MODEL, LIN, X, method="adaptive", h_init=math.inf), ValueError, "h_init",
      id="sample-h-init-inf"),
    P(lambda: sample(MODEL, LIN, X, method="adaptive", order=1), ValueError, "order", id="sample-adaptive-order-1"),
    P(lambda: sample(MODEL, LIN, X, steps=0), ValueError, "steps", id="sample-steps-zero"),
    P(lambda: sample(MODEL, LIN, X, steps=True), TypeError, "steps", id="sample-steps-bool"),
    P(lambda: sample(MODEL, LIN, X, t_start=2.0), ValueError, "t_start", id="sample-t-start-above-T"),
    P(lambda: sample(MODEL, LIN, X, t_start=0.3, t_end=0.5), ValueError, "t_end", id="sample-t-end-above-t-start"),
    P(lambda: sample(MODEL, LIN, X, t_end=1e-3 + 0j), TypeError, "t_end", id="sample-t-end-complex"),
    P(lambda: sample(MODEL, LIN, X, t_end=torch.tensor(1e-3, device="meta")), ValueError, "t_end",
      id="sample-t-end-meta"),
    P(lambda: sample(MODEL, LIN, X, use_corrector=False), ValueError, "use_corrector",
      id="sample-use-corrector-without-unipc"),
    P(lambda: sample(MODEL, LIN, X, method="unipc", use_corrector="yes"), TypeError, "use_corrector",
      id="sample-unipc-use-corrector-str"),
    P(lambda: sample(MODEL, LIN, X, method="unipc", compat="official"), ValueError, "compat",
      id="sample-unipc-compat"),
    P(lambda: sample(MODEL, LIN, X, method="deis", compat="official"), ValueError, "compat", id="sample-deis-compat"),
    P(lambda: sample(MODEL, LIN, X, method="deis", order=5), ValueError, "order", id="sample-deis-order-5"),
    P(lambda: sample(MODEL, LIN, X, order=4, compat="official"), ValueError, "order",
      id="sample-official-order-4"),
    P(lambda: sample(MODEL, LIN, X, method="singlestep_fixed", order=3, steps=2), ValueError, "steps",
      id="sample-singlestep-fixed-steps-below-order"),
    P(lambda: sample(MODEL, LIN, X, timesteps=[1.0, math.nan, 1e-3]), ValueError, "timesteps[1]",
      id="sample-timesteps-nan"),
    P(lambda: sample(MODEL, LIN, X, timesteps=[1.0 + 0j, 1e-3]), TypeError, "timesteps", id="sample-timesteps-complex"),
    P(lambda: sample(MODEL, LIN, X, timesteps=[[1.0, 1e-3]]), ValueError, "timesteps", id="sample-timesteps-2d"),
    P(lambda: sample(MODEL, LIN, X, timesteps=[2.0, 1e-3]), ValueError, "timesteps[0]", id="sample-timesteps-range"),
    P(lambda: sample(MODEL, LIN, X, timesteps=GRID, t_start=0.9), ValueError, "t_start",
      id="sample-timesteps-t-start-mismatch"),
    P(lambda: sample(MODEL, LIN, X, timesteps=["1.0", "1e-3"]), TypeError, "timesteps", id="sample-timesteps-strings"),
    P(lambda: sample(MODEL, LIN, X, timesteps=GRID, model_timesteps=np.array([1.0, 0.5j])), TypeError,
      "model_timesteps", id="sample-model-timesteps-complex"),
    P(lambda: sample(MODEL, LIN, X, timesteps=GRID, model_timesteps=[1.0, math.nan]), ValueError,
      "model_timesteps[1]", id="sample-model-timesteps-nan"),
    P(lambda: sample(MODEL, LIN, X, nfe_budget=10), TypeError, "nfe_budget", id="sample-unknown-kw"),
    # sample(): SDE options
    P(lambda: _sde(order=3), ValueError, "order", id="sde-order-3"),
    P(lambda: _sde(compat="official"), ValueError, "compat", id="sde-compat"),
    P(lambda: sample(MODEL, LIN, X, noise=torch.zeros(20, 3, 2, **F64)), ValueError, "noise", id="sde-noise-on-ode"),
    P(lambda: _sde(noise=torch.zeros(20, 3, 2, dtype=torch.int64)), TypeError, "noise", id="sde-noise-int"),
    P(lambda: _sde(noise=torch.full((20, 3, 2), math.nan, **F64)), ValueError, "noise", id="sde-noise-nan"),
    P(lambda: _sde(noise=torch.zeros(20, 3, 2, **F64), generator=_gen()), ValueError, "noise",
      id="sde-noise-and-generator"),
    P(lambda: _sde(noise="abc"), TypeError, "noise", id="sde-noise-str"),
    P(lambda: _sde(noise=_path(shape=(4, 2))), ValueError, "noise", id="sde-noise-path-shape"),
    P(lambda: _sde(generator=[_gen(), 3, _gen()]), TypeError, "generator", id="sde-generator-list-entry"),
    # sample(): misbehaving models
    P(lambda: sample(_wrong_device, LIN, X), ModelOutputError, "device", id="sample-model-output-device"),
    P(lambda: sample(_energy_score, LIN, X, model_type="score"), ModelAutogradError, "torch.enable_grad()",
      id="sample-model-needs-autograd"),
    P(lambda: sample(_nan_model, LIN, X, method="adaptive"), ModelOutputError, "NaN", id="sample-adaptive-nan-model"),
    P(lambda: sample(lambda x, t: x[:, :1], LIN, X, method="unipc"), ModelOutputError, "shape",
      id="sample-unipc-model-shape"),
    P(lambda: sample(lambda x, t: x.numpy(), LIN, X, method="deis"), ModelOutputError, "torch.Tensor",
      id="sample-deis-model-numpy"),
    # -- reference_solve -----------------------------------------------------------------------------------------
    P(lambda: reference_solve(MODEL, LIN, META, 1.0, 1e-3), ValueError, "x is a meta", id="reference-x-meta"),
    P(lambda: reference_solve(MODEL, LIN, _with(X, 0, 0, math.nan), 1.0, 1e-3), ValueError, "x contains",
      id="reference-x-nan"),
    P(lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, backend=None), ValueError, "backend",
      id="reference-backend-none"),
    P(lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, rtol=0.0), ValueError, "rtol", id="reference-rtol-zero"),
    P(lambda: reference_solve(MODEL, LIN, X, "1", 1e-3), TypeError, "t_start", id="reference-t-start-str"),
    P(lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, ts=[[0.5]]), ValueError, "ts", id="reference-ts-2d"),
    P(lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, ts=np.array([0.5 + 0j])), TypeError, "ts",
      id="reference-ts-complex"),
    P(lambda: reference_solve("model", LIN, X, 1.0, 1e-3), TypeError, "model", id="reference-model-str"),
    P(lambda: reference_solve(MODEL, "linear", X, 1.0, 1e-3), TypeError, "schedule", id="reference-schedule-str"),
    P(lambda: reference_solve(_wrong_device, LIN, X, 1.0, 1e-3), ModelOutputError, "device",
      id="reference-model-output-device"),
    P(lambda: reference_solve(_energy_score, LIN, X, 1.0, 1e-3), ModelAutogradError, "torch.enable_grad()",
      id="reference-model-needs-autograd"),
    # -- optimize_timesteps --------------------------------------------------------------------------------------
    P(lambda: _optimize(x_train=torch.zeros(64, 2, **F64, device="meta")), ValueError, "x_train",
      id="optimize-x-train-meta"),
    P(lambda: _optimize(x_train=_with(torch.zeros(64, 2, **F64), 5, 0, math.nan)), ValueError, "x_train",
      id="optimize-x-train-nan"),
    P(lambda: _optimize(steps="4"), TypeError, "steps", id="optimize-steps-str"),
    P(lambda: _optimize(method="deis"), ValueError, "method", id="optimize-method-deis"),
    P(lambda: _optimize(algorithm_type="sde-dpmsolver++"), ValueError, "algorithm_type", id="optimize-sde"),
    P(lambda: _optimize(n_train=1), ValueError, "n_train", id="optimize-n-train-one"),
    P(lambda: _optimize(strata=(0.5, 0.4)), ValueError, "strata", id="optimize-strata-decreasing"),
    P(lambda: _optimize(max_iter=0), ValueError, "max_iter", id="optimize-max-iter-zero"),
    P(lambda: _optimize(max_time=-1.0), ValueError, "max_time", id="optimize-max-time-negative"),
    P(lambda: _optimize(timesteps=GRID), ValueError, "timesteps", id="optimize-timesteps-option"),
    P(lambda: _optimize(shift_model_times=True, method="singlestep"), ValueError, "shift_model_times",
      id="optimize-shift-singlestep"),
    P(lambda: _optimize(error_cap=0.0), ValueError, "error_cap", id="optimize-error-cap-zero"),
    P(lambda: _optimize(seed=1.5), TypeError, "seed", id="optimize-seed-float"),
    P(lambda: _optimize(verbose="yes"), TypeError, "verbose", id="optimize-verbose-str"),
    P(lambda: _optimize(n_starts=0), ValueError, "n_starts", id="optimize-n-starts-zero"),
    P(lambda: _optimize(n_train=20, min_per_stratum=8), ValueError, "min_per_stratum",
      id="optimize-strata-too-small"),
    P(lambda: _optimize(t_start=torch.tensor(1.0, device="meta")), ValueError, "t_start", id="optimize-t-start-meta"),
    # -- reverse_sde_sample --------------------------------------------------------------------------------------
    P(lambda: reverse_sde_sample(MODEL, LIN, META, steps=4), ValueError, "x is a meta", id="reverse-sde-x-meta"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=0), ValueError, "steps", id="reverse-sde-steps-zero"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=4, skip_type="cosine"), ValueError, "skip_type",
      id="reverse-sde-skip-type"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=4, model_type="eps"), ValueError, "model_type",
      id="reverse-sde-model-type"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=4, denoise_to_zero="y"), TypeError, "denoise_to_zero",
      id="reverse-sde-denoise-str"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=4, generator=3), TypeError, "generator",
      id="reverse-sde-generator-int"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=4, noise=torch.zeros(3, 3, 2, **F64)), ValueError, "noise",
      id="reverse-sde-noise-shape"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=4, t_start=1.5), ValueError, "t_start",
      id="reverse-sde-t-start-above-T"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, steps=4, t_end=1.0), ValueError, "t_end",
      id="reverse-sde-t-end-at-t-start"),
    P(lambda: reverse_sde_sample(MODEL, LIN, X, timesteps=[0.1, 0.5]), ValueError, "timesteps",
      id="reverse-sde-timesteps-increasing"),
    P(lambda: reverse_sde_sample(_nan_model, LIN, X, steps=4), ModelOutputError, "NaN", id="reverse-sde-nan-model"),
    # -- grids ---------------------------------------------------------------------------------------------------
    P(lambda: time_grid(LIN, "logSNR", "1", 1e-3, 10), TypeError, "t_start", id="time-grid-t-start-str"),
    P(lambda: time_grid(LIN, "logSNR", 1.0, 1e-3, True), TypeError, "n_steps", id="time-grid-n-steps-bool"),
    P(lambda: time_grid(LIN, None, 1.0, 1e-3, 10), ValueError, "skip_type", id="time-grid-skip-type-none"),
    P(lambda: time_grid(LIN, "karras", 1.0, torch.tensor(1e-3, device="meta"), 10), ValueError, "t_end",
      id="time-grid-t-end-meta"),
    P(lambda: check_grid(LIN, [1.0 + 1j, 0.5]), TypeError, "timesteps", id="check-grid-complex-list"),
    P(lambda: check_grid(LIN, np.array([1.0, 0.5], dtype=complex)), TypeError, "timesteps",
      id="check-grid-complex-numpy"),
    P(lambda: check_grid(LIN, torch.tensor([1.0, 0.5], dtype=torch.complex64)), TypeError, "timesteps",
      id="check-grid-complex-tensor"),
    P(lambda: check_grid(LIN, [1.0, math.nan]), ValueError, "timesteps[1]", id="check-grid-nan"),
    P(lambda: check_grid(LIN, [[1.0, 0.5]]), ValueError, "timesteps", id="check-grid-2d"),
    P(lambda: check_grid(LIN, ["1.0", "0.5"]), TypeError, "timesteps", id="check-grid-strings"),
    P(lambda: check_grid(LIN, torch.tensor([1.0, 0.5], device="meta")), ValueError, "timesteps",
      id="check-grid-meta"),
    P(lambda: check_grid(LIN, [1.0, 1.5]), ValueError, "timesteps[1]", id="check-grid-above-T"),
    P(lambda: check_grid(LIN, [0.2, 1.0], name="grid"), ValueError, "grid[0]", id="check-grid-custom-name"),
    P(lambda: check_grid(LIN, [[1.0, 0.5], [0.2]]), TypeError, "timesteps", id="check-grid-ragged"),
    P(lambda: check_grid(LIN, [True, False]), TypeError, "timesteps", id="check-grid-bools"),
    P(lambda: check_grid(LIN, [1.0, None]), TypeError, "timesteps", id="check-grid-none-entry"),
    # -- phi-functions -------------------------------------------------------------------------------------------
    P(lambda: phis(2, torch.tensor([0.5, math.nan])), ValueError, "z must be finite", id="phis-tensor-nan"),
    P(lambda: phis(2, torch.tensor([math.inf], **F64)), ValueError, "z must be finite", id="phis-tensor-inf"),
    P(lambda: phis(2, 1000.0), OverflowError, "z=1000.0", id="phis-float-overflow"),
    P(lambda: phis(2, torch.tensor([0.5, 1000.0], **F64)), OverflowError, "z=1000.0", id="phis-tensor-overflow"),
    P(lambda: phis(1, torch.tensor([100.0])), OverflowError, "float32", id="phis-float32-overflow"),
    P(lambda: phi(-1, 0.5), ValueError, "k must", id="phi-k-negative"),
    P(lambda: phi("1", 0.5), TypeError, "k must", id="phi-k-str"),
    P(lambda: phi(1, -math.inf), ValueError, "z must be finite", id="phi-z-minus-inf"),
    P(lambda: phis(2, 1 + 1j), TypeError, "z must", id="phis-z-complex"),
    P(lambda: phis(2, None), TypeError, "z must", id="phis-z-none"),
    P(lambda: phis(2, np.array([0.5])), TypeError, "z must", id="phis-z-numpy"),
    P(lambda: phis(2, torch.tensor([0.5], device="meta")), ValueError, "z is a meta", id="phis-z-meta"),
    P(lambda: phis(2, True), TypeError, "z must", id="phis-z-bool"),
    P(lambda: phis(np.float64(2.0), 0.5), TypeError, "max_k", id="phis-max-k-numpy-float"),
    # -- BrownianPath --------------------------------------------------------------------------------------------
    P(lambda: _path(nodes=[0.0]), ValueError, "nodes", id="path-one-node"),
    P(lambda: _path(nodes=[0.0, 1.0, 0.5]), ValueError, "nodes", id="path-nodes-not-monotone"),
    P(lambda: _path(nodes=[0.0, math.nan]), ValueError, "nodes", id="path-nodes-nan"),
    P(lambda: _path(nodes=[0.0, 1j]), TypeError, "nodes", id="path-nodes-complex"),
    P(lambda: _path(variable="s"), ValueError, "variable", id="path-variable"),
    P(lambda: _path(shape=(0, 2)), ValueError, "shape", id="path-shape-zero"),
    P(lambda: _path(shape="ab"), ValueError, "shape", id="path-shape-str"),
    P(lambda: _path(rates=()), ValueError, "rates", id="path-rates-empty"),
    P(lambda: _path(rates=(1.0, 1.0)), ValueError, "rates", id="path-rates-repeated"),
    P(lambda: _path(rates=("a",)), TypeError, "rates", id="path-rates-str"),
    P(lambda: _path(dtype=torch.int32), TypeError, "dtype", id="path-dtype-int"),
    P(lambda: _path(generator=3), TypeError, "generator", id="path-generator-int"),
    P(lambda: _path(generator=[_gen(), _gen()]), ValueError, "generator", id="path-generator-list-length"),
    P(lambda: BrownianPath.from_times(LIN, [1.0, "a"], (3, 2)), TypeError, "ts", id="path-from-times-str"),
    P(lambda: _path().increment(-5.0, 5.0, 2.0), ValueError, "rates", id="path-increment-rate"),
    P(lambda: _path().index(2.5), ValueError, "no node", id="path-index-not-a-node"),
    # -- model wrapper, problems, step rules, integrate ---------------------------------------------------------
    P(lambda: ModelWrapper(MODEL, LIN, time_input="int"), ValueError, "time_input", id="wrapper-time-input"),
    P(lambda: ModelWrapper(MODEL, LIN, time_input="discrete"), ValueError, "time_input",
      id="wrapper-discrete-on-linear"),
    P(lambda: ModelWrapper(MODEL, LIN, check_finite=None), TypeError, "check_finite", id="wrapper-check-finite-none"),
    P(lambda: ModelWrapper(MODEL, VPLinear), TypeError, "schedule", id="wrapper-schedule-class"),
    P(lambda: _wrapped(_wrong_device).eps(X, 0.5, 0.6, 0.8), ModelOutputError, "device", id="wrapper-output-device"),
    P(lambda: _without_grad(_wrapped(_energy_score, model_type="score").data, X, 0.5, 0.6, 0.8),
      ModelAutogradError, "torch.enable_grad()", id="wrapper-needs-autograd"),
    P(lambda: _wrapped(lambda x, t: None).eps(X, 0.5, 0.6, 0.8), ModelOutputError, "torch.Tensor",
      id="wrapper-output-none"),
    P(lambda: DiffusionODE(LIN, ModelWrapper(MODEL, LIN), prediction=None), ValueError, "prediction",
      id="ode-prediction-none"),
    P(lambda: ReverseDiffusionSDE(LIN, MODEL), TypeError, "model", id="reverse-sde-problem-model-unwrapped"),
    P(lambda: ReverseDiffusionSDE(LIN, ModelWrapper(MODEL, LIN), "x0"), ValueError, "prediction",
      id="reverse-sde-problem-prediction"),
    P(lambda: BernoulliETDProblem([0.0, -1.0]), ValueError, "L", id="bernoulli-L-zero"),
    P(lambda: BernoulliETDProblem([[-1.0]]), ValueError, "L", id="bernoulli-L-2d"),
    P(lambda: BernoulliETDProblem([-1.0], c="a"), TypeError, "c must", id="bernoulli-c-str"),
    P(lambda: BernoulliETDProblem([-1.0], c=math.nan), ValueError, "c must", id="bernoulli-c-nan"),
    P(lambda: BernoulliETDProblem("abc"), TypeError, "L", id="bernoulli-L-str"),
    P(lambda: _Incomplete(), TypeError, "nonlinear", id="semilinear-subclass-incomplete"),
    P(lambda: DPMSolverMultistep(5), ValueError, "order", id="rule-multistep-order-5"),
    P(lambda: DPMSolverMultistep(2, coefficients="exact"), ValueError, "coefficients",
      id="rule-multistep-coefficients"),
    P(lambda: DPMSolverSinglestep(0), ValueError, "order", id="rule-singlestep-order-0"),
    P(lambda: DPMSolverSinglestep(2, solver_type="heun"), ValueError, "solver_type", id="rule-singlestep-type"),
    P(lambda: UniPC(2, variant="bh3"), ValueError, "variant", id="rule-unipc-variant"),
    P(lambda: UniPC(2, use_corrector=1), TypeError, "use_corrector", id="rule-unipc-use-corrector-int"),
    P(lambda: DEISMultistep(2, n_nodes=0), ValueError, "n_nodes", id="rule-deis-n-nodes"),
    P(lambda: SDEDPMSolverMultistep(3), ValueError, "order", id="rule-sde-order-3"),
    P(lambda: SDEDPMSolverMultistep(1, noise="gaussian"), TypeError, "noise", id="rule-sde-noise-str"),
    P(_integrate_problem_str, TypeError, "problem", id="integrate-problem-str"),
    # -- denoising score matching --------------------------------------------------------------------------------
    P(lambda: dsm_loss(MODEL, LIN, np.zeros((10, 2))), TypeError, "data must", id="dsm-data-numpy"),
    P(lambda: dsm_loss(MODEL, LIN, _with(torch.zeros(10, 2, **F64), 3, 0, math.nan)), ValueError, "data contains",
      id="dsm-data-nan-row"),
    P(lambda: dsm_loss(MODEL, LIN, torch.zeros(10, 2, **F64, device="meta")), ValueError, "data is a meta",
      id="dsm-data-meta"),
    P(lambda: dsm_loss(MODEL, LIN, torch.zeros(10, **F64)), ValueError, "data must", id="dsm-data-1d"),
    P(lambda: dsm_loss(MODEL, LIN, torch.zeros(10, 2, dtype=torch.int64)), TypeError, "data must",
      id="dsm-data-int"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=1), ValueError, "n must", id="dsm-n-one"),
    P(lambda: dsm_loss(MODEL, LIN, MIX), TypeError, "n is required", id="dsm-mixture-without-n"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, form="l2"), ValueError, "form", id="dsm-form"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, model_type="v"), ValueError, "model_type", id="dsm-model-type"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, t_range=(0.5,)), TypeError, "t_range", id="dsm-t-range-length"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, t_range=(0.5, 0.1)), ValueError, "t_range", id="dsm-t-range-reversed"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, generator=3), TypeError, "generator", id="dsm-generator-int"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, batch_size=0), ValueError, "batch_size", id="dsm-batch-size-zero"),
    P(lambda: dsm_loss(MODEL, "linear", MIX, n=8), TypeError, "schedule", id="dsm-schedule-str"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, dtype=torch.int64), TypeError, "dtype", id="dsm-dtype-int"),
    P(lambda: dsm_loss(MODEL, LIN, MIX, n=8, samples=3), TypeError, "samples", id="dsm-unknown-kw"),
    P(lambda: dsm_loss(_nan_model, LIN, MIX, n=8), ModelOutputError, "NaN", id="dsm-model-nan"),
    P(lambda: irreducible_dsm_loss("mixture", LIN, n=8), TypeError, "mixture", id="irreducible-mixture-str"),
    P(lambda: irreducible_dsm_loss(MIX, LIN, n=8, form="x0"), ValueError, "form", id="irreducible-form"),
    P(lambda: excess_dsm_loss(MODEL, MIX, LIN, n=0), ValueError, "n must", id="excess-n-zero"),
    P(lambda: excess_dsm_loss(_nan_model, MIX, LIN, n=8), ModelOutputError, "NaN", id="excess-model-nan"),
    P(lambda: train_noise_predictor(MIX, LIN, steps=0), ValueError, "steps", id="train-steps-zero"),
    P(lambda: train_noise_predictor(MIX, LIN, lr=-1.0), ValueError, "lr", id="train-lr-negative"),
    P(lambda: train_noise_predictor(np.zeros((10, 2)), LIN, steps=1), TypeError, "data must", id="train-data-numpy"),
    P(lambda: train_noise_predictor(_with(torch.zeros(10, 2, **F64), 0, 0, math.nan), LIN, steps=1), ValueError,
      "data contains", id="train-data-nan"),
    P(lambda: train_noise_predictor(MIX, LIN, steps=1, dtype=torch.int32), TypeError, "dtype",
      id="train-dtype-int"),
    P(lambda: NoisePredictorMLP(0), ValueError, "dim", id="mlp-dim-zero"),
    P(lambda: NoisePredictorMLP(2, hidden=2.5), TypeError, "hidden", id="mlp-hidden-float"),
    # -- analysis.order.fit_order --------------------------------------------------------------------------------
    P(lambda: fit_order(["a", "b", "c"], [1.0, 2.0, 3.0]), TypeError, "step_sizes", id="fit-order-step-sizes-str"),
    P(lambda: fit_order([1.0, 2.0, 3.0], ["a", "b", "c"]), TypeError, "errors", id="fit-order-errors-str"),
    P(lambda: fit_order(None, [1.0, 2.0, 3.0]), TypeError, "step_sizes", id="fit-order-step-sizes-none"),
    P(lambda: fit_order([1.0, 2.0, 3.0 + 1j], [1.0, 2.0, 3.0]), TypeError, "step_sizes",
      id="fit-order-step-sizes-complex"),
    P(lambda: fit_order([1.0, -2.0, 3.0], [1.0, 2.0, 3.0]), ValueError, "step_sizes", id="fit-order-h-negative"),
    P(lambda: fit_order([1.0, 1.0, 3.0], [1.0, 2.0, 3.0]), ValueError, "step_sizes", id="fit-order-h-repeated"),
    P(lambda: fit_order([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]), ValueError, "step_sizes", id="fit-order-2d"),
    P(lambda: fit_order([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], min_points=2), ValueError, "min_points",
      id="fit-order-min-points"),
    P(lambda: fit_order([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], slope_tol=0.0), ValueError, "slope_tol",
      id="fit-order-slope-tol"),
    P(lambda: fit_order([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], floor=-1.0), ValueError, "floor", id="fit-order-floor"),
    P(lambda: fit_order([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], expected="3"), TypeError, "expected",
      id="fit-order-expected-str"),
]


def test_table_is_large_and_ids_are_unique():
    ids = [row.id for row in BAD_INPUTS]
    assert len(ids) >= 150 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("call, exc, text", BAD_INPUTS)
def test_bad_input_raises_a_named_error(call, exc, text):
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value), f"the message does not contain {text!r}: {info.value}"
