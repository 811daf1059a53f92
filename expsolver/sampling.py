"""The front door: ``sample()`` translates the official DPM-Solver option names into (problem, solver, grid).

The translation of the solver options is :func:`expsolver.solvers.options.solver_from_options`, used here and by
the registry; the loop is
:func:`expsolver.integrate`. ``sample(..., solver=obj)`` skips the translation and runs any object of the solver
protocol (:class:`~expsolver.solvers.base.Solver`) on the diffusion ODE (or SDE) built from the schedule and model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ._validation import (check_bool, check_choice, check_int, check_positive_float, check_state,
                          reject_unknown_kwargs)
from .brownian import noise_source
from .driver import NonFiniteStateError, Solution, _as_plan, check_solver, integrate
from .stepsize import AdaptiveController
from .grids import SKIP_TYPES, check_model_timesteps, explicit_grid, time_grid
from .models import MODEL_TYPES, TIME_INPUTS, ModelWrapper
from .problems import DiffusionODE
from .schedules import VPDiscrete, VPSchedule
from .solvers.deis import DEIS_MAX_ORDER
from .solvers.dpm_solver import SOLVER_TYPES, official_rounding
from .solvers.options import METHODS, solver_from_options
from .solvers.sde import SDE_ALGORITHM_TYPES, SDE_MAX_ORDER, ReverseDiffusionSDE
from .solvers.unipc import UNIPC_MAX_ORDER, UNIPC_VARIANTS

__all__ = ["sample", "SampleResult", "METHODS", "ALGORITHM_TYPES", "PREDICTION_OF", "COMPAT_MODES", "DEFAULT_STEPS",
           "DEFAULT_SKIP_TYPE", "default_t_end", "sampling_grid", "check_solver_options", "NonFiniteStateError"]

#: ODE algorithm type -> what the solver integrates: DPM-Solver the noise, DPM-Solver++ the data prediction.
PREDICTION_OF = {"dpmsolver": "noise", "dpmsolver++": "data"}
ALGORITHM_TYPES = tuple(PREDICTION_OF) + tuple(SDE_ALGORITHM_TYPES)  # SDE: expsolver.solvers.sde
COMPAT_MODES = (None, "official")
DEFAULT_STEPS = 20
DEFAULT_SKIP_TYPE = "time_uniform"
_PREDICTION = {**PREDICTION_OF, **SDE_ALGORITHM_TYPES}
_MAX_ORDER = {"singlestep": 3, "singlestep_fixed": 3, "adaptive": 3, "multistep": 4, "unipc": UNIPC_MAX_ORDER,
              "deis": DEIS_MAX_ORDER}
# Methods that take one step per grid interval with a multistep plan (warm-up, lower_order_final).
_MULTISTEP_PLAN = ("multistep", "unipc", "deis")
# Options that choose the solver: with ``solver=`` the object carries them.
_SOLVER_OPTIONS = ("method", "order", "solver_type", "variant", "use_corrector", "compat", "lower_order_final")


@dataclass
class SampleResult(Solution):
    """Result of :func:`sample`: the driver's :class:`~expsolver.driver.Solution` (``x``, ``nfe``, ``timesteps``,
    ``orders``, ``intermediates``, ``n_rejected``; ``nfe`` here also counts the ``denoise_to_zero`` call and
    ``intermediates`` ends with its output) and what was resolved.

    Attributes
    ----------
    options : dict
        The resolved options.
    solver : Solver
        The solver object that ran (built from the options, or the ``solver=`` given).
    """

    options: dict = field(default_factory=dict)
    solver: object = None


def default_t_end(schedule: VPSchedule) -> float:
    """``1/N`` for a discrete schedule, ``1e-3`` otherwise (the official defaults)."""
    return schedule.t_min if isinstance(schedule, VPDiscrete) else 1e-3


def sampling_grid(schedule, skip_type: str, t_start: float, t_end: float, n_steps: int, compat=None) -> np.ndarray:
    """The ``skip_type`` grid of ``n_steps`` intervals; with ``compat="official"`` rounded as the official code
    builds it (:func:`~expsolver.solvers.dpm_solver.official_rounding`)."""
    ts = time_grid(schedule, skip_type, t_start, t_end, n_steps)
    return official_rounding(ts) if compat == "official" else ts


def sample(model, schedule, x, *, steps=None, t_start=None, t_end=None, order=None, method=None,
           skip_type=None, algorithm_type="dpmsolver++", solver_type=None,
           lower_order_final=None, denoise_to_zero=False, atol=0.0078, rtol=0.05, timesteps=None,
           model_timesteps=None, compat=None,
           model_type="noise", time_input="continuous", return_intermediates=False, check_finite=True,
           h_init=0.05, theta=0.9, t_err=1e-5, variant=None, use_corrector=None, generator=None, noise=None,
           solver=None, callback=None, **kwargs) -> SampleResult:
    """Sample by solving the diffusion ODE from ``t_start`` to ``t_end`` with a DPM-Solver.

    Parameters
    ----------
    model : callable
        ``model(x, t)``, ``t`` of shape ``(batch,)``, returning the prediction named by ``model_type``.
    schedule : VPSchedule
    x : torch.Tensor
        Initial state at ``t_start``, shape ``(batch, *dims)``, float32 or float64, any device.
    steps : int
        NFE budget (``multistep``, ``singlestep``) or ``order * (number of steps)`` (``singlestep_fixed``);
        default :data:`DEFAULT_STEPS` (20). With ``timesteps`` it may only repeat the number of grid intervals.
    t_start, t_end : float
        Default ``schedule.T`` and :func:`default_t_end`; ``0 < t_end < t_start``.
    order : int
        Default 2; 1-3 (multistep: 1-4 unless ``compat="official"``).
    method : {"multistep" (default), "singlestep", "singlestep_fixed", "adaptive", "unipc", "deis"}
        ``"unipc"``: UniPC (Zhao et al. 2023), predictor order ``order``, one NFE per step; ``"deis"``: DEIS tAB
        (Zhang & Chen 2023) with ``order`` interpolation values (global order ``order``).
    skip_type : {"time_uniform", "logSNR", "time_quadratic", "karras"}
        The grid (:func:`expsolver.time_grid`); default :data:`DEFAULT_SKIP_TYPE` (``"time_uniform"``, as in the
        official code). Not with ``timesteps``.
    algorithm_type : {"dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver"}
        Data prediction (DPM-Solver++) or noise prediction (DPM-Solver). The ``sde-`` variants solve the reverse
        SDE (Song et al. 2021 eq. (6)) with SDE-DPM-Solver++ / SDE-DPM-Solver (:mod:`expsolver.solvers.sde`): only
        ``method="multistep"``, ``order`` 1 or 2, no ``compat``; random numbers from ``generator`` or ``noise``.
    solver_type : {"dpmsolver" (default), "taylor"}
    lower_order_final : bool
        Default True.
        Lower the order of the last multistep steps. Unlike the official code (only when ``steps < 10``) this
        applies at every ``steps`` unless ``compat="official"``.
    denoise_to_zero : bool
        Finish with one data prediction at ``t_end`` (one more NFE).
    atol, rtol, h_init, theta, t_err : float
        Adaptive step control (DPM-Solver Sec. 3.3 / App. C; official defaults; ``0 < theta <= 1``). The official
        solver stops once ``|s - t_end| <= t_err``, which at small ``t_end`` (1e-5) can end up to a lambda step
        of ~0.35 early; by default the last step lands exactly on ``t_end`` instead (``t_err`` is used only with
        ``compat="official"``).
    timesteps : sequence of float, optional
        Explicit strictly decreasing grid from ``t_start`` to ``t_end``. It fixes the steps: ``skip_type`` must
        then be left out, ``steps``, ``t_start`` and ``t_end`` may be given only if they match it (``ValueError``
        otherwise).
    model_timesteps : sequence of float, optional
        Decoupled model times, with ``timesteps`` and a method that calls the model once per grid point
        (``multistep``, ``unipc``, ``deis``; ODE only): at the grid point ``timesteps[i]`` (``i < steps``) the model
        is queried at ``model_timesteps[i]`` and its prediction is used as if it were the one at ``timesteps[i]``
        (the step coefficients stay those of the grid). Equal to ``timesteps[:-1]`` it changes nothing. Such
        times come from :func:`expsolver.optimize_timesteps` with ``shift_model_times=True``, which learns them
        for one problem and one configuration; they trade the solver's consistency for accuracy at that NFE
        (see the docs page on optimised grids). ``denoise_to_zero`` still evaluates at ``t_end``.
    compat : {None, "official"}
        ``"official"`` reproduces the official implementation's numbers (its third-order multistep update, its
        ``lower_order_final`` threshold, its grid in torch's default dtype, its float32 rounding of the adaptive step-size factor).
    model_type : {"noise", "x_start", "v", "score"}
    time_input : {"continuous", "discrete"}
    return_intermediates : bool
    check_finite : bool
        Raise a ``ValueError`` naming the step and time when the model output or the state is NaN or Inf.
    variant : {"bh1", "bh2"}, optional
        UniPC's ``B(h)`` (default ``"bh1"``); only with ``method="unipc"``.
    use_corrector : bool, optional
        UniPC: apply the UniC corrector after every step but the last (default True); only with
        ``method="unipc"``.

    generator : torch.Generator or list of torch.Generator, optional
        SDE solvers only: on ``x``'s device; a list holds one generator per sample, which makes each sample's
        noise independent of the batch it is in (:mod:`expsolver.brownian`).
    noise : torch.Tensor or BrownianPath, optional
        SDE solvers only, instead of ``generator``: standard normals of shape ``(steps, *x.shape)`` (step ``i``
        uses ``noise[i]``), or a :class:`~expsolver.brownian.BrownianPath` whose grid contains the sampler's.

    solver : Solver, optional
        Any object of the solver protocol (:class:`~expsolver.solvers.base.Solver`, e.g.
        ``expsolver.solvers.DPMSolverMultistep(order=3)`` or a user's own), instead of the options that choose one
        (``method``, ``order``, ``solver_type``, ``variant``, ``use_corrector``, ``compat``, ``lower_order_final``:
        giving any of them with ``solver`` is a ``ValueError``). The grid is ``timesteps``, or ``steps`` intervals
        of ``skip_type`` (``steps`` counts grid intervals here, not model calls), or an
        :class:`~expsolver.AdaptiveController` passed as ``timesteps`` for a solver with an embedded pair.
        ``algorithm_type`` still chooses the problem: the data or noise form of the ODE, or the reverse SDE for a
        stochastic solver (whose noise source the object carries).
    callback : callable, optional
        ``callback(info)`` after every step (:func:`expsolver.integrate`): ``info["step"]``, ``["t"]``, ``["x"]``,
        ``["prediction"]`` (the latest model value in the solver's prediction type).

    Returns
    -------
    SampleResult
    """
    reject_unknown_kwargs(kwargs, "sample")
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    check_state(x, "x")
    algorithm_type = check_choice(algorithm_type, "algorithm_type", ALGORITHM_TYPES)
    check_choice(model_type, "model_type", MODEL_TYPES)
    check_choice(time_input, "time_input", TIME_INPUTS)
    skip_type = None if skip_type is None else check_choice(skip_type, "skip_type", SKIP_TYPES)
    chosen = dict(method=method, order=order, solver_type=solver_type, variant=variant, use_corrector=use_corrector,
                  compat=compat, lower_order_final=lower_order_final)
    stochastic = algorithm_type in SDE_ALGORITHM_TYPES
    if solver is None:
        opts = check_solver_options(algorithm_type, generator, noise, **chosen)
    else:
        opts = _check_solver_object(solver, stochastic, generator, noise, chosen)
    opts.update(algorithm_type=algorithm_type, model_type=model_type,
                denoise_to_zero=check_bool(denoise_to_zero, "denoise_to_zero"))
    return_intermediates = check_bool(return_intermediates, "return_intermediates")
    check_finite = check_bool(check_finite, "check_finite")
    adaptive = dict(atol=atol, rtol=rtol, h_init=h_init, theta=theta, t_err=t_err)
    span = _resolve_span(schedule, opts, steps, t_start, t_end, skip_type, timesteps, model_timesteps, adaptive)

    wrapper = ModelWrapper(model, schedule, model_type=model_type, time_input=time_input, check_finite=check_finite)
    if stochastic:
        problem = ReverseDiffusionSDE(schedule, wrapper, _PREDICTION[algorithm_type])
    else:
        problem = DiffusionODE(schedule, wrapper, _PREDICTION[algorithm_type], span.pop("query_times"))
    if solver is None:
        noise_src = noise_source(noise, generator, x, opts["steps"]) if stochastic else None
        solver, controller = solver_from_options(
            opts["method"], opts["order"], opts["solver_type"], compat=opts["compat"],
            lower_order_final=opts["lower_order_final"], skip_type=span.pop("stage_grid"),
            variant=opts.get("variant"), use_corrector=opts.get("use_corrector"), algorithm_type=algorithm_type,
            noise=noise_src, t_start=opts["t_start"], t_end=opts["t_end"], **adaptive)
    else:
        controller = span.pop("controller")
    # The plan (grid work on the host) is made before the loop, which then reads nothing back but its checks.
    steps_or_control = controller or _as_plan(solver, span["grid"], problem)
    with torch.no_grad():
        run = integrate(problem, solver, x, steps_or_control, callback=callback,
                        return_intermediates=return_intermediates, check_finite=check_finite)
        x = run.x
        if opts["denoise_to_zero"]:
            x = problem.data_at(x, opts["t_end"])
            if run.intermediates is not None:
                run.intermediates.append(x)
    return SampleResult(x=x, nfe=wrapper.nfe, timesteps=run.timesteps, orders=run.orders,
                        intermediates=run.intermediates, n_rejected=run.n_rejected, options=opts, solver=solver)


def check_solver_options(algorithm_type, generator, noise, *, method, order, solver_type, variant, use_corrector,
                          compat, lower_order_final) -> dict:
    """Validate the options of :func:`sample` that choose a solver (``solver=None``) as ``sample()`` does; returns
    them resolved (the defaults filled in)."""
    method = check_choice("multistep" if method is None else method, "method", METHODS)
    solver_type = check_choice("dpmsolver" if solver_type is None else solver_type, "solver_type", SOLVER_TYPES)
    compat = check_choice(compat, "compat", COMPAT_MODES)
    max_order = 3 if compat == "official" else _MAX_ORDER[method]
    order = check_int(2 if order is None else order, "order", minimum=1, maximum=max_order)
    opts = dict(order=order, method=method, solver_type=solver_type, compat=compat)
    if method == "unipc":
        opts["variant"] = check_choice("bh1" if variant is None else variant, "variant", UNIPC_VARIANTS)
        opts["use_corrector"] = check_bool(True if use_corrector is None else use_corrector, "use_corrector")
        if compat is not None:
            raise ValueError(f"compat={compat!r} applies to the DPM-Solver methods, not method='unipc'")
    elif variant is not None or use_corrector is not None:
        raise ValueError(f"variant and use_corrector apply only to method='unipc', got method={method!r}")
    if method == "deis" and compat is not None:
        raise ValueError(f"compat={compat!r} applies to the DPM-Solver methods, not method='deis'")
    if method == "adaptive" and order not in (2, 3):
        raise ValueError(f"order must be 2 or 3 for method='adaptive' (DPM-Solver-12/23), got {order}")
    stochastic = algorithm_type in SDE_ALGORITHM_TYPES
    if stochastic and (method != "multistep" or order > SDE_MAX_ORDER or compat is not None):
        raise ValueError(f"algorithm_type={algorithm_type!r} allows method='multistep' with order 1-{SDE_MAX_ORDER} "
                         f"and compat=None only; got method={method!r}, order={order}, compat={compat!r}")
    if not stochastic and (generator is not None or noise is not None):
        raise ValueError(f"generator and noise are used only by algorithm_type 'sde-dpmsolver++' or "
                         f"'sde-dpmsolver', got algorithm_type={algorithm_type!r}")
    opts["lower_order_final"] = check_bool(True if lower_order_final is None else lower_order_final,
                                           "lower_order_final")
    return opts


def _check_solver_object(solver, stochastic, generator, noise, chosen) -> dict:
    """Validate ``solver=`` and what may come with it."""
    check_solver(solver)
    given = [name for name, value in chosen.items() if value is not None]
    if given:
        raise ValueError(f"solver= carries its own configuration: do not also give {', '.join(given)} (got "
                         f"{', '.join(f'{n}={chosen[n]!r}' for n in given)})")
    if bool(getattr(solver, "stochastic", False)) != stochastic:
        kind = "a stochastic (SDE)" if stochastic else "an ODE"
        raise ValueError(f"algorithm_type chooses {kind} problem, but solver={solver!r} is "
                         f"{'stochastic' if getattr(solver, 'stochastic', False) else 'an ODE solver'}")
    if generator is not None or noise is not None:
        raise ValueError("with solver=, the random numbers come from the solver's own noise source: give "
                         "generator/noise to the solver object, not to sample()")
    return dict(method=None, order=solver.order, compat=None, solver=repr(solver))


def _resolve_span(schedule, opts, steps, t_start, t_end, skip_type, timesteps, model_timesteps, adaptive) -> dict:
    """Check the time options and build the grid; fills ``opts`` (steps, t_start, t_end, skip_type, ...) and returns
    ``grid``, ``controller`` (``solver=`` with an AdaptiveController), ``stage_grid`` (where the stages of
    singlestep methods sit) and ``query_times`` (decoupled model times)."""
    method = opts["method"]
    for name, value in adaptive.items():
        check_positive_float(value, name)
    if adaptive["theta"] > 1.0:
        # A safety factor above 1 can grow h after a rejection: the step is rejected again and again.
        raise ValueError(f"theta must be in (0, 1] (the step-size safety factor), got {adaptive['theta']!r}")
    controller = timesteps if isinstance(timesteps, AdaptiveController) else None
    if controller is not None:
        if method is not None:
            raise ValueError("an AdaptiveController as timesteps goes with solver=; use method='adaptive' otherwise")
        t_start, t_end, steps = controller.t_start, controller.t_end, None
        timesteps = None
    if method == "adaptive" and timesteps is not None:
        raise ValueError("timesteps cannot be given with method='adaptive' (it chooses its own steps)")
    if timesteps is not None:
        timesteps = explicit_grid(schedule, timesteps, steps=steps, skip_type=skip_type, t_start=t_start, t_end=t_end)
        t_start, t_end, steps = float(timesteps[0]), float(timesteps[-1]), len(timesteps) - 1
    elif controller is None:
        steps = DEFAULT_STEPS if steps is None else steps
        skip_type = DEFAULT_SKIP_TYPE if skip_type is None else skip_type
    t_start = schedule.T if t_start is None else schedule.check_time(t_start, "t_start")
    t_end = default_t_end(schedule) if t_end is None else schedule.check_time(t_end, "t_end")
    if not t_end < t_start:
        raise ValueError(f"t_end must be in (0, t_start={t_start!r}), got t_end={t_end!r}")
    if controller is None:
        steps = check_int(steps, "steps", minimum=1)
    if method in _MULTISTEP_PLAN + ("singlestep_fixed",) and steps < opts["order"]:
        raise ValueError(f"steps must be >= order for method={method!r}; got steps={steps}, order={opts['order']}")
    opts.update(steps=steps, t_start=t_start, t_end=t_end, skip_type=skip_type)
    if method == "adaptive":
        opts.update(adaptive)
    query_times = _query_times(schedule, opts, timesteps, model_timesteps)
    grid = timesteps
    if grid is None and controller is None and method != "adaptive":
        n = steps // opts["order"] if method == "singlestep_fixed" else steps
        # DPM-Solver-fast picks its outer points from the unrounded grid and rounds them itself.
        grid = sampling_grid(schedule, skip_type, t_start, t_end, n, None if method == "singlestep" else opts.get("compat"))
    return dict(grid=grid, controller=controller, query_times=query_times,
                stage_grid=skip_type if method in ("singlestep", "singlestep_fixed") else None)


def _query_times(schedule, opts, timesteps, model_timesteps):
    """Decoupled model times as ``{grid time: model time}`` (``model_timesteps`` of :func:`sample`)."""
    if model_timesteps is None:
        return None
    if timesteps is None:
        raise ValueError("model_timesteps needs timesteps (one model time per grid point but the last)")
    if opts["method"] not in _MULTISTEP_PLAN + (None,) or opts["algorithm_type"] in SDE_ALGORITHM_TYPES:
        raise ValueError(f"model_timesteps needs a method that calls the model once per grid point "
                         f"({', '.join(map(repr, _MULTISTEP_PLAN))}) and an ODE algorithm_type; got "
                         f"method={opts['method']!r}, algorithm_type={opts['algorithm_type']!r}")
    model_timesteps = check_model_timesteps(schedule, model_timesteps, timesteps)
    opts["model_timesteps"] = model_timesteps.tolist()
    return dict(zip(map(float, timesteps[:-1]), map(float, model_timesteps)))
