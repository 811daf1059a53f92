"""expsolver.optimize_timesteps: input validation, the differentiable solve against sample() (values and
gradients), the stratified weights, and a small end-to-end optimisation whose grid passes sample()'s checks.

Fast part ~15 s. The acceptance measurement (error vs the best official DPM-Solver on 1,000 test and 5,000 holdout
states) lives in analysis/race.py; one slow test runs a reduced version of it.
"""

import math

import numpy as np
import pytest
import torch

from conftest import make_mixture_2d
from expsolver import VPLinear, check_grid, optimize_timesteps, sample
from expsolver.optimize import OptimizedGrid, _allocate, solve_on_lams

T_START, T_END = 1.0, 1e-3


@pytest.fixture(scope="module")
def setup():
    mixture, schedule = make_mixture_2d(), VPLinear()
    model = mixture.as_model(schedule)
    pool = mixture.sample(420, generator=torch.Generator().manual_seed(0), t=T_START, schedule=schedule)
    return mixture, schedule, model, pool


@pytest.fixture(scope="module")
def small_result(setup):
    _, schedule, model, pool = setup
    return optimize_timesteps(model, schedule, pool, steps=5, t_start=T_START, t_end=T_END, n_train=64,
                              strata=(0.5, 0.9), min_per_stratum=8, max_iter=15, n_validation=64, n_starts=2,
                              method="unipc", order=2, variant="bh2")


def test_result_is_a_valid_labelled_grid(setup, small_result):
    _, schedule, model, pool = setup
    grid = small_result
    assert isinstance(grid, OptimizedGrid)
    ts = check_grid(schedule, grid.timesteps)
    assert len(ts) == 6 and ts[0] == T_START and ts[-1] == T_END
    assert np.all(np.diff(grid.lams) > 0)
    assert grid.config["method"] == "unipc" and grid.config["order"] == 2 and grid.config["variant"] == "bh2"
    assert grid.config["use_corrector"] is True and grid.config["steps"] == 5
    assert "unipc" in grid.label and "variant=bh2" in grid.label and "steps=5" in grid.label
    for split in ("train", "validation", "test", "holdout"):
        assert set(grid.errors[split]) == {"rms", "median", "n"}
        assert math.isfinite(grid.errors[split]["rms"])
    # The returned iterate is the best on the validation states, never worse there than where it started.
    assert grid.errors["validation"]["n"] == 64
    assert grid.errors["validation"]["rms"] <= grid.initial_errors["validation"]["rms"] * (1 + 1e-9)
    assert len(grid.starts) == 2 and grid.starts[0]["init"] != grid.starts[1]["init"]
    assert all(s["stopped"] in ("max_iter", "max_time", "no_progress") for s in grid.starts)
    assert grid.errors["validation"]["rms"] == pytest.approx(min(s["val_rms"] for s in grid.starts), rel=1e-9)
    assert grid.n_iterations >= 2 and grid.optimization_time_s > 0
    result = sample(model, schedule, pool[:3], timesteps=grid.timesteps, **grid.sampler_options)
    assert result.nfe == 5
    assert OptimizedGrid.from_dict(grid.to_dict()).label == grid.label
    assert "denoise_to_zero" not in grid.label and "model_type" not in grid.label  # defaults are not spelled out


def test_label_names_options_that_differ_from_the_defaults():
    from expsolver.optimize import config_label

    base = dict(method="multistep", order=2, algorithm_type="dpmsolver++", steps=8)
    assert config_label(base) == "multistep order=2 algorithm_type=dpmsolver++ steps=8"
    label = config_label(dict(base, denoise_to_zero=True, model_type="x_start", time_input="discrete"))
    assert label == ("multistep order=2 algorithm_type=dpmsolver++ denoise_to_zero=True model_type=x_start "
                     "time_input=discrete steps=8")


def test_strata_weights_are_unbiased(small_result):
    strata = small_result.strata
    assert len(strata) == 3
    pool_size = sum(s["size"] for s in strata)
    # sum over the training subset of the weights = sum_k size_k / pool = 1
    assert sum(s["weight"] * s["selected"] for s in strata) == pytest.approx(1.0, rel=1e-12)
    assert pool_size == 420 - 2 * int(0.2 * 420) - 64  # test, holdout and validation set aside
    assert all(s["selected"] >= 8 for s in strata) and sum(s["selected"] for s in strata) == 64


def test_allocation():
    alloc = _allocate(64, np.array([100, 80, 20]), np.array([1.0, 1.0, 50.0]), 8)
    assert sum(alloc) == 64 and alloc[2] == 20 and min(alloc) >= 8  # capped at the stratum's size
    with pytest.raises(ValueError, match="strata"):
        _allocate(64, np.array([100, 5]), np.array([1.0, 1.0]), 8)


@pytest.mark.parametrize("options", [
    dict(method="unipc", order=3, variant="bh1"),
    dict(method="unipc", order=2, variant="bh2", use_corrector=False, algorithm_type="dpmsolver"),
    dict(method="multistep", order=3, solver_type="taylor"),
    dict(method="multistep", order=3, compat="official", algorithm_type="dpmsolver"),
    dict(method="singlestep", order=2, solver_type="dpmsolver"),
], ids=["unipc3", "unip2-noise", "3M", "3M-official", "2S"])
def test_differentiable_solve_matches_sample_and_its_gradient(setup, options):
    """The differentiable path reproduces sample() on the same grid (1e-12) and its gradient with respect to an
    interior lam matches a central difference of sample() itself."""
    _, schedule, model, pool = setup
    x = pool[:16]
    lams0 = np.linspace(schedule.lam(T_START), schedule.lam(T_END), 7)
    lams0[2:-1] += np.array([0.3, -0.2, 0.1, 0.25])

    def via_sample(lams):
        ts = [T_START] + [schedule.inverse_lam(float(v)) for v in lams[1:-1]] + [T_END]
        return sample(model, schedule, x, timesteps=ts, **options)

    reference = via_sample(lams0)
    endpoints = {float(lams0[0]): T_START, float(lams0[-1]): T_END}
    lam_t = [torch.tensor(float(v), dtype=torch.float64, requires_grad=0 < i < 6) for i, v in enumerate(lams0)]
    out = solve_on_lams(model, schedule, x, lam_t, reference.orders, reference.options, endpoints)
    assert torch.allclose(out, reference.x, rtol=0, atol=1e-11)
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out * weights).sum().backward()
    for i in (2, 4):
        d = 1e-5
        plus, minus = lams0.copy(), lams0.copy()
        plus[i] += d
        minus[i] -= d
        fd = float(((via_sample(plus).x - via_sample(minus).x) * weights).sum()) / (2 * d)
        assert float(lam_t[i].grad) == pytest.approx(fd, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("options", [
    dict(method="unipc", order=3, variant="bh2"),
    dict(method="multistep", order=2, algorithm_type="dpmsolver"),
], ids=["unipc3-data", "2M-noise"])
def test_differentiable_solve_with_model_times_matches_sample_and_its_gradient(setup, options):
    """With decoupled model times the differentiable path reproduces sample(..., model_timesteps=...) and its
    gradient with respect to a model time (and to a grid lam) matches a central difference of sample()."""
    _, schedule, model, pool = setup
    x = pool[:16]
    lams0 = np.linspace(schedule.lam(T_START), schedule.lam(T_END), 7)
    lams0[2:-1] += np.array([0.3, -0.2, 0.1, 0.25])
    shifts0 = np.array([0.05, -0.1, 0.2, 0.0, -0.15, 0.1])

    def times(lams):
        return [T_START] + [schedule.inverse_lam(float(v)) for v in lams[1:-1]] + [T_END]

    def via_sample(lams, shifts):
        model_ts = [schedule.inverse_lam(float(v)) for v in lams[:-1] + shifts]
        return sample(model, schedule, x, timesteps=times(lams), model_timesteps=model_ts, **options)

    reference = via_sample(lams0, shifts0)
    plain = sample(model, schedule, x, timesteps=times(lams0), **options)
    assert float((reference.x - plain.x).abs().max()) > 1e-3  # the model times matter
    endpoints = {float(lams0[0]): T_START, float(lams0[-1]): T_END}
    lam_t = [torch.tensor(float(v), dtype=torch.float64, requires_grad=0 < i < 6) for i, v in enumerate(lams0)]
    shift_t = torch.tensor(shifts0, dtype=torch.float64, requires_grad=True)
    model_lams = [lam_t[i] + shift_t[i] for i in range(6)]
    out = solve_on_lams(model, schedule, x, lam_t, reference.orders, reference.options, endpoints,
                        model_lams=model_lams)
    assert torch.allclose(out, reference.x, rtol=0, atol=1e-11)
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out * weights).sum().backward()
    d = 1e-5
    for i in (1, 4):
        plus, minus = shifts0.copy(), shifts0.copy()
        plus[i] += d
        minus[i] -= d
        fd = float(((via_sample(lams0, plus).x - via_sample(lams0, minus).x) * weights).sum()) / (2 * d)
        assert float(shift_t.grad[i]) == pytest.approx(fd, rel=1e-4, abs=1e-7)
    plus, minus = lams0.copy(), lams0.copy()
    plus[3] += d
    minus[3] -= d  # moves the grid point and its model time together (the shift is relative)
    fd = float(((via_sample(plus, shifts0).x - via_sample(minus, shifts0).x) * weights).sum()) / (2 * d)
    assert float(lam_t[3].grad) == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_shift_model_times_learns_model_times_that_sample_reproduces(setup):
    _, schedule, model, pool = setup
    grid = optimize_timesteps(model, schedule, pool, steps=5, t_start=T_START, t_end=T_END, n_train=64,
                              strata=(0.5, 0.9), min_per_stratum=8, max_iter=15, n_validation=64, n_starts=2,
                              shift_model_times=True, method="unipc", order=2, variant="bh2")
    assert grid.config["shift_model_times"] is True and "shift_model_times=True" in grid.label
    assert len(grid.starts) == 3 and [s["model_times"] for s in grid.starts] == [False, False, True]
    # The joint descent starts from the best grid-only one: never worse on validation.
    assert grid.starts[2]["val_rms"] <= min(s["val_rms"] for s in grid.starts[:2]) * (1 + 1e-12)
    assert grid.errors["validation"]["rms"] == pytest.approx(min(s["val_rms"] for s in grid.starts), rel=1e-9)
    if grid.model_timesteps is not None:
        assert grid.model_timesteps.shape == (5,)
        for k, t in enumerate(grid.model_timesteps):
            schedule.check_time(float(t), f"model_timesteps[{k}]")
    restored = OptimizedGrid.from_dict(grid.to_dict())
    assert restored.label == grid.label
    if grid.model_timesteps is not None:
        assert np.array_equal(restored.model_timesteps, grid.model_timesteps)
        assert "model_timesteps" in grid.sample_kwargs
    result = sample(model, schedule, pool[:3], **grid.sample_kwargs)
    assert result.nfe == 5


def test_without_a_time_limit_the_result_is_deterministic(setup):
    """max_time=None: the descents stop on max_iter (or on no progress) only, and two runs give the same grid."""
    _, schedule, model, pool = setup
    kw = dict(steps=4, t_start=T_START, t_end=T_END, n_train=64, strata=(0.5, 0.9), min_per_stratum=8, max_iter=12,
              max_time=None, n_validation=64, n_starts=2, shift_model_times=True, method="multistep", order=2)
    first, second = optimize_timesteps(model, schedule, pool, **kw), optimize_timesteps(model, schedule, pool, **kw)
    assert all(s["stopped"] in ("max_iter", "no_progress") for s in first.starts)
    assert np.array_equal(first.timesteps, second.timesteps)
    assert (first.model_timesteps is None) == (second.model_timesteps is None)
    if first.model_timesteps is not None:
        assert np.array_equal(first.model_timesteps, second.model_timesteps)


def test_validation(setup):
    _, schedule, model, pool = setup
    kw = dict(t_start=T_START, t_end=T_END, n_train=64, strata=(0.5, 0.9), min_per_stratum=8, max_iter=1)
    with pytest.raises(ValueError, match="steps"):
        optimize_timesteps(model, schedule, pool, steps=0, **kw)
    with pytest.raises(TypeError, match="steps"):
        optimize_timesteps(model, schedule, pool, steps=2.5, **kw)
    with pytest.raises(ValueError, match="pool"):
        optimize_timesteps(model, schedule, pool[:100], steps=4, **kw)
    with pytest.raises(ValueError, match="method"):
        optimize_timesteps(model, schedule, pool, steps=4, method="adaptive", **kw)
    with pytest.raises(ValueError, match="method"):
        optimize_timesteps(model, schedule, pool, steps=4, method="deis", **kw)
    with pytest.raises(ValueError, match="only to method='unipc'"):
        optimize_timesteps(model, schedule, pool, steps=4, method="multistep", variant="bh1", **kw)
    with pytest.raises(ValueError, match="variant"):
        optimize_timesteps(model, schedule, pool, steps=4, method="unipc", variant="bh9", **kw)
    with pytest.raises(ValueError, match="steps must be >= order"):
        optimize_timesteps(model, schedule, pool, steps=2, method="multistep", order=3, **kw)
    with pytest.raises(TypeError, match="solver protocol"):
        optimize_timesteps(model, schedule, pool, steps=4, solver="unipc", **kw)
    with pytest.raises(TypeError, match="unexpected keyword"):
        optimize_timesteps(model, schedule, pool, steps=4, rule="unipc", **kw)
    with pytest.raises(ValueError, match="timesteps"):
        optimize_timesteps(model, schedule, pool, steps=4, timesteps=[1.0, 0.5, 1e-3], **kw)
    with pytest.raises(ValueError, match="skip_type"):
        optimize_timesteps(model, schedule, pool, steps=4, skip_type="logSNR", **kw)
    with pytest.raises(ValueError, match="strata"):
        optimize_timesteps(model, schedule, pool, steps=4, **{**kw, "strata": (0.9, 0.5)})
    with pytest.raises(ValueError, match="t_end"):
        optimize_timesteps(model, schedule, pool, steps=4, **{**kw, "t_end": 1.0})
    with pytest.raises(ValueError, match="x_test"):
        optimize_timesteps(model, schedule, pool, steps=4, x_test=pool[:10], **kw)
    with pytest.raises(ValueError, match="stochastic"):
        optimize_timesteps(model, schedule, pool, steps=4, algorithm_type="sde-dpmsolver++", **kw)
    with pytest.raises(ValueError, match="shift_model_times=True needs a method"):
        optimize_timesteps(model, schedule, pool, steps=4, method="singlestep", shift_model_times=True, **kw)
    with pytest.raises(TypeError, match="shift_model_times"):
        optimize_timesteps(model, schedule, pool, steps=4, shift_model_times="yes", **kw)


@pytest.mark.slow
@pytest.mark.xdist_group("test_optimize.py::race")  # no shared fixture: runs beside the rest of the file
def test_optimised_grid_beats_the_best_official_configuration():
    """Reduced acceptance run (analysis/race.py has the full one; ~2 min): standard 2-D target, NFE 10, a UniPC-3
    grid optimised on a 20,000-state pool (as in the study), evaluated on 2,000 independent states against the best official
    DPM-Solver configuration (114 configurations) on the same states. The full study measures a factor of about
    3 at NFE 10 (population estimate on 30,000 fresh states: 0.036 vs 0.120); here the assertion is >= 2, which
    a handful of mode-switching states in 2,000 cannot undo."""
    from analysis.race import best_official
    from analysis.targets import T_END as end, T_START as start, standard_schedule, target_2d
    from expsolver import reference_solve

    schedule, mixture = standard_schedule(), target_2d()
    model = mixture.as_model(schedule)
    pool = mixture.sample(20000, generator=torch.Generator().manual_seed(101), t=start, schedule=schedule)
    x_eval = mixture.sample(2000, generator=torch.Generator().manual_seed(102), t=start, schedule=schedule)
    ref = reference_solve(model, schedule, x_eval, start, end, rtol=1e-9, atol=1e-9).x
    grid = optimize_timesteps(model, schedule, pool, steps=10, t_start=start, t_end=end, x_test=x_eval[:1000],
                              ref_test=ref[:1000], x_holdout=x_eval[1000:], ref_holdout=ref[1000:],
                              method="unipc", order=3, variant="bh1", n_train=1024,
                              strata=(0.5, 0.9, 0.99, 0.998), n_validation=8192)
    official = best_official(model, schedule, x_eval, ref, nfe=10)
    ours = sample(model, schedule, x_eval, timesteps=grid.timesteps, **grid.sampler_options).x
    rms = float((ours - ref).pow(2).sum(1).mean().sqrt())
    assert rms <= official["rms"] / 2, (rms, official)
