"""Time grids optimised for one sampler configuration on one problem.

:func:`optimize_timesteps` returns the grid ``t_start = t_0 > t_1 > ... > t_N = t_end`` that minimises the mean
squared error, against a high-accuracy reference, of exactly the sampler configuration it is given (the
``sample()`` options), on training states. The solver is differentiated in float64 with torch autograd.

**Parametrisation.** Monotone in the half log-SNR with fixed end points: with free parameters ``theta`` (N of
them) the ``lam`` increments are ``(lam_end - lam_start) * softmax(theta)``, so
``lam_i = lam_start + (lam_end - lam_start) * sum_{j<i} softmax(theta)_j``, strictly increasing for any ``theta``.

**Differentiating the solver.** The step rules are the ones :func:`expsolver.sample` uses, run by the same
:func:`expsolver.integrate` loop, on the sampler's diffusion ODE with the (tensor) ``lam_i`` themselves as its times
(:class:`~expsolver.problems.LamDiffusionODE`: for a VP schedule ``alpha``, ``sigma`` and every step coefficient
are analytic functions of ``lam``, computed by the same code as the sampler's), so autograd sees every
coefficient. The model is called at the float time ``t(lam_i)`` through the
:class:`~expsolver.models.ModelWrapper`; its output is differentiated by autograd in ``x`` and, at decoupled model
times, by a one-sided finite difference in ``lam`` (step ``1e-6``, one extra model call per evaluation; relative
gradient error ~1e-6), so any model works, including ones whose time input is not differentiable.

**Training set that represents the tail.** The RMS error users quote is dominated by a few states that end near
mode boundaries; a small random batch misses them and the grid overfits the bulk. The pool ``x_train`` is
therefore stratified by the error of a cheap solve (this configuration on the initial standard grid, ``steps``
NFE per state) at the quantiles ``strata``; each stratum gets a share of the training subset by Neyman
allocation (proportional to its size times the standard deviation of the cheap squared error in it, at least
``min_per_stratum``), drawn at random inside the stratum, and every selected state is weighted by
``(stratum size / pool size) / (number selected in the stratum)``. The weighted mean squared error is then an
unbiased estimate of the pool's mean squared error, with far less variance from the tail than a random subset.

**Robust objective, early stopping, restarts.** The objective caps each state's error at ``error_cap`` (the few
states that switch modes keep a constant share but no longer steer the gradient). ``n_validation`` pool states are
set aside first; every L-BFGS iterate is scored by its plain RMS on them and the best-scoring iterate (possibly the
initial grid) is kept. ``n_starts`` descents, from the best, second-best, ... standard grid with independent
stratified subsets, share the time budget; the one with the best validation RMS is returned. None of this uses the
test or holdout states.

**Decoupled model times** (``shift_model_times=True``, methods that call the model once per grid point). At
10 NFE the grid alone leaves too few degrees of freedom: states near a boundary between two modes' basins are sent
to the wrong mode by any grid. The model may also be queried at a time other than the grid time: at the grid point
``lam_i`` the solver uses the model's prediction at ``lam_i + d_i`` (converted with ``alpha``, ``sigma`` of that
time), while every step coefficient stays that of the grid. ``d`` (``steps`` parameters, clamped to the schedule's
range) is learned with the grid: after the grid-only descents (half of ``max_time``) one joint descent starts from
their best grid with ``d = 0``, on a training subset re-stratified by that grid's errors, and the validation RMS
chooses among all descents. This is the idea of querying the network at a shifted time (Li et al. 2024, "Alleviating
exposure bias in diffusion models through sampling with shifted time steps", ICLR) made a learned per-step
parameter, as learned-solver methods do (e.g. Tong et al. 2025, "Learning to discretize denoising diffusion ODEs",
ICLR, which learns the grid by backpropagating through the solver). The price: with ``d != 0`` the sampler is no
longer a consistent discretisation of the ODE (its error does not vanish as the steps shrink); it is a solver tuned
for one problem, one configuration and one NFE, to be judged only on independent states, as here.

**Reporting.** ``train`` (the weighted objective on the training subset, i.e. the estimate of the pool error),
``test`` and ``holdout`` errors are always reported, each for the optimised and the initial grid, by re-running
the ordinary :func:`~expsolver.sample` on the returned grid (the numbers a user gets). States that never entered
the optimisation are the only honest measure: ``test`` and ``holdout`` are disjoint from the pool, split off it
when not given.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ._validation import check_bool, check_int, check_positive_float, check_state
from .grids import SKIP_TYPES, check_grid, time_grid
from .models import ModelWrapper
from .problems import LamDiffusionODE
from .reference import reference_solve
from .driver import integrate
from .sampling import PREDICTION_OF, sample, solver_from_options
from .schedules import VPSchedule
from .solvers.base import Step

__all__ = ["optimize_timesteps", "OptimizedGrid", "grid_error", "config_label", "solve_on_lams", "OPTIMIZABLE_METHODS"]

OPTIMIZABLE_METHODS = ("multistep", "singlestep", "singlestep_fixed", "unipc")
_SHIFTABLE_METHODS = ("multistep", "unipc")  # one model call per grid point: decoupled model times apply
_MAX_RESTARTS = 2
_BLOWUP_LOSS = 1e3  # log-objective returned for a trial grid on which the solution blew up
# Options shown in a grid's label only when they differ from sample()'s defaults.
_LABEL_IF_NOT_DEFAULT = {"denoise_to_zero": False, "model_type": "noise", "time_input": "continuous",
                         "shift_model_times": False}
# The options that a solver object carries itself.
_SOLVER_OPTIONS = ("method", "order", "solver_type", "lower_order_final", "compat", "variant", "use_corrector")
# Options of sample() that describe the solver (recorded in the grid's label and config).
_CONFIG_KEYS = ("method", "order", "algorithm_type", "solver_type", "lower_order_final", "denoise_to_zero",
                "compat", "variant", "use_corrector", "model_type", "time_input")


@dataclass
class OptimizedGrid:
    """A time grid optimised for one sampler configuration (see :func:`optimize_timesteps`).

    Attributes
    ----------
    timesteps : numpy.ndarray
        ``steps + 1`` strictly decreasing float64 times from ``t_start`` to ``t_end``: pass as
        ``sample(..., timesteps=grid.timesteps, **grid.sampler_options)``.
    lams : numpy.ndarray
        The half log-SNR at ``timesteps``.
    config : dict
        The sampler configuration it was optimised for (resolved ``sample()`` options, ``steps``, ``t_start``,
        ``t_end``); a grid is only claimed to be good for this configuration.
    label : str
        ``config`` in words, e.g. ``"unipc order=3 variant=bh2 use_corrector=True dpmsolver++ steps=10"``.
    errors : dict
        ``{"train" | "validation" | "test" | "holdout": {"rms", "median", "n"}}`` on the optimised grid (train: weighted
        estimates over the stratified training subset); per-state error is the Euclidean norm of
        ``x - x_ref``.
    initial_errors : dict
        The same on the initial grid.
    initial_skip_type : str
        The standard grid the optimisation started from.
    optimization_time_s : float
        Wall time of the optimisation proper (stratification, gradient iterations, final evaluation on the
        training subset); excludes the reference solves.
    reference_time_s : float
        Wall time spent computing references (0 when they were given).
    n_iterations : int
        Objective evaluations of all descents (each a forward and backward pass over a training subset).
    objective_history : list of float
        Weighted RMS error after each evaluation of the chosen descent (inf: a trial grid that blew up).
    strata : list of dict
        Per stratum: ``lo``, ``hi`` (cheap-error bounds), ``size`` (in the pool), ``selected``, ``weight``.
    starts : list of dict
        Per descent: its initial grid, whether it learned model times, validation RMS, number of evaluations and
        why it stopped (``"max_iter"``, ``"max_time"`` or ``"no_progress"``).
    model_timesteps : numpy.ndarray or None
        With ``shift_model_times``: the ``steps`` times at which the model is queried at the grid points
        ``timesteps[:-1]`` (``sample(..., model_timesteps=...)``); None without it, or when a grid-only descent
        had the smallest validation RMS.
    """

    timesteps: np.ndarray
    lams: np.ndarray
    config: dict
    label: str
    errors: dict
    initial_errors: dict
    initial_skip_type: str
    optimization_time_s: float
    reference_time_s: float
    n_iterations: int
    objective_history: list = field(default_factory=list)
    strata: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    model_timesteps: np.ndarray | None = None

    @property
    def sampler_options(self) -> dict:
        """The ``sample()`` options of :attr:`config` (without ``steps``, ``t_start``, ``t_end``; for a grid of a
        ``solver=`` object, without the solver options, which the object carries: pass it again)."""
        keys = [k for k in _CONFIG_KEYS if "solver" not in self.config or k not in _SOLVER_OPTIONS]
        return {k: v for k, v in self.config.items() if k in keys and v is not None}

    @property
    def sample_kwargs(self) -> dict:
        """Everything ``sample()`` needs to run this grid: ``sample(model, schedule, x, **grid.sample_kwargs)``
        (``timesteps``, ``model_timesteps`` when learned, and :attr:`sampler_options`)."""
        out = dict(timesteps=self.timesteps, **self.sampler_options)
        if self.model_timesteps is not None:
            out["model_timesteps"] = self.model_timesteps
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        out = asdict(self)
        for key in ("timesteps", "lams", "model_timesteps"):
            out[key] = None if out[key] is None else np.asarray(out[key]).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "OptimizedGrid":
        data = dict(data)
        for key in ("timesteps", "lams", "model_timesteps"):
            if data.get(key) is not None:
                data[key] = np.asarray(data[key], dtype=np.float64)
        return cls(**data)


def config_label(options: dict) -> str:
    """A short label of a sampler configuration: the keys of ``sample()`` that select the solver, and those of
    :data:`_LABEL_IF_NOT_DEFAULT` when they differ from their defaults (a grid optimised with
    ``denoise_to_zero=True`` or for an ``x_start`` model is named as such)."""
    parts = [str(options.get("method") if options.get("method") is not None else options.get("solver"))]
    for key in ("order", "variant", "use_corrector", "solver_type", "algorithm_type", "lower_order_final",
                "compat"):
        if options.get(key) is not None and not (key == "solver_type" and options.get("method") == "unipc"):
            parts.append(f"{key}={options[key]}")
    for key, default in _LABEL_IF_NOT_DEFAULT.items():
        if options.get(key) not in (None, default):
            parts.append(f"{key}={options[key]}")
    if options.get("steps") is not None:
        parts.append(f"steps={options['steps']}")
    return " ".join(parts)


def grid_error(x, ref, weights=None) -> dict:
    """``{"rms", "median", "n"}`` of the per-state Euclidean errors ``|x_i - ref_i|`` (weighted when given)."""
    e = (x - ref).reshape(x.shape[0], -1).norm(dim=1).detach().to(torch.float64).cpu().numpy()
    if weights is None:
        return dict(rms=float(np.sqrt(np.mean(e**2))), median=float(np.median(e)), n=int(e.shape[0]))
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(e)
    cum = np.cumsum(w[order]) / w.sum()
    return dict(rms=float(np.sqrt(np.sum(w * e**2) / w.sum())),
                median=float(e[order][np.searchsorted(cum, 0.5)]), n=int(e.shape[0]))


def _lams(theta: torch.Tensor, lam_start: float, lam_end: float) -> list:
    """``[lam_0, ..., lam_N]`` (0-dim float64 tensors) from the free parameters: see the module docstring."""
    inner = lam_start + (lam_end - lam_start) * torch.cumsum(torch.softmax(theta, 0), 0)[:-1]
    start = torch.tensor(lam_start, dtype=torch.float64)
    end = torch.tensor(lam_end, dtype=torch.float64)
    return [start] + list(inner.unbind(0)) + [end]


def _grid_and_model_lams(params: torch.Tensor, steps: int, lam_start: float, lam_end: float, model_lam_range):
    """The grid's ``lam`` (:func:`_lams` of ``params[:steps]``) and, for ``2 * steps`` parameters (decoupled model
    times), the model's ``lam_i + d_i`` at the first ``steps`` grid points, ``d = params[steps:]``, clamped to
    ``model_lam_range = (lo, hi)`` (the schedule's range); None for ``steps`` parameters."""
    lams = _lams(params[:steps], lam_start, lam_end)
    if len(params) == steps:
        return lams, None
    lo, hi = model_lam_range
    return lams, [torch.clamp(lams[i] + params[steps + i], lo, hi) for i in range(steps)]


def optimize_timesteps(model, schedule, x_train, *, steps, t_start, t_end, x_test=None, x_holdout=None,
                       ref_train=None, ref_test=None, ref_holdout=None, n_train=256, strata=(0.5, 0.8, 0.95),
                       min_per_stratum=16, init="best", max_iter=200, max_time=45.0, split=(0.2, 0.2), seed=0,
                       reference_tol=1e-9, error_cap=0.3, n_validation=4096, n_starts=3, shift_model_times=False,
                       verbose=False, **sampler_options) -> OptimizedGrid:
    """Optimise the time grid of one sampler configuration on training states (see the module docstring).

    Minimises the weighted mean squared error ``sum_i w_i |x_i(grid) - x_ref_i|^2`` over the stratified training
    subset (weights sum to one: an unbiased estimate of the pool's mean squared error) with L-BFGS (strong Wolfe
    line search) on the softmax parametrisation of the ``lam`` increments, end points fixed, autograd through the
    float64 solver. Returns the best grid seen.

    Parameters
    ----------
    model : callable
        ``model(x, t)`` as for :func:`expsolver.sample`.
    schedule : VPSchedule
    x_train : torch.Tensor, shape (pool, *dims)
        The pool of states at ``t_start`` from which the training subset is drawn (thousands: it must fill every
        stratum). When ``x_test`` / ``x_holdout`` are not given, fractions ``split`` of the pool are set aside
        for them first (seeded random split).
    steps : int
        Number of grid intervals (``>= 1``; for the one-NFE-per-step methods, the NFE).
    t_start, t_end : float
        The fixed end points, ``t_end < t_start``.
    x_test, x_holdout : torch.Tensor, optional
        Independent evaluation states (never used in the optimisation).
    ref_train, ref_test, ref_holdout : torch.Tensor, optional
        Reference end states of ``x_train`` (the whole pool), ``x_test``, ``x_holdout``; computed with
        :func:`expsolver.reference_solve` (DOP853 in ``lam``, ``rtol = atol = reference_tol``) when not given.
        Must be given for models that are not continuous-time noise predictions.
    n_train : int
        Size of the training subset.
    strata : tuple of float
        Increasing quantiles in (0, 1) of the cheap error that bound the strata.
    min_per_stratum : int
        Smallest number of training states drawn from a stratum.
    init : "best", a skip type or a sequence of times
        Initial grid: the standard grid (``logSNR``, ``time_uniform``, ``time_quadratic``, ``karras``) with the
        smallest pool error for this configuration, a named one, or an explicit grid.
    max_iter : int
        Largest number of objective evaluations per descent.
    max_time : float or None
        Wall-time budget of all descents together in seconds (shared equally by the remaining starts); None: no
        wall-time limit, the descents stop on ``max_iter`` (or when L-BFGS makes no progress) only, so the result
        does not depend on the machine's speed or load.
    split : (float, float)
        Fractions of the pool set aside as test and holdout when those are not given.
    seed : int
        Seed of the split and the stratified draw.
    reference_tol : float
    error_cap : float or None
        Per-state error at which the objective's squared error is capped (``min(|e|, cap)^2``; None: no cap).
        States that end in the wrong mode have errors of the order of the distance between modes, and the
        sample mean of their squared errors changes by jumps as the grid moves, a noisy signal that the
        optimiser would otherwise fit; capping keeps their (constant) share and the gradient of everything
        else. 0.3 is about twice the width of the narrowest mode of the standard 2-D target.
    n_validation : int
        Pool states set aside (never trained on) on which the plain RMS of every L-BFGS iterate is measured;
        the iterate with the smallest validation RMS is returned (early stopping; 0: the best objective).
    n_starts : int
        Independent descents (from the best, second-best, ... standard grid, each with its own stratified
        training subset) within ``max_time``; the one with the smallest validation RMS wins.
    shift_model_times : bool
        Also learn the time at which the model is queried at each grid point but the last (decoupled model
        times, ``sample(..., model_timesteps=...)``): ``lam_i + d_i``, ``d`` free (from 0), clamped to the
        schedule's range; ``steps`` more parameters. Only for ``method`` "multistep" or "unipc". The result is a
        sampler tuned to this problem, no longer a consistent discretisation of the ODE (see the module
        docstring).
    verbose : bool
        Print the objective as it goes.
    **sampler_options
        Options of :func:`expsolver.sample` that select the solver (``method``, ``order``, ``algorithm_type``,
        ``solver_type``, ``lower_order_final``, ``variant``, ``use_corrector``, ``compat``, ``denoise_to_zero``,
        ``model_type``, ``time_input``), validated by ``sample()`` itself. ``method`` must be one of
        :data:`OPTIMIZABLE_METHODS` (adaptive methods choose their own grid; DEIS interpolates in ``t``, which
        this differentiable path does not model; stochastic samplers are excluded). Or ``solver=obj``, any
        object of the solver protocol whose ``step`` is written with differentiable arithmetic on the step times
        (the built-in DPM-Solver and UniPC rules are; :file:`examples/custom_solver.py` shows a user's own): the
        grid's times reach it as 0-dim tensors in ``lam``. The returned grid runs with
        ``sample(..., solver=obj, **grid.sample_kwargs)``.

    Returns
    -------
    OptimizedGrid
        Its ``timesteps`` pass :func:`expsolver.check_grid`; ``config``/``label`` name the configuration.

    Raises
    ------
    TypeError
        Unknown sampler option (from ``sample()``), wrong argument types.
    ValueError
        ``steps < 1`` (or ``< order`` for multistep methods), a pool too small for the strata and ``n_train``,
        invalid sampler options, an unsupported method, ``timesteps``/``skip_type`` among the sampler options
        (this function chooses the grid), mismatched reference shapes.
    """
    max_iter, n_starts = check_int(max_iter, "max_iter", minimum=1), check_int(n_starts, "n_starts", minimum=1)
    max_time = math.inf if max_time is None else check_positive_float(max_time, "max_time")
    reference_tol = check_positive_float(reference_tol, "reference_tol")
    verbose = check_bool(verbose, "verbose")
    error_cap = None if error_cap is None else check_positive_float(error_cap, "error_cap")
    n_validation = check_int(n_validation, "n_validation", minimum=0)
    options, probe_solver, init_grids, split_states = _check_arguments(
        model, schedule, x_train, steps, t_start, t_end, x_test, x_holdout, ref_train, ref_test, ref_holdout, n_train,
        strata, min_per_stratum, init, split, seed, shift_model_times, sampler_options)
    strata = tuple(float(q) for q in strata)
    t0 = time.perf_counter()
    refs = _references(model, schedule, split_states, t_start, t_end, options, sampler_options, reference_tol)
    reference_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = _GridFit(model, schedule, steps, t_start, t_end, split_states[0][1], refs["pool"], n_train,
                   min_per_stratum, strata, n_validation, seed, shift_model_times, options, probe_solver,
                   sampler_options)
    init_errors = {name: fit.fitpool_errors(ts) for name, ts in init_grids.items()}
    ranked = sorted(init_errors, key=lambda k: float(np.mean(init_errors[k] ** 2)))
    starts = _run_descents(fit, init_grids, init_errors, ranked, n_train, min_per_stratum, n_starts, max_iter,
                           max_time, error_cap, verbose)
    return _report(fit, starts, init_grids, split_states, refs, options, sampler_options, steps, t_start, t_end,
                   shift_model_times, t0, reference_time)


def _check_arguments(model, schedule, x_train, steps, t_start, t_end, x_test, x_holdout, ref_train, ref_test,
                     ref_holdout, n_train, strata, min_per_stratum, init, split, seed, shift_model_times,
                     sampler_options):
    """Validate the arguments of :func:`optimize_timesteps`, split off the test and holdout states and probe the
    sampler options with ``sample()`` itself. Returns ``(options, solver, init_grids, split_states)`` with
    ``split_states = [(name, states, given references)]`` for the pool, test and holdout."""
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    steps = check_int(steps, "steps", minimum=1)
    t_start = schedule.check_time(t_start, "t_start")
    t_end = schedule.check_time(t_end, "t_end")
    if not t_end < t_start:
        raise ValueError(f"t_end must be < t_start, got t_start={t_start!r}, t_end={t_end!r}")
    for key in ("timesteps", "skip_type", "steps", "return_intermediates", "check_finite", "generator", "noise"):
        if key in sampler_options:
            raise ValueError(f"{key} cannot be a sampler option of optimize_timesteps (it chooses the grid and "
                             f"runs the sampler itself); got {key}={sampler_options[key]!r}")
    method = sampler_options.get("method", None if "solver" in sampler_options else "multistep")
    if method is not None and method not in OPTIMIZABLE_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, OPTIMIZABLE_METHODS))} for "
                         f"optimize_timesteps; got {method!r}")
    if str(sampler_options.get("algorithm_type", "dpmsolver++")).startswith("sde-"):
        raise ValueError(f"stochastic samplers cannot be optimised, got algorithm_type="
                         f"{sampler_options['algorithm_type']!r}")
    x_train = check_state(x_train, "x_train")
    n_train = check_int(n_train, "n_train", minimum=2)
    min_per_stratum = check_int(min_per_stratum, "min_per_stratum", minimum=1)
    check_int(seed, "seed")
    if check_bool(shift_model_times, "shift_model_times") and method not in _SHIFTABLE_METHODS + (None,):
        raise ValueError(f"shift_model_times=True needs a method that calls the model once per grid point "
                         f"({', '.join(map(repr, _SHIFTABLE_METHODS))}), got method={method!r}")
    strata = tuple(float(q) for q in strata)
    if not strata or any(not 0.0 < q < 1.0 for q in strata) or any(np.diff(strata) <= 0):
        raise ValueError(f"strata must be increasing quantiles in (0, 1), got {strata!r}")
    if min_per_stratum * (len(strata) + 1) > n_train:
        raise ValueError(f"n_train={n_train} cannot give min_per_stratum={min_per_stratum} states to each of "
                         f"{len(strata) + 1} strata")
    split_states = _split_off(x_train, x_test, x_holdout, ref_train, ref_test, ref_holdout, split, seed)
    # Validate the sampler options with the real driver (and learn the plan's orders) on the initial grid.
    init_grids = _initial_grids(schedule, init, t_start, t_end, steps)
    x_pool = split_states[0][1]
    probe = sample(model, schedule, x_pool[:1], timesteps=next(iter(init_grids.values())), **sampler_options)
    if shift_model_times and method is None and probe.solver.nfe(probe.solver.steps_order) != 1:
        raise ValueError(f"shift_model_times=True needs a solver that calls the model once per step, got "
                         f"{probe.solver!r}")
    options = dict(probe.options, orders=list(probe.orders))  # resolved and validated (including steps >= order)
    min_pool = int(math.ceil(min_per_stratum / (1.0 - strata[-1])))
    if x_pool.shape[0] < max(n_train, min_pool):
        raise ValueError(f"the training pool has {x_pool.shape[0]} states; the strata {strata!r} with "
                         f"min_per_stratum={min_per_stratum} and n_train={n_train} need at least "
                         f"{max(n_train, min_pool)}")
    return options, probe.solver, init_grids, split_states


def _split_off(x_pool, x_test, x_holdout, ref_pool, ref_test, ref_holdout, split, seed) -> list:
    """``[("pool", x, ref), ("test", x, ref), ("holdout", x, ref)]``: test and holdout as given, or fractions
    ``split`` of the pool set aside by a seeded permutation."""
    gen = torch.Generator().manual_seed(seed)
    if ref_pool is not None and ref_pool.shape != x_pool.shape:
        raise ValueError(f"ref_train must have the shape of x_train {tuple(x_pool.shape)}, got {tuple(ref_pool.shape)}")
    if (x_test is None) != (x_holdout is None):
        raise ValueError("give both x_test and x_holdout, or neither (then they are split off x_train)")
    if x_test is None:
        if ref_test is not None or ref_holdout is not None:
            raise ValueError("ref_test / ref_holdout were given without x_test / x_holdout")
        f_test, f_hold = (float(v) for v in split)
        if not (0 < f_test and 0 < f_hold and f_test + f_hold < 1):
            raise ValueError(f"split must be two positive fractions with sum < 1, got {split!r}")
        perm = torch.randperm(x_pool.shape[0], generator=gen)
        n_test, n_hold = int(f_test * len(perm)), int(f_hold * len(perm))
        idx_test, idx_hold, idx_fit = perm[:n_test], perm[n_test:n_test + n_hold], perm[n_test + n_hold:]
        x_test, x_holdout, x_pool = x_pool[idx_test], x_pool[idx_hold], x_pool[idx_fit]
        if ref_pool is not None:
            ref_test, ref_holdout, ref_pool = ref_pool[idx_test], ref_pool[idx_hold], ref_pool[idx_fit]
    x_test, x_holdout = check_state(x_test, "x_test"), check_state(x_holdout, "x_holdout")
    for name, xs, refs in (("ref_test", x_test, ref_test), ("ref_holdout", x_holdout, ref_holdout)):
        if refs is not None and refs.shape != xs.shape:
            raise ValueError(f"{name} must have shape {tuple(xs.shape)}, got {tuple(refs.shape)}")
    return [("pool", x_pool, ref_pool), ("test", x_test, ref_test), ("holdout", x_holdout, ref_holdout)]


def _references(model, schedule, split_states, t_start, t_end, options, sampler_options, reference_tol) -> dict:
    """Float64 reference end states of the pool, test and holdout states (given, or by DOP853 in ``lam``): the one
    expensive, configuration-independent part (pass them in to reuse across grids)."""
    refs = {}
    for name, xs, given in split_states:
        if given is None:
            if options.get("model_type", "noise") != "noise" or sampler_options.get("time_input", "continuous") != "continuous":
                raise ValueError("references must be given (ref_train, ref_test, ref_holdout) for a model that is not "
                                 "a continuous-time noise prediction")
            result = reference_solve(model, schedule, xs, t_start, t_end, rtol=reference_tol, atol=reference_tol)
            if not result.success:
                raise RuntimeError(f"the reference solve of the {name} states failed: {result.message}")
            given = result.x
        refs[name] = given.to(torch.float64)
    return refs


class _GridFit:
    """What the descents share: the validation and fitting states of the pool, the parametrisation of the grid
    (and model times) in ``lam``, the differentiable solve and the plain ``sample()`` runs that score a grid."""

    def __init__(self, model, schedule, steps, t_start, t_end, x_pool, ref_pool, n_train, min_per_stratum, strata,
                 n_validation, seed, shift_model_times, options, solver, sampler_options):
        self.model, self.schedule, self.steps = model, schedule, steps
        self.options, self.solver, self.sampler_options = options, solver, sampler_options
        # Validation states first (never trained on), then the fitting pool.
        pool64 = x_pool.to(torch.float64)
        self.rng = np.random.default_rng(seed)
        perm = self.rng.permutation(len(pool64))
        min_pool = int(math.ceil(min_per_stratum / (1.0 - strata[-1])))
        n_val = min(n_validation, len(pool64) - max(n_train, min_pool))
        val_idx, fit_idx = perm[:max(n_val, 0)], perm[max(n_val, 0):]
        self.x_val, self.ref_val = pool64[val_idx], ref_pool[val_idx]
        self.x_fitpool, self.ref_fitpool = pool64[fit_idx], ref_pool[fit_idx]
        self.lam_start, self.lam_end = float(schedule.lam(t_start)), float(schedule.lam(t_end))
        self.model_lam_range = ((float(schedule.lam(schedule.T)), float(schedule.lam(schedule.t_min)))
                                if shift_model_times else None)
        self.endpoints = {self.lam_start: t_start, self.lam_end: t_end}
        self.strata = strata

    def run(self, xs, ts, model_ts=None):
        """The plain ``sample()`` on the grid ``ts`` (the numbers a user gets)."""
        return sample(self.model, self.schedule, xs, timesteps=ts, model_timesteps=model_ts, **self.sampler_options).x

    def fitpool_errors(self, ts) -> np.ndarray:
        """Per-state errors on the fitting pool of the plain grid ``ts`` (what the strata are drawn from)."""
        return (self.run(self.x_fitpool, ts) - self.ref_fitpool).reshape(len(self.x_fitpool), -1).norm(dim=1).numpy()

    def _to_time(self, lam: float) -> float:
        t = self.endpoints.get(lam)
        schedule = self.schedule
        return min(max(schedule.lam_inverse_float(lam), schedule.t_min), schedule.T) if t is None else t

    def grids_of(self, params):
        """The float64 grid and model times (None for grid-only parameters) of the parameters."""
        lams, model_lams = _grid_and_model_lams(params.detach(), self.steps, self.lam_start, self.lam_end,
                                                self.model_lam_range)
        ts = np.array([self._to_time(float(v)) for v in lams])
        return ts, None if model_lams is None else np.array([self._to_time(float(v)) for v in model_lams])

    def validate(self, params) -> float:
        """Plain RMS error on the validation states of the grid of ``params`` (NaN without validation states)."""
        if len(self.x_val) == 0:
            return math.nan
        ts, model_ts = self.grids_of(params)
        try:
            ts = check_grid(self.schedule, ts)
        except ValueError:
            return math.inf  # points collapsed in float64
        return grid_error(self.run(self.x_val, ts, model_ts), self.ref_val)["rms"]

    def solve(self, params, x):
        """The differentiable solve of ``x`` on the grid of ``params``."""
        lams, model_lams = _grid_and_model_lams(params, self.steps, self.lam_start, self.lam_end,
                                                self.model_lam_range)
        return solve_on_lams(self.model, self.schedule, x, lams, self.options["orders"], self.options,
                             self.endpoints, self.sampler_options.get("time_input", "continuous"), model_lams,
                             solver=self.solver)

    def theta_of(self, ts) -> torch.Tensor:
        """The grid-only parameters of the grid ``ts``."""
        lams = self.schedule.lams_of(ts)
        return torch.tensor(np.log(np.diff(lams) / (self.lam_end - self.lam_start)), dtype=torch.float64)


def _run_descents(fit, init_grids, init_errors, ranked, n_train, min_per_stratum, n_starts, max_iter, max_time,
                  error_cap, verbose) -> list:
    """The grid descents from the best-ranked initial grids and, with decoupled model times, one joint descent from
    their best grid (they get half of ``max_time``, it the rest). Returns one dict per descent."""
    shift = fit.model_lam_range is not None
    score = (lambda r: r["val_rms"]) if len(fit.x_val) > 0 else (lambda r: r["objective"])  # noqa: E731
    starts, t_iter = [], time.perf_counter()
    grid_time = max_time / 2 if shift else max_time
    for i in range(n_starts):
        if i and time.perf_counter() - t_iter >= grid_time:
            break
        init_name = ranked[i % len(ranked)]
        subset = _stratified_subset(init_errors[init_name], fit.strata, n_train, min_per_stratum, fit.rng)
        budget = (grid_time - (time.perf_counter() - t_iter)) / (n_starts - i)
        run_i = _descend(fit.theta_of(init_grids[init_name]), fit.solve, fit.x_fitpool[subset[0]],
                         fit.ref_fitpool[subset[0]], subset[1], error_cap, fit.validate, max_iter, budget, verbose)
        starts.append(dict(init=init_name, subset=subset, **run_i))
    if shift:
        # Grid and model times together, from the best grid (model times = grid times), on a training subset
        # stratified by that grid's errors (its tail is where the grid still fails).
        grid_best = min(starts, key=score)
        params0 = torch.cat([grid_best["theta"], torch.zeros(fit.steps, dtype=torch.float64)])
        subset = _stratified_subset(fit.fitpool_errors(fit.grids_of(grid_best["theta"])[0]), fit.strata, n_train,
                                    min_per_stratum, fit.rng)
        run_i = _descend(params0, fit.solve, fit.x_fitpool[subset[0]], fit.ref_fitpool[subset[0]], subset[1],
                         error_cap, fit.validate, max_iter, max(max_time - (time.perf_counter() - t_iter), 0.0),
                         verbose)
        starts.append(dict(init=grid_best["init"], subset=subset, **run_i))
    for run_i in starts:
        run_i["score"] = score(run_i)
    return starts


def _report(fit, starts, init_grids, split_states, refs, options, sampler_options, steps, t_start, t_end,
            shift_model_times, t0, reference_time) -> OptimizedGrid:
    """The best descent's grid with its errors (train, validation, test, holdout) and the initial grid's."""
    best_start = min(starts, key=lambda r: r["score"])
    ts_opt, model_ts = fit.grids_of(best_start["theta"])
    ts_opt = check_grid(fit.schedule, ts_opt)
    init_name, (chosen, w_np, strata_info) = best_start["init"], best_start["subset"]
    init_ts = init_grids[init_name]
    x_fit, ref_fit = fit.x_fitpool[chosen], fit.ref_fitpool[chosen]
    errors = {"train": grid_error(fit.run(x_fit, ts_opt, model_ts), ref_fit, w_np)}
    initial = {"train": grid_error(fit.run(x_fit, init_ts), ref_fit, w_np)}
    if len(fit.x_val) > 0:
        errors["validation"] = dict(grid_error(fit.run(fit.x_val, ts_opt, model_ts), fit.ref_val))
        initial["validation"] = dict(grid_error(fit.run(fit.x_val, init_ts), fit.ref_val))
    optimization_time = time.perf_counter() - t0
    for name, xs, _ in split_states[1:]:
        xs64 = xs.to(torch.float64)
        errors[name] = grid_error(fit.run(xs64, ts_opt, model_ts), refs[name])
        initial[name] = grid_error(fit.run(xs64, init_ts), refs[name])
    config = {k: options.get(k) for k in _CONFIG_KEYS if k in options}
    if options.get("method") is None:
        config["solver"] = options["solver"]
    config.update(steps=steps, t_start=t_start, t_end=t_end, time_input=sampler_options.get("time_input", "continuous"),
                  shift_model_times=shift_model_times)
    return OptimizedGrid(timesteps=ts_opt, lams=fit.schedule.lams_of(ts_opt), model_timesteps=model_ts,
                         config=config, label=config_label(config),
                         errors=errors, initial_errors=initial, initial_skip_type=init_name,
                         optimization_time_s=optimization_time, reference_time_s=reference_time,
                         n_iterations=sum(len(r["history"]) for r in starts),
                         objective_history=best_start["history"], strata=strata_info,
                         starts=[dict(init=r["init"], model_times=len(r["theta"]) > steps, val_rms=r["val_rms"],
                                      evaluations=len(r["history"]), stopped=r["stopped"]) for r in starts])


def _stratified_subset(e0, strata, n_train, min_per_stratum, rng):
    """Stratify states by their cheap errors ``e0`` at the quantiles ``strata``, draw ``n_train`` of them by
    Neyman allocation and weight each by ``(stratum size / pool size) / (number drawn from its stratum)``.
    Returns ``(indices, weights, strata_info)``."""
    edges = np.quantile(e0, strata)
    labels = np.searchsorted(edges, e0, side="left")
    sizes = np.array([(labels == k).sum() for k in range(len(strata) + 1)])
    spread = np.array([np.std(e0[labels == k] ** 2) if sizes[k] > 1 else 0.0 for k in range(len(sizes))])
    alloc = _allocate(n_train, sizes, spread, min_per_stratum)
    chosen, weights, info = [], [], []
    bounds = np.concatenate([[0.0], edges, [np.inf]])
    for k, n_k in enumerate(alloc):
        members = np.flatnonzero(labels == k)
        w = (len(members) / len(e0)) / n_k
        chosen.append(rng.choice(members, size=n_k, replace=False))
        weights.append(np.full(n_k, w))
        info.append(dict(lo=float(bounds[k]), hi=float(bounds[k + 1]), size=int(len(members)), selected=int(n_k),
                         weight=float(w)))
    return np.concatenate(chosen), np.concatenate(weights), info


def _descend(theta0, solve, x_fit, ref_fit, w_np, error_cap, validate, max_iter, max_time, verbose) -> dict:
    """L-BFGS (strong Wolfe) on ``log(sum_i w_i min(|e_i|, cap)^2)`` from ``theta0``; every iterate is scored by
    ``validate`` and the best-scoring one (the initial one included) is returned with its score."""
    w_fit = torch.as_tensor(w_np, dtype=torch.float64)
    theta = theta0.clone().requires_grad_(True)
    history, best = [], [math.inf, theta0.clone()]  # best objective and its parameters
    chosen_val = [validate(theta0), theta0.clone()]  # best validation RMS and its parameters

    def closure():
        optimizer.zero_grad()
        try:
            x = solve(theta, x_fit)
            sq = ((x - ref_fit) ** 2).reshape(len(x), -1).sum(1)
            mse = torch.sum(w_fit * sq)
            objective = mse if error_cap is None else torch.sum(w_fit * torch.clamp(sq, max=error_cap**2))
            loss = torch.log(objective)
            finite = bool(torch.isfinite(loss))
        except ValueError:  # the model or a check met a non-finite state: this trial grid blew up
            finite = False
        if not finite:
            # A large finite value makes the line search backtrack instead of failing.
            history.append(math.inf)
            theta.grad = torch.zeros_like(theta)
            return torch.tensor(_BLOWUP_LOSS, dtype=torch.float64)
        loss.backward()
        history.append(math.sqrt(float(mse.detach())))
        if float(objective.detach()) < best[0]:
            best[0], best[1] = float(objective.detach()), theta.detach().clone()
        if verbose:
            print(f"  eval {len(history):4d}  weighted RMS {history[-1]:.5g}")
        return loss

    def new_optimizer():
        return torch.optim.LBFGS([theta], lr=1.0, max_iter=10, history_size=20, tolerance_grad=1e-10,
                                 tolerance_change=1e-12, line_search_fn="strong_wolfe")

    optimizer, restarts, stopped = new_optimizer(), 0, "max_iter"
    t0 = time.perf_counter()
    while len(history) < max_iter:
        if time.perf_counter() - t0 >= max_time:
            stopped = "max_time"
            break
        n_before = len(history)
        optimizer.step(closure)
        for candidate in (theta.detach().clone(), best[1]):
            v = validate(candidate)
            if v < chosen_val[0] or math.isnan(chosen_val[0]):
                chosen_val[0], chosen_val[1] = v, candidate.clone()
        if len(history) <= n_before + 1:
            # L-BFGS stopped after one evaluation (its line search found no decrease on this piecewise-smooth
            # objective): restart it from the best point with an empty memory, at most twice.
            if restarts == _MAX_RESTARTS:
                stopped = "no_progress"
                break
            restarts += 1
            with torch.no_grad():
                theta.copy_(best[1])
            optimizer = new_optimizer()
    use_validation = not math.isnan(chosen_val[0])
    return dict(theta=chosen_val[1] if use_validation else best[1], val_rms=chosen_val[0], objective=best[0],
                history=history, stopped=stopped)


def solve_on_lams(model, schedule, x, lams, orders, options, endpoints, time_input="continuous", model_lams=None,
                  solver=None):
    """Run the sampler of ``options`` (resolved ``sample()`` options) on the grid ``lams`` (a list of 0-dim
    float64 tensors, increasing), differentiably: the same step rules and loop as :func:`expsolver.sample`.

    ``orders[i]`` is the order of step ``i`` (as ``sample()`` plans it); ``endpoints`` maps the float value of the
    fixed end points' ``lam`` to their exact times; ``model_lams[i]`` (optional, 0-dim tensors) is the ``lam`` at
    which the model is queried at grid point ``i`` (decoupled model times); ``solver`` the solver object (default:
    the one ``options`` name). Returns the final state (with ``denoise_to_zero``, the data prediction there);
    gradients flow to every ``lam_i`` that requires them.
    """
    wrapper = ModelWrapper(model, schedule, model_type=options.get("model_type", "noise"), time_input=time_input,
                           check_finite=False)
    query_lams = None if model_lams is None else {float(lams[i].detach()): q for i, q in enumerate(model_lams)}

    def time_of_lam(lam: float) -> float:  # the end points at their exact times
        t = endpoints.get(lam)
        return schedule.lam_inverse_float(lam) if t is None else t

    problem = LamDiffusionODE(schedule, wrapper, PREDICTION_OF[options["algorithm_type"]], query_lams, time_of_lam)
    if solver is None:
        solver, _ = solver_from_options(options["method"], options["order"], options["solver_type"],
                                        compat=options["compat"], variant=options.get("variant"),
                                        use_corrector=options.get("use_corrector"))
    plan = [Step(i, lams[i], lams[i + 1], orders[i]) for i in range(len(lams) - 1)]
    with torch.enable_grad():
        x = integrate(problem, solver, x, plan, check_finite=False).x
        if options["denoise_to_zero"]:
            x = problem.data_at(x, float(lams[-1]))
    return x


def _initial_grids(schedule, init, t_start, t_end, steps) -> dict:
    if isinstance(init, str) and init == "best":
        return {name: time_grid(schedule, name, t_start, t_end, steps) for name in SKIP_TYPES}
    if isinstance(init, str):
        if init not in SKIP_TYPES:
            raise ValueError(f"init must be 'best', one of {', '.join(map(repr, SKIP_TYPES))} or a grid; got {init!r}")
        return {init: time_grid(schedule, init, t_start, t_end, steps)}
    ts = check_grid(schedule, init, "init")
    if len(ts) != steps + 1 or abs(ts[0] - t_start) > 1e-12 or abs(ts[-1] - t_end) > 1e-12:
        raise ValueError(f"init must have steps + 1 = {steps + 1} times from t_start to t_end, got {len(ts)} times "
                         f"from {ts[0]!r} to {ts[-1]!r}")
    ts[0], ts[-1] = t_start, t_end
    return {"given": ts}


def _allocate(n_train, sizes, spread, minimum) -> list:
    """Neyman allocation ``n_k ~ size_k * spread_k``, at least ``minimum`` and at most ``size_k`` per stratum,
    summing to ``n_train`` (water-filling; largest remainders)."""
    sizes = np.asarray(sizes, dtype=int)
    if np.any(sizes < minimum) or sizes.sum() < n_train:
        raise ValueError(f"the pool's strata have sizes {sizes.tolist()}: each needs >= {minimum} states and "
                         f"together >= n_train={n_train}; pass a larger x_train pool or a smaller n_train")
    score = np.asarray(sizes * spread, dtype=np.float64)
    if score.sum() <= 0:
        score = sizes.astype(np.float64)
    alloc = np.full(len(sizes), minimum, dtype=int)
    while alloc.sum() < n_train:
        open_ = alloc < sizes
        free = n_train - alloc.sum()
        weights = np.where(open_, score, 0.0)
        if weights.sum() <= 0:
            weights = open_.astype(np.float64)
        raw = np.minimum(free * weights / weights.sum(), sizes - alloc)
        add = np.floor(raw).astype(int)
        if add.sum() == 0:  # hand out single states by largest remainder
            add[np.argmax(np.where(open_, raw, -1.0))] = 1
        alloc += add
    return [int(a) for a in alloc]
