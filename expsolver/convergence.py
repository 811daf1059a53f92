"""Convergence testing of any solver on any semi-linear problem: local and global orders, work-precision.

The harness of DiffEqDevTools (``test_convergence``, ``WorkPrecisionSet``) and diffrax's order tests, for the
solver protocol (:class:`~expsolver.solvers.base.Solver`) and any :class:`~expsolver.problems.SemiLinearProblem`
(a user's :class:`~expsolver.problems.SemiLinearODE`, the diffusion ODE). One loop per measurement, one error:

* **Per-sample error** (:func:`sample_errors`): the L2 norm of ``x - x_ref`` over every dimension but the first,
  one number per sample; a measurement reports a statistic of them over the samples (:data:`STATISTICS`, the
  median by default: robust to the few samples near a mode boundary of a diffusion target).
* **Reference**: ``reference=None`` (or a dict of options) runs :func:`expsolver.reference_solve` once through
  every time needed, with its error estimate as the floor of the fit (Radau with an autograd Jacobian for a
  :class:`~expsolver.problems.SemiLinearODE`, whose linear part may be stiff; rtol = atol = 1e-12); a callable
  ``reference(times) -> states`` supplies states from elsewhere (a closed form, a cache).
* :func:`local_order`: one step of every size ``h`` from the exact state at ``t_step``; a multistep method gets
  its history from exact states too (``N`` evaluated at the exact states at ``rho_s - j h``), so the error is the
  local truncation error alone, of order ``order + 1``.
* :func:`global_order`: whole paths over grids of ``n`` steps (uniform in the problem's ``rho`` unless a grid is
  given), of order ``order``. A multistep method needs ``k - 1`` starting values (:data:`START_PROCEDURES`):

  - ``"singlestep"`` (default): singlestep exponential Runge-Kutta steps
    (:class:`~expsolver.solvers.DPMSolverSinglestep`, ``"taylor"``) of order ``q = min(order, 3)``, each start
    interval split into ``ceil(n^((order - 1 - q) / q))`` substeps when ``q < order - 1``, so that the starting
    values are ``O(h^order)`` and a k-step method shows its order on any ODE without a reference;
  - ``"exact"``: the reference states at the first ``k - 1`` grid points, ``N`` evaluated at them
    (:meth:`~expsolver.solvers.base.MultistepSolver.init_history`): the classical convergence test of a
    multistep method;
  - ``"warm-up"``: the solver's own plan (lower-order first steps, what :func:`expsolver.sample` does). On a
    general ODE the first-order first step adds an ``O(h^2)`` global error, which caps the measured order at 2.
* **Fit** (:func:`fit_order`): the slope of log error against log step size over an automatically chosen
  asymptotic window with a Student-t confidence interval; :func:`assert_order` checks it for pytest.
* :func:`work_precision`: error against model calls for several solvers and reference methods at several
  tolerances.

Order fit
---------
A method of order ``p`` has ``err(h) ~ C h^p`` only in an *asymptotic* range of step sizes: for large ``h`` the
error is pre-asymptotic (higher-order terms, saturation), for small ``h`` it sits on a floor (round-off, or the
error of the reference solution). The slope is therefore fitted over a window chosen by a rule. Sort the points
by ``h``; a candidate window is a contiguous run of ``>= min_points`` points such that

1. every error is finite, positive and above ``floor_factor * floor`` (when a floor is given);
2. the errors increase strictly with ``h`` inside the window;
3. the least-squares line ``log err = a + p log h`` fitted to the window has ``p > 0``, every consecutive-pair
   slope ``(log e_{i+1} - log e_i) / (log h_{i+1} - log h_i)`` inside the window is within ``slope_tol`` of ``p``,
   and the pair slopes do not drift: the least-squares trend of the pair slopes against log h, times the window's
   log-h span, is at most ``slope_tol`` in magnitude (a straight line in log-log, not a slowly bending curve
   that a straight line happens to follow to within the tolerance; noise in the pair slopes averages out of the
   trend, a pre-asymptotic bend does not);
4. the *simultaneous* confidence half-width of ``p`` is at most ``max_ci_halfwidth``: the regression standard
   error times the Student-t quantile (:func:`scipy.special.stdtrit`, as ``scipy.stats.t.ppf``) with ``n - 2`` degrees of freedom at two-sided
   level ``1 - 0.05 / M``, where ``M`` is the number of candidate windows searched, capped at 20 (Bonferroni). The
   window is the best of ``M`` tries, so an ordinary 95 % interval would be far too optimistic: on pure noise,
   some 3-point window is nearly always collinear by chance (measured: 10 points with log-normal scatter 0.5 give
   a "reliable" slope in 28 % of draws at the 95 % level, in 4 % with the correction). The cap keeps long data
   sets from rejecting a genuine 4-point asymptotic window. (The reported ``ci_low, ci_high`` are the ordinary
   95 % interval of the window.)

Among the candidates that are *maximal* (not contained in a longer candidate) the one at the smallest ``h`` wins
(ties: the longer, then the smaller RMS residual). The asymptotic range is the small-``h`` end of the data above
the floor: a pre-asymptotic stretch at larger ``h`` can look just as straight, and even longer, with a different
slope, so "the longest straight stretch" would pick the wrong one. If no candidate exists the fit is
*unreliable*: ``slope`` is NaN and ``reason`` says what was seen (e.g. "pair slopes drift from 3.3 to 3.9 as h
decreases": not yet asymptotic). A number is never returned without the window it was fitted on. ``expected`` is
only recorded; it never influences the choice of the window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ._validation import as_real_array, check_choice, check_float
from .driver import check_solver, integrate
from .problems import SemiLinearODE, SemiLinearProblem
from .reference import SCIPY_METHODS, reference_solve, sample_errors
from .solvers.base import Step
from .solvers.dpm_solver import DPMSolverSinglestep

__all__ = ["OrderFit", "fit_order", "ConvergenceResult", "WorkPrecisionCurve", "WorkPrecision", "local_order",
           "global_order", "work_precision", "assert_order", "ReferencePath", "sample_errors", "error_statistic", "uniform_grid",
           "START_PROCEDURES", "STATISTICS", "ORDER_TOL", "SINGLESTEP_START_ORDER", "DEFAULT_REFERENCE"]

#: Starting procedures of a multistep method in :func:`global_order` (module docstring).
START_PROCEDURES = ("singlestep", "exact", "warm-up")
#: Statistics over samples of the per-sample errors.
STATISTICS = ("median", "rms", "mean", "max")
#: Default tolerance of :func:`assert_order` and :meth:`ConvergenceResult.agrees`.
ORDER_TOL = 0.15
#: Highest order of the singlestep start (DPM-Solver-3 "taylor"); higher orders add substeps.
SINGLESTEP_START_ORDER = 3
#: Options of the default :func:`expsolver.reference_solve` (plus ``method="Radau"`` for a SemiLinearODE).
DEFAULT_REFERENCE = dict(rtol=1e-12, atol=1e-12)
_MAX_BONFERRONI = 20  # cap of the number of windows in the Bonferroni correction (module docstring)


# -- the fit --------------------------------------------------------------------------------------------------------
@dataclass
class OrderFit:
    """Result of :func:`fit_order`.

    Attributes
    ----------
    slope : float
        Fitted slope ``p`` of ``log err = a + p log h`` over the window (NaN when unreliable).
    ci_low, ci_high : float
        95 % confidence interval of ``p`` (NaN when unreliable).
    window : tuple of int or None
        ``(start, stop)``: the window is ``sorted_points[start:stop]`` of the points sorted by increasing ``h``.
    h_range : tuple of float or None
        ``(h_min, h_max)`` of the window.
    reliable : bool
    reason : str
        What was seen when the fit is unreliable, or a description of the window when it is reliable.
    intercept : float
        ``a`` (NaN when unreliable): the fitted line is ``exp(a) h^p``.
    n_points : int
        Points in the window (0 when unreliable).
    residual : float
        RMS residual of the fit in natural-log units.
    expected : float or None
        The order the caller expects (recorded only).
    """

    slope: float
    ci_low: float
    ci_high: float
    window: tuple | None
    h_range: tuple | None
    reliable: bool
    reason: str
    intercept: float = math.nan
    n_points: int = 0
    residual: float = math.nan
    expected: float | None = None

    def agrees(self, expected: float | None = None, tol: float = ORDER_TOL) -> bool:
        """True if the fit is reliable and ``|slope - expected| <= tol`` (``expected`` defaults to the recorded one)."""
        expected = self.expected if expected is None else expected
        if expected is None:
            raise ValueError("expected is None: pass expected= here or to fit_order")
        return bool(self.reliable and abs(self.slope - expected) <= tol)

    def line(self, h) -> np.ndarray:
        """The fitted line ``exp(intercept) h^slope`` at the step sizes ``h``."""
        return np.exp(self.intercept) * np.asarray(h, dtype=np.float64) ** self.slope

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        out["window"] = None if self.window is None else list(self.window)
        out["h_range"] = None if self.h_range is None else list(self.h_range)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "OrderFit":
        data = dict(data)
        for key in ("slope", "ci_low", "ci_high", "intercept", "residual"):
            if data.get(key) is None:
                data[key] = math.nan
        for key in ("window", "h_range"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _unreliable(reason: str, expected) -> OrderFit:
    return OrderFit(math.nan, math.nan, math.nan, None, None, False, reason, expected=expected)


def _linear_fit(x: np.ndarray, y: np.ndarray):
    """Least squares ``y = a + b x``: returns ``(b, a, standard error of b, RMS residual)``."""
    n = x.shape[0]
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    a = float(ym - b * xm)
    res = y - (a + b * x)
    ssr = float(np.sum(res * res))
    se = math.sqrt(ssr / (n - 2) / sxx) if n > 2 else math.inf
    return b, a, se, math.sqrt(ssr / n)


def _drift(lh: np.ndarray, pair: np.ndarray) -> float:
    """Change of the pair slopes across the window: their least-squares trend against the log-h midpoints times
    the window's log-h span."""
    mid = 0.5 * (lh[1:] + lh[:-1])
    if mid.shape[0] < 2:
        return 0.0
    mm = mid - mid.mean()
    trend = float(np.sum(mm * (pair - pair.mean())) / np.sum(mm * mm))
    return trend * float(lh[-1] - lh[0])


def _check_fit_arguments(h, e, min_points, slope_tol, max_ci_halfwidth, floor, floor_factor):
    if h.ndim != 1 or e.ndim != 1 or h.shape != e.shape:
        raise ValueError(f"step_sizes and errors must be 1-D of equal length, got shapes {h.shape} and {e.shape}")
    if not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise ValueError(f"step_sizes must be finite and > 0, got {h.tolist()!r}")
    if isinstance(min_points, bool) or not isinstance(min_points, (int, np.integer)) or min_points < 3:
        raise ValueError(f"min_points must be an int >= 3, got {min_points!r}")
    for name, value in (("slope_tol", slope_tol), ("max_ci_halfwidth", max_ci_halfwidth),
                        ("floor_factor", floor_factor)):
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if floor is not None and not (isinstance(floor, (int, float)) and floor >= 0):
        raise ValueError(f"floor must be None or a number >= 0, got {floor!r}")
    if np.any(np.diff(np.sort(h)) <= 0):
        raise ValueError(f"step_sizes must be distinct, got {np.sort(h).tolist()!r}")


def fit_order(step_sizes, errors, *, min_points: int = 3, expected: float | None = None, slope_tol: float = 0.25,
              max_ci_halfwidth: float = 0.5, floor: float | None = None, floor_factor: float = 10.0,
              **kwargs) -> OrderFit:
    """Fit the order ``p`` of ``err ~ C h^p`` over an automatically chosen asymptotic window.

    Parameters
    ----------
    step_sizes : array-like, shape (n,)
        The actual step sizes (finite, > 0, distinct), in any order: never assumed to halve.
    errors : array-like, shape (n,)
        The errors; non-finite or non-positive values are allowed and never enter a window.
    min_points : int
        Smallest window (>= 3, so that the slope has a standard error).
    expected : float, optional
        Recorded in the result; does not influence the fit.
    slope_tol : float
        Largest allowed deviation of a consecutive-pair slope inside the window from the fitted slope, and largest
        allowed drift of the pair slopes across the window.
    max_ci_halfwidth : float
        Largest allowed half-width of the simultaneous (Bonferroni over all candidate windows) 95 % confidence
        interval; see the module docstring.
    floor : float, optional
        Known error floor (e.g. the reference's error); points with ``err <= floor_factor * floor`` are excluded.
    floor_factor : float

    Returns
    -------
    OrderFit
        See the module docstring for the rule; ``reliable=False`` with ``slope=NaN`` and a ``reason`` that says
        what was seen when no window qualifies.

    Raises
    ------
    TypeError
        Unknown keyword; ``step_sizes``, ``errors`` or ``expected`` not real numbers (strings, complex, None).
    ValueError
        Shapes differ or are not 1-D; step sizes not finite, not positive or repeated; ``min_points < 3``;
        non-positive tolerances.
    """
    from scipy.special import stdtrit  # the Student-t quantile (scipy.stats.t.ppf), without importing scipy.stats

    if kwargs:
        raise TypeError(f"fit_order() got unexpected keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
    h = as_real_array(step_sizes, "step_sizes")
    e = as_real_array(errors, "errors")
    _check_fit_arguments(h, e, min_points, slope_tol, max_ci_halfwidth, floor, floor_factor)
    if expected is not None:
        check_float(expected, "expected")
    order = np.argsort(h)
    h, e = h[order], e[order]
    n = h.shape[0]
    if n < min_points:
        return _unreliable(f"too few points: {n} < min_points={min_points}", expected)
    usable = np.isfinite(e) & (e > 0)
    if floor is not None:
        usable &= e > floor_factor * floor
    if usable.sum() < min_points:
        above = f" above {floor_factor:g} x floor = {floor_factor * floor:.3g}" if floor is not None else ""
        return _unreliable(f"too few usable points: {int(usable.sum())} finite errors{above}, need {min_points}",
                           expected)
    lh = np.log(h)
    with np.errstate(divide="ignore", invalid="ignore"):
        le = np.where(usable, np.log(np.where(usable, e, 1.0)), np.nan)
    pair = np.diff(le) / np.diff(lh)  # NaN where a point is unusable
    increasing = np.diff(le) > 0
    # Bonferroni: every contiguous window of >= min_points points is a candidate.
    n_candidates = (n - min_points + 1) * (n - min_points + 2) // 2
    p_simultaneous = 1.0 - 0.025 / min(n_candidates, _MAX_BONFERRONI)
    best_stage, widest = 0, None  # how far any window got; the narrowest CI among consistent windows
    candidates = []  # (start, stop, slope, intercept, 95% half-width, rms residual)
    for start in range(n - min_points + 1):
        for stop in range(start + min_points, n + 1):
            if not usable[start:stop].all():
                break
            best_stage = max(best_stage, 1)
            if not increasing[start:stop - 1].all():
                break
            best_stage = max(best_stage, 2)
            b, a, se, rms = _linear_fit(lh[start:stop], le[start:stop])
            if not (b > 0 and np.all(np.abs(pair[start:stop - 1] - b) <= slope_tol)):
                continue
            if abs(_drift(lh[start:stop], pair[start:stop - 1])) > slope_tol:
                continue
            best_stage = max(best_stage, 3)
            simultaneous = float(stdtrit(stop - start - 2, p_simultaneous)) * se
            if widest is None or simultaneous < widest[2]:
                widest = (start, stop, simultaneous, b)
            if simultaneous > max_ci_halfwidth:
                continue
            half = float(stdtrit(stop - start - 2, 0.975)) * se
            candidates.append((start, stop, b, a, half, rms))
    # Keep the maximal candidates, then take the one starting at the smallest h (ties: longer, smaller residual).
    maximal = [c for c in candidates
               if not any(o[0] <= c[0] and c[1] <= o[1] and o[1] - o[0] > c[1] - c[0] for o in candidates)]
    if not maximal:
        return _unreliable(_what_was_seen(best_stage, h, lh, pair, usable, increasing, widest, min_points,
                                          slope_tol, max_ci_halfwidth), expected)
    start, stop, b, a, half, rms = min(maximal, key=lambda c: (c[0], -(c[1] - c[0]), c[5]))
    reason = (f"window of {stop - start} points, h in [{h[start]:.3g}, {h[stop - 1]:.3g}] "
              f"(points {start}..{stop - 1} of {n} sorted by h)")
    return OrderFit(slope=b, ci_low=b - half, ci_high=b + half, window=(int(start), int(stop)),
                    h_range=(float(h[start]), float(h[stop - 1])), reliable=True, reason=reason, intercept=a,
                    n_points=int(stop - start), residual=rms, expected=expected)


def _what_was_seen(stage, h, lh, pair, usable, increasing, widest, min_points, slope_tol, max_ci) -> str:
    """The reason of an unreliable fit: the criterion no window passed, and the pair slopes of the longest run of
    usable points whose errors decrease with h (listed from large to small h)."""
    runs, start = [], 0
    for i in range(1, len(h) + 1):  # maximal runs of usable points with errors increasing in h
        if i == len(h) or not (usable[i] and usable[i - 1] and increasing[i - 1]):
            runs.append((start, i))
            start = i
    a, b = max(runs, key=lambda r: r[1] - r[0])
    seen = ""
    if b - a >= 2:
        slopes = pair[a:b - 1][::-1]
        listed = ", ".join(f"{s:.2f}" for s in slopes)
        steps = np.diff(slopes)
        drifting = (np.all(steps >= 0) or np.all(steps <= 0)) and abs(slopes[-1] - slopes[0]) > slope_tol
        trend = (f"pair slopes drift from {slopes[0]:.2f} to {slopes[-1]:.2f} as h decreases (not yet asymptotic)"
                 if drifting else f"pair slopes scatter between {np.min(slopes):.2f} and {np.max(slopes):.2f}")
        seen = f"; over h in [{h[a]:.3g}, {h[b - 1]:.3g}] {trend}: {listed}"
    if stage == 0:
        return f"no run of {min_points} consecutive usable points (finite, positive, above the floor){seen}"
    if stage == 1:
        return f"errors do not decrease monotonically with h over any {min_points} consecutive points{seen}"
    if stage == 2:
        return (f"no window of {min_points} or more points has pair slopes within slope_tol={slope_tol} of its fit "
                f"without drift{seen}")
    s, e, ci, slope = widest
    return (f"too noisy: the tightest consistent window, h in [{h[s]:.3g}, {h[e - 1]:.3g}] ({e - s} points), has "
            f"slope {slope:.2f} with a simultaneous 95% CI half-width {ci:.2f} > {max_ci}{seen}")


# -- errors ---------------------------------------------------------------------------------------------------------
def error_statistic(errors, statistic="median") -> float:
    """A statistic of per-sample errors over the samples: a name of :data:`STATISTICS`, or a function of the 1-D
    array of errors returning a float."""
    e = np.asarray(errors, dtype=np.float64)
    if callable(statistic):
        return float(statistic(e))
    check_choice(statistic, "statistic", STATISTICS)
    if statistic == "median":
        return float(np.median(e))
    if statistic == "rms":
        return float(np.sqrt(np.mean(e * e)))
    return float(np.mean(e)) if statistic == "mean" else float(np.max(e))


# -- references -----------------------------------------------------------------------------------------------------
class ReferencePath:
    """The exact solution from ``x0`` at ``t0``, computed on demand by :func:`expsolver.reference_solve` and kept.

    Call it with a list of times to get the states there: times not yet known are solved for in one integration
    from the latest known time before them (``t0`` at first), so measurements of several solvers can share one
    path. ``floor`` is the largest error estimate of those solves (the error floor of a fit; None without
    estimates).

    Parameters
    ----------
    problem : SemiLinearProblem
    x0 : torch.Tensor, shape (batch, *dims)
    t0 : float
    **options
        :func:`expsolver.reference_solve` options; defaults :data:`DEFAULT_REFERENCE`, with ``method="Radau"`` for a
        :class:`~expsolver.problems.SemiLinearODE` (whose linear part may be stiff; Jacobian by autograd).
    """

    def __init__(self, problem: SemiLinearProblem, x0: torch.Tensor, t0: float, **options):
        self.problem, self.x0, self.t0 = problem, x0, check_float(t0, "t0")
        self.options = dict(DEFAULT_REFERENCE, **({"method": "Radau"} if isinstance(problem, SemiLinearODE) else {}))
        self.options.update(options)
        self.floor, self.nfe = None, 0
        self._states = {self.t0: x0}

    def __call__(self, times) -> list:
        times = [check_float(t, "times") for t in times]
        missing = sorted({t for t in times if t not in self._states}, key=self.problem.rho)
        if missing:
            self._solve(missing)
        return [self._states[t] for t in times]

    def _solve(self, missing: list) -> None:
        first = self.problem.rho(missing[0])
        if first < self.problem.rho(self.t0):
            raise ValueError(f"the reference path starts at t0={self.t0!r}; t={missing[0]!r} lies before it")
        anchor = max((t for t in self._states if self.problem.rho(t) < first), key=self.problem.rho)
        result = reference_solve(self.problem, self._states[anchor], anchor, missing[-1], ts=missing,
                                 **{"error_estimate": True, **self.options})
        if not result.success:
            raise RuntimeError(f"the reference solve failed at t={result.t_reached!r}: {result.message}")
        self._states.update(zip(missing, result.xs))
        self.nfe += result.nfe
        if result.error_estimate is not None:
            self.floor = result.error_estimate if self.floor is None else max(self.floor, result.error_estimate)

    def describe(self) -> dict:
        """The reference_solve options, the model calls made and the floor."""
        return dict(self.options, nfe=self.nfe, floor=self.floor)


def _reference(reference, problem, x0, t0, times):
    """The reference of a measurement: a :class:`ReferencePath` (a new one for ``None`` or a dict of options) with
    the ``times`` the measurement needs computed up front in one solve, or a user's callable, checked."""
    if reference is None or isinstance(reference, dict):
        reference = ReferencePath(problem, x0, t0, **(reference or {}))
    if isinstance(reference, ReferencePath):
        reference(times)
        return reference
    if not callable(reference):
        raise TypeError(f"reference must be None, a dict of reference_solve options or a callable "
                        f"reference(times) -> states (e.g. a ReferencePath); got {type(reference).__name__}")
    return _CheckedReference(reference, x0)


class _CheckedReference:
    """A user's ``reference(times)``, its answers checked; its ``floor`` attribute, if any, is the fit's floor."""

    def __init__(self, fn, x0):
        self.fn, self.x0 = fn, x0

    @property
    def floor(self):
        return getattr(self.fn, "floor", None)

    def __call__(self, times) -> list:
        states = list(self.fn(list(times)))
        if len(states) != len(times) or any(tuple(s.shape) != tuple(self.x0.shape) for s in states):
            raise ValueError(f"reference(times) must return {len(times)} states of shape {tuple(self.x0.shape)}")
        return states

    def describe(self):
        return "callable"


# -- one measurement ------------------------------------------------------------------------------------------------
@dataclass
class ConvergenceResult:
    """Errors against step size of one solver on one problem, and the fitted order.

    Attributes
    ----------
    solver : str
    kind : {"local", "global"}
    start : str
        Starting procedure of a multistep method (:data:`START_PROCEDURES`); ``"none"`` for a one-step method, and
        ``"exact"`` for every local measurement.
    hs : numpy.ndarray
        Step sizes in the problem's ``rho`` (global: the largest step of each grid).
    errors : numpy.ndarray
        The ``statistic`` of the per-sample errors, per step size.
    nfe : numpy.ndarray
        Model calls of each measurement (starting values and history values included).
    fit : OrderFit
    expected : float
        Declared order (global) or declared order + 1 (local), unless given.
    statistic : str
        Name of the statistic (a function's ``__name__``).
    floor : float or None
        The error floor handed to the fit (the reference's error estimate unless given).
    step_counts : numpy.ndarray or None
        Global: the number of steps of each grid.
    sample_errors : numpy.ndarray or None, shape (len(hs), batch)
        The per-sample errors (:func:`sample_errors`).
    reference : dict or str
        What the reference was (its options, model calls and floor, or ``"callable"``).
    """

    solver: str
    kind: str
    start: str
    hs: np.ndarray
    errors: np.ndarray
    nfe: np.ndarray
    fit: OrderFit
    expected: float
    statistic: str = "median"
    floor: float | None = None
    step_counts: np.ndarray | None = None
    sample_errors: np.ndarray | None = field(default=None, repr=False)
    reference: object = field(default=None, repr=False)

    @property
    def agrees(self) -> bool:
        """The fit is reliable and within :data:`ORDER_TOL` of :attr:`expected`."""
        return self.fit.agrees(self.expected, ORDER_TOL)

    def table(self) -> str:
        """The measurements as text: step size, error, pair slope, and a ``*`` on the points of the fitted window."""
        order = np.argsort(self.hs)[::-1]
        window = set() if self.fit.window is None else set(range(*self.fit.window))
        ranks = {int(i): r for r, i in enumerate(np.argsort(self.hs))}
        lines = [f"  {'h':>10}  {self.statistic + ' error':>14}  {'pair slope':>10}"]
        previous = None
        for i in order:
            h, e = float(self.hs[i]), float(self.errors[i])
            slope = ("" if previous is None or not (e > 0 and previous[1] > 0)
                     else f"{math.log(previous[1] / e) / math.log(previous[0] / h):.2f}")
            mark = " *" if ranks[int(i)] in window else ""
            lines.append(f"  {h:10.4g}  {e:14.4e}  {slope:>10}{mark}")
            previous = (h, e)
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: the measured order, its interval and window, and the expected order."""
        what = f"{self.solver} ({self.kind}, start={self.start!r})"
        if not self.fit.reliable:
            return f"{what}: no reliable order ({self.fit.reason}); expected {self.expected:g}"
        lo, hi = self.fit.h_range
        return (f"{what}: order {self.fit.slope:.2f} (95% CI [{self.fit.ci_low:.2f}, {self.fit.ci_high:.2f}]) over h "
                f"in [{lo:.3g}, {hi:.3g}] ({self.fit.n_points} points), expected {self.expected:g}")

    def plot(self, ax=None, *, label: str | None = None, color=None, marker: str = "o"):
        """Log-log plot of the errors against ``h`` with the fitted line over its window (dashed) and the floor
        (dotted). Returns the axes (a new figure's if ``ax`` is None)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.5))
        label = self.solver if label is None else label
        if self.fit.reliable:
            label += f" (slope {self.fit.slope:.2f})"
        ok = np.isfinite(self.errors) & (self.errors > 0)
        (line,) = ax.loglog(self.hs[ok], self.errors[ok], marker=marker, color=color, label=label)
        if self.fit.reliable:
            hh = np.geomspace(*self.fit.h_range, 20)
            ax.loglog(hh, self.fit.line(hh), "--", color=line.get_color(), linewidth=1)
        if self.floor:
            ax.axhline(self.floor, linestyle=":", color=line.get_color(), linewidth=0.8)
        ax.set_xlabel(r"step size $h$" + (" (largest step of the grid)" if self.kind == "global" else ""))
        ax.set_ylabel(f"{self.kind} error ({self.statistic} over samples of $\\|x - x_{{ref}}\\|_2$)")
        ax.legend(fontsize="small")
        return ax


def assert_order(result: ConvergenceResult, expected: float | None = None, tol: float = ORDER_TOL) -> None:
    """Assert (pytest) that ``result`` shows the order ``expected`` (default: its own) to within ``tol``.

    The failure message shows the fit (slope, 95 % interval, window) or why there is none, and every measured error
    with its pair slope, the window's points marked ``*``.
    """
    expected = result.expected if expected is None else check_float(expected, "expected")
    if result.fit.reliable and abs(result.fit.slope - expected) <= tol:
        return
    head = result.summary()
    if result.fit.reliable:
        head = head.rsplit(", expected", 1)[0] + f": expected {expected:g} +- {tol:g}"
    raise AssertionError(f"{head}\n{result.table()}")


def _history_length(solver) -> int:
    return int(getattr(solver, "steps_order", solver.order)) if getattr(solver, "carries_history", False) else 1


def _init_history(solver, problem, x, history):
    if not hasattr(solver, "init_history"):
        raise TypeError(f"{solver!r} carries a history but has no init_history(problem, x, history) to seed it "
                        f"(expsolver.solvers.MultistepSolver has one); use start='warm-up'")
    return solver.init_history(problem, x, history)


def _statistic_name(statistic) -> str:
    """The statistic's name (checked: one of :data:`STATISTICS` or a callable)."""
    if callable(statistic):
        return getattr(statistic, "__name__", "statistic")
    return check_choice(statistic, "statistic", STATISTICS)


def _label(solver, name):
    return repr(solver) if name is None else str(name)


def _check_hs(hs) -> np.ndarray:
    hs = np.asarray([check_float(h, "hs") for h in hs], dtype=np.float64)
    if hs.ndim != 1 or hs.size == 0 or np.any(hs <= 0):
        raise ValueError(f"hs must be a non-empty sequence of step sizes > 0, got {hs.tolist()!r}")
    return hs


def _fit(hs, errors, expected, floor, fit_options):
    return fit_order(hs, errors, expected=expected, floor=floor, **(fit_options or {}))


def local_order(problem: SemiLinearProblem, solver, x0: torch.Tensor, t0: float, hs, *, t_step: float | None = None,
                reference=None, statistic: str = "median", expected: float | None = None,
                floor: float | None = None, name: str | None = None, fit_options: dict | None = None
                ) -> ConvergenceResult:
    """Local order: one step of every size in ``hs`` from the exact state at ``t_step`` (module docstring).

    Parameters
    ----------
    problem : SemiLinearProblem
    solver : Solver
        Any object of the solver protocol. A multistep method (``carries_history``) steps with its ``update`` and a
        history of exact values when it has one (UniPC's ``update`` includes the corrector), else through
        :meth:`~expsolver.solvers.base.MultistepSolver.init_history` and ``step``.
    x0 : torch.Tensor, shape (batch, *dims)
        The state at ``t0``.
    t0 : float
    hs : sequence of float
        Step sizes in the problem's ``rho`` (> 0: ``rho`` grows in the direction of integration).
    t_step : float, optional
        Where every step starts. Default: ``rho(t_step) = rho(t0) + (k - 1) max(hs)`` for a method with a history
        of ``k`` values (``t0`` for a one-step method), so the history lies on the path from ``t0``.
    reference : None, dict or callable
        See the module docstring; a callable gets the list of times and returns the states there.
    statistic : {"median", "rms", "mean", "max"} or callable
        Statistic over samples of the per-sample errors (:func:`error_statistic`).
    expected : float, optional
        Default ``solver.order + 1``.
    floor : float, optional
        Error floor of the fit (default: the reference's error estimate).
    name : str, optional
        Label of the solver (default ``repr(solver)``).
    fit_options : dict, optional
        Further :func:`fit_order` options (``min_points``, ``slope_tol``, ...).

    Returns
    -------
    ConvergenceResult
    """
    check_solver(solver)
    _statistic_name(statistic)
    hs = _check_hs(hs)
    k = _history_length(solver)
    rho_0 = problem.rho(t0)
    rho_s = rho_0 + (k - 1) * float(hs.max()) if t_step is None else problem.rho(check_float(t_step, "t_step"))
    points = {h: ([problem.t_of_rho(rho_s - j * h) for j in range(k - 1, 0, -1)] if k > 1 else [],
                  problem.t_of_rho(rho_s), problem.t_of_rho(rho_s + h)) for h in hs}
    if not callable(reference) and min(rho_s - (k - 1) * hs.max(), rho_s) < rho_0:
        raise ValueError(f"the steps (and their histories) must start at or after t0 for a reference solved from "
                         f"x0 at t0: t_step={t_step!r} is too early for a {k}-value history; pass a later t_step "
                         f"or a callable reference")
    ref = _reference(reference, problem, x0, t0, [t for past, s, t in points.values() for t in past + [s, t]])
    errors, nfes = [], []
    for h in hs:
        past, s, t = points[h]
        nfe_before = problem.nfe
        x_t = _one_step(problem, solver, ref, past, s, t, k)
        errors.append(sample_errors(x_t, ref([t])[0]))
        nfes.append(problem.nfe - nfe_before)
    expected = solver.order + 1 if expected is None else expected
    floor = ref.floor if floor is None else floor
    stats = np.array([error_statistic(e, statistic) for e in errors])
    fit = _fit(hs, stats, expected, floor, fit_options)
    return ConvergenceResult(solver=_label(solver, name), kind="local", start="exact", hs=hs, errors=stats,
                             nfe=np.array(nfes), fit=fit, expected=expected, statistic=_statistic_name(statistic),
                             floor=floor, sample_errors=np.stack(errors), reference=ref.describe())


def _one_step(problem, solver, ref, past, s, t, k):
    """One step ``s -> t`` from the exact state, a multistep method's history from the exact states at ``past``."""
    x_s = ref([s])[0]
    step = Step(0, s, t, int(getattr(solver, "steps_order", solver.order)))
    with torch.no_grad():
        if not getattr(solver, "carries_history", False):
            return solver.step(problem, x_s, step, solver.init(problem, x_s))
        history = [(problem.rho(tp), problem.nonlinear(xp, tp)) for tp, xp in zip(past, ref(past))]
        if hasattr(solver, "update"):
            return solver.update(problem, x_s, step, history + [(problem.rho(s), problem.nonlinear(x_s, s))])
        return solver.step(problem, x_s, step, _init_history(solver, problem, x_s, history))


def uniform_grid(problem: SemiLinearProblem, t_start: float, t_end: float, n: int) -> np.ndarray:
    """``n + 1`` times from ``t_start`` to ``t_end`` (exactly) uniform in the problem's ``rho``."""
    rho_a, rho_b = problem.rho(t_start), problem.rho(t_end)
    inner = [problem.t_of_rho(rho_a + (rho_b - rho_a) * i / n) for i in range(1, n)]
    return np.array([t_start] + inner + [t_end], dtype=np.float64)


def _grids(problem, t_start, t_end, step_counts, grid) -> dict:
    grids = {}
    for n in step_counts:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"step_counts must be ints >= 1, got {n!r}")
        ts = uniform_grid(problem, t_start, t_end, int(n)) if grid is None else np.asarray(grid(int(n)), np.float64)
        if ts.ndim != 1 or ts.size != n + 1 or ts[0] != t_start or ts[-1] != t_end:
            raise ValueError(f"grid({n}) must return {n + 1} times from t_start to t_end, got {ts!r}")
        grids[int(n)] = ts
    return grids


def _singlestep_start(problem, solver, x0, ts, k) -> list:
    """States at ``ts[:k]`` by singlestep exponential Runge-Kutta steps of order ``q = min(order, 3)``, each start
    interval in ``ceil(n^((order - 1 - q) / q))`` substeps (``n`` steps in the grid): ``O(h^order)`` starting
    values."""
    p = int(solver.order)
    q = min(SINGLESTEP_START_ORDER, p)
    n = len(ts) - 1
    m = 1 if q >= p - 1 else math.ceil(n ** ((p - 1 - q) / q))
    starter = DPMSolverSinglestep(q, "taylor")
    xs = [x0]
    for i in range(k - 1):
        sub = uniform_grid(problem, float(ts[i]), float(ts[i + 1]), m)
        xs.append(integrate(problem, starter, xs[-1], sub).x)
    return xs


def _path(problem, solver, x0, ts, start, ref, k) -> torch.Tensor:
    """The state at ``ts[-1]`` from ``x0`` at ``ts[0]``, a multistep method started by ``start``."""
    if k == 1 or start == "warm-up":
        return integrate(problem, solver, x0, ts).x
    if len(ts) - 1 < k:
        raise ValueError(f"a {k}-value history needs at least {k} steps, got a grid of {len(ts) - 1}")
    times = [float(t) for t in ts[1:k]]
    xs = [x0] + (ref(times) if start == "exact" else _singlestep_start(problem, solver, x0, ts, k)[1:])
    history = [(problem.rho(float(ts[j])), problem.nonlinear(xs[j], float(ts[j]))) for j in range(k - 1)]
    state = _init_history(solver, problem, xs[k - 1], history)
    return integrate(problem, solver, xs[k - 1], solver.plan(ts, problem)[k - 1:], state=state).x


def _global_runs(problem, solver, x0, ts_by_n, start, ref, statistic, stop_below):
    """``(ns, hs, per-sample errors, statistics, nfe)`` of the paths over the grids ``ts_by_n``."""
    k = _history_length(solver)
    x_ref = ref([float(next(iter(ts_by_n.values()))[-1])])[0]
    out = ([], [], [], [], [])
    for n, ts in ts_by_n.items():
        nfe_before = problem.nfe
        with torch.no_grad():
            x_end = _path(problem, solver, x0, ts, start, ref, k)
        e = sample_errors(x_end, x_ref)
        rhos = np.array([problem.rho(float(t)) for t in ts])
        for values, v in zip(out, (n, float(np.max(np.abs(np.diff(rhos)))), e, error_statistic(e, statistic),
                                   problem.nfe - nfe_before)):
            values.append(v)
        if stop_below is not None and out[3][-1] < stop_below:
            break
    return out


def global_order(problem: SemiLinearProblem, solver, x0: torch.Tensor, t_start: float, t_end: float, step_counts, *,
                 start: str = "singlestep", grid=None, reference=None, statistic: str = "median",
                 expected: float | None = None, floor: float | None = None, stop_below: float | None = None,
                 name: str | None = None, fit_options: dict | None = None) -> ConvergenceResult:
    """Global order: whole paths from ``t_start`` to ``t_end`` over grids of ``step_counts`` steps (module
    docstring).

    Parameters
    ----------
    problem, solver, x0
        As for :func:`local_order` (``x0`` at ``t_start``).
    t_start, t_end : float
    step_counts : sequence of int
        Numbers of grid steps (the measurements run in this order).
    start : {"singlestep", "exact", "warm-up"}
        Starting values of a multistep method (module docstring); ignored by one-step methods.
    grid : callable, optional
        ``grid(n) -> n + 1`` times from ``t_start`` to ``t_end``; default :func:`uniform_grid` (uniform in ``rho``).
    reference, statistic, floor, name, fit_options
        As for :func:`local_order`; the reference is needed at ``t_end`` (and, for ``start="exact"``, at the first
        grid points).
    expected : float, optional
        Default ``solver.order``.
    stop_below : float, optional
        Stop refining once the error statistic falls below this (the reference's accuracy).

    Returns
    -------
    ConvergenceResult
        ``hs`` are the largest ``rho`` steps of the grids.
    """
    check_solver(solver)
    check_choice(start, "start", START_PROCEDURES)
    _statistic_name(statistic)
    t_start, t_end = check_float(t_start, "t_start"), check_float(t_end, "t_end")
    grids = _grids(problem, t_start, t_end, step_counts, grid)
    k = _history_length(solver)
    times = [t_end] + ([float(t) for ts in grids.values() for t in ts[1:k]] if start == "exact" and k > 1 else [])
    ref = _reference(reference, problem, x0, t_start, times)
    ns, hs, errors, stats, nfes = _global_runs(problem, solver, x0, grids, start, ref, statistic, stop_below)
    expected = solver.order if expected is None else expected
    floor = ref.floor if floor is None else floor
    hs, stats = np.array(hs), np.array(stats)
    return ConvergenceResult(solver=_label(solver, name), kind="global", start=start if k > 1 else "none", hs=hs,
                             errors=stats, sample_errors=np.stack(errors), nfe=np.array(nfes),
                             fit=_fit(hs, stats, expected, floor, fit_options), expected=expected,
                             statistic=_statistic_name(statistic), floor=floor, step_counts=np.array(ns),
                             reference=ref.describe())


# -- work-precision -------------------------------------------------------------------------------------------------
@dataclass
class WorkPrecisionCurve:
    """Error against model calls of one method: ``parameters`` are its step counts (a solver) or tolerances (a
    reference method, ``rtol = atol``)."""

    label: str
    kind: str
    parameters: np.ndarray
    nfe: np.ndarray
    errors: np.ndarray


@dataclass
class WorkPrecision:
    """Result of :func:`work_precision`: one curve per solver and per reference method."""

    curves: list
    statistic: str = "median"
    floor: float | None = None

    def curve(self, label: str) -> WorkPrecisionCurve:
        for c in self.curves:
            if c.label == label:
                return c
        raise KeyError(f"no curve {label!r}; have {[c.label for c in self.curves]}")

    def plot(self, ax=None):
        """Log-log error against NFE, one line per curve (reference methods dashed). Returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.5))
        for c in self.curves:
            ok = np.isfinite(c.errors) & (c.errors > 0)
            ax.loglog(c.nfe[ok], c.errors[ok], "--" if c.kind == "reference" else "-", marker="o", label=c.label)
        ax.set_xlabel("model evaluations (NFE)")
        ax.set_ylabel(f"error ({self.statistic} over samples of $\\|x - x_{{ref}}\\|_2$)")
        ax.legend(fontsize="small")
        return ax


def work_precision(problem: SemiLinearProblem, solvers, x0: torch.Tensor, t_start: float, t_end: float, step_counts,
                   *, start: str = "singlestep", grid=None, reference=None, reference_methods=(),
                   tolerances=(1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8), statistic: str = "median") -> WorkPrecision:
    """Error at ``t_end`` against model calls for several solvers and reference methods.

    Parameters
    ----------
    problem, x0, t_start, t_end, step_counts, start, grid, reference, statistic
        As for :func:`global_order`; every solver runs on the same grids from the same states.
    solvers : mapping of label to solver, or sequence of solvers
    reference_methods : sequence of str
        Methods of :func:`expsolver.reference_solve` (SciPy ``"DOP853"``, ``"Radau"``, ...; torchdiffeq
        ``"dopri5"``, ...) run at every tolerance in ``tolerances`` (``rtol = atol``, no error estimate).
    tolerances : sequence of float

    Returns
    -------
    WorkPrecision
    """
    check_choice(start, "start", START_PROCEDURES)
    _statistic_name(statistic)
    t_start, t_end = check_float(t_start, "t_start"), check_float(t_end, "t_end")
    items = list(solvers.items()) if isinstance(solvers, dict) else [(repr(s), s) for s in solvers]
    grids = _grids(problem, t_start, t_end, step_counts, grid)
    need_start = start == "exact" and any(_history_length(check_solver(s)) > 1 for _, s in items)
    k_max = max([_history_length(s) for _, s in items] + [1])
    times = [t_end] + ([float(t) for ts in grids.values() for t in ts[1:k_max]] if need_start else [])
    ref = _reference(reference, problem, x0, t_start, times)
    x_ref = ref([t_end])[0]
    curves = []
    for label, solver in items:
        ns, _, _, stats, nfes = _global_runs(problem, solver, x0, grids, start, ref, statistic, None)
        curves.append(WorkPrecisionCurve(label, "solver", np.array(ns), np.array(nfes), np.array(stats)))
    for method in reference_methods:
        backend = "scipy" if method in SCIPY_METHODS else "torchdiffeq"
        nfes, stats = [], []
        for tol in tolerances:
            res = reference_solve(problem, x0, t_start, t_end, backend=backend, method=method, rtol=tol, atol=tol,
                                  error_estimate=False)
            nfes.append(res.nfe)
            stats.append(error_statistic(sample_errors(res.x, x_ref), statistic) if res.success else math.nan)
        curves.append(WorkPrecisionCurve(method, "reference", np.array(tolerances, dtype=np.float64),
                                         np.array(nfes), np.array(stats)))
    return WorkPrecision(curves=curves, statistic=_statistic_name(statistic), floor=ref.floor)
