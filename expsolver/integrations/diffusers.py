"""expsolver inside diffusers: a scheduler that runs expsolver's solvers, and diffusers' schedules and grids as
expsolver's (``pip install expsolver[diffusers]``).

**Time convention.** A diffusers scheduler trained on ``N`` steps (``num_train_timesteps``) indexes its noise
levels by an integer timestep ``k = 0 .. N-1``, with ``alpha_k^2 = alphas_cumprod[k]``. expsolver's
:class:`~expsolver.VPDiscrete` places that level at the continuous time

    t = (k + 1) / N,        k = N t - 1,                                                                   (1)

(the official DPM-Solver convention, DPM-Solver App. D.1), so ``t`` runs over ``[1/N, 1]`` and ``log alpha_t`` is
linear in ``t`` (hence in ``k``) between the levels. A model trained on the integer timesteps is called with
``k = N t - 1`` (:func:`time_to_timestep`); between the levels ``k`` is fractional.

* :func:`schedule_from_diffusers`: a scheduler's ``alphas_cumprod`` (or ``betas``) as a :class:`~expsolver.VPDiscrete`.
* :func:`grid_from_diffusers`: the time grid a diffusers scheduler would step through, as expsolver times (the
  noise levels it steps between, the model times it queries, and whether it ends with the jump to ``sigma = 0``).
* :class:`ExpSolverScheduler`: a diffusers scheduler (``set_timesteps`` / ``step``) that advances the state with
  an expsolver solver, so that ``pipe.scheduler = ExpSolverScheduler.from_config(pipe.scheduler.config, ...)``
  runs any stock pipeline with it.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch

try:
    import diffusers
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin, SchedulerOutput
except ImportError as exc:  # pragma: no cover - exercised only without the optional dependency
    raise ImportError("expsolver.integrations.diffusers needs diffusers: pip install 'expsolver[diffusers]'") from exc

from .._validation import check_bool, check_choice, check_int
from ..driver import check_solver
from ..grids import SKIP_TYPES, check_grid, check_model_timesteps, explicit_grid
from ..models import ModelWrapper
from ..problems import DiffusionODE
from ..sampling import PREDICTION_OF, check_solver_options, default_t_end, sampling_grid
from ..schedules import VPDiscrete
from ..solvers.base import Step, multistep_orders
from ..solvers.dpm_solver import DPMSolverMultistep
from ..solvers.options import solver_from_options
from ..solvers.unipc import UNIPC_VARIANTS, UniPC

__all__ = ["ExpSolverScheduler", "schedule_from_diffusers", "grid_from_diffusers", "DiffusersGrid",
           "time_to_timestep", "timestep_to_time", "PREDICTION_TYPES", "COMPAT_MODES",
           "DIFFUSERS_LOWER_ORDER_FINAL_STEPS"]

#: diffusers' ``prediction_type`` -> the ``model_type`` of :class:`expsolver.models.ModelWrapper`.
PREDICTION_TYPES = {"epsilon": "noise", "sample": "x_start", "v_prediction": "v"}
#: ``compat`` of :class:`ExpSolverScheduler`: ``"official"`` as in :func:`expsolver.sample`, ``"diffusers"`` the
#: numbers of diffusers' DPMSolverMultistepScheduler / UniPCMultistepScheduler.
COMPAT_MODES = (None, "official", "diffusers")
#: DPMSolverMultistepScheduler lowers the order of its last steps only with fewer timesteps than this.
DIFFUSERS_LOWER_ORDER_FINAL_STEPS = 15

# A stored float32 noise level and the float64 level of the same integer timestep agree to a few float32 ulps
# (diffusers forms sigma = sqrt((1 - a) / a) in float32): within this relative tolerance a level is that timestep's.
_LEVEL_MATCH_RTOL = 1e-6


def timestep_to_time(k, num_train_timesteps: int):
    """expsolver time of a diffusers timestep, ``t = (k + 1) / N`` (eq. (1) of the module docstring).

    ``k`` is a number, a numpy array or a tensor (returned in kind; integer tensors become float64)."""
    if isinstance(k, torch.Tensor) and not k.is_floating_point():
        k = k.to(torch.float64)
    return (k + 1) / num_train_timesteps


def time_to_timestep(t, num_train_timesteps: int):
    """diffusers timestep of an expsolver time, ``k = N t - 1`` (eq. (1)): what a model trained on the integer
    timesteps is called with. ``t`` is a number, a numpy array or a tensor (returned in kind)."""
    return num_train_timesteps * t - 1


def schedule_from_diffusers(scheduler, *, from_betas: bool = False) -> VPDiscrete:
    """The noise schedule of a diffusers scheduler as a :class:`~expsolver.VPDiscrete`.

    Parameters
    ----------
    scheduler : diffusers scheduler
        Any scheduler with ``alphas_cumprod`` (DDPM, DDIM, DPM-Solver, UniPC, DEIS, Euler, ...).
    from_betas : bool
        Build the schedule from ``scheduler.betas`` (``log alpha_k = sum_{i<=k} log(1 - beta_i) / 2`` in float64)
        instead of ``alphas_cumprod``. By default the levels are the scheduler's own ``alphas_cumprod`` (a float32
        cumulative product in diffusers), i.e. exactly the noise levels the scheduler steps with; the two differ
        by the float32 rounding of that product (about 1e-6 relative for 1000 steps).

    Returns
    -------
    VPDiscrete
        With ``total_N = len(alphas_cumprod)`` and the level of timestep ``k`` at ``t = (k + 1) / N``.
    """
    config = getattr(scheduler, "config", {})
    if config.get("use_flow_sigmas", False):
        raise ValueError("the scheduler uses flow-matching sigmas (use_flow_sigmas=True): that is not a "
                         "variance-preserving diffusion, which is what expsolver solves")
    if from_betas:
        return VPDiscrete(betas=_float64(_attribute(scheduler, "betas")))
    return VPDiscrete(alphas_cumprod=_float64(_attribute(scheduler, "alphas_cumprod")))


@dataclass(frozen=True)
class DiffusersGrid:
    """The time grid of a diffusers scheduler in expsolver's terms (:func:`grid_from_diffusers`).

    Attributes
    ----------
    timesteps : numpy.ndarray
        The noise levels the scheduler steps between, as strictly decreasing float64 expsolver times; the last is
        the final level (``t_end``), unless the scheduler ends with the jump to ``sigma = 0`` (then the last is the
        time of its last model call).
    model_timesteps : numpy.ndarray or None
        The time of each of the scheduler's model calls (one per diffusers timestep, eq. (1)), where they differ
        from the grid (Karras, exponential, beta sigmas: the model is queried at a rounded timestep near the
        level); None when every call is at its grid point.
    denoise_to_zero : bool
        The scheduler's last step jumps to ``sigma = 0``: its last model call gives the result through the data
        prediction ``x0 = (x - sigma eps) / alpha`` (``sample(..., denoise_to_zero=True)``).
    num_train_timesteps : int
    idle_final_call : bool
        The scheduler's last step has zero length (its last two levels are equal: Karras sigmas with
        ``final_sigmas_type="sigma_min"`` end at the smallest training level twice). diffusers still calls the
        model there and leaves the state unchanged; the grid leaves that step out.
    """

    timesteps: np.ndarray
    model_timesteps: np.ndarray | None
    denoise_to_zero: bool
    num_train_timesteps: int
    idle_final_call: bool = False

    @property
    def nfe(self) -> int:
        """Model calls of a one-call-per-step solver on this grid, the idle final call included: the scheduler's
        number of timesteps."""
        return len(self.timesteps) - 1 + int(self.denoise_to_zero) + int(self.idle_final_call)

    @property
    def sample_kwargs(self) -> dict:
        """The grid options of :func:`expsolver.sample`: ``sample(model, schedule, x, **grid.sample_kwargs,
        method=...)``. With ``denoise_to_zero`` sample() makes its final data prediction at ``t_end``, the time of
        the last grid point."""
        out = dict(timesteps=self.timesteps, denoise_to_zero=self.denoise_to_zero)
        if self.model_timesteps is not None:
            out["model_timesteps"] = self.model_timesteps[: len(self.timesteps) - 1]
        return out


def grid_from_diffusers(scheduler, num_inference_steps: int, *, schedule: VPDiscrete | None = None,
                        float32_levels: bool = False) -> DiffusersGrid:
    """The grid a diffusers scheduler steps through for ``num_inference_steps``, in expsolver times.

    A fresh copy of the scheduler (``type(scheduler).from_config(scheduler.config)``; the one given is not
    touched) is set to ``num_inference_steps``; its ``timesteps`` are the model calls and its ``sigmas``
    (``sigma / alpha``, one more than the timesteps) the noise levels it steps between, whatever made them
    (``timestep_spacing``, Karras, exponential, beta sigmas, ``lambda_min_clipped``, ...). A level ``s`` is the
    time with ``lam_t = -log s`` on ``schedule``. Schedulers without ``sigmas`` (DDPM, DDIM, PNDM) step between
    the levels of their timesteps.

    **Final step.** A final level of 0 (``final_sigmas_type="zero"``, DDPM, DDIM with ``set_alpha_to_one``) is the
    jump to the clean sample: the grid ends at the last model call's level and ``denoise_to_zero`` is set. A
    positive final level (``final_sigmas_type="sigma_min"``) is the grid's last point; when it equals the level
    before it, the scheduler's last step has zero length and is left out (``idle_final_call``).

    Parameters
    ----------
    scheduler : diffusers scheduler
    num_inference_steps : int
    schedule : VPDiscrete, optional
        Default :func:`schedule_from_diffusers` of the scheduler. Its ``total_N`` must be the scheduler's
        ``num_train_timesteps``.
    float32_levels : bool
        diffusers stores the levels in float32. By default a level that is the level of an integer timestep to
        float32 precision (relative 1e-6) is placed exactly at that timestep's time (1), so a plain
        ``timestep_spacing`` grid is made of exact training levels. With ``True`` every level is converted as
        stored: the noise levels diffusers itself computes with (``compat="diffusers"``).

    Returns
    -------
    DiffusersGrid
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
        raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    copy = type(scheduler).from_config(scheduler.config)
    copy.set_timesteps(int(num_inference_steps))
    schedule = schedule_from_diffusers(copy) if schedule is None else schedule
    if not isinstance(schedule, VPDiscrete):
        raise TypeError(f"schedule must be a VPDiscrete, got {type(schedule).__name__}")
    n_train = int(copy.config.get("num_train_timesteps", len(copy.alphas_cumprod)))
    if schedule.total_N != n_train:
        raise ValueError(f"schedule has {schedule.total_N} levels, the scheduler num_train_timesteps={n_train}")
    ks = _float64(copy.timesteps)
    model_times = np.array([_time_of_timestep(schedule, k) for k in ks])
    sigmas = getattr(copy, "sigmas", None)
    if sigmas is not None and len(sigmas) == len(ks) + 1:
        levels = _float64(sigmas)
    else:
        # DDPM / DDIM / PNDM: the levels are those of the timesteps; the last step goes to alpha = 1 unless the
        # scheduler keeps alphas_cumprod[0] there (set_alpha_to_one=False).
        last = 0.0 if copy.config.get("set_alpha_to_one", True) else _level_of_time(schedule, schedule.t_min)
        levels = np.append([_level_of_time(schedule, t) for t in model_times], last)
    times = []
    for i, level in enumerate(levels):
        if i == len(levels) - 1 and level == 0.0:
            break
        k = ks[i] if i < len(ks) else _nearest_timestep(schedule, level)
        times.append(_time_of_level(schedule, level, None if float32_levels else k, f"sigmas[{i}]"))
    idle = len(times) > 2 and times[-1] == times[-2]
    grid = check_grid(schedule, times[:-1] if idle else times, "the scheduler's grid")
    denoise = bool(levels[-1] == 0.0)
    if len(grid) - 1 + int(denoise) + int(idle) != len(ks):
        raise ValueError(f"the scheduler has {len(ks)} timesteps but {len(levels)} levels; expected one more "
                         f"level than timesteps")
    on_grid = np.array_equal(model_times[: len(grid)], grid[: len(model_times)])
    return DiffusersGrid(timesteps=grid, model_timesteps=None if on_grid else model_times,
                         denoise_to_zero=denoise, num_train_timesteps=n_train, idle_final_call=idle)


def _attribute(scheduler, name):
    value = getattr(scheduler, name, None)
    if value is None:
        raise TypeError(f"scheduler must be a diffusers scheduler with {name!r}, got {type(scheduler).__name__}")
    return value


def _float64(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _time_of_timestep(schedule: VPDiscrete, k: float) -> float:
    """Eq. (1), exactly on the schedule's table for an integer timestep."""
    if float(k).is_integer() and 0 <= k < schedule.total_N:
        return float(schedule.t_array[int(k)])
    return schedule.check_time(float(timestep_to_time(float(k), schedule.total_N)), f"the time of timestep {k!r}")


def _level_of_time(schedule: VPDiscrete, t: float) -> float:
    """``sigma_t / alpha_t = sqrt(alpha_t^-2 - 1)``."""
    return math.sqrt(math.expm1(-2.0 * schedule.log_alpha_float(t)))


def _nearest_timestep(schedule: VPDiscrete, level: float) -> float:
    """The integer timestep whose level is nearest to ``level`` (a candidate for :func:`_time_of_level`)."""
    log_alpha = -0.5 * math.log1p(level * level)
    return float(torch.argmin(torch.abs(schedule.log_alpha_array - log_alpha)))


def _time_of_level(schedule: VPDiscrete, level: float, k, name: str) -> float:
    """The time whose ``sigma / alpha`` is ``level``: that of timestep ``k`` when ``level`` is its level to float32
    precision, else the inverse of ``lam = -log(level)``. A level beyond an end of the schedule by no more than a
    float32 rounding is that end."""
    if not (math.isfinite(level) and level > 0.0):
        raise ValueError(f"{name} = {level!r} is not a positive noise level")
    if k is not None and float(k).is_integer() and 0 <= k < schedule.total_N:
        t_k = float(schedule.t_array[int(k)])
        if abs(level / _level_of_time(schedule, t_k) - 1.0) <= _LEVEL_MATCH_RTOL:
            return t_k
    t = schedule.lam_inverse_float(-math.log(level))
    if not schedule.t_min <= t <= schedule.T:
        edge = schedule.t_min if t < schedule.t_min else schedule.T
        if abs(level / _level_of_time(schedule, edge) - 1.0) <= _LEVEL_MATCH_RTOL:
            return edge
    return schedule.check_time(t, name)


# Options that choose the solver. In another scheduler's config (from_config) they describe that scheduler's solver
# and are not taken (nor are expsolver's grid options it may hold), except that compat="diffusers" translates them
# (_diffusers_solver_options).
_SOLVER_KEYS = ("method", "order", "algorithm_type", "solver_type", "variant", "use_corrector", "lower_order_final",
                "euler_at_final", "compat", "solver", "disable_corrector")
# expsolver's grid options (an OptimizedGrid brings its own).
_EXPLICIT_GRID_KEYS = ("timesteps", "model_timesteps", "skip_type", "t_start", "t_end", "denoise_to_zero")
# Options that make the noise schedule, and diffusers' grid: passed to the diffusers scheduler the grid follows.
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "rescale_betas_zero_snr")
_GRID_KEYS = ("timestep_spacing", "steps_offset", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
              "use_lu_lambdas", "lambda_min_clipped", "final_sigmas_type")
# sample() methods on a fixed grid (the adaptive one chooses its steps while it runs: no timesteps to announce).
_METHODS = ("multistep", "unipc", "deis", "singlestep", "singlestep_fixed")
# The diffusers scheduler whose grid a method follows (and whose numbers compat="diffusers" reproduces).
_DIFFUSERS_CLASS = {"multistep": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler"}
# diffusers' names of the two second-order multistep updates (DPMSolverMultistepScheduler's solver_type).
_DPM_SOLVER_TYPES = {"midpoint": "dpmsolver", "heun": "taylor"}
_VARIANCE_TYPES = (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned",
                   "learned_range")


class _ModelCall(Exception):
    """A solver's step asked for a model output that the pipeline has not given yet; ``x`` is the state at which
    the model is to be called next."""

    def __init__(self, x):
        super().__init__("the step needs another model output")
        self.x = x


class _Outputs:
    """The model of the scheduler's problem: it serves the model outputs that the pipeline gave for the current
    step, in order, and suspends the step (:class:`_ModelCall`) at the first call beyond them."""

    def __init__(self):
        self.values, self.served = [], 0

    def __call__(self, x, t):
        if self.served == len(self.values):
            raise _ModelCall(x)
        self.served += 1
        return self.values[self.served - 1]


class _Recorder:
    """The model of a dry run: records the time of every call and returns zeros."""

    def __init__(self):
        self.times = []

    def __call__(self, x, t):
        self.times.append(float(t[0]))
        return torch.zeros_like(x)


class ExpSolverScheduler(SchedulerMixin, ConfigMixin):
    r"""A diffusers scheduler that advances the state with an expsolver solver.

    ``pipe.scheduler = ExpSolverScheduler.from_config(pipe.scheduler.config, **options)`` runs a stock pipeline
    with it. Each call ``step(model_output, timestep, sample)`` hands the pipeline's model output to the solver's
    own step (:meth:`expsolver.solvers.base.Solver.step`) on the diffusion ODE of :class:`~expsolver.DiffusionODE`
    whose model returns that output: the numbers are those of :func:`expsolver.sample` with the same solver, grid
    and model (to float64 round-off), and the scheduler adds no host synchronisation per step.

    **Solver.** ``solver=`` any object of the solver protocol, or the options of :func:`expsolver.sample` that
    choose one: ``method`` (``"multistep"`` default, ``"unipc"``, ``"deis"``, ``"singlestep"``,
    ``"singlestep_fixed"``), ``order``, ``algorithm_type`` (``"dpmsolver++"`` data or ``"dpmsolver"`` noise
    prediction), ``solver_type``, ``variant``, ``use_corrector``, ``lower_order_final``, with the meanings and
    defaults of :func:`expsolver.sample`. A solver that calls the model several times per step (singlestep
    DPM-Solver) announces each of those calls as a timestep (the time at which it queries the model) and returns,
    from the steps in between, the state at which the model is to be called next; its step is re-run from its
    start at each call with the outputs given so far (stage values are recomputed, the model is not), so such a
    solver must not change its state before its last model call in a step (expsolver's keep no state).

    **Grid** (one of):

    * ``timesteps`` (and optionally ``model_timesteps``): an explicit expsolver grid, as in
      :func:`expsolver.sample`; ``grid``: an :class:`~expsolver.OptimizedGrid` (or a :class:`DiffusersGrid`), whose
      times, model times and sampler options are used (an option given as well must agree);
    * ``skip_type`` (``"time_uniform"``, ``"logSNR"``, ``"time_quadratic"``, ``"karras"``): expsolver's grid from
      ``t_start`` (default 1) to ``t_end`` (default ``1/N``) with as many steps as make ``num_inference_steps``
      model calls;
    * otherwise the grid of diffusers' own scheduler for these options (``timestep_spacing``, ``steps_offset``,
      ``use_karras_sigmas``, ``use_exponential_sigmas``, ``use_beta_sigmas``, ``use_lu_lambdas``,
      ``lambda_min_clipped``, ``final_sigmas_type``; :func:`grid_from_diffusers` of DPMSolverMultistepScheduler, of
      UniPCMultistepScheduler for UniPC), model times included; ``final_sigmas_type="zero"`` ends with the jump to
      ``sigma = 0`` (``denoise_to_zero``).

    ``num_inference_steps`` is always the number of model calls: with ``denoise_to_zero`` the last one is the data
    prediction at ``t_end``.

    **compat="diffusers"** reproduces diffusers' DPMSolverMultistepScheduler (``method="multistep"``) and
    UniPCMultistepScheduler (``method="unipc"``) to the float32 rounding of their stored noise levels. Where those
    depart from the papers and official code it follows them:

    * the grid is made of the float32 noise levels diffusers stores (``grid_from_diffusers(...,
      float32_levels=True)``) and a model output is converted at the level of its grid point, not at the rounded
      timestep the model was called at (Karras, exponential, beta, Lu sigmas);
    * warm-up and ``lower_order_final`` count the final jump to ``sigma = 0`` as a step (the last grid step has
      order ``<= 2``, the jump is first order), and DPMSolverMultistepScheduler lowers the final orders only with
      fewer than :data:`DIFFUSERS_LOWER_ORDER_FINAL_STEPS` timesteps (UniPC always); ``euler_at_final`` makes its
      last step first order;
    * third order multistep is the official update (``DPMSolverMultistep(3, coefficients="official")``, global
      order 2);
    * a zero-length last step (Karras sigmas with ``final_sigmas_type="sigma_min"``) is taken: it leaves the state
      unchanged, except that UniPC first corrects the step before it with the model output of that last call.

    Configurations for which diffusers' scheduler returns NaN are refused with a ``ValueError``: UniPC jumping to
    ``sigma = 0`` (``final_sigmas_type="zero"``) with ``solver_type="bh1"`` (the jump multiplies
    ``B(h) = h = -inf`` by 0), with ``predict_x0=False`` (``sigma_t = 0`` times ``e^h - 1 = inf``) or with
    ``lower_order_final=False`` and order >= 2 (divides by ``r = 0``), and a zero-length last step of order >= 3,
    or of order 2 with ``solver_type="heun"`` (0/0). So is what diffusers itself refuses (DPM-Solver with
    ``algorithm_type="dpmsolver"`` and ``final_sigmas_type="zero"``). diffusers' casting of the state to float32
    inside DPMSolverMultistepScheduler.step is not reproduced (a rounding, not a formula).
    ``from_config`` of a DPMSolverMultistepScheduler or UniPCMultistepScheduler config with ``compat="diffusers"``
    takes that scheduler's solver options (``solver_order``, ``algorithm_type``, ``solver_type``, ``predict_x0``,
    ``lower_order_final``, ``euler_at_final``); from any other config only the schedule and grid options are taken,
    and the solver is the one the keyword options choose.

    Parameters
    ----------
    num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        The noise schedule, as in diffusers (:func:`schedule_from_diffusers` of it is :attr:`schedule`).
    prediction_type : {"epsilon", "sample", "v_prediction"}
        What the model returns: ``model_type`` ``"noise"``, ``"x_start"`` or ``"v"`` of
        :class:`expsolver.models.ModelWrapper`.
    variance_type : str, optional
        ``"learned"`` / ``"learned_range"``: the model returns the variance as extra channels; only the first
        ``sample.shape[1]`` channels are used.
    method, order, algorithm_type, solver_type, variant, use_corrector, lower_order_final, denoise_to_zero
        As in :func:`expsolver.sample` (``denoise_to_zero`` defaults to ``final_sigmas_type == "zero"`` on
        diffusers' grid, to False otherwise). ``solver_type`` also takes diffusers' names of its two values,
        ``"midpoint"`` (``"dpmsolver"``) and ``"heun"`` (``"taylor"``), and is kept in the config in them, so that
        diffusers' schedulers accept the config.
    compat : {None, "official", "diffusers"}
        ``"official"`` as in :func:`expsolver.sample`; ``"diffusers"`` see above.
    solver : Solver, optional
        Any object of the solver protocol instead of the options that choose one (then ``compat`` is None).
        ``algorithm_type`` still chooses the data or noise form of the ODE. It is kept in the config as is (a
        config holding one cannot be saved to JSON).
    skip_type, timesteps, model_timesteps, t_start, t_end
        expsolver's grid options (see **Grid**).
    grid : OptimizedGrid or DiffusersGrid, optional
        Stored in the config as its ``timesteps``, ``model_timesteps`` and options.
    timestep_spacing, steps_offset, use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas, use_lu_lambdas
        diffusers' grid options (see **Grid**), as are ``lambda_min_clipped`` and ``final_sigmas_type``.
    euler_at_final : bool
        ``compat="diffusers"`` only.
    disable_corrector, thresholding, use_flow_sigmas
        Accepted from diffusers' configs at their defaults only (empty, False, False): not supported.
    check_finite : bool
        Check every model output for NaN and Inf (a ``ValueError`` naming the step); one host synchronisation per
        step on an accelerator.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, prediction_type: str = "epsilon",
                 variance_type=None, rescale_betas_zero_snr: bool = False, method=None, order=None,
                 algorithm_type=None, solver_type=None, variant=None, use_corrector=None, lower_order_final=None,
                 denoise_to_zero=None, compat=None, solver=None, skip_type=None, timesteps=None,
                 model_timesteps=None, t_start=None, t_end=None, grid=None, timestep_spacing: str = "linspace",
                 steps_offset: int = 0, use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False,
                 use_beta_sigmas: bool = False, use_lu_lambdas: bool = False,
                 lambda_min_clipped: float = -math.inf, final_sigmas_type: str = "zero",
                 euler_at_final: bool = False, disable_corrector=None, thresholding: bool = False,
                 use_flow_sigmas: bool = False, check_finite: bool = False):
        opts = dict(method=method, order=order, algorithm_type=algorithm_type, solver_type=solver_type,
                    variant=variant, use_corrector=use_corrector, lower_order_final=lower_order_final,
                    denoise_to_zero=denoise_to_zero, compat=compat, timesteps=timesteps,
                    model_timesteps=model_timesteps)
        if grid is not None:
            opts = _merge_grid(grid, opts, PREDICTION_TYPES.get(prediction_type))
            # The config keeps the grid as plain values (JSON), no longer marked as defaults (from_config skips
            # those).
            defaults = [k for k in self.config.get("_use_default_values", []) if k not in opts]
            self.register_to_config(grid=None, _use_default_values=defaults,
                                    **{k: _jsonable(v) for k, v in opts.items()})
        if check_bool(thresholding, "thresholding"):
            raise ValueError("thresholding=True is not supported: the solvers integrate the diffusion ODE of the "
                             "model's own predictions")
        if check_bool(use_flow_sigmas, "use_flow_sigmas"):
            raise ValueError("use_flow_sigmas=True is not supported: flow matching is not a variance-preserving "
                             "diffusion, which is what expsolver solves")
        if disable_corrector:
            raise ValueError(f"disable_corrector={disable_corrector!r} is not supported; use use_corrector=False "
                             f"to run UniPC's predictor alone")
        self._model_type = PREDICTION_TYPES[check_choice(prediction_type, "prediction_type", tuple(PREDICTION_TYPES))]
        self._learned_variance = check_choice(variance_type, "variance_type", _VARIANCE_TYPES) in ("learned",
                                                                                                  "learned_range")
        self._check_finite = check_bool(check_finite, "check_finite")
        self._euler_at_final = check_bool(euler_at_final, "euler_at_final")
        self._compat = check_choice(opts["compat"], "compat", COMPAT_MODES)
        algorithm_type = "dpmsolver++" if opts["algorithm_type"] is None else opts["algorithm_type"]
        if isinstance(algorithm_type, str) and algorithm_type.startswith("sde-"):
            raise ValueError(f"algorithm_type={algorithm_type!r}: ExpSolverScheduler runs ODE solvers only "
                             f"('dpmsolver++', 'dpmsolver'); sample the SDE with expsolver.sample")
        self._prediction = PREDICTION_OF[check_choice(algorithm_type, "algorithm_type", tuple(PREDICTION_OF))]
        self._solver, self._method = self._make_solver(solver, opts, algorithm_type, skip_type)
        if self._euler_at_final and self._compat != "diffusers":
            raise ValueError("euler_at_final applies with compat='diffusers' only (the last step of order 1 is "
                             "diffusers' option)")
        self._source = self._grid_source()
        self.betas = self._source.betas
        self.alphas_cumprod = self._source.alphas_cumprod
        #: The noise schedule as an expsolver schedule (:func:`schedule_from_diffusers`).
        self.schedule = schedule_from_diffusers(self._source)
        self._resolve_grid(opts, skip_type, t_start, t_end, final_sigmas_type)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = None
        self.sigmas = None
        self._state_time_of = {}
        self._calls = None
        self._step_index = None
        self._begin_index = None

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """As diffusers' ``from_config``; from another scheduler's config the solver options are not taken (they
        describe that scheduler's solver), except with ``compat="diffusers"``, which translates those of
        DPMSolverMultistepScheduler and UniPCMultistepScheduler (keyword options still win). With ``grid=`` or
        ``solver=`` the solver and grid options of this class's own config are dropped as well."""
        if isinstance(config, dict):
            source = _config_class(config, prefer_diffusers=kwargs.get("compat") == "diffusers")
            if source != cls.__name__:
                if kwargs.get("compat") == "diffusers":
                    for key, value in _diffusers_solver_options(source, config).items():
                        kwargs.setdefault(key, value)
                config = {k: v for k, v in config.items() if k not in _SOLVER_KEYS + _EXPLICIT_GRID_KEYS}
            elif kwargs.get("grid") is not None or kwargs.get("solver") is not None:
                # A grid or solver object brings its own configuration: the config's is replaced, not merged.
                config = {k: v for k, v in config.items() if k not in _SOLVER_KEYS + _EXPLICIT_GRID_KEYS}
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def _make_solver(self, solver, opts, algorithm_type, skip_type):
        """The solver object and the sample() method it came from (None for a given object)."""
        chosen = {k: opts[k] for k in ("method", "order", "solver_type", "variant", "use_corrector",
                                       "lower_order_final")}
        if chosen["solver_type"] in _DPM_SOLVER_TYPES:
            chosen["solver_type"] = _DPM_SOLVER_TYPES[chosen["solver_type"]]
        if chosen["solver_type"] is not None and solver is None:
            # Stored in diffusers' words, so that diffusers' DPM-Solver and UniPC schedulers accept this config.
            self.register_to_config(solver_type={v: k for k, v in _DPM_SOLVER_TYPES.items()}.get(
                chosen["solver_type"], chosen["solver_type"]))
        if solver is not None:
            check_solver(solver)
            given = [k for k, v in {**chosen, "compat": self._compat}.items() if v is not None]
            if given:
                raise ValueError(f"solver= carries its own configuration: do not also give {', '.join(given)}")
            if getattr(solver, "stochastic", False):
                raise ValueError(f"solver={solver!r} is stochastic; ExpSolverScheduler runs ODE solvers only")
            return solver, None
        if chosen["method"] == "adaptive":
            raise ValueError("method='adaptive' chooses its steps while it runs, so it cannot announce its timesteps "
                             f"to a pipeline; use one of {', '.join(map(repr, _METHODS))}")
        resolved = check_solver_options(algorithm_type, None, None, compat=None if self._compat == "diffusers"
                                         else self._compat, **chosen)
        method, order = resolved["method"], resolved["order"]
        if self._compat == "diffusers":
            if method not in _DIFFUSERS_CLASS:
                raise ValueError(f"compat='diffusers' reproduces method 'multistep' (DPMSolverMultistepScheduler) "
                                 f"and 'unipc' (UniPCMultistepScheduler), got method={method!r}")
            final = resolved["lower_order_final"]
            if method == "multistep":
                # diffusers' third-order multistep update is the official one (order <= 3 is checked here).
                return DPMSolverMultistep(order, resolved["solver_type"], "official", lower_order_final=final), method
            if not resolved["use_corrector"]:
                raise ValueError("compat='diffusers': UniPCMultistepScheduler always runs its corrector; "
                                 "use_corrector=False has no diffusers counterpart")
            return UniPC(order, resolved["variant"], True, lower_order_final=final), method
        stages = skip_type if method in ("singlestep", "singlestep_fixed") else None
        rule, _ = solver_from_options(method, order, resolved["solver_type"], compat=resolved["compat"],
                                      lower_order_final=resolved["lower_order_final"], skip_type=stages,
                                      variant=resolved.get("variant"), use_corrector=resolved.get("use_corrector"),
                                      algorithm_type=algorithm_type)
        return rule, method

    def _grid_source(self):
        """The diffusers scheduler of this schedule and diffusers grid options (for ``alphas_cumprod`` and the
        default grid): UniPCMultistepScheduler for UniPC, DPMSolverMultistepScheduler otherwise."""
        unipc = self._method == "unipc" or isinstance(self._solver, UniPC)
        source_cls = getattr(diffusers, _DIFFUSERS_CLASS["unipc" if unipc else "multistep"])
        params = inspect.signature(source_cls.__init__).parameters
        kwargs = {}
        for key in _SCHEDULE_KEYS + _GRID_KEYS:
            value = self.config[key]
            if key in params:
                kwargs[key] = value
            elif value != inspect.signature(type(self).__init__).parameters[key].default:
                raise ValueError(f"{key}={value!r} is an option of diffusers' grid that {source_cls.__name__} "
                                 f"(the grid this solver follows) does not have")
        return source_cls(**kwargs)

    def _resolve_grid(self, opts, skip_type, t_start, t_end, final_sigmas_type):
        """Which grid (explicit, expsolver's ``skip_type``, diffusers') and its fixed parts."""
        schedule = self.schedule
        denoise = opts["denoise_to_zero"]
        self._skip_type = None if skip_type is None else check_choice(skip_type, "skip_type", SKIP_TYPES)
        self._grid, self._model_times = None, None
        if opts["timesteps"] is not None:
            self._grid = explicit_grid(schedule, opts["timesteps"], skip_type=skip_type, t_start=t_start,
                                       t_end=t_end)
            if opts["model_timesteps"] is not None:
                self._model_times = check_model_timesteps(schedule, opts["model_timesteps"], self._grid)
        elif opts["model_timesteps"] is not None:
            raise ValueError("model_timesteps needs timesteps (one model time per grid point but the last)")
        if self._skip_type is not None:
            self._t_start = schedule.T if t_start is None else schedule.check_time(t_start, "t_start")
            self._t_end = default_t_end(schedule) if t_end is None else schedule.check_time(t_end, "t_end")
            if not self._t_end < self._t_start:
                raise ValueError(f"t_end must be < t_start, got t_start={self._t_start!r}, t_end={self._t_end!r}")
        elif self._grid is None and (t_start is not None or t_end is not None):
            raise ValueError("t_start and t_end go with skip_type (or an explicit grid); diffusers' grid has its own "
                             "end points")
        on_diffusers_grid = self._grid is None and self._skip_type is None
        if self._compat == "diffusers" and not on_diffusers_grid:
            raise ValueError("compat='diffusers' runs on diffusers' grid: do not give timesteps, grid or skip_type")
        if on_diffusers_grid:
            final_zero = check_choice(final_sigmas_type, "final_sigmas_type", ("zero", "sigma_min")) == "zero"
            if denoise is not None and check_bool(denoise, "denoise_to_zero") != final_zero:
                raise ValueError(f"denoise_to_zero={denoise!r} contradicts final_sigmas_type={final_sigmas_type!r} "
                                 f"(on diffusers' grid the final level decides: 'zero' ends with the jump to "
                                 f"sigma = 0)")
            if self._compat == "diffusers" and final_zero:
                self._check_diffusers_jump()
            denoise = final_zero
        self._denoise = False if denoise is None else check_bool(denoise, "denoise_to_zero")

    # -- timesteps ------------------------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int | None = None, device=None):
        """Make the grid and the plan for ``num_inference_steps`` model calls (with an explicit grid it may be
        left out: the grid fixes the count) and announce their times as :attr:`timesteps` (diffusers timesteps
        ``k = N t - 1`` of the model times, integers where they are training timesteps)."""
        if num_inference_steps is not None:
            num_inference_steps = check_int(num_inference_steps, "num_inference_steps", minimum=1)
        elif self._grid is None:
            raise ValueError("num_inference_steps is needed: only an explicit grid fixes the number of model calls")
        idle, announce = False, None
        query = self._model_times
        if self._grid is not None:
            grid = self._grid
        elif self._skip_type is not None:
            grid = self._skip_grid(num_inference_steps - int(self._denoise))
        else:
            dgrid = grid_from_diffusers(self._source, num_inference_steps, schedule=self.schedule,
                                        float32_levels=self._compat == "diffusers")
            grid, idle = dgrid.timesteps, dgrid.idle_final_call
            if dgrid.model_timesteps is not None:
                if self._compat == "diffusers":
                    # diffusers calls the model at these times but converts its output at the grid's levels.
                    announce = dgrid.model_timesteps
                else:
                    query = dgrid.model_timesteps[: len(grid) - 1]
        self._run = dict(grid=grid, idle=idle, announce=announce,
                         query=None if query is None else dict(zip(map(float, grid[:-1]), map(float, query))))
        plan, calls, times, state_times = self._schedule_calls(0)
        if num_inference_steps is not None and len(calls) != num_inference_steps:
            raise ValueError(f"num_inference_steps={num_inference_steps}, but the grid of {len(grid) - 1} steps "
                             f"makes {len(calls)} model calls with {self._solver!r}"
                             + (" (diffusers' grid has one model call per timestep: give skip_type or timesteps "
                                "for a solver with several calls per step)" if self._grid is None
                                and self._skip_type is None else ""))
        ks = [_timestep_of(self.schedule, t) for t in times]
        integral = all(float(k).is_integer() for k in ks)
        float_dtype = torch.float32 if torch.device(device or "cpu").type == "mps" else torch.float64
        self.timesteps = torch.tensor(ks, dtype=torch.int64 if integral else float_dtype, device=device)
        # diffusers' sigmas: the noise level sigma / alpha of the state at each model call, then the final one.
        levels = [_level_of_time(self.schedule, t) for t in state_times]
        self.sigmas = torch.tensor(levels + [0.0 if self._denoise else _level_of_time(self.schedule, grid[-1])],
                                   dtype=torch.float64)
        self._state_time_of = dict(zip(ks, state_times))
        self.num_inference_steps = len(calls)
        self._timestep_list = ks
        self._start(plan, calls)
        self._begin_index = None

    def _skip_grid(self, n_calls: int) -> np.ndarray:
        """expsolver's ``skip_type`` grid with as many steps as make ``n_calls`` model calls (model calls grow with
        the number of steps: a bisection)."""
        if n_calls < 1:
            raise ValueError("num_inference_steps must leave at least one model call before denoise_to_zero")
        problem = self._problem(_Recorder(), None)

        def grid_and_nfe(m):
            # DPM-Solver-fast picks its outer points from the unrounded grid and rounds them itself.
            compat = None if self._method == "singlestep" else self._compat
            ts = sampling_grid(self.schedule, self._skip_type, self._t_start, self._t_end, m, compat)
            return ts, sum(self._solver.nfe(st.order) for st in self._solver.plan(ts, problem))

        lo, hi = 1, n_calls
        while lo <= hi:
            m = (lo + hi) // 2
            ts, nfe = grid_and_nfe(m)
            if nfe == n_calls:
                return ts
            lo, hi = (m + 1, hi) if nfe < n_calls else (lo, m - 1)
        raise ValueError(f"no {self._skip_type!r} grid makes exactly {n_calls} model calls with {self._solver!r} "
                         f"(e.g. a singlestep solver of order k needs a multiple of k)")

    def _problem(self, model, query_times):
        wrapper = ModelWrapper(model, self.schedule, model_type=self._model_type, time_input="continuous",
                               check_finite=self._check_finite)
        return DiffusionODE(self.schedule, wrapper, self._prediction, query_times)

    def _schedule_calls(self, first: int):
        """The plan from grid point ``first`` on, and a dry run of it. Per model call: the plan step it belongs to
        (None: the final data prediction), the time at which it queries the model (with compat="diffusers" the time
        diffusers calls the model at, one call per grid point) and the time the state is at (the step's start, or
        the stage's time inside a step)."""
        run = self._run
        grid = run["grid"][first:]
        recorder = _Recorder()
        problem = self._problem(recorder, run["query"])
        plan = self._plan(grid, problem, first)
        x = torch.zeros((1, 1), dtype=torch.float64)
        state = self._solver.init(problem, x)
        calls, state_times = [], []
        for p, st in enumerate(plan):
            before = len(recorder.times)
            x = self._solver.step(problem, x, st, state)
            if len(recorder.times) == before:
                raise ValueError(f"{self._solver!r} made no model call in step {st.index}: a scheduler step is one "
                                 f"model call")
            calls += [p] * (len(recorder.times) - before)
            state_times += [st.s] + recorder.times[before + 1:]
        times = recorder.times
        if self._denoise:
            calls.append(None)
            times.append(float(grid[-1]))
            state_times.append(float(grid[-1]))
        if run["announce"] is not None:
            times = [float(t) for t in run["announce"][first:]]
        return plan, calls, times, state_times

    def _plan(self, grid, problem, first: int) -> list:
        """The solver's plan over ``grid`` (its points ``first`` on), plus the zero-length last step of diffusers'
        grid; with compat="diffusers" the orders are diffusers' (see the class docstring)."""
        run = self._run
        n_grid = len(grid) - 1
        if self._compat != "diffusers":
            plan = list(self._solver.plan(grid, problem))
            if run["idle"]:
                plan.append(Step(n_grid, float(grid[-1]), float(grid[-1]), 1))
            return plan
        n_calls_total = len(run["grid"]) - 1 + int(self._denoise) + int(run["idle"])
        dpm = self._method == "multistep"
        final = self._solver.lower_order_final and (not dpm or n_calls_total < DIFFUSERS_LOWER_ORDER_FINAL_STEPS)
        orders = multistep_orders(self._solver.steps_order, n_calls_total - first, final)
        if self._euler_at_final:
            orders[-1] = 1
        self._check_diffusers_finite(orders, n_grid, run["idle"])
        plan = [Step(i, float(grid[i]), float(grid[i + 1]), orders[i]) for i in range(n_grid)]
        if run["idle"]:
            plan.append(Step(n_grid, float(grid[-1]), float(grid[-1]), 1))
        return plan

    def _check_diffusers_jump(self):
        """compat="diffusers" with the jump to sigma = 0: refuse what diffusers refuses or returns NaN for."""
        if self._method == "multistep" and self._prediction == "noise":
            raise ValueError("compat='diffusers': DPMSolverMultistepScheduler refuses final_sigmas_type='zero' with "
                             "algorithm_type='dpmsolver'; use final_sigmas_type='sigma_min'")
        if self._method == "unipc" and self._prediction == "noise":
            raise ValueError("compat='diffusers': UniPCMultistepScheduler with predict_x0=False and "
                             "final_sigmas_type='zero' returns NaN (its jump multiplies sigma = 0 by e^h - 1 = inf); "
                             "use final_sigmas_type='sigma_min' or compat=None")
        if self._method == "unipc" and self._solver.variant == "bh1":
            raise ValueError("compat='diffusers': UniPCMultistepScheduler with solver_type='bh1' and "
                             "final_sigmas_type='zero' returns NaN (its jump multiplies B(h) = -inf by 0); use "
                             "final_sigmas_type='sigma_min', variant 'bh2', or compat=None")

    def _check_diffusers_finite(self, orders, n_grid, idle):
        """Refuse the plans for which diffusers' scheduler returns NaN (see the class docstring)."""
        unipc = self._method == "unipc"
        if self._denoise and unipc and orders[n_grid] > 1:
            raise ValueError(f"compat='diffusers': UniPCMultistepScheduler with lower_order_final=False jumps to "
                             f"sigma = 0 with order {orders[n_grid]} and returns NaN; use lower_order_final=True "
                             f"or compat=None")
        if idle:
            k = orders[n_grid]
            if k >= 3 or (k == 2 and not unipc and self._solver.solver_type == "taylor"):
                raise ValueError(f"compat='diffusers': the last step of this grid has zero length (Karras sigmas "
                                 f"with final_sigmas_type='sigma_min') and order {k}; diffusers returns NaN there "
                                 f"(0/0). Use lower_order_final=True, final_sigmas_type='zero' or compat=None")

    def _start(self, plan, calls, first_call: int = 0):
        self._plan_steps, self._calls, self._first_call = plan, calls, first_call
        self._outputs = _Outputs()
        self._problem_run = self._problem(self._outputs, self._run["query"])
        self._state = None
        self._x_start = None
        self._step_index = None

    # -- stepping -------------------------------------------------------------------------------------------------
    @property
    def solver(self):
        """The solver object that advances the state (:class:`~expsolver.solvers.base.Solver`)."""
        return self._solver

    @property
    def step_index(self):
        """The index of the next model call (diffusers' counter; None before the first :meth:`step`)."""
        return self._step_index

    @property
    def begin_index(self):
        """The first model call of the run, when the pipeline set it (:meth:`set_begin_index`)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        """Start the run at model call ``begin_index`` (image-to-image pipelines): the solver starts afresh there,
        with the warm-up of a multistep method, on the rest of the grid."""
        self._begin_index = check_int(begin_index, "begin_index", minimum=0)

    def index_for_timestep(self, timestep) -> int:
        """The first model call announced at ``timestep`` (one host synchronisation for a device tensor)."""
        if self._calls is None:
            raise ValueError("call set_timesteps before stepping")
        value = float(timestep.detach().cpu()) if isinstance(timestep, torch.Tensor) else float(timestep)
        for i, k in enumerate(self._timestep_list):
            if k == value:
                return i
        raise ValueError(f"timestep {value!r} is not one of this scheduler's timesteps {self._timestep_list}")

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The model takes the state as it is (variance-preserving diffusion): returns ``sample``."""
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True):
        """One model call's worth of the solver.

        Parameters
        ----------
        model_output : torch.Tensor
            The model at ``sample`` and ``timestep``, in the form ``prediction_type`` names.
        timestep : int, float or torch.Tensor
            The announced timestep (used only at the first call, to find where the run starts).
        sample : torch.Tensor
            The state the model was called at: the previous call's ``prev_sample``, or the initial noise.
        generator : torch.Generator, optional
            Accepted for pipelines that pass one; the solvers are deterministic.
        return_dict : bool

        Returns
        -------
        SchedulerOutput or tuple
            ``prev_sample``: the state at the next model call (the end of the step, or a solver's intermediate
            stage), or the final state after the last call.
        """
        if self._calls is None:
            raise ValueError("call set_timesteps before stepping")
        if self._step_index is None:
            self._begin(timestep)
        c = self._step_index
        if c >= self._first_call + len(self._calls):
            raise ValueError(f"all {self.num_inference_steps} model calls of this run were made; call set_timesteps "
                             f"again to start a new one")
        if self._learned_variance:
            model_output = model_output[:, : sample.shape[1]]
        call = self._calls[c - self._first_call]
        if call is None:
            x = self._final_data_prediction(model_output, sample)
        else:
            x = self._advance(c - self._first_call, call, model_output, sample)
        self._step_index = c + 1
        return SchedulerOutput(prev_sample=x) if return_dict else (x,)

    def _begin(self, timestep):
        start = self._begin_index if self._begin_index is not None else self.index_for_timestep(timestep)
        if start > 0:
            self._restart(start)
        self._step_index = start

    def _restart(self, start: int):
        """Re-plan from model call ``start`` (the solver starts afresh there)."""
        calls = self._calls
        p = calls[start]
        if p is None or (start > 0 and calls[start - 1] == p):
            raise ValueError(f"the run cannot start at model call {start}: it is not the first call of a step")
        plan, new_calls, times, _ = self._schedule_calls(p)
        if [_timestep_of(self.schedule, t) for t in times] != self._timestep_list[start:]:
            raise ValueError(f"the run cannot start at model call {start}: re-planned from there, {self._solver!r} "
                             f"queries the model at other times than those announced")
        self._start(plan, new_calls, start)

    def _advance(self, c: int, p: int, model_output, sample):
        outputs = self._outputs
        if c == 0 or self._calls[c - 1] != p:
            self._x_start = sample
            outputs.values = [model_output]
            if self._state is None:
                self._state = self._solver.init(self._problem_run, sample)
        else:
            outputs.values.append(model_output)
        outputs.served = 0
        try:
            x = self._solver.step(self._problem_run, self._x_start, self._plan_steps[p], self._state)
        except _ModelCall as pending:
            return pending.x
        if outputs.served != len(outputs.values):
            raise RuntimeError(f"{self._solver!r} used {outputs.served} of the {len(outputs.values)} model outputs "
                               f"of step {p}: its model calls differ from its dry run")
        outputs.values = []
        return x

    def _final_data_prediction(self, model_output, sample):
        """``denoise_to_zero``: the data prediction at ``t_end`` (as :func:`expsolver.sample`)."""
        t_end = float(self._run["grid"][-1])
        self._outputs.values, self._outputs.served = [model_output], 0
        return self._problem_run.data_at(sample, t_end)

    # -- forward process ------------------------------------------------------------------------------------------
    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """``alpha_t x0 + sigma_t noise`` for diffusers timesteps ``k`` (one per sample, or one for all): at the time
        of the state at the model call announced at ``k`` (after :meth:`set_timesteps`), else at ``t = (k + 1) / N``.
        Reads the timesteps on the host (not a per-step method)."""
        ks = torch.as_tensor(timesteps).detach().cpu().to(torch.float64).reshape(-1).tolist()
        t = torch.tensor([self._state_time_of.get(k, timestep_to_time(k, self.schedule.total_N)) for k in ks],
                         dtype=torch.float64, device=original_samples.device)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        alpha = self.schedule.alpha(t).to(original_samples.dtype).reshape(shape)
        sigma = self.schedule.sigma(t).to(original_samples.dtype).reshape(shape)
        return alpha * original_samples + sigma * noise

    def __len__(self):
        return self.config.num_train_timesteps


def _merge_grid(grid, opts: dict, model_type) -> dict:
    """The options with those of ``grid`` (an OptimizedGrid or DiffusersGrid: ``timesteps`` and ``sample_kwargs``)
    filled in; an option given as well must agree."""
    kwargs = getattr(grid, "sample_kwargs", None)
    if not isinstance(kwargs, dict) or "timesteps" not in kwargs:
        raise TypeError(f"grid must be an OptimizedGrid or DiffusersGrid (with timesteps and sample_kwargs), got "
                        f"{type(grid).__name__}")
    if opts["timesteps"] is not None or opts["model_timesteps"] is not None:
        raise ValueError("give timesteps/model_timesteps or grid, not both")
    opts = dict(opts)
    for key, value in kwargs.items():
        if key == "time_input":  # how sample() calls the model; the pipeline calls it here
            continue
        if key == "model_type":
            if value != model_type:
                raise ValueError(f"the grid was made for model_type={value!r}, the scheduler's prediction_type "
                                 f"means {model_type!r}")
            continue
        if key not in opts:
            raise ValueError(f"the grid's option {key}={value!r} has no counterpart in ExpSolverScheduler")
        if key not in ("timesteps", "model_timesteps") and opts[key] is not None and opts[key] != value:
            raise ValueError(f"{key}={opts[key]!r} contradicts the grid's {key}={value!r}")
        opts[key] = value
    return opts


def _jsonable(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def _config_class(config, prefer_diffusers: bool) -> str | None:
    """The class a scheduler config belongs to: its ``_class_name`` (saved configs), else, for a live scheduler's
    ``config``, a class whose parameters it holds: this one, or diffusers' DPM-Solver or UniPC scheduler if its
    ``solver_type`` speaks that scheduler's vocabulary. A config made ``from_config`` of another class also holds
    that class's parameters; then ``prefer_diffusers`` (``compat="diffusers"``) decides which is tried first."""
    if "_class_name" in config:
        return config["_class_name"]
    keys = set(config)
    solver_type = config.get("solver_type")
    ours = [(ExpSolverScheduler, None)]
    theirs = [(diffusers.DPMSolverMultistepScheduler, tuple(_DPM_SOLVER_TYPES)),
              (diffusers.UniPCMultistepScheduler, UNIPC_VARIANTS)]
    for candidate, solver_types in (theirs + ours if prefer_diffusers else ours + theirs):
        holds = keys >= set(inspect.signature(candidate.__init__).parameters) - {"self"}
        if holds and (solver_types is None or solver_type in solver_types):
            return candidate.__name__
    return None


def _diffusers_solver_options(source: str | None, config) -> dict:
    """The options of ExpSolverScheduler that make diffusers' ``source`` scheduler with this config."""
    if source == "DPMSolverMultistepScheduler":
        return dict(method="multistep", order=config.get("solver_order", 2),
                    algorithm_type=config.get("algorithm_type", "dpmsolver++"),
                    solver_type=config.get("solver_type", "midpoint"),
                    lower_order_final=config.get("lower_order_final", True),
                    euler_at_final=config.get("euler_at_final", False))
    if source == "UniPCMultistepScheduler":
        if config.get("solver_p") is not None:
            raise ValueError("compat='diffusers': a UniPCMultistepScheduler with solver_p (another scheduler as "
                             "predictor) has no expsolver counterpart")
        return dict(method="unipc", order=config.get("solver_order", 2), variant=config.get("solver_type", "bh2"),
                    algorithm_type="dpmsolver++" if config.get("predict_x0", True) else "dpmsolver",
                    lower_order_final=config.get("lower_order_final", True),
                    disable_corrector=list(config.get("disable_corrector", [])))
    what = f"of {source}" if source else "of neither (or of a scheduler that cannot be told from its keys)"
    raise ValueError(f"compat='diffusers' reproduces DPMSolverMultistepScheduler and UniPCMultistepScheduler; the "
                     f"config is {what}")


def _timestep_of(schedule: VPDiscrete, t: float) -> float:
    """The diffusers timestep of a model time (1), as an integer where ``t`` is a training timestep's time."""
    k = float(time_to_timestep(t, schedule.total_N))
    nearest = round(k)
    if 0 <= nearest < schedule.total_N and float(schedule.t_array[nearest]) == t:
        return float(nearest)
    return k
