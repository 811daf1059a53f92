"""expsolver.integrations.diffusers: the time convention, schedules and grids imported from diffusers schedulers,
and ExpSolverScheduler in a stock pipeline (DDPMPipeline on a random UNet).

The central check: a pipeline run with ExpSolverScheduler equals expsolver.sample with the same solver, grid and
model to 1e-10 relative in float64, with exactly num_inference_steps UNet calls. Parity with diffusers' own
schedulers is in test_diffusers_parity.py. ~10 s.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       UniPCMultistepScheduler)
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

from conftest import make_mixture_2d  # noqa: E402
from expsolver import optimize_timesteps, sample  # noqa: E402
from expsolver.integrations.diffusers import (DiffusersGrid, ExpSolverScheduler, grid_from_diffusers,  # noqa: E402
                                              schedule_from_diffusers, time_to_timestep, timestep_to_time)
from expsolver.integrations.diffusers_parity import tiny_unet  # noqa: E402
from expsolver.solvers import DEISMultistep, DPMSolverMultistep, UniPC  # noqa: E402

N_TRAIN = 1000
SHAPE = (2, 3, 8, 8)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def unet():
    model = tiny_unet(seed=0)
    model.calls = 0

    def count(module, args, output):
        module.calls += 1

    model.register_forward_hook(count)
    return model


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _pipeline_run(unet, scheduler, steps, seed=1):
    """DDPMPipeline with ``scheduler``: the final state before the pipeline's clamp, the images and the UNet calls."""
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    states = []
    step = scheduler.step

    def recording_step(*args, **kwargs):
        out = step(*args, **kwargs)
        states.append(out.prev_sample)
        return out

    scheduler.step = recording_step
    unet.calls = 0
    images = pipe(batch_size=SHAPE[0], generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                  output_type="np").images
    return states[-1], images, unet.calls


def _initial_noise(seed=1):
    """The noise DDPMPipeline starts from with this seed."""
    return randn_tensor(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _model(unet):
    """The UNet as sample()'s model(x, t): called at the diffusers timestep k = N t - 1."""
    return lambda x, t: unet(x, time_to_timestep(t, N_TRAIN)).sample


# -- time convention and schedules ------------------------------------------------------------------------------------
def test_time_convention_maps_timestep_k_to_t_k_plus_one_over_n():
    assert timestep_to_time(0, 1000) == 1e-3 and timestep_to_time(999, 1000) == 1.0
    ks = torch.tensor([0, 499, 999])
    assert torch.equal(timestep_to_time(ks, 1000), torch.tensor([1e-3, 0.5, 1.0], dtype=torch.float64))
    ts = np.array([0.25, 0.5, 0.75])
    assert np.allclose(timestep_to_time(time_to_timestep(ts, 400), 400), ts, rtol=0, atol=1e-15)


def test_schedule_from_diffusers_puts_alphas_cumprod_k_at_t_k():
    scheduler = DDPMScheduler()
    schedule = schedule_from_diffusers(scheduler)
    ac = scheduler.alphas_cumprod.double()
    t = timestep_to_time(torch.arange(N_TRAIN), N_TRAIN)
    assert schedule.total_N == N_TRAIN and schedule.t_min == 1e-3 and schedule.T == 1.0
    assert torch.allclose(schedule.alpha(t) ** 2, ac, rtol=1e-13, atol=0)
    from_betas = schedule_from_diffusers(scheduler, from_betas=True)
    rel = (from_betas.alpha(t) ** 2 / ac - 1).abs().max()
    # diffusers forms alphas_cumprod as a float32 product: the float64 one from the betas differs by its rounding.
    assert 0 < rel < 1e-5


def test_schedule_from_diffusers_refuses_what_it_cannot_represent():
    with pytest.raises(ValueError, match="flow"):
        schedule_from_diffusers(UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction"))
    with pytest.raises(TypeError, match="alphas_cumprod"):
        schedule_from_diffusers(object())


# -- grids ------------------------------------------------------------------------------------------------------------
def test_grid_of_plain_timesteps_is_made_of_exact_training_levels():
    scheduler = DPMSolverMultistepScheduler()
    grid = grid_from_diffusers(scheduler, 10)
    scheduler.set_timesteps(10)
    schedule = schedule_from_diffusers(scheduler)
    assert np.array_equal(grid.timesteps, schedule.t_array[scheduler.timesteps].numpy())
    assert grid.denoise_to_zero and grid.model_timesteps is None and grid.nfe == 10
    assert not grid.idle_final_call and grid.sample_kwargs.keys() == {"timesteps", "denoise_to_zero"}


def test_grid_with_sigma_min_ends_at_the_smallest_training_level():
    grid = grid_from_diffusers(DPMSolverMultistepScheduler(final_sigmas_type="sigma_min",
                                                           timestep_spacing="trailing"), 8)
    assert not grid.denoise_to_zero and grid.timesteps[-1] == 1e-3 and len(grid.timesteps) == 9 and grid.nfe == 8


def test_karras_grid_steps_between_the_stored_levels_and_queries_the_rounded_timesteps():
    scheduler = DPMSolverMultistepScheduler(use_karras_sigmas=True)
    grid = grid_from_diffusers(scheduler, 12, float32_levels=True)
    scheduler.set_timesteps(12)
    schedule = schedule_from_diffusers(scheduler)
    levels = scheduler.sigmas.double().numpy()[:-1]
    lams = schedule.lams_of(grid.timesteps)
    # the end levels are the largest and smallest training levels, placed at T and t_min (their float32 values lie
    # just beyond them)
    assert np.allclose(lams[1:-1], -np.log(levels[1:-1]), rtol=1e-12, atol=0)
    assert grid.timesteps[0] == 1.0 and grid.timesteps[-1] == 1e-3
    assert np.allclose(lams[[0, -1]], -np.log(levels[[0, -1]]), rtol=1e-6, atol=0)
    assert np.array_equal(grid.model_timesteps, schedule.t_array[scheduler.timesteps].numpy())
    assert grid.denoise_to_zero and grid.nfe == 12
    assert len(grid.sample_kwargs["model_timesteps"]) == len(grid.timesteps) - 1


def test_zero_length_last_step_is_reported_not_put_in_the_grid():
    grid = grid_from_diffusers(UniPCMultistepScheduler(use_karras_sigmas=True, final_sigmas_type="sigma_min"), 6)
    assert grid.idle_final_call and len(grid.timesteps) == 6 and grid.nfe == 6


@pytest.mark.parametrize("scheduler", [DDPMScheduler(), DDIMScheduler()], ids=["DDPM", "DDIM"])
def test_grid_of_schedulers_without_sigmas_is_their_timesteps_then_the_jump_to_zero(scheduler):
    grid = grid_from_diffusers(scheduler, 5)
    copy = type(scheduler).from_config(scheduler.config)
    copy.set_timesteps(5)
    assert np.allclose(grid.timesteps, (copy.timesteps.double().numpy() + 1) / N_TRAIN, rtol=1e-15, atol=0)
    assert grid.denoise_to_zero and grid.model_timesteps is None


def test_grid_from_diffusers_leaves_the_given_scheduler_alone_and_checks_its_arguments():
    scheduler = DPMSolverMultistepScheduler()
    scheduler.set_timesteps(7)
    grid_from_diffusers(scheduler, 20)
    assert len(scheduler.timesteps) == 7
    with pytest.raises(TypeError, match="num_inference_steps"):
        grid_from_diffusers(scheduler, 2.0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        grid_from_diffusers(scheduler, 0)
    with pytest.raises(ValueError, match="levels"):
        grid_from_diffusers(scheduler, 5, schedule=schedule_from_diffusers(DDPMScheduler(num_train_timesteps=500)))


# -- ExpSolverScheduler == expsolver.sample in a pipeline -------------------------------------------------------------
def _diffusers_grid(cls, steps):
    return grid_from_diffusers(cls.from_config(DDPMScheduler().config), steps).sample_kwargs


EQUAL_CASES = {
    "DPM-Solver++(2M)": (dict(method="multistep", order=2), 10,
                         lambda: dict(method="multistep", order=2, **_diffusers_grid(DPMSolverMultistepScheduler, 10))),
    "DPM-Solver-3M corrected": (dict(order=3, lower_order_final=False), 12,
                                lambda: dict(order=3, lower_order_final=False,
                                             **_diffusers_grid(DPMSolverMultistepScheduler, 12))),
    "UniPC-3-bh2": (dict(method="unipc", order=3, variant="bh2"), 10,
                    lambda: dict(method="unipc", order=3, variant="bh2",
                                 **_diffusers_grid(UniPCMultistepScheduler, 10))),
    "DEIS tAB2": (dict(method="deis", order=3), 10,
                  lambda: dict(method="deis", order=3, **_diffusers_grid(DPMSolverMultistepScheduler, 10))),
    "DPM-Solver(2M) noise, logSNR grid": (dict(algorithm_type="dpmsolver", skip_type="logSNR"), 9,
                                          lambda: dict(algorithm_type="dpmsolver", skip_type="logSNR", steps=9,
                                                       t_end=1e-3)),
    "DPM-Solver-fast-3 (singlestep)": (dict(method="singlestep", order=3, skip_type="logSNR"), 10,
                                       lambda: dict(method="singlestep", order=3, skip_type="logSNR", steps=10,
                                                    t_end=1e-3)),
    "DPM-Solver-2S, denoise_to_zero": (dict(method="singlestep_fixed", order=2, skip_type="time_uniform",
                                            denoise_to_zero=True), 9,
                                       lambda: dict(method="singlestep_fixed", order=2, skip_type="time_uniform",
                                                    steps=8, denoise_to_zero=True, t_end=1e-3)),
    "UniPC object, Karras sigmas": (dict(solver=UniPC(2, "bh2"), use_karras_sigmas=True), 8,
                                    lambda: dict(solver=UniPC(2, "bh2"), **grid_from_diffusers(
                                        UniPCMultistepScheduler(use_karras_sigmas=True), 8).sample_kwargs)),
    "DPM-Solver-3M official, compat='official'": (dict(order=3, compat="official", skip_type="time_uniform"), 10,
                                                  lambda: dict(order=3, compat="official", skip_type="time_uniform",
                                                               steps=10, t_end=1e-3)),
    "DPM-Solver++(2M), v prediction": (dict(prediction_type="v_prediction"), 10,
                                       lambda: dict(model_type="v", **_diffusers_grid(DPMSolverMultistepScheduler,
                                                                                        10))),
    "DPM-Solver++(3M), x0 prediction": (dict(prediction_type="sample", order=3), 10,
                                        lambda: dict(model_type="x_start", order=3,
                                                     **_diffusers_grid(DPMSolverMultistepScheduler, 10))),
}


@pytest.mark.parametrize("name", list(EQUAL_CASES))
def test_pipeline_with_expsolver_scheduler_equals_sample(unet, name):
    options, steps, sample_options = EQUAL_CASES[name]
    scheduler = ExpSolverScheduler.from_config(DDPMScheduler().config, **options)
    x_pipe, images, calls = _pipeline_run(unet, scheduler, steps)
    with torch.no_grad():
        ref = sample(_model(unet), scheduler.schedule, _initial_noise(), **sample_options())
    assert calls == steps == ref.nfe == scheduler.num_inference_steps == len(scheduler.timesteps)
    assert x_pipe.dtype == torch.float64 and _rel(x_pipe, ref.x) <= 1e-10
    expected_images = (ref.x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.allclose(images, expected_images, rtol=0, atol=1e-10)


@pytest.fixture(scope="module")
def optimized_grid():
    """A small grid with model times, optimised for UniPC-2-bh2 on a 2-D Gaussian mixture under the diffusers
    schedule (the grid is only a set of times here: it is run on the UNet)."""
    schedule = schedule_from_diffusers(DDPMScheduler())
    mixture = make_mixture_2d()
    pool = mixture.sample(420, generator=torch.Generator().manual_seed(0), t=1.0, schedule=schedule)
    grid = optimize_timesteps(mixture.as_model(schedule), schedule, pool, steps=5, t_start=1.0, t_end=schedule.t_min,
                              n_train=64, strata=(0.5, 0.9), min_per_stratum=8, max_iter=4, max_time=None,
                              n_validation=64, n_starts=2, shift_model_times=True, reference_tol=1e-7,
                              method="unipc", order=2, variant="bh2")
    assert grid.model_timesteps is not None and not np.allclose(grid.model_timesteps, grid.timesteps[:-1])
    return grid


def test_pipeline_on_an_optimized_grid_with_model_times_equals_sample(unet, optimized_grid):
    scheduler = ExpSolverScheduler.from_config(DDPMScheduler().config, grid=optimized_grid)
    x_pipe, _, calls = _pipeline_run(unet, scheduler, 5)
    with torch.no_grad():
        ref = sample(_model(unet), scheduler.schedule, _initial_noise(), **optimized_grid.sample_kwargs)
    assert calls == 5 == ref.nfe
    assert _rel(x_pipe, ref.x) <= 1e-10
    # the model is called at the learned model times, announced as diffusers timesteps
    assert np.allclose(scheduler.timesteps.numpy(), time_to_timestep(optimized_grid.model_timesteps, N_TRAIN),
                       rtol=0, atol=1e-9)


def test_grid_and_solver_object_round_trip_through_the_config(tmp_path, unet, optimized_grid):
    scheduler = ExpSolverScheduler(grid=optimized_grid)
    assert scheduler.config["grid"] is None and scheduler.config["timesteps"] == optimized_grid.timesteps.tolist()
    scheduler.save_config(tmp_path)
    loaded = ExpSolverScheduler.from_pretrained(tmp_path)
    x_a, _, _ = _pipeline_run(unet, scheduler, 5)
    x_b, _, _ = _pipeline_run(unet, loaded, 5)
    assert torch.equal(x_a, x_b) and torch.equal(scheduler.timesteps, loaded.timesteps)
    solver = DEISMultistep(2)
    with_object = ExpSolverScheduler(solver=solver)
    assert ExpSolverScheduler.from_config(with_object.config).solver is solver
    with pytest.raises(TypeError):
        with_object.save_config(tmp_path / "object")


def test_expsolver_scheduler_runs_a_float32_ddpm_pipeline_end_to_end():
    unet = tiny_unet(seed=3, dtype=torch.float32)
    calls = []
    unet.register_forward_hook(lambda module, args, output: calls.append(1))
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    pipe.scheduler = ExpSolverScheduler.from_config(pipe.scheduler.config, method="unipc", order=3, variant="bh2")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=12,
                  output_type="np").images
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.float32 and np.isfinite(images).all()
    assert len(calls) == 12 and 0 <= images.min() and images.max() <= 1


def test_run_started_at_a_later_timestep_equals_sample_on_the_rest_of_the_grid(unet):
    scheduler = ExpSolverScheduler(order=3)
    scheduler.set_timesteps(10)
    scheduler.set_begin_index(4)
    x0 = _initial_noise()
    x = scheduler.add_noise(x0, torch.randn_like(x0), scheduler.timesteps[4:5])
    start = x
    with torch.no_grad():
        for t in scheduler.timesteps[4:]:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        grid = grid_from_diffusers(DPMSolverMultistepScheduler(), 10)
        ref = sample(_model(unet), scheduler.schedule, start, order=3, timesteps=grid.timesteps[4:],
                     denoise_to_zero=True)
    assert _rel(x, ref.x) <= 1e-10


def test_compat_run_started_later_reproduces_diffusers_and_its_add_noise(unet):
    dpm = DPMSolverMultistepScheduler(solver_order=3, use_karras_sigmas=True)
    ours = ExpSolverScheduler.from_config(dpm.config, compat="diffusers")
    x0, noise = _initial_noise(), _initial_noise(seed=2)
    finals = []
    for scheduler in (dpm, ours):
        scheduler.set_timesteps(12)
        scheduler.set_begin_index(4)
        x = scheduler.add_noise(x0, noise, scheduler.timesteps[4:5])
        finals.append(x)
        with torch.no_grad():
            for t in scheduler.timesteps[4:]:
                x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        finals.append(x)
    assert _rel(finals[2], finals[0]) <= 1e-6  # the same noise level, up to its float32 storage
    assert _rel(finals[3], finals[1]) <= 8 * 2.0**-22


@pytest.mark.parametrize("source,options,steps", [
    (UniPCMultistepScheduler(solver_type="bh1"), dict(method="unipc", variant="bh1"), 8),
    (UniPCMultistepScheduler(predict_x0=False), dict(method="unipc", variant="bh2", algorithm_type="dpmsolver"), 8),
    (UniPCMultistepScheduler(lower_order_final=False), dict(method="unipc", variant="bh2", lower_order_final=False), 8),
    (DPMSolverMultistepScheduler(solver_order=3, use_karras_sigmas=True, final_sigmas_type="sigma_min"), dict(order=3),
     16),
], ids=["UniPC bh1", "UniPC noise prediction", "UniPC lower_order_final=False", "DPM-3 Karras sigma_min"])
def test_configurations_where_diffusers_returns_nan_run_without_compat(unet, source, options, steps):
    with pytest.raises(ValueError, match="NaN"):
        ExpSolverScheduler.from_config(source.config, compat="diffusers").set_timesteps(steps)
    x, _, calls = _pipeline_run(unet, ExpSolverScheduler.from_config(source.config, **options), steps)
    assert calls == steps and torch.isfinite(x).all()


def test_first_timestep_locates_the_start_of_the_run(unet):
    scheduler = ExpSolverScheduler()
    scheduler.set_timesteps(6)
    assert scheduler.index_for_timestep(scheduler.timesteps[2]) == 2
    with pytest.raises(ValueError, match="not one of"):
        scheduler.index_for_timestep(12345)


def test_add_noise_matches_diffusers():
    x0, noise = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    ks = torch.tensor([0, 500, 999])
    ours = ExpSolverScheduler().add_noise(x0, noise, ks)
    theirs = DDPMScheduler().add_noise(x0, noise, ks)
    assert ours.dtype == torch.float32 and torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_learned_variance_channels_are_ignored():
    a = ExpSolverScheduler(variance_type="learned_range")
    b = ExpSolverScheduler()
    x = torch.randn(SHAPE, dtype=torch.float64)
    out = torch.randn(SHAPE[0], 6, 8, 8, dtype=torch.float64)
    for s in (a, b):
        s.set_timesteps(4)
    t = a.timesteps[0]
    assert torch.equal(a.step(out, t, x).prev_sample, b.step(out[:, :3], t, x).prev_sample)


# -- no host synchronisation per step ---------------------------------------------------------------------------------
SYNC_CASES = [dict(), dict(order=3, use_karras_sigmas=True), dict(method="unipc", order=3, variant="bh2"),
              dict(method="deis", order=2), dict(method="singlestep", order=3, skip_type="logSNR")]


def _meta_run(scheduler, steps):
    """A run on meta tensors: they have no data, so any read of a value on the host (.item(), bool(), float(),
    .cpu()) raises."""
    scheduler.set_timesteps(steps)
    scheduler.set_begin_index(0)
    x = torch.zeros(SHAPE, dtype=torch.float64, device="meta")
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    return x


@pytest.mark.parametrize("options", SYNC_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_step_reads_no_tensor_value_on_the_host(options):
    x = _meta_run(ExpSolverScheduler(**options), 9)
    assert x.device.type == "meta" and x.shape == SHAPE


def test_check_finite_reads_the_output_on_the_host():
    # the meta run detects host reads: the (documented) finiteness check makes one
    with pytest.raises((RuntimeError, NotImplementedError)):
        _meta_run(ExpSolverScheduler(check_finite=True), 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_steps_make_no_cuda_synchronisation():
    scheduler = ExpSolverScheduler(method="unipc", order=3, variant="bh2")
    scheduler.set_timesteps(10, device="cuda")
    scheduler.set_begin_index(0)
    x = torch.randn(SHAPE, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in scheduler.timesteps:
            x = scheduler.step(0.1 * x, t, x).prev_sample
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(x).all()


# -- configuration --------------------------------------------------------------------------------------------------
def test_from_a_foreign_config_only_schedule_and_grid_are_taken():
    dpm = DPMSolverMultistepScheduler(solver_order=3, algorithm_type="dpmsolver", solver_type="heun",
                                      final_sigmas_type="sigma_min", use_karras_sigmas=True, beta_end=0.012)
    plain = ExpSolverScheduler.from_config(dpm.config)
    assert isinstance(plain.solver, DPMSolverMultistep) and plain.solver.order == 2
    assert plain.solver.solver_type == "dpmsolver" and plain.solver.coefficients == "corrected"
    assert plain.config["use_karras_sigmas"] and plain.config["beta_end"] == 0.012
    assert torch.equal(plain.alphas_cumprod, dpm.alphas_cumprod)
    compat = ExpSolverScheduler.from_config(dpm.config, compat="diffusers")
    assert compat.solver.steps_order == 3 and compat.solver.solver_type == "taylor"
    assert compat.solver.coefficients == "official" and compat.config["algorithm_type"] == "dpmsolver"
    # a scheduler made from a foreign config holds that config's keys too; its own config still round-trips
    unipc = ExpSolverScheduler.from_config(dpm.config, method="unipc", order=3)
    again = ExpSolverScheduler.from_config(unipc.config)
    assert isinstance(again.solver, UniPC) and again.solver.predictor_order == 3 and again.config["use_karras_sigmas"]
    # and diffusers' schedulers accept it (solver_type is stored in diffusers' words)
    back = DPMSolverMultistepScheduler.from_config(ExpSolverScheduler(solver_type="taylor").config)
    assert back.config.solver_type == "heun" and back.config.algorithm_type == "dpmsolver++"
    assert ExpSolverScheduler.from_config(back.config, compat="diffusers").solver.solver_type == "taylor"
    uni = ExpSolverScheduler.from_config(UniPCMultistepScheduler(solver_order=3, predict_x0=False,
                                                                 final_sigmas_type="sigma_min").config,
                                         compat="diffusers")
    assert isinstance(uni.solver, UniPC) and uni.solver.predictor_order == 3 and uni.solver.variant == "bh2"
    assert uni.config["algorithm_type"] == "dpmsolver"


def test_expsolver_options_differ_from_diffusers_where_diffusers_departs():
    # 9 steps: diffusers' lower_order_final counts the jump to sigma = 0; expsolver's does not
    dpm = DPMSolverMultistepScheduler(solver_order=3)
    ours, theirs = ExpSolverScheduler.from_config(dpm.config, order=3), dpm
    x = {}
    unet = tiny_unet(seed=0)
    for name, s in (("ours", ours), ("theirs", theirs)):
        s.set_timesteps(9)
        y = _initial_noise()
        with torch.no_grad():
            for t in s.timesteps:
                y = s.step(unet(y, t).sample, t, y).prev_sample
        x[name] = y
    assert _rel(x["ours"], x["theirs"]) > 1e-4


ERRORS = [
    (dict(method="adaptive"), ValueError, "adaptive"),
    (dict(algorithm_type="sde-dpmsolver++"), ValueError, "ODE solvers"),
    (dict(thresholding=True), ValueError, "thresholding"),
    (dict(use_flow_sigmas=True), ValueError, "use_flow_sigmas"),
    (dict(disable_corrector=[1]), ValueError, "disable_corrector"),
    (dict(prediction_type="flow_prediction"), ValueError, "prediction_type"),
    (dict(compat="diffusers", skip_type="logSNR"), ValueError, "diffusers' grid"),
    (dict(compat="diffusers", method="deis"), ValueError, "reproduces"),
    (dict(compat="diffusers", method="unipc", use_corrector=False), ValueError, "corrector"),
    (dict(compat="diffusers", algorithm_type="dpmsolver"), ValueError, "refuses"),
    (dict(compat="diffusers", method="unipc", algorithm_type="dpmsolver"), ValueError, "predict_x0=False"),
    (dict(compat="diffusers", method="unipc", variant="bh1"), ValueError, "bh1"),
    (dict(solver=DPMSolverMultistep(2), order=3), ValueError, "carries its own"),
    (dict(solver="multistep"), TypeError, "solver protocol"),
    (dict(denoise_to_zero=False), ValueError, "final_sigmas_type"),
    (dict(t_end=0.01), ValueError, "skip_type"),
    (dict(model_timesteps=[0.9, 0.5]), ValueError, "needs timesteps"),
    (dict(method="unipc", use_lu_lambdas=True), ValueError, "use_lu_lambdas"),
    (dict(method="multistep", variant="bh2"), ValueError, "only to method='unipc'"),
    (dict(euler_at_final=True), ValueError, "euler_at_final"),
    (dict(compat="unknown"), ValueError, "compat"),
]


@pytest.mark.parametrize("options,error,match", ERRORS, ids=[str(o) for o, _, _ in ERRORS])
def test_invalid_options_are_refused_with_a_message_naming_them(options, error, match):
    with pytest.raises(error, match=match):
        ExpSolverScheduler(**options)


def test_a_grid_or_solver_given_to_from_config_replaces_the_configs_own(optimized_grid):
    unipc3 = ExpSolverScheduler(method="unipc", order=3, skip_type="logSNR")
    swapped = ExpSolverScheduler.from_config(unipc3.config, grid=optimized_grid)
    assert swapped.solver.predictor_order == 2 and swapped.config["skip_type"] is None
    assert ExpSolverScheduler.from_config(unipc3.config, solver=DEISMultistep(2)).solver.order == 2
    # a diffusers config made from this one holds its grid options too: compat="diffusers" leaves them
    dpm = DPMSolverMultistepScheduler.from_config(swapped.config, solver_order=3)
    assert ExpSolverScheduler.from_config(dpm.config, compat="diffusers").solver.steps_order == 3


def test_grid_options_must_agree_with_an_explicit_grid(optimized_grid):
    with pytest.raises(ValueError, match="contradicts"):
        ExpSolverScheduler(grid=optimized_grid, method="multistep")
    with pytest.raises(ValueError, match="not both"):
        ExpSolverScheduler(grid=optimized_grid, timesteps=[1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="model_type"):
        ExpSolverScheduler(grid=optimized_grid, prediction_type="v_prediction")
    with pytest.raises(TypeError, match="grid"):
        ExpSolverScheduler(grid=[1.0, 0.5])


def test_run_errors_name_the_problem():
    scheduler = ExpSolverScheduler(timesteps=[1.0, 0.6, 0.3, 0.1])
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(x, 999, x)
    with pytest.raises(ValueError, match="makes 3 model calls"):
        scheduler.set_timesteps(5)
    scheduler.set_timesteps()
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    with pytest.raises(ValueError, match="all 3 model calls"):
        scheduler.step(x, scheduler.timesteps[-1], x)
    with pytest.raises(ValueError, match="one model call per timestep"):
        ExpSolverScheduler(method="singlestep", order=3).set_timesteps(10)
    with pytest.raises(ValueError, match="multiple"):
        ExpSolverScheduler(method="singlestep_fixed", order=2, skip_type="logSNR").set_timesteps(7)
    with pytest.raises(ValueError, match="num_inference_steps"):
        ExpSolverScheduler().set_timesteps()


def test_diffusers_grid_is_accepted_as_grid(unet):
    grid = grid_from_diffusers(DPMSolverMultistepScheduler(use_exponential_sigmas=True), 7)
    assert isinstance(grid, DiffusersGrid)
    a = ExpSolverScheduler(grid=grid)
    b = ExpSolverScheduler(use_exponential_sigmas=True)
    xa, _, _ = _pipeline_run(unet, a, 7)
    xb, _, _ = _pipeline_run(unet, b, 7)
    assert torch.equal(xa, xb)
