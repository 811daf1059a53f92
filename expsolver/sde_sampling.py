"""Reverse-SDE baselines in ``t``: Euler-Maruyama and the DDPM ancestral step (Song et al. 2021 eq. (6)).

The exponential SDE solvers (SDE-DPM-Solver++, SDE-DPM-Solver) run through :func:`expsolver.sample` with
``algorithm_type="sde-dpmsolver++"`` / ``"sde-dpmsolver"``; this module is the front door of the classical
baselines, sharing the driver's grid and loop (:func:`expsolver.integrate`).
"""

from __future__ import annotations

import torch

from ._validation import check_bool, check_choice, check_int, check_state, reject_unknown_kwargs
from .brownian import noise_source
from .grids import SKIP_TYPES, explicit_grid
from .models import MODEL_TYPES, TIME_INPUTS, ModelWrapper
from .driver import integrate
from .sampling import DEFAULT_SKIP_TYPE, SampleResult, default_t_end, sampling_grid
from .schedules import VPSchedule
from .solvers.options import SDE_SCHEMES
from .solvers.sde import ReverseDiffusionSDE

__all__ = ["reverse_sde_sample", "SDE_SCHEMES"]


def reverse_sde_sample(model, schedule, x, *, steps=None, t_start=None, t_end=None, scheme="euler_maruyama",
                       skip_type=None, timesteps=None, generator=None, noise=None, model_type="noise",
                       time_input="continuous", denoise_to_zero=False, return_intermediates=False,
                       check_finite=True, **kwargs) -> SampleResult:
    """Sample by discretising the reverse SDE (Song et al. 2021 eq. (6)) from ``t_start`` down to ``t_end``.

    ``dx = [f(t) x + g^2(t)/sigma_t eps_theta(x, t)] dt + g(t) dw_bar``:

    * ``scheme="euler_maruyama"``: ``x_t = x_s + (t - s) drift(s, x_s) + g(s) sqrt(s - t) z`` (noise integrated
      in ``t``); strong and weak order 1 in the step size (additive noise);
    * ``scheme="ddpm_ancestral"``: the DDPM ancestral step with the posterior variance (Ho et al. 2020, Alg. 2),
      identical to SDE-DPM-Solver++1 (:mod:`expsolver.solvers.sde`; noise integrated in ``lam``).

    One model call per step.

    Parameters
    ----------
    model : callable
        ``model(x, t)``, ``t`` of shape ``(batch,)``, returning the prediction named by ``model_type``.
    schedule : VPSchedule
    x : torch.Tensor
        State at ``t_start`` (e.g. ``N(0, I)`` samples), shape ``(batch, *dims)``.
    steps : int
        Number of steps (``>= 1``); required unless ``timesteps`` is given (then it must match the grid).
    t_start, t_end : float, optional
        Default ``schedule.T`` and the driver's default end time.
    scheme : {"euler_maruyama", "ddpm_ancestral"}
    skip_type : {"time_uniform", "logSNR", "time_quadratic", "karras"}
        Default ``"time_uniform"``; not with ``timesteps``.
    timesteps : sequence of float, optional
        Explicit strictly decreasing grid; ``t_start`` / ``t_end``, if given, must match its end points.
    generator : torch.Generator or list of torch.Generator, optional
        On ``x``'s device; a list holds one generator per sample (batch-independent noise).
    noise : torch.Tensor or BrownianPath, optional
        Standard normals ``(steps, *x.shape)`` or a coupled path (variable ``"t"`` for Euler-Maruyama, ``"lam"``
        with rate -1 for the DDPM step).
    model_type, time_input, denoise_to_zero, return_intermediates, check_finite
        As in :func:`expsolver.sample`.

    Returns
    -------
    SampleResult
        ``nfe`` = model calls made (``steps``, plus one with ``denoise_to_zero``).
    """
    reject_unknown_kwargs(kwargs, "reverse_sde_sample")
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    check_state(x, "x")
    scheme = check_choice(scheme, "scheme", tuple(SDE_SCHEMES))
    skip_type = None if skip_type is None else check_choice(skip_type, "skip_type", SKIP_TYPES)
    check_choice(model_type, "model_type", MODEL_TYPES)
    check_choice(time_input, "time_input", TIME_INPUTS)
    denoise_to_zero = check_bool(denoise_to_zero, "denoise_to_zero")
    return_intermediates = check_bool(return_intermediates, "return_intermediates")
    check_finite = check_bool(check_finite, "check_finite")
    if timesteps is not None:
        timesteps = explicit_grid(schedule, timesteps, steps=steps, skip_type=skip_type, t_start=t_start,
                                  t_end=t_end)
        t_start, t_end, steps = float(timesteps[0]), float(timesteps[-1]), len(timesteps) - 1
    elif steps is None:
        raise TypeError("reverse_sde_sample() needs steps= (an int >= 1) or timesteps=")
    else:
        skip_type = DEFAULT_SKIP_TYPE if skip_type is None else skip_type
    steps = check_int(steps, "steps", minimum=1)
    t_start = schedule.T if t_start is None else schedule.check_time(t_start, "t_start")
    t_end = default_t_end(schedule) if t_end is None else schedule.check_time(t_end, "t_end")
    if not t_end < t_start:
        raise ValueError(f"t_end must be in (0, t_start={t_start!r}), got t_end={t_end!r}")

    grid = sampling_grid(schedule, skip_type, t_start, t_end, steps) if timesteps is None else timesteps
    source = noise_source(noise, generator, x, steps)
    wrapper = ModelWrapper(model, schedule, model_type=model_type, time_input=time_input, check_finite=check_finite)
    problem = ReverseDiffusionSDE(schedule, wrapper, "noise")
    rule = SDE_SCHEMES[scheme](source)
    with torch.no_grad():
        run = integrate(problem, rule, x, grid, return_intermediates=return_intermediates, check_finite=check_finite)
        x, intermediates = run.x, run.intermediates
        if denoise_to_zero:
            x = problem.data_at(x, t_end)
            if intermediates is not None:
                intermediates.append(x)
    options = dict(steps=steps, t_start=t_start, t_end=t_end, scheme=scheme, skip_type=skip_type,
                   model_type=model_type, denoise_to_zero=denoise_to_zero)
    return SampleResult(x=x, nfe=wrapper.nfe, timesteps=run.timesteps, orders=run.orders, intermediates=intermediates,
                        options=options, solver=rule)
