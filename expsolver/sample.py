"""The driver: one function runs every sampler.

``sample()`` is the front door. It validates the options (names and meanings of the official DPM-Solver
implementation), maps them once to a problem (noise or data form), a step rule and a plan (the time grid and
the order of every step), runs the loop, counts model calls and keeps intermediate states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ._validation import (check_bool, check_choice, check_int, check_positive_float, check_state,
                          reject_unknown_kwargs)
from .grids import SKIP_TYPES, _grid_times, check_model_timesteps, explicit_grid, time_grid
from .models import MODEL_TYPES, TIME_INPUTS, ModelWrapper
from .problems import DiffusionODE
from .schedules import VPDiscrete, VPSchedule
from .solvers.base import Step
from .solvers.deis import DEIS_MAX_ORDER, DEISMultistep
from .solvers.dpm_solver import (SOLVER_TYPES, DPMSolverMultistep, DPMSolverSinglestep,
                                 singlestep_fast_orders)
from .solvers.unipc import UNIPC_MAX_ORDER, UNIPC_VARIANTS, UniPC
from .brownian import noise_source
from .solvers.sde import SDE_ALGORITHM_TYPES, SDE_MAX_ORDER, ReverseDiffusionSDE, SDEDPMSolverMultistep

__all__ = ["sample", "SampleResult", "METHODS", "ALGORITHM_TYPES", "PREDICTION_OF", "COMPAT_MODES", "DEFAULT_STEPS",
           "DEFAULT_SKIP_TYPE", "default_t_end", "plan_steps", "NonFiniteStateError"]

METHODS = ("singlestep", "multistep", "singlestep_fixed", "adaptive", "unipc", "deis")
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
# Official DPM-Solver applies lower_order_final only below this many steps (its docstring says 15).
_OFFICIAL_LOWER_ORDER_FINAL_STEPS = 10


class NonFiniteStateError(ValueError):
    """The state became NaN or Inf during sampling."""


@dataclass
class SampleResult:
    """Result of :func:`sample`.

    Attributes
    ----------
    x : torch.Tensor
        Final state, shape ``(batch, *dims)``.
    nfe : int
        Model calls actually made (rejected adaptive steps and ``denoise_to_zero`` included).
    timesteps : numpy.ndarray
        The outer time grid actually used (float64), from ``t_start`` to ``t_end``.
    orders : list of int
        The order of every step.
    intermediates : list of torch.Tensor or None
        States at every grid time (``return_intermediates=True``), the initial state first.
    n_rejected : int
        Rejected steps (adaptive only).
    options : dict
        The resolved options.
    """

    x: torch.Tensor
    nfe: int
    timesteps: np.ndarray
    orders: list
    intermediates: list | None = None
    n_rejected: int = 0
    options: dict = field(default_factory=dict)


def default_t_end(schedule: VPSchedule) -> float:
    """``1/N`` for a discrete schedule, ``1e-3`` otherwise (the official defaults)."""
    return schedule.t_min if isinstance(schedule, VPDiscrete) else 1e-3


def plan_steps(method: str, schedule, steps: int, order: int, skip_type: str, t_start: float, t_end: float,
               lower_order_final: bool, compat, timesteps=None) -> list[Step]:
    """The list of steps (times, order, intermediate ratios) a fixed-grid method takes.

    * ``multistep``: ``steps`` steps; the first ``order - 1`` are warm-up steps of increasing order and, with
      ``lower_order_final``, the last ones drop to ``min(order, steps - i)`` (official: only if steps < 10);
    * ``singlestep`` (DPM-Solver-fast): orders from :func:`singlestep_fast_orders`, summing to ``steps``; the outer
      grid is ``skip_type`` with as many points as steps (``logSNR``) or every ``order``-th point of the
      ``steps``-point grid (other types);
    * ``singlestep_fixed``: ``steps // order`` steps of order ``order``.
    Singlestep intermediate ratios ``r`` come from an inner ``skip_type`` grid of each outer step, as in the
    official code (so ``time_uniform`` places ``s1`` uniformly in t, not in lambda).
    """
    if timesteps is not None:
        n = len(timesteps) - 1
        if method == "multistep":
            return _multistep_plan(timesteps, order, lower_order_final, compat)
        return [Step(i, float(timesteps[i]), float(timesteps[i + 1]), order) for i in range(n)]
    if method == "multistep":
        return _multistep_plan(_grid(schedule, skip_type, t_start, t_end, steps, compat), order,
                               lower_order_final, compat)
    if method == "singlestep":
        orders = singlestep_fast_orders(steps, order)
        if skip_type == "logSNR":
            outer = _grid(schedule, skip_type, t_start, t_end, len(orders), compat)
        else:
            outer = _grid(schedule, skip_type, t_start, t_end, steps, compat)[np.cumsum([0] + orders)]
    else:
        orders = [order] * (steps // order)
        outer = _grid(schedule, skip_type, t_start, t_end, len(orders), compat)
    plan = []
    for i, k in enumerate(orders):
        s, t = float(outer[i]), float(outer[i + 1])
        r = ()
        if k > 1:
            lams = schedule.lams_of(_grid(schedule, skip_type, s, t, k, compat, checked=False))
            r = tuple(float((lams[j] - lams[0]) / (lams[-1] - lams[0])) for j in range(1, k))
            if not all(a < b for a, b in zip((0.0,) + r, r + (1.0,))):
                raise ValueError(f"step {i} from t={s!r} to t={t!r}: the intermediate points collapse in float64 "
                                 f"(lambda ratios {r}); use fewer steps for this interval")
        plan.append(Step(i, s, t, k, r))
    return plan


def _grid(schedule, skip_type, t_start, t_end, n, compat, checked=True):
    ts = (time_grid if checked else _grid_times)(schedule, skip_type, t_start, t_end, n)
    if compat == "official":
        # The official code builds its grid in torch's default dtype (float32 unless changed).
        ts = torch.tensor(ts, dtype=torch.get_default_dtype()).to(torch.float64).numpy()
    return ts


def _multistep_plan(ts, order, lower_order_final, compat):
    n = len(ts) - 1
    apply_final = lower_order_final and (compat != "official" or n < _OFFICIAL_LOWER_ORDER_FINAL_STEPS)
    orders = [min(order, i + 1, n - i if apply_final else order) for i in range(n)]
    return [Step(i, float(ts[i]), float(ts[i + 1]), orders[i]) for i in range(n)]


def sample(model, schedule, x, *, steps=None, t_start=None, t_end=None, order=2, method="multistep",
           skip_type=None, algorithm_type="dpmsolver++", solver_type="dpmsolver",
           lower_order_final=True, denoise_to_zero=False, atol=0.0078, rtol=0.05, timesteps=None,
           model_timesteps=None, compat=None,
           model_type="noise", time_input="continuous", return_intermediates=False, check_finite=True,
           h_init=0.05, theta=0.9, t_err=1e-5, variant=None, use_corrector=None, generator=None, noise=None,
           **kwargs) -> SampleResult:
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
        1-3 (multistep: 1-4 unless ``compat="official"``).
    method : {"multistep", "singlestep", "singlestep_fixed", "adaptive", "unipc", "deis"}
        ``"unipc"``: UniPC (Zhao et al. 2023), predictor order ``order``, one NFE per step; ``"deis"``: DEIS tAB
        (Zhang & Chen 2023) with ``order`` interpolation values (global order ``order``).
    skip_type : {"time_uniform", "logSNR", "time_quadratic", "karras"}
        The grid (:func:`expsolver.time_grid`); default :data:`DEFAULT_SKIP_TYPE` (``"time_uniform"``, as in the
        official code). Not with ``timesteps``.
    algorithm_type : {"dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver"}
        Data prediction (DPM-Solver++) or noise prediction (DPM-Solver). The ``sde-`` variants solve the reverse
        SDE (seed eq. (7)) with SDE-DPM-Solver++ / SDE-DPM-Solver (:mod:`expsolver.solvers.sde`): only
        ``method="multistep"``, ``order`` 1 or 2, no ``compat``; random numbers from ``generator`` or ``noise``.
    solver_type : {"dpmsolver", "taylor"}
    lower_order_final : bool
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
        (see the README). ``denoise_to_zero`` still evaluates at ``t_end``.
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

    Returns
    -------
    SampleResult
    """
    reject_unknown_kwargs(kwargs, "sample")
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    check_state(x, "x")
    method = check_choice(method, "method", METHODS)
    algorithm_type = check_choice(algorithm_type, "algorithm_type", ALGORITHM_TYPES)
    solver_type = check_choice(solver_type, "solver_type", SOLVER_TYPES)
    skip_type = None if skip_type is None else check_choice(skip_type, "skip_type", SKIP_TYPES)
    compat = check_choice(compat, "compat", COMPAT_MODES)
    check_choice(model_type, "model_type", MODEL_TYPES)
    check_choice(time_input, "time_input", TIME_INPUTS)
    max_order = 3 if compat == "official" else _MAX_ORDER[method]
    order = check_int(order, "order", minimum=1, maximum=max_order)
    if method == "unipc":
        variant = check_choice("bh1" if variant is None else variant, "variant", UNIPC_VARIANTS)
        use_corrector = check_bool(True if use_corrector is None else use_corrector, "use_corrector")
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
    lower_order_final = check_bool(lower_order_final, "lower_order_final")
    denoise_to_zero = check_bool(denoise_to_zero, "denoise_to_zero")
    return_intermediates = check_bool(return_intermediates, "return_intermediates")
    check_finite = check_bool(check_finite, "check_finite")
    atol, rtol = check_positive_float(atol, "atol"), check_positive_float(rtol, "rtol")
    h_init, theta, t_err = (check_positive_float(h_init, "h_init"), check_positive_float(theta, "theta"),
                            check_positive_float(t_err, "t_err"))
    if theta > 1.0:
        # A safety factor above 1 can grow h after a rejection: the step is rejected again and again.
        raise ValueError(f"theta must be in (0, 1] (the step-size safety factor), got {theta!r}")

    if timesteps is not None:
        if method == "adaptive":
            raise ValueError("timesteps cannot be given with method='adaptive' (it chooses its own steps)")
        timesteps = explicit_grid(schedule, timesteps, steps=steps, skip_type=skip_type, t_start=t_start,
                                  t_end=t_end)
        t_start, t_end, steps = float(timesteps[0]), float(timesteps[-1]), len(timesteps) - 1
        if model_timesteps is not None:
            if method not in _MULTISTEP_PLAN or stochastic:
                raise ValueError(f"model_timesteps needs a method that calls the model once per grid point "
                                 f"({', '.join(map(repr, _MULTISTEP_PLAN))}) and an ODE algorithm_type; got "
                                 f"method={method!r}, algorithm_type={algorithm_type!r}")
            model_timesteps = check_model_timesteps(schedule, model_timesteps, timesteps)
    elif model_timesteps is not None:
        raise ValueError("model_timesteps needs timesteps (one model time per grid point but the last)")
    else:
        steps = DEFAULT_STEPS if steps is None else steps
        skip_type = DEFAULT_SKIP_TYPE if skip_type is None else skip_type
    t_start = schedule.T if t_start is None else schedule.check_time(t_start, "t_start")
    t_end = default_t_end(schedule) if t_end is None else schedule.check_time(t_end, "t_end")
    if not t_end < t_start:
        raise ValueError(f"t_end must be in (0, t_start={t_start!r}), got t_end={t_end!r}")
    steps = check_int(steps, "steps", minimum=1)
    if method in _MULTISTEP_PLAN + ("singlestep_fixed",) and steps < order:
        raise ValueError(f"steps must be >= order for method={method!r}; got steps={steps}, order={order}")

    wrapper = ModelWrapper(model, schedule, model_type=model_type, time_input=time_input, check_finite=check_finite)
    if stochastic:
        problem = ReverseDiffusionSDE(schedule, wrapper, _PREDICTION[algorithm_type])
    else:
        query_times = (None if model_timesteps is None
                       else dict(zip(map(float, timesteps[:-1]), map(float, model_timesteps))))
        problem = DiffusionODE(schedule, wrapper, _PREDICTION[algorithm_type], query_times)
    options = dict(steps=steps, t_start=t_start, t_end=t_end, order=order, method=method, skip_type=skip_type,
                   algorithm_type=algorithm_type, solver_type=solver_type, lower_order_final=lower_order_final,
                   denoise_to_zero=denoise_to_zero, compat=compat, model_type=model_type)
    if method == "unipc":
        options.update(variant=variant, use_corrector=use_corrector)
    if model_timesteps is not None:
        options.update(model_timesteps=model_timesteps.tolist())
    intermediates = [x] if return_intermediates else None
    n_rejected = 0
    with torch.no_grad():
        if method == "adaptive":
            options.update(atol=atol, rtol=rtol, h_init=h_init, theta=theta, t_err=t_err)
            x, ts, orders, n_rejected = _integrate_adaptive(problem, x, order, solver_type, t_start, t_end, atol,
                                                            rtol, h_init, theta, t_err, compat, check_finite,
                                                            intermediates)
        else:
            plan = plan_steps("multistep" if method in _MULTISTEP_PLAN else method, schedule, steps, order,
                              skip_type, t_start, t_end, lower_order_final, compat, timesteps)
            rule = (SDEDPMSolverMultistep(order, solver_type, noise_source(noise, generator, x, len(plan)))
                    if stochastic else _make_rule(method, order, solver_type, compat, variant, use_corrector))
            x = integrate(problem, rule, plan, x, check_finite, intermediates)
            ts = np.array([plan[0].s] + [st.t for st in plan])
            orders = [st.order for st in plan]
        if denoise_to_zero:
            wrapper.step_index = None
            _, _, alpha, sigma = problem.point(t_end)
            x = wrapper.data(x, t_end, alpha, sigma)
            if intermediates is not None:
                intermediates.append(x)
    return SampleResult(x=x, nfe=wrapper.nfe, timesteps=ts, orders=orders, intermediates=intermediates,
                        n_rejected=n_rejected, options=options)


def _make_rule(method, order, solver_type, compat, variant=None, use_corrector=None):
    """The step rule of a fixed-grid method (options already validated by :func:`sample`)."""
    if method == "multistep":
        return DPMSolverMultistep(order, solver_type, "official" if compat == "official" else "corrected")
    if method == "unipc":
        return UniPC(order, variant, use_corrector)
    if method == "deis":
        return DEISMultistep(order)
    return DPMSolverSinglestep(order, solver_type)


def integrate(problem, rule, plan, x, check_finite=True, intermediates=None, state=None):
    """Run ``rule`` over ``plan`` (a list of :class:`Step`) from state ``x``: the loop every fixed-grid method
    shares. Appends each new state to ``intermediates`` when it is a list. ``state`` continues a rule's history
    (e.g. a multistep history filled from exact starting values); by default a fresh one is made."""
    state = rule.init(problem, x) if state is None else state
    model = getattr(problem, "model", None)
    for st in plan:
        if model is not None:
            model.step_index = st.index
        x = rule.step(problem, x, st, state)
        if check_finite:
            _check_state(x, st.index, st.t)
        if intermediates is not None:
            intermediates.append(x)
    return x


def _check_state(x, index, t):
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise NonFiniteStateError(f"the state became NaN or Inf at step {index} (t={t:.6g})")


def _integrate_adaptive(problem, x, order, solver_type, t_start, t_end, atol, rtol, h_init, theta, t_err, compat,
                        check_finite, intermediates, max_steps=100_000):
    """Adaptive DPM-Solver-12 / -23 (Lu et al. 2022a, Alg. 4 and App. C).

    Embedded pair sharing model calls: order 2 pairs DPM-Solver-1 with DPM-Solver-2 (``r1 = 1/2``); order 3 pairs
    DPM-Solver-2 (``r1 = 1/3``) with DPM-Solver-3 (``r1 = 1/3, r2 = 2/3``). With
    ``delta = max(atol, rtol max(|x_low|, |x_prev|))`` the error is ``E = max_batch RMS((x_high - x_low)/delta)``;
    the step is accepted if ``E <= 1`` and ``h <- min(theta h E^{-1/order}, lam_end - lam_s)``. The whole batch
    shares one step size, as in the paper and the official code.

    End of the integration: ``compat="official"`` stops once ``|s - t_end| <= t_err`` (so the result may be at a
    time other than ``t_end``). Otherwise the first step is clipped to the interval, a step that would leave less
    than 1% of itself before the end is stretched onto it (no sliver step; Hairer, Norsett & Wanner, Solving ODEs
    I, Sec. II.4), and the loop ends exactly at ``t_end``.
    """
    lower = DPMSolverSinglestep(order - 1, solver_type)
    higher = DPMSolverSinglestep(order, solver_type)
    r_low = () if order == 2 else (1.0 / 3.0,)
    r_high = (0.5,) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
    s, lam_s, lam_end = t_start, problem.rho(t_start), problem.rho(t_end)
    official = compat == "official"
    h, x_prev = (h_init if official else min(h_init, lam_end - lam_s)), x
    ts, orders, n_rejected = [t_start], [], 0
    for index in range(max_steps):
        if (abs(s - t_end) <= t_err) if official else s == t_end:
            break
        problem.model.step_index = index
        if not official and 1.01 * h >= lam_end - lam_s:
            h, t = lam_end - lam_s, t_end
        else:
            t = problem.t_of_rho(lam_s + h)
        cache = {}
        x_low = lower.step(problem, x, Step(index, s, t, order - 1, r_low), cache=cache)
        x_high = higher.step(problem, x, Step(index, s, t, order, r_high), cache=cache)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        ratio = ((x_high - x_low) / delta).reshape(x.shape[0], -1)
        err = float(torch.sqrt(torch.mean(ratio * ratio, dim=1)).max())
        if not math.isfinite(err):
            raise NonFiniteStateError(f"adaptive step {index} at t={s:.6g} produced a non-finite error estimate")
        if err <= 1.0:
            x, x_prev, s = x_high, x_low, t
            lam_s = problem.rho(s)
            ts.append(t)
            orders.append(order)
            if check_finite:
                _check_state(x, index, t)
            if intermediates is not None:
                intermediates.append(x)
        else:
            n_rejected += 1
        factor = err ** (-1.0 / order) if err > 0 else math.inf
        if compat == "official":
            factor = float(np.float32(factor))  # the official code rounds E^(-1/order) to float32
        h = min(theta * h * factor, lam_end - lam_s)
    else:
        raise RuntimeError(f"adaptive solver did not reach t_end={t_end} in {max_steps} steps")
    return x, np.array(ts), orders, n_rejected
