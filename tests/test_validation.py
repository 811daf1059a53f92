"""Every public entry point rejects bad input with a ``TypeError``/``ValueError`` that names the argument.

One table, one row per bad input: the call, the exception type expected and a string the message must contain
(the argument's name). Rows cover the schedules, the Gaussian-mixture target, ``sample`` (ODE, adaptive, UniPC,
SDE options), ``reference_solve``, the grids, the phi-functions, the model wrapper and the semi-linear problem,
``optimize_timesteps``, ``reverse_sde_sample``, the studies in ``analysis/`` and the figure command line
``python -m paper_figs``. A second test scans the package sources for bare ``assert`` statements (they vanish
under ``python -O``). Runtime: ~2 s.
"""

import ast
import math
import pathlib

import numpy as np
import pytest
import torch

from expsolver import (GaussianMixture, ModelWrapper, VPCosine, VPDiscrete, VPLinear, check_grid, phis,
                       reference_solve, sample, time_grid)
from expsolver.problems import DiffusionODE

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIN = VPLinear()
MIX = GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [0.1, 0.2])
MODEL = MIX.as_model(LIN)
X = torch.zeros(3, 2, dtype=torch.float64)


def _disc():
    return VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000))


def _nan_x():
    x = X.clone()
    x[1, 0] = math.nan
    return x


def _optimize(**kwargs):
    from expsolver.optimize import optimize_timesteps

    options = dict(steps=4, t_start=1.0, t_end=1e-3)
    options.update(kwargs)
    return optimize_timesteps(MODEL, LIN, torch.zeros(64, 2, dtype=torch.float64), **options)


def _reverse_sde(**kwargs):
    from expsolver.sde_sampling import reverse_sde_sample

    return reverse_sde_sample(MODEL, LIN, X, **kwargs)


def _global_study(**kwargs):
    from analysis.global_error import global_error_study

    options = dict(runs=["DPM-Solver-1"], nfes=(2,), n_samples=2, cache_dir=False)
    options.update(kwargs)
    target = options.pop("target", MIX)
    schedule = options.pop("schedule", LIN)
    return global_error_study(target, schedule, **options)


def _local_study(**kwargs):
    from analysis.local_error import local_error_study

    return local_error_study(MIX, LIN, cache_dir=False, **kwargs)


def _fit_order(*args, **kwargs):
    from analysis.order import fit_order

    return fit_order(*args, **kwargs)


def _get_target(name):
    from analysis.targets import get_target

    return get_target(name)


def _cli(*argv):
    from paper_figs.__main__ import main

    return main(list(argv))


def _figure_cli(*argv):
    from paper_figs.fig1_local_error import main

    return main(list(argv))


# (id, call, exception type, text the message must contain: the argument's name)
BAD_INPUTS = [
    # schedules
    ("linear-beta0-negative", lambda: VPLinear(beta_0=-1.0), ValueError, "beta_0"),
    ("linear-beta0-str", lambda: VPLinear(beta_0="0.1"), TypeError, "beta_0"),
    ("linear-beta1-below-beta0", lambda: VPLinear(beta_0=5.0, beta_1=1.0), ValueError, "beta_1"),
    ("linear-T-nan", lambda: VPLinear(T=math.nan), ValueError, "T"),
    ("linear-unknown-kw", lambda: VPLinear(beta0=1.0), TypeError, "beta0"),
    ("cosine-s-zero", lambda: VPCosine(s=0.0), ValueError, "s must"),
    ("cosine-T-one", lambda: VPCosine(T=1.0), ValueError, "T must"),
    ("discrete-neither", lambda: VPDiscrete(), ValueError, "betas"),
    ("discrete-betas-above-one", lambda: VPDiscrete(betas=[0.1, 1.2]), ValueError, "betas"),
    ("discrete-betas-nan", lambda: VPDiscrete(betas=[0.1, math.nan]), ValueError, "betas"),
    ("discrete-betas-2d", lambda: VPDiscrete(betas=[[0.1, 0.2]]), ValueError, "betas"),
    ("discrete-alphas-cumprod-increasing", lambda: VPDiscrete(alphas_cumprod=[0.5, 0.9]), ValueError,
     "alphas_cumprod"),
    ("lam-t-above-T", lambda: LIN.lam(2.0), ValueError, "t=2.0"),
    ("lam-t-zero", lambda: LIN.lam(0.0), ValueError, "t=0.0"),
    ("lam-t-str", lambda: LIN.lam("0.5"), TypeError, "t must"),
    ("alpha-int-tensor", lambda: LIN.alpha(torch.tensor([1])), TypeError, "t must"),
    ("sigma-tensor-with-nan", lambda: LIN.sigma(torch.tensor([0.5, math.nan])), ValueError, "t contains"),
    ("inverse-lam-nan", lambda: LIN.inverse_lam(math.nan), ValueError, "lam"),
    ("cosine-lam-beyond-T", lambda: VPCosine().lam(0.999), ValueError, "t=0.999"),
    ("discrete-lam-below-t-min", lambda: _disc().lam(1e-4), ValueError, "t=0.0001"),
    # Gaussian mixture
    ("gmm-weights-negative", lambda: GaussianMixture([-1.0, 2.0], [[0.0], [1.0]], [1.0, 1.0]), ValueError,
     "weights"),
    ("gmm-weights-str", lambda: GaussianMixture("ab", [[0.0]], [1.0]), TypeError, "weights"),
    ("gmm-means-1d", lambda: GaussianMixture([1.0, 1.0], [0.0, 1.0], [1.0, 1.0]), ValueError, "means"),
    ("gmm-covs-not-symmetric", lambda: GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]),
     ValueError, "covs[0]"),
    ("gmm-covs-not-pd", lambda: GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), ValueError,
     "covs[0]"),
    ("gmm-covs-diag-wrong-d", lambda: GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]]), ValueError,
     "covs"),
    ("gmm-eps-x-wrong-d", lambda: MIX.eps(torch.zeros(3, 5, dtype=torch.float64), 0.5, LIN), ValueError, "x"),
    ("gmm-eps-x-numpy", lambda: MIX.eps(np.zeros((3, 2)), 0.5, LIN), TypeError, "x must"),
    ("gmm-eps-x-nan", lambda: MIX.eps(_nan_x(), 0.5, LIN), ValueError, "x contains"),
    ("gmm-eps-t-out-of-range", lambda: MIX.eps(X, 1.5, LIN), ValueError, "t=1.5"),
    ("gmm-eps-t-wrong-shape", lambda: MIX.eps(X, torch.full((4,), 0.5, dtype=torch.float64), LIN), ValueError,
     "t must"),
    ("gmm-score-schedule-str", lambda: MIX.score(X, 0.5, "linear"), TypeError, "schedule"),
    ("gmm-sample-n-zero", lambda: MIX.sample(0), ValueError, "n must"),
    ("gmm-sample-generator-int", lambda: MIX.sample(3, generator=3), TypeError, "generator"),
    ("gmm-sample-t-without-schedule", lambda: MIX.sample(3, t=0.5), ValueError, "schedule"),
    ("gmm-flow-two-components", lambda: MIX.flow(X, 1.0, 0.5, LIN), ValueError, "K"),
    # sample(): ODE options
    ("sample-method", lambda: sample(MODEL, LIN, X, method="rk4"), ValueError, "method"),
    ("sample-steps-float", lambda: sample(MODEL, LIN, X, steps=10.0), TypeError, "steps"),
    ("sample-steps-below-order", lambda: sample(MODEL, LIN, X, steps=2, order=3), ValueError, "steps"),
    ("sample-order-too-high", lambda: sample(MODEL, LIN, X, order=4, method="singlestep"), ValueError, "order"),
    ("sample-x-list", lambda: sample(MODEL, LIN, [[0.0, 0.0]]), TypeError, "x must"),
    ("sample-x-empty-batch", lambda: sample(MODEL, LIN, torch.zeros(0, 2, dtype=torch.float64)), ValueError,
     "x must"),
    ("sample-x-nan", lambda: sample(MODEL, LIN, _nan_x()), ValueError, "x contains"),
    ("sample-model-not-callable", lambda: sample(3, LIN, X), TypeError, "model"),
    ("sample-schedule-class", lambda: sample(MODEL, VPLinear, X), TypeError, "schedule"),
    ("sample-t-end-nan", lambda: sample(MODEL, LIN, X, t_end=math.nan), ValueError, "t_end"),
    ("sample-t-start-str", lambda: sample(MODEL, LIN, X, t_start="1"), TypeError, "t_start"),
    ("sample-cosine-t-start-beyond-T", lambda: sample(MIX.as_model(VPCosine()), VPCosine(), X, t_start=0.999),
     ValueError, "t_start"),
    ("sample-check-finite-int", lambda: sample(MODEL, LIN, X, check_finite=1), TypeError, "check_finite"),
    ("sample-unknown-kw", lambda: sample(MODEL, LIN, X, nfe=10), TypeError, "nfe"),
    ("sample-timesteps-collapsed", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 0.5, 0.1]), ValueError,
     "timesteps"),
    ("sample-timesteps-str", lambda: sample(MODEL, LIN, X, timesteps="abc"), TypeError, "timesteps"),
    ("sample-timesteps-with-steps", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 1e-3], steps=5), ValueError,
     "steps=5 does not match timesteps (2 intervals)"),
    ("sample-model-timesteps-without-grid", lambda: sample(MODEL, LIN, X, model_timesteps=[1.0, 0.5]), ValueError,
     "model_timesteps needs timesteps"),
    ("sample-model-timesteps-length", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 1e-3],
                                                     model_timesteps=[1.0]), ValueError,
     "model_timesteps must hold one time per grid point"),
    ("sample-model-timesteps-range", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 1e-3],
                                                    model_timesteps=[1.0, 2.0]), ValueError, "model_timesteps[1]"),
    ("sample-model-timesteps-str", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 1e-3], model_timesteps="ab"),
     TypeError, "model_timesteps"),
    ("sample-model-timesteps-singlestep", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 1e-3],
                                                         model_timesteps=[1.0, 0.5], method="singlestep"),
     ValueError, "model_timesteps needs a method"),
    ("sample-model-timesteps-sde", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 1e-3], model_timesteps=[1.0, 0.5],
                                                  algorithm_type="sde-dpmsolver++", generator=torch.Generator()),
     ValueError, "model_timesteps needs a method"),
    ("sample-timesteps-with-skip-type", lambda: sample(MODEL, LIN, X, timesteps=[1.0, 0.5, 1e-3], skip_type="logSNR"),
     ValueError, "skip_type cannot be combined with timesteps"),
    ("reverse-sde-timesteps-with-steps", lambda: _reverse_sde(timesteps=[1.0, 0.5, 1e-3], steps=3), ValueError,
     "steps=3 does not match timesteps"),
    ("reverse-sde-timesteps-t-end", lambda: _reverse_sde(timesteps=[1.0, 0.5, 1e-3], t_end=1e-2), ValueError,
     "t_end"),
    ("sample-timesteps-with-adaptive", lambda: sample(MODEL, LIN, X, method="adaptive", timesteps=[1.0, 0.5]),
     ValueError, "timesteps"),
    ("sample-time-input-discrete-on-linear", lambda: sample(MODEL, LIN, X, time_input="discrete"), ValueError,
     "time_input"),
    # sample(): adaptive, UniPC and SDE options
    ("sample-adaptive-rtol-zero", lambda: sample(MODEL, LIN, X, method="adaptive", rtol=0.0), ValueError, "rtol"),
    ("sample-adaptive-theta-above-one", lambda: sample(MODEL, LIN, X, method="adaptive", theta=1.5), ValueError,
     "theta"),
    ("sample-adaptive-h-init-negative", lambda: sample(MODEL, LIN, X, method="adaptive", h_init=-1.0),
     ValueError, "h_init"),
    ("sample-variant-without-unipc", lambda: sample(MODEL, LIN, X, variant="bh1"), ValueError, "variant"),
    ("sample-unipc-variant", lambda: sample(MODEL, LIN, X, method="unipc", variant="bh3"), ValueError, "variant"),
    ("sample-generator-on-ode", lambda: sample(MODEL, LIN, X, generator=torch.Generator()), ValueError,
     "generator"),
    ("sample-sde-singlestep", lambda: sample(MODEL, LIN, X, algorithm_type="sde-dpmsolver++", method="singlestep"),
     ValueError, "algorithm_type"),
    ("sample-sde-generator-int", lambda: sample(MODEL, LIN, X, algorithm_type="sde-dpmsolver++", generator=3),
     TypeError, "generator"),
    ("sample-sde-generator-list-length",
     lambda: sample(MODEL, LIN, X, algorithm_type="sde-dpmsolver++", generator=[torch.Generator()]), ValueError,
     "generator"),
    ("sample-sde-noise-shape",
     lambda: sample(MODEL, LIN, X, algorithm_type="sde-dpmsolver++", noise=torch.zeros(2, 3, 2, dtype=torch.float64)),
     ValueError, "noise"),
    ("reverse-sde-scheme", lambda: _reverse_sde(steps=4, scheme="heun"), ValueError, "scheme"),
    ("reverse-sde-no-steps", lambda: _reverse_sde(), TypeError, "steps"),
    ("reverse-sde-unknown-kw", lambda: _reverse_sde(steps=4, order=2), TypeError, "order"),
    # reference_solve
    ("reference-backend", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, backend="jax"), ValueError, "backend"),
    ("reference-method", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, method="dopri5"), ValueError, "method"),
    ("reference-rtol-negative", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, rtol=-1.0), ValueError, "rtol"),
    ("reference-atol-str", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, atol="1e-8"), TypeError, "atol"),
    ("reference-variable", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, variable="s"), ValueError,
     "variable"),
    ("reference-t-end-after-t-start", lambda: reference_solve(MODEL, LIN, X, 1e-3, 1.0), ValueError, "t_end"),
    ("reference-t-start-none", lambda: reference_solve(MODEL, LIN, X, None, 1e-3), TypeError, "t_start"),
    ("reference-ts-increasing", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, ts=[0.5, 0.7]), ValueError,
     "ts"),
    ("reference-n-steps-with-scipy", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, n_steps=10), ValueError,
     "n_steps"),
    ("reference-options-key", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, options={"foo": 1}), ValueError,
     "options"),
    ("reference-unknown-kw", lambda: reference_solve(MODEL, LIN, X, 1.0, 1e-3, tol=1e-8), TypeError, "tol"),
    # grids
    ("time-grid-skip-type", lambda: time_grid(LIN, "uniform", 1.0, 1e-3, 10), ValueError, "skip_type"),
    ("time-grid-n-steps-zero", lambda: time_grid(LIN, "logSNR", 1.0, 1e-3, 0), ValueError, "n_steps"),
    ("time-grid-n-steps-float", lambda: time_grid(LIN, "logSNR", 1.0, 1e-3, 2.5), TypeError, "n_steps"),
    ("time-grid-reversed", lambda: time_grid(LIN, "logSNR", 1e-3, 1.0, 10), ValueError, "t_end"),
    ("time-grid-t-end-zero", lambda: time_grid(LIN, "logSNR", 1.0, 0.0, 10), ValueError, "t_end"),
    ("time-grid-t-start-nan", lambda: time_grid(LIN, "time_uniform", math.nan, 1e-3, 10), ValueError, "t_start"),
    ("time-grid-schedule-none", lambda: time_grid(None, "logSNR", 1.0, 1e-3, 10), TypeError, "schedule"),
    ("time-grid-collapsed", lambda: time_grid(LIN, "logSNR", 1.0, 1.0 - 1e-15, 1000), ValueError,
     "strictly decreasing"),
    ("check-grid-increasing", lambda: check_grid(LIN, [0.1, 0.5]), ValueError, "timesteps"),
    ("check-grid-one-point", lambda: check_grid(LIN, [0.5]), ValueError, "timesteps"),
    ("check-grid-schedule-none", lambda: check_grid(None, [1.0, 0.5]), TypeError, "schedule"),
    # phi-functions
    ("phis-max-k-negative", lambda: phis(-1, 0.5), ValueError, "max_k"),
    ("phis-max-k-float", lambda: phis(1.5, 0.5), TypeError, "max_k"),
    ("phis-z-nan", lambda: phis(2, math.nan), ValueError, "z must"),
    ("phis-z-str", lambda: phis(2, "a"), TypeError, "z must"),
    ("phis-z-int-tensor", lambda: phis(2, torch.tensor([1, 2])), TypeError, "z must"),
    # model wrapper and semi-linear problem
    ("wrapper-model-not-callable", lambda: ModelWrapper(3, LIN), TypeError, "model"),
    ("wrapper-schedule-str", lambda: ModelWrapper(MODEL, "linear"), TypeError, "schedule"),
    ("wrapper-model-type", lambda: ModelWrapper(MODEL, LIN, model_type="eps"), ValueError, "model_type"),
    ("wrapper-check-finite-str", lambda: ModelWrapper(MODEL, LIN, check_finite="yes"), TypeError, "check_finite"),
    ("ode-model-not-wrapped", lambda: DiffusionODE(LIN, MODEL), TypeError, "model"),
    ("ode-prediction", lambda: DiffusionODE(LIN, ModelWrapper(MODEL, LIN), prediction="x0"), ValueError,
     "prediction"),
    ("ode-schedule-str", lambda: DiffusionODE("linear", ModelWrapper(MODEL, LIN)), TypeError, "schedule"),
    ("ode-wrapper-other-schedule", lambda: DiffusionODE(VPCosine(), ModelWrapper(MODEL, LIN)), ValueError,
     "same schedule"),
    ("ode-coefficients-at-t-zero", lambda: DiffusionODE(LIN, ModelWrapper(MODEL, LIN)).coefficients(1.0, 0.0),
     ValueError, "t=0.0"),
    # optimize_timesteps
    ("optimize-steps-zero", lambda: _optimize(steps=0), ValueError, "steps"),
    ("optimize-method-adaptive", lambda: _optimize(method="adaptive"), ValueError, "method"),
    ("optimize-skip-type-option", lambda: _optimize(skip_type="logSNR"), ValueError, "skip_type"),
    ("optimize-t-end-after-t-start", lambda: _optimize(t_start=1e-3, t_end=1.0), ValueError, "t_end"),
    # studies (analysis/)
    ("study-budget", lambda: _global_study(budget="time"), ValueError, "budget"),
    ("study-unknown-run", lambda: _global_study(runs=["DPM-Solver-9"]), ValueError, "runs"),
    ("study-nfes-negative", lambda: _global_study(nfes=(-3,)), ValueError, "nfes"),
    ("study-n-samples-zero", lambda: _global_study(n_samples=0), ValueError, "n_samples"),
    ("study-target-str", lambda: _global_study(target="2d"), TypeError, "target"),
    ("study-store-str", lambda: _global_study(store="store.json"), TypeError, "store"),
    ("study-unknown-kw", lambda: _global_study(samples=3), TypeError, "samples"),
    ("local-study-solvers", lambda: _local_study(solvers=["DPM-Solver-9"]), ValueError, "solvers"),
    ("local-study-hs", lambda: _local_study(hs=[-1.0]), ValueError, "hs"),
    ("local-study-n-samples", lambda: _local_study(n_samples=-1), ValueError, "n_samples"),
    ("fit-order-lengths", lambda: _fit_order([1.0, 2.0, 3.0], [1.0, 2.0]), ValueError, "step_sizes"),
    ("fit-order-unknown-kw", lambda: _fit_order([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], window=2), TypeError, "window"),
    ("targets-unknown", lambda: _get_target("3d"), ValueError, "target"),
    # figure command line (argparse: exit status 2 and the message on stderr)
    ("cli-seed-negative", lambda: _cli("--seed", "-1"), SystemExit, "--seed"),
    ("cli-seed-not-int", lambda: _cli("--seed", "abc"), SystemExit, "--seed"),
    ("cli-only-unknown-figure", lambda: _cli("--only", "fig9_nothing"), SystemExit, "--only"),
    ("cli-unknown-option", lambda: _cli("--fast"), SystemExit, "--fast"),
    ("figure-cli-seed-negative", lambda: _figure_cli("--seed", "-2"), SystemExit, "--seed"),
]


def test_table_is_large_enough():
    assert len(BAD_INPUTS) >= 40
    assert len({row[0] for row in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("call, exc, name", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_rejected_and_named(call, exc, name, capsys):
    with pytest.raises(exc) as info:
        call()
    if exc is SystemExit:
        message = f"{info.value.code} {capsys.readouterr().err}"
        assert info.value.code != 0
    else:
        message = str(info.value)
    assert name in message, f"message does not name {name!r}: {message!r}"


def _bare_asserts(folder: str) -> list:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    return found


@pytest.mark.parametrize("folder", ["expsolver", "analysis", "paper_figs"])
def test_no_bare_asserts(folder):
    """``assert`` disappears under ``python -O``: library checks raise ValueError/TypeError instead."""
    if not (ROOT / folder).is_dir():
        pytest.skip(f"{folder}/ does not exist")
    assert _bare_asserts(folder) == []
