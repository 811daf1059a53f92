"""Variance-preserving noise schedules.

A VP schedule is ``x_t = alpha_t x_0 + sigma_t eps`` with ``alpha_t^2 + sigma_t^2 = 1``. Everything follows from
``log alpha_t``:

    sigma_t = sqrt(-expm1(2 log alpha_t))                       (no cancellation near t = 0)
    lam_t   = log alpha_t - log sigma_t                          (half log-SNR, strictly decreasing)
    f(t)    = d log alpha_t / dt                                 (drift of the forward SDE)
    g2(t)   = d sigma_t^2/dt - 2 f(t) sigma_t^2 = -2 f(t)         (squared diffusion; equals beta(t))

and ``log alpha = -softplus(-2 lam) / 2`` inverts ``lam`` back to ``log alpha``, from which each schedule
recovers ``t`` (DPM-Solver, Lu et al. 2022, Sec. 2 and App. D).

Every method accepts a Python float (returns a float) or a tensor of any float dtype and device (returns a tensor
of the same dtype and device). Internally everything is evaluated in float64.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np
import torch

from ._validation import check_finite_array, check_has_data, check_positive_float

__all__ = ["VPSchedule", "VPLinear", "VPCosine", "VPDiscrete", "log_alpha_of_lam", "log_sigma_of_lam"]


#: Smallest ``log alpha_T`` a schedule may reach: below it ``alpha_T`` is not a normal float64 number.
_LOG_ALPHA_MIN = math.log(np.finfo(np.float64).tiny)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` to full float64 precision for every x (torch's softplus cuts off at x > 20):
    ``x + log1p(e^-x)`` for ``x > 0``, ``log1p(e^x)`` otherwise. Each branch sees only its own side of 0 (the
    other side replaced by 0, so that no exponential overflows), so autograd differentiates the branch that is
    used: the slope is ``sigmoid(x)`` everywhere, ``1/2`` at ``x = 0`` included."""
    positive = x > 0
    above = torch.where(positive, x, torch.zeros_like(x))
    below = torch.where(positive, torch.zeros_like(x), x)
    return torch.where(positive, above + torch.log1p(torch.exp(-above)), torch.log1p(torch.exp(below)))


def _softplus_float(x: float) -> float:
    """:func:`_softplus` on a Python float."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def log_alpha_of_lam(lam):
    """``log alpha = -softplus(-2 lam) / 2``: ``log alpha`` of a VP schedule as a function of its half log-SNR.

    From ``lam = log alpha - log sigma`` and ``alpha^2 + sigma^2 = 1``: ``alpha^2 = sigmoid(2 lam)``, whatever the
    schedule (DPM-Solver, Lu et al. 2022, Sec. 2 and App. D). ``lam``: a float (returns a float) or a float64 tensor
    (returns a tensor, differentiable in ``lam``); full precision for every ``lam``.
    """
    return -0.5 * (_softplus(-2.0 * lam) if isinstance(lam, torch.Tensor) else _softplus_float(-2.0 * lam))


def log_sigma_of_lam(lam):
    """``log sigma = -softplus(2 lam) / 2`` (``sigma^2 = sigmoid(-2 lam)``): as :func:`log_alpha_of_lam`."""
    return -0.5 * (_softplus(2.0 * lam) if isinstance(lam, torch.Tensor) else _softplus_float(2.0 * lam))


class VPSchedule:
    """Base class: subclasses implement ``_log_alpha``, ``_dlog_alpha`` and ``_t_from_log_alpha`` on float64
    tensors; ``T`` is the largest and ``t_min`` the smallest time at which the schedule is valid."""

    T: float
    t_min: float

    # -- public API ---------------------------------------------------------------------------------------------
    def log_alpha(self, t):
        """``log alpha_t``."""
        return self._apply(t, "t", self._log_alpha)

    def alpha(self, t):
        """``alpha_t = exp(log alpha_t)``."""
        return self._apply(t, "t", lambda u: torch.exp(self._log_alpha(u)))

    def sigma(self, t):
        """``sigma_t = sqrt(1 - alpha_t^2)``, computed as ``sqrt(-expm1(2 log alpha_t))``."""
        return self._apply(t, "t", lambda u: torch.sqrt(-torch.expm1(2.0 * self._log_alpha(u))))

    def lam(self, t):
        """Half log-SNR ``lam_t = log(alpha_t / sigma_t)``."""
        return self._apply(t, "t", self._lam)

    def inverse_lam(self, lam):
        """The time ``t`` with ``lam_t = lam`` (exact inverse of :meth:`lam`)."""
        return self._apply(lam, "lam", self._inverse_lam, check_range=False)

    def f(self, t):
        """Drift coefficient ``f(t) = d log alpha_t / dt`` of the forward SDE ``dx = f x dt + g dw``."""
        return self._apply(t, "t", self._dlog_alpha)

    def g2(self, t):
        """Squared diffusion ``g^2(t) = d sigma_t^2/dt - 2 f(t) sigma_t^2 = -2 f(t)`` (VP)."""
        return self._apply(t, "t", lambda u: -2.0 * self._dlog_alpha(u))

    def check_time(self, t: float, name: str = "t") -> float:
        """Validate a scalar time: finite and inside ``[t_min, T]``; returns it as a float."""
        if isinstance(t, torch.Tensor):
            if t.numel() != 1:
                raise ValueError(f"{name} must be a scalar time, got a tensor of shape {tuple(t.shape)}")
            t = check_has_data(t, name).item()
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a float, got {type(t).__name__}")
        t = float(t)
        if not math.isfinite(t) or not (self.t_min * (1 - 1e-12) <= t <= self.T * (1 + 1e-12)):
            raise ValueError(f"{name}={t!r} is outside the valid range [{self.t_min:g}, {self.T:g}] of {self!r}")
        return t

    # -- float64 scalar functions used by the samplers (no validation, no tensor round trip cost) ----------------
    # Subclasses override the ``*_float`` methods with plain ``math`` (a 0-d tensor operation costs microseconds,
    # and samplers evaluate these a few times per step); the results agree with the tensor path to an ulp or two.
    def log_alpha_float(self, t: float) -> float:
        """``log alpha_t`` at a float64 time (not validated)."""
        return float(self._log_alpha(torch.tensor(t, dtype=torch.float64)))

    def lam_inverse_float(self, lam: float) -> float:
        """The time with half log-SNR ``lam`` (float64, not validated)."""
        return self._t_from_log_alpha_float(log_alpha_of_lam(lam))

    def _t_from_log_alpha_float(self, log_alpha: float) -> float:
        return float(self._t_from_log_alpha(torch.tensor(log_alpha, dtype=torch.float64)))

    def lams_of(self, ts) -> np.ndarray:
        """``lam`` at many float64 times at once (returns a float64 numpy array)."""
        return self._lam(torch.as_tensor(np.asarray(ts, dtype=np.float64))).numpy()

    # -- internals ----------------------------------------------------------------------------------------------
    def _lam(self, t: torch.Tensor) -> torch.Tensor:
        log_alpha = self._log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def _inverse_lam(self, lam: torch.Tensor) -> torch.Tensor:
        return self._t_from_log_alpha(log_alpha_of_lam(lam))

    def _apply(self, value, name, fn, check_range=True):
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
            v64 = check_has_data(value, name).to(torch.float64)
            if check_range:
                self._check_tensor_range(v64, name, torch.finfo(value.dtype).eps)
            elif not bool(torch.isfinite(v64).all()):
                raise ValueError(f"{name} must be finite, got a tensor with NaN or Inf entries")
            return fn(v64).to(value.dtype)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(value).__name__}")
        if check_range:
            value = self.check_time(value, name)
        elif not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return float(fn(torch.tensor(float(value), dtype=torch.float64)))

    def _check_tensor_range(self, t: torch.Tensor, name: str, eps: float = 0.0) -> None:
        # Times given in a low-precision dtype carry its rounding: float32(1e-5) is 2.5e-9 relative below 1e-5.
        rel = max(1e-12, 2.0 * eps)
        lo, hi = self.t_min * (1 - rel), self.T * (1 + rel)
        bad = ~torch.isfinite(t) | (t < lo) | (t > hi)
        if bool(bad.any()):
            worst = t[bad].flatten()[0].item()
            raise ValueError(f"{name} contains {worst!r}, outside the valid range [{self.t_min:g}, {self.T:g}] "
                             f"of {self!r}")


class VPLinear(VPSchedule):
    """Linear VP schedule of DDPM in continuous time (Song et al. 2021; DPM-Solver App. D.1).

    ``beta(t) = beta_0 + (beta_1 - beta_0) t`` and

        log alpha_t = -(beta_1 - beta_0) t^2 / 4 - beta_0 t / 2,     t in (0, T = 1].

    ``inverse_lam`` solves the quadratic in closed form, rationalised to avoid cancellation:
    ``t = 4c / (beta_0 + sqrt(beta_0^2 + 4 (beta_1 - beta_0) c))`` with ``c = -log alpha = softplus(-2 lam)/2``.
    ``t_min = 1e-5`` is the smallest time the samplers accept (``lam(1e-5) ~ 6.9``).
    """

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, T: float = 1.0):
        self.beta_0 = check_positive_float(beta_0, "beta_0")
        self.beta_1 = check_positive_float(beta_1, "beta_1")
        if self.beta_1 < self.beta_0:
            raise ValueError(f"beta_1 must be >= beta_0, got beta_0={beta_0!r}, beta_1={beta_1!r}")
        self.T = check_positive_float(T, "T")
        self.t_min = min(1e-5, self.T / 10)
        log_alpha_T = self.log_alpha_float(self.T)
        if log_alpha_T < _LOG_ALPHA_MIN:
            # alpha_T = exp(log alpha_T) would be subnormal or 0: the data prediction divides by it and the
            # step coefficients contain alpha_t / alpha_s, so nothing downstream could be computed at T.
            raise ValueError(f"beta_1={beta_1!r} and T={T!r} give log alpha_T = {log_alpha_T:.6g}, below "
                             f"{_LOG_ALPHA_MIN:.6g}: alpha_T underflows float64. Need (beta_1 - beta_0) T^2 / 4 + "
                             f"beta_0 T / 2 <= {-_LOG_ALPHA_MIN:.6g}")

    def __repr__(self):
        return f"VPLinear(beta_0={self.beta_0:g}, beta_1={self.beta_1:g}, T={self.T:g})"

    def _log_alpha(self, t):
        return -0.25 * (self.beta_1 - self.beta_0) * t * t - 0.5 * self.beta_0 * t

    def _dlog_alpha(self, t):
        return -0.5 * (self.beta_0 + (self.beta_1 - self.beta_0) * t)

    def _t_from_log_alpha(self, log_alpha):
        c = -log_alpha
        return 4.0 * c / (self.beta_0 + torch.sqrt(self.beta_0**2 + 4.0 * (self.beta_1 - self.beta_0) * c))

    def log_alpha_float(self, t: float) -> float:
        return -0.25 * (self.beta_1 - self.beta_0) * t * t - 0.5 * self.beta_0 * t

    def _t_from_log_alpha_float(self, log_alpha: float) -> float:
        c = -log_alpha
        return 4.0 * c / (self.beta_0 + math.sqrt(self.beta_0**2 + 4.0 * (self.beta_1 - self.beta_0) * c))


class VPCosine(VPSchedule):
    """Cosine VP schedule of improved DDPM (Nichol & Dhariwal 2021; DPM-Solver App. D.1).

    With ``theta(t) = (t + s) / (1 + s) * pi / 2`` and ``theta_0 = theta(0)``:

        log alpha_t = log cos(theta(t)) - log cos(theta_0),     s = 0.008.

    ``alpha_t`` vanishes at ``t = 1`` (``lam -> -inf``), so the schedule ends at ``T = 0.9946`` as in the official
    DPM-Solver code: there ``lam_T ~ -4.78``, close to the linear schedule's ``lam_1 ~ -5.03``, and the
    instantaneous ``beta(t) = pi tan(theta) / (1 + s)`` is still finite (~ 370). The log is evaluated as
    ``log1p(-2 sin((theta+theta_0)/2) sin((theta-theta_0)/2) / cos(theta_0))`` so that small t keeps full relative
    precision, and the inverse uses ``atan2`` with ``1 - cos(theta)`` formed without cancellation.
    """

    def __init__(self, s: float = 0.008, T: float = 0.9946):
        self.s = check_positive_float(s, "s")
        self.T = check_positive_float(T, "T")
        if self.T >= 1.0:
            raise ValueError(f"T must be < 1 for the cosine schedule (alpha_1 = 0), got {T!r}")
        self.t_min = 1e-5
        self._theta_0 = self.s / (1.0 + self.s) * math.pi / 2.0

    def __repr__(self):
        return f"VPCosine(s={self.s:g}, T={self.T:g})"

    def _theta(self, t):
        return (t + self.s) / (1.0 + self.s) * (math.pi / 2.0)

    def _log_alpha(self, t):
        half_sum = 0.5 * (self._theta(t) + self._theta_0)
        half_diff = 0.25 * math.pi * t / (1.0 + self.s)
        return torch.log1p(-2.0 * torch.sin(half_sum) * torch.sin(half_diff) / math.cos(self._theta_0))

    def _dlog_alpha(self, t):
        return -(math.pi / (2.0 * (1.0 + self.s))) * torch.tan(self._theta(t))

    def _t_from_log_alpha(self, log_alpha):
        cos_0 = math.cos(self._theta_0)
        cos_theta = cos_0 * torch.exp(log_alpha)
        one_minus_cos = 2.0 * math.sin(self._theta_0 / 2.0) ** 2 - cos_0 * torch.expm1(log_alpha)
        sin_theta = torch.sqrt(one_minus_cos * (1.0 + cos_theta))
        theta = torch.atan2(sin_theta, cos_theta)
        return (theta - self._theta_0) * (2.0 * (1.0 + self.s) / math.pi)

    def log_alpha_float(self, t: float) -> float:
        half_sum = 0.5 * (self._theta(t) + self._theta_0)
        half_diff = 0.25 * math.pi * t / (1.0 + self.s)
        return math.log1p(-2.0 * math.sin(half_sum) * math.sin(half_diff) / math.cos(self._theta_0))

    def _t_from_log_alpha_float(self, log_alpha: float) -> float:
        cos_0 = math.cos(self._theta_0)
        cos_theta = cos_0 * math.exp(log_alpha)
        one_minus_cos = 2.0 * math.sin(self._theta_0 / 2.0) ** 2 - cos_0 * math.expm1(log_alpha)
        sin_theta = math.sqrt(one_minus_cos * (1.0 + cos_theta))
        theta = math.atan2(sin_theta, cos_theta)
        return (theta - self._theta_0) * (2.0 * (1.0 + self.s) / math.pi)


class VPDiscrete(VPSchedule):
    """Discrete-time DDPM schedule made continuous as in the official DPM-Solver (App. D.1).

    Given ``betas`` (or ``alphas_cumprod``) of length N, ``log alpha_n = 0.5 * sum_{i<=n} log(1 - beta_i)`` sits at
    ``t_n = (n + 1) / N`` and ``log alpha_t`` is the piecewise-linear interpolant, so ``t`` ranges over
    ``[1/N, 1]`` (``t_min = 1/N``; extrapolating below it can give ``alpha > 1``). ``inverse_lam`` inverts the
    interpolant exactly. Look-ups are binary searches (O(log N)).

    A model trained on the discrete steps expects the integer-like input ``1000 (t - 1/N)``; see
    ``expsolver.models.ModelWrapper(time_input="discrete")``.
    """

    def __init__(self, betas=None, alphas_cumprod=None):
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError("give exactly one of betas= or alphas_cumprod=")
        if betas is not None:
            b = check_finite_array(betas, "betas")
            if np.any(b <= 0) or np.any(b >= 1):
                raise ValueError(f"betas must lie in (0, 1), got values in [{b.min():g}, {b.max():g}]")
            log_alphas = 0.5 * np.cumsum(np.log1p(-b))
        else:
            a = check_finite_array(alphas_cumprod, "alphas_cumprod")
            if np.any(a <= 0) or np.any(a >= 1) or np.any(np.diff(a) >= 0):
                raise ValueError("alphas_cumprod must be strictly decreasing with values in (0, 1)")
            log_alphas = 0.5 * np.log(a)
        n = log_alphas.shape[0]
        if n < 2:
            raise ValueError(f"{'betas' if betas is not None else 'alphas_cumprod'} must hold at least 2 discrete "
                             f"steps, got {n}")
        self.total_N = n
        self.t_array = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)[1:]
        self.log_alpha_array = torch.as_tensor(log_alphas, dtype=torch.float64)
        self._slopes = torch.diff(self.log_alpha_array) / torch.diff(self.t_array)
        # log_alpha decreasing in t: the reversed table is increasing, ready for searchsorted.
        self._log_alpha_increasing = torch.flip(self.log_alpha_array, [0])
        # The same tables as Python lists for the float path (bisect: O(log N) per look-up, no tensors).
        self._t_list = self.t_array.tolist()
        self._log_alpha_list = self.log_alpha_array.tolist()
        self._slopes_list = self._slopes.tolist()
        self._log_alpha_increasing_list = self._log_alpha_increasing.tolist()
        self.T = 1.0
        self.t_min = float(self.t_array[0])

    def __repr__(self):
        return f"VPDiscrete(N={self.total_N})"

    def _segment(self, t):
        idx = torch.searchsorted(self.t_array.to(t.device), t.contiguous(), right=True) - 1
        return torch.clamp(idx, 0, self.total_N - 2)

    def _log_alpha(self, t):
        i = self._segment(t)
        t_array, la = self.t_array.to(t.device), self.log_alpha_array.to(t.device)
        return la[i] + (t - t_array[i]) * self._slopes.to(t.device)[i]

    def _dlog_alpha(self, t):
        return self._slopes.to(t.device)[self._segment(t)]

    def _t_from_log_alpha(self, log_alpha):
        table = self._log_alpha_increasing.to(log_alpha.device)
        j = torch.clamp(torch.searchsorted(table, log_alpha.contiguous(), right=True) - 1, 0, self.total_N - 2)
        i = self.total_N - 1 - j  # segment [t_{i-1}, t_i] in the forward table
        t_array, la = self.t_array.to(log_alpha.device), self.log_alpha_array.to(log_alpha.device)
        return t_array[i] + (log_alpha - la[i]) / self._slopes.to(log_alpha.device)[i - 1]

    def log_alpha_float(self, t: float) -> float:
        i = min(max(bisect_right(self._t_list, t) - 1, 0), self.total_N - 2)
        return self._log_alpha_list[i] + (t - self._t_list[i]) * self._slopes_list[i]

    def _t_from_log_alpha_float(self, log_alpha: float) -> float:
        j = min(max(bisect_right(self._log_alpha_increasing_list, log_alpha) - 1, 0), self.total_N - 2)
        i = self.total_N - 1 - j
        return self._t_list[i] + (log_alpha - self._log_alpha_list[i]) / self._slopes_list[i - 1]
