"""Order estimation: the slope of log error against log step size over an automatically chosen asymptotic window.

A method of order ``p`` has ``err(h) ~ C h^p`` only in an *asymptotic* range of step sizes: for large ``h`` the
error is pre-asymptotic (higher-order terms, saturation), for small ``h`` it sits on a floor (round-off, or the
error of the reference solution). The slope must therefore be fitted over a window, and that window must be
chosen by a rule, not by hand (DESIGN.md Sec. 4; STYLE.md "Slopes from a fit, not from assumed halvings").

The rule implemented by :func:`fit_order`. Sort the points by ``h``; a candidate window is a contiguous run of
``>= min_points`` points such that

1. every error is finite, positive and above ``floor_factor * floor`` (when a floor is given);
2. the errors increase strictly with ``h`` inside the window;
3. the least-squares line ``log err = a + p log h`` fitted to the window has ``p > 0``, every consecutive-pair
   slope ``(log e_{i+1} - log e_i) / (log h_{i+1} - log h_i)`` inside the window is within ``slope_tol`` of ``p``,
   and the pair slopes do not drift: the least-squares trend of the pair slopes against log h, times the window's
   log-h span, is at most ``slope_tol`` in magnitude (a straight line in log-log, not a slowly bending curve
   that a straight line happens to follow to within the tolerance; noise in the pair slopes averages out of the
   trend, a pre-asymptotic bend does not);
4. the *simultaneous* confidence half-width of ``p`` is at most ``max_ci_halfwidth``: the regression standard
   error times the Student-t quantile with ``n - 2`` degrees of freedom at two-sided level ``1 - 0.05 / M``, where
   ``M`` is the number of candidate windows searched, capped at 20 (Bonferroni). The window is the best of ``M``
   tries, so an ordinary 95 % interval would be far too optimistic: on pure noise, some 3-point window is nearly
   always collinear by chance (measured: 10 points with log-normal scatter 0.5 give a "reliable" slope in 28 % of
   draws at the 95 % level, in 4 % with the correction). The cap keeps long data sets from rejecting a genuine
   4-point asymptotic window. (The reported ``ci_low, ci_high`` are the ordinary 95 % interval of the window.)

Among the candidates that are *maximal* (not contained in a longer candidate) the one at the smallest ``h`` wins
(ties: the longer, then the smaller RMS residual). The asymptotic range is the small-``h`` end of the data above
the floor: a pre-asymptotic stretch at larger ``h`` can look just as straight, and even longer, with a different
slope (the official third-order multistep's local error shows ``h^3.5`` over a decade before its ``h^3`` term
takes over), so "the longest straight stretch" would pick the wrong one. Floor points never qualify (their
errors do not increase with ``h`` consistently and their scatter fails the confidence test). If no candidate
exists the fit is *unreliable*: ``slope`` is NaN and ``reason`` says why. A number is never returned
without the window it was fitted on. ``expected`` is only recorded (and used by :meth:`OrderFit.agrees`); it never
influences the choice of the window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from expsolver._validation import as_real_array, check_float

from .results import result_type

__all__ = ["OrderFit", "fit_order", "t_quantile", "t_quantile_975", "t_tail"]

_Z975 = 1.959963984540054
_MAX_BONFERRONI = 20  # cap of the number of windows in the Bonferroni correction (module docstring)
# Two-sided 95 % Student-t quantiles t_{0.975, nu} for nu = 1..30 (the common case, exact to 1e-9).
_T975 = (12.706204736, 4.30265273, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
         2.306004135, 2.262157163, 2.228138852, 2.20098516, 2.17881283, 2.160368656, 2.144786688, 2.131449546,
         2.119905299, 2.109815578, 2.10092204, 2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.06865761,
         2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)`` by its continued fraction (modified Lentz; DLMF 8.17.22)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below the mean
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a) - (
        math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    f, c, d = tiny, tiny, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f


def t_tail(t: float, nu: int) -> float:
    """Upper tail ``P(T > t)`` of Student's t with ``nu`` degrees of freedom, ``t >= 0``:
    ``I_{nu/(nu+t^2)}(nu/2, 1/2) / 2``."""
    return 0.5 * _betainc(0.5 * nu, 0.5, nu / (nu + t * t))


def t_quantile(p: float, nu: int) -> float:
    """The ``p`` quantile (``0.5 <= p < 1``) of Student's t with ``nu >= 1`` degrees of freedom.

    Exact closed forms for ``nu = 1, 2``, the table for ``p = 0.975, nu <= 30``; otherwise bisection on
    :func:`t_tail` to a relative accuracy of 1e-10.
    """
    if not (isinstance(nu, (int, np.integer)) and nu >= 1):
        raise ValueError(f"nu must be an int >= 1, got {nu!r}")
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must be in [0.5, 1), got {p!r}")
    if nu == 1:
        return math.tan(math.pi * (p - 0.5))
    if nu == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if p == 0.975 and nu <= len(_T975):
        return _T975[nu - 1]
    target = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_tail(hi, nu) > target:
        hi *= 2.0
    while hi - lo > 1e-10 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_tail(mid, nu) > target else (lo, mid)
    return 0.5 * (lo + hi)


def t_quantile_975(nu: int) -> float:
    """The 0.975 quantile of Student's t with ``nu >= 1`` degrees of freedom (two-sided 95 %)."""
    return t_quantile(0.975, nu)


@result_type
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
        Why the fit is unreliable, or a description of the window when it is reliable.
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

    def agrees(self, expected: float | None = None, tol: float = 0.15) -> bool:
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
        See the module docstring for the rule; ``reliable=False`` with ``slope=NaN`` and a ``reason`` when no
        window qualifies.

    Raises
    ------
    TypeError
        Unknown keyword; ``step_sizes``, ``errors`` or ``expected`` not real numbers (strings, complex, None).
    ValueError
        Shapes differ or are not 1-D; step sizes not finite, not positive or repeated; ``min_points < 3``;
        non-positive tolerances.
    """
    if kwargs:
        raise TypeError(f"fit_order() got unexpected keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
    h = as_real_array(step_sizes, "step_sizes")
    e = as_real_array(errors, "errors")
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
    if expected is not None:
        check_float(expected, "expected")
    order = np.argsort(h)
    h, e = h[order], e[order]
    if np.any(np.diff(h) <= 0):
        raise ValueError(f"step_sizes must be distinct, got {np.sort(h).tolist()!r}")
    n = h.shape[0]
    if n < min_points:
        return _unreliable(f"too few points: {n} < min_points={min_points}", expected)

    usable = np.isfinite(e) & (e > 0)
    if floor is not None:
        usable &= e > floor_factor * floor
    lh = np.log(h)
    with np.errstate(divide="ignore", invalid="ignore"):
        le = np.where(usable, np.log(np.where(usable, e, 1.0)), np.nan)
    if usable.sum() < min_points:
        return _unreliable(f"too few usable points: {int(usable.sum())} finite errors above the floor, "
                           f"need {min_points}", expected)
    pair = np.diff(le) / np.diff(lh)  # NaN where a point is unusable
    increasing = np.diff(le) > 0

    # The furthest any window got through the criteria, for the reason of an unreliable fit.
    stage_names = ("no run of {m} consecutive usable points",
                   "errors do not decrease monotonically with h over any {m} consecutive points",
                   "no window of {m} points has consistent local slopes (within slope_tol={tol} of its fit, without drift)",
                   "no consistent window has a simultaneous 95% CI half-width <= {ci} (too noisy)")
    # Bonferroni: every contiguous window of >= min_points points is a candidate.
    n_candidates = (n - min_points + 1) * (n - min_points + 2) // 2
    p_simultaneous = 1.0 - 0.025 / min(n_candidates, _MAX_BONFERRONI)
    best_stage = 0
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
            if t_quantile(p_simultaneous, stop - start - 2) * se > max_ci_halfwidth:
                continue
            half = t_quantile_975(stop - start - 2) * se
            candidates.append((start, stop, b, a, half, rms))
    # Keep the maximal candidates, then take the one starting at the smallest h (ties: longer, smaller residual).
    maximal = [c for c in candidates
               if not any(o[0] <= c[0] and c[1] <= o[1] and o[1] - o[0] > c[1] - c[0] for o in candidates)]
    if not maximal:
        reason = stage_names[best_stage].format(m=min_points, tol=slope_tol, ci=max_ci_halfwidth)
        return _unreliable(reason, expected)
    start, stop, b, a, half, rms = min(maximal, key=lambda c: (c[0], -(c[1] - c[0]), c[5]))
    reason = (f"window of {stop - start} points, h in [{h[start]:.3g}, {h[stop - 1]:.3g}] "
              f"(points {start}..{stop - 1} of {n} sorted by h)")
    return OrderFit(slope=b, ci_low=b - half, ci_high=b + half, window=(int(start), int(stop)),
                    h_range=(float(h[start]), float(h[stop - 1])), reliable=True, reason=reason, intercept=a,
                    n_points=int(stop - start), residual=rms, expected=expected)
