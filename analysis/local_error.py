"""Local-error study: one step of size ``h`` from the exact state, for a geometric range of ``h``.

For a solver configuration (any :data:`expsolver.REGISTRY` entry), a target, a schedule and a starting half
log-SNR ``lam_s``:

1. draw ``x`` from the exact marginal ``q_{t_start}`` (fixed seed) and integrate the probability-flow ODE with a
   high-accuracy reference (SciPy DOP853, rtol = atol = 1e-12, in ``lam``) through every time needed, once for
   all solvers: ``lam_s``, ``lam_s + h`` and, for multistep rules, the history points ``lam_s - j h``;
2. take one step ``lam_s -> lam_s + h`` from the reference state ``x_ref(lam_s)`` with
   :func:`expsolver.convergence.local_order`: a multistep rule gets the *exact* history
   ``[(lam_s - j h, N(x_ref(lam_s - j h)))]`` (so its error is the local truncation error alone, not warm-up);
3. the per-sample error is ``||x_step - x_ref(lam_s + h)||_2`` (:func:`expsolver.convergence.sample_errors`); the
   statistics over samples are the median (the robust one used for the slope: samples near mode boundaries make
   RMS slopes erratic), the RMS and the 90th percentile;
4. the slope of log median error against log ``h`` is fitted by :func:`expsolver.convergence.fit_order` over its
   automatically chosen window; a solver of (global) order ``k`` should show ``k + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import REGISTRY
from expsolver.convergence import local_order
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE
from expsolver.sampling import PREDICTION_OF

from .order import OrderFit
from .results import cached_reference, provenance, result_type
from .targets import T_START

__all__ = ["LocalErrorCurve", "LocalErrorStudy", "local_error_study", "one_step_errors", "LAM_STARTS", "DEFAULT_HS",
           "PREDICTION_OF", "ALGORITHM_TYPES"]

#: Default starting points ``lam_s``: noisy, middle, near the data (linear schedule: lam runs -5.0 .. 4.6).
LAM_STARTS = (-2.0, 0.5, 3.0)
#: Default lambda steps: 13 values from 1e-2 to 1 (ratio 10^(1/6)).
DEFAULT_HS = tuple(float(v) for v in np.geomspace(1e-2, 1.0, 13))
#: The ODE algorithm types in the order every study and figure lists them (data prediction first).
ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver")
_DEFAULT_REFERENCE = dict(backend="scipy", method="DOP853", rtol=1e-12, atol=1e-12)


@result_type
@dataclass
class LocalErrorCurve:
    """Local errors of one solver configuration from one ``lam_s``.

    Attributes
    ----------
    solver : str
        Registry name.
    algorithm_type : {"dpmsolver++", "dpmsolver"}
    lam_s : float
    hs : numpy.ndarray
        Lambda step sizes actually taken.
    median, rms, p90 : numpy.ndarray
        Statistics over samples of the per-sample L2 error at ``lam_s + h``.
    fit : OrderFit
        Fit of ``log median`` against ``log h``.
    expected : int
        Expected local order, the registry's order + 1.
    """

    solver: str
    algorithm_type: str
    lam_s: float
    hs: np.ndarray
    median: np.ndarray
    rms: np.ndarray
    p90: np.ndarray
    fit: OrderFit
    expected: int


@result_type
@dataclass
class LocalErrorStudy:
    """All curves of a local-error study, with its configuration and provenance; ``skipped`` names the (solver,
    algorithm type, ``lam_s``) for which no step size keeps the step and its history inside the schedule's range."""

    target: str
    schedule: str
    n_samples: int
    seed: int
    dtype: str
    t_start: float
    lam_starts: list
    reference: dict
    curves: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def curve(self, solver: str, algorithm_type: str = "dpmsolver++", lam_s: float | None = None) -> LocalErrorCurve:
        """The curve of ``solver`` / ``algorithm_type`` at ``lam_s`` (default: the middle starting point)."""
        lam_s = self.lam_starts[len(self.lam_starts) // 2] if lam_s is None else lam_s
        for c in self.curves:
            if c.solver == solver and c.algorithm_type == algorithm_type and abs(c.lam_s - lam_s) < 1e-12:
                return c
        raise KeyError(f"no curve for solver={solver!r}, algorithm_type={algorithm_type!r}, lam_s={lam_s!r}")


def _history_length(rule) -> int:
    """Number of model values a rule uses: ``rule.steps_order`` for a multistep rule, 0 for a singlestep one."""
    return int(rule.steps_order) if rule.carries_history else 0


def _states_by_lam(problem, state_at):
    """``reference(times)`` of :func:`expsolver.convergence.local_order` from ``state_at(lam)``."""
    return lambda times: [state_at(problem.rho(t)) for t in times]


def _usable_steps(rule, lam_s: float, hs, lam_range) -> list:
    """The ``h`` whose step end and history stay inside the open interval ``lam_range``."""
    lam_lo, lam_hi = lam_range
    n_hist = _history_length(rule)
    return [float(h) for h in hs
            if lam_s + float(h) < lam_hi and not (n_hist > 1 and lam_s - (n_hist - 1) * float(h) <= lam_lo)]


def _nearest(states: dict):
    """``state_at(lam)`` of a dict keyed by ``lam``, matching to 1e-9 (a time's ``lam`` is recomputed)."""
    keys = np.array(sorted(states))

    def state_at(lam):
        i = int(np.argmin(np.abs(keys - lam)))
        if abs(keys[i] - lam) > 1e-9:
            raise KeyError(f"no reference state at lam={lam!r}")
        return states[float(keys[i])]

    return state_at


def one_step_errors(rule, problem, state_at, lam_s: float, hs, *, lam_range=(-math.inf, math.inf)
                    ) -> tuple[list, list]:
    """Per-sample errors of one step ``lam_s -> lam_s + h`` from the exact state, for every ``h`` in ``hs``, by
    :func:`expsolver.convergence.local_order`.

    ``state_at(lam)`` returns the reference states at ``lam`` (``lam_s``, ``lam_s + h`` and, for a multistep rule
    of order ``k``, ``lam_s - j h`` for ``j < k``). Steps whose end or history would leave the open interval
    ``lam_range`` are skipped.

    Returns ``(used_hs, errors)``: the steps taken and, per step, the numpy array of ``|x_step - x_ref(lam_s + h)|``.
    """
    used = _usable_steps(rule, lam_s, hs, lam_range)
    if not used:
        return [], []
    s = problem.t_of_rho(lam_s)
    result = local_order(problem, rule, state_at(lam_s), s, used, t_step=s,
                         reference=_states_by_lam(problem, state_at))
    return used, list(result.sample_errors)


def local_error_study(target, schedule, *, target_name: str = "target", solvers=None, algorithm_types=ALGORITHM_TYPES,
                      lam_starts=LAM_STARTS, hs=DEFAULT_HS, n_samples: int = 64, seed: int = 0,
                      t_start: float = T_START, reference: dict | None = None, cache_dir=None,
                      progress=None, x=None, floor: float | None = None, **kwargs) -> LocalErrorStudy:
    """Run the local-error study (module docstring) for the given solvers.

    Parameters
    ----------
    target : GaussianMixture
    schedule : VPSchedule
    target_name : str
        Recorded in the result.
    solvers : sequence of str, optional
        Registry names (default: the DPM-Solver family, the registry names starting with ``"DPM-Solver"``).
    algorithm_types : sequence of {"dpmsolver++", "dpmsolver"}
    lam_starts : sequence of float
        Starting half log-SNRs ``lam_s``.
    hs : sequence of float
        Lambda step sizes; those for which the history would start before ``t_start`` or the step would end past
        the schedule's ``t_min`` are dropped (per solver).
    n_samples, seed : int
        Samples drawn from ``q_{t_start}`` with ``torch.Generator().manual_seed(seed)``.
    t_start : float
    reference : dict, optional
        ``backend``, ``method``, ``rtol``, ``atol`` of the reference (default SciPy DOP853 at 1e-12).
    cache_dir : str, None or False
        Reference cache folder (see :func:`analysis.results.cached_reference`).
    progress : callable, optional
        Called with no argument after each (solver, algorithm type, lam_s) curve.
    x : torch.Tensor, optional
        Initial states at ``t_start`` instead of drawn ones (``n_samples`` and ``seed`` are then ignored).
    floor : float, optional
        Known error floor handed to :func:`analysis.order.fit_order` (points below 10 floor are not fitted).

    Returns
    -------
    LocalErrorStudy
    """
    if kwargs:
        raise TypeError(f"local_error_study() got unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    names = [n for n in REGISTRY if n.startswith("DPM-Solver")] if solvers is None else list(solvers)
    for name in names:
        if name not in REGISTRY:
            raise ValueError(f"solvers: unknown solver {name!r}; registered: {', '.join(REGISTRY)}")
    for a in algorithm_types:
        if a not in PREDICTION_OF:
            raise ValueError(f"algorithm_types: unknown {a!r}; allowed: {', '.join(PREDICTION_OF)}")
    ref_opts = dict(_DEFAULT_REFERENCE, **(reference or {}))
    hs = np.sort(np.asarray(hs, dtype=np.float64))
    if hs.ndim != 1 or hs.size == 0 or np.any(hs <= 0):
        raise ValueError(f"hs must be a non-empty 1-D sequence of positive step sizes, got {hs!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    dtype = torch.float64
    if x is None:
        x0 = target.sample(n_samples, generator=torch.Generator().manual_seed(seed), t=t_start, schedule=schedule,
                           dtype=dtype)
    else:
        x0 = x.to(dtype)
        n_samples = int(x0.shape[0])
    model = target.as_model(schedule)
    lam_lo = schedule.lam(t_start)
    lam_hi = schedule.lam(schedule.t_min) if hasattr(schedule, "t_min") else math.inf

    rules = {name: (REGISTRY[name], REGISTRY[name].make()) for name in names}
    max_hist = max([_history_length(r) for _, r in rules.values()] + [1])

    study = LocalErrorStudy(target=target_name, schedule=repr(schedule), n_samples=n_samples, seed=seed,
                            dtype=str(dtype), t_start=float(t_start), lam_starts=[float(v) for v in lam_starts],
                            reference=dict(ref_opts), provenance=provenance())
    ref_nfe = 0
    for lam_s in lam_starts:
        lam_s = float(lam_s)
        # Every lambda needed by any solver from this starting point; times from the exact inverse of lam.
        lams = {lam_s}
        for h in hs:
            if lam_s + h < lam_hi:
                lams.add(lam_s + h)
            for j in range(1, max_hist):
                if lam_s - j * h > lam_lo:
                    lams.add(lam_s - j * h)
        lam_list = sorted(lams)
        t_of = {lam: schedule.lam_inverse_float(lam) for lam in lam_list}
        ts = [t_of[lam] for lam in lam_list]  # decreasing in t
        if len(set(ts)) != len(ts):
            raise ValueError(f"hs produce coinciding times at lam_s={lam_s}; use fewer or more distinct steps")
        ref = cached_reference(target, schedule, x0, t_start, ts[-1], ts=[t_start] + ts, cache_dir=cache_dir,
                               **ref_opts)
        ref_nfe += ref["nfe"]
        states = {lam: ref["xs"][i + 1] for i, lam in enumerate(lam_list)}
        state_at = _nearest(states)
        for algorithm_type in algorithm_types:
            problem = DiffusionODE(schedule, ModelWrapper(model, schedule), PREDICTION_OF[algorithm_type])
            for name, (config, rule) in rules.items():
                used_h = np.array(_usable_steps(rule, lam_s, hs, (lam_lo, lam_hi)))
                if used_h.size == 0:
                    study.skipped[f"{name}|{algorithm_type}|{lam_s:g}"] = "no step size keeps the history in range"
                    continue
                result = local_order(problem, rule, states[lam_s], t_of[lam_s], used_h, t_step=t_of[lam_s],
                                     reference=_states_by_lam(problem, state_at), expected=config.order + 1,
                                     floor=floor, name=name)
                e = result.sample_errors
                study.curves.append(LocalErrorCurve(
                    solver=name, algorithm_type=algorithm_type, lam_s=lam_s, hs=used_h, median=result.errors,
                    rms=np.sqrt(np.mean(e**2, axis=1)), p90=np.percentile(e, 90, axis=1), fit=result.fit,
                    expected=config.order + 1))
                if progress is not None:
                    progress()
    study.reference["nfe"] = ref_nfe
    return study
