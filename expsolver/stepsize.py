"""Step-size control for embedded pairs: the controller object of :func:`expsolver.integrate` (kept apart from the
solver, as diffrax separates ``stepsize_controller`` from ``solver``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._validation import check_bool, check_positive_float

__all__ = ["AdaptiveController"]


class AdaptiveController:
    """Step-size control of an embedded pair in ``rho`` (DPM-Solver, Lu et al. 2022a, Alg. 4 and App. C).

    With the higher- and lower-order results ``x_high``, ``x_low`` of a step and the previous accepted lower-order
    state ``x_prev``: ``delta = max(atol, rtol max(|x_low|, |x_prev|))`` and ``E = max_batch RMS((x_high -
    x_low)/delta)``. The step is accepted if ``E <= 1``; then ``h <- min(theta h E^{-1/k}, rho_end - rho_s)``
    (``k`` the pair's order). The whole batch shares one step size, as in the paper and the official code.

    Parameters
    ----------
    t_start, t_end : float
        The span (``t_end < t_start`` for diffusion problems; any direction in which ``rho`` increases).
    atol, rtol : float
        Tolerances (official defaults 0.0078 and 0.05).
    h_init : float
        First step in ``rho``.
    theta : float
        Safety factor in ``(0, 1]``.
    t_err : float
        With ``official=True``: stop once ``|s - t_end| <= t_err`` (the official code; may end up to a step early).
    official : bool
        Reproduce the official code: its stopping rule and its float32 rounding of ``E^{-1/k}``. Otherwise the
        first step is clipped to the span, a step that would leave less than 1% of itself before the end is
        stretched onto it (no sliver step; Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.4) and the loop ends
        exactly at ``t_end``.
    max_steps : int
        A ``RuntimeError`` is raised if ``t_end`` is not reached in this many attempts.
    """

    def __init__(self, t_start: float, t_end: float, *, atol: float = 0.0078, rtol: float = 0.05,
                 h_init: float = 0.05, theta: float = 0.9, t_err: float = 1e-5, official: bool = False,
                 max_steps: int = 100_000):
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.atol, self.rtol = check_positive_float(atol, "atol"), check_positive_float(rtol, "rtol")
        self.h_init, self.theta = check_positive_float(h_init, "h_init"), check_positive_float(theta, "theta")
        self.t_err = check_positive_float(t_err, "t_err")
        if self.theta > 1.0:
            # A safety factor above 1 can grow h after a rejection: the step is rejected again and again.
            raise ValueError(f"theta must be in (0, 1] (the step-size safety factor), got {theta!r}")
        self.official = check_bool(official, "official")
        self.max_steps = int(max_steps)

    def error(self, x_high, x_low, x_prev) -> float:
        """The error norm ``E`` of a step (class docstring)."""
        delta = torch.clamp(self.rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=self.atol)
        ratio = ((x_high - x_low) / delta).reshape(x_high.shape[0], -1)
        return float(torch.sqrt(torch.mean(ratio * ratio, dim=1)).max())

    def finished(self, s: float) -> bool:
        return abs(s - self.t_end) <= self.t_err if self.official else s == self.t_end

    def next_h(self, h: float, err: float, order: int, rho_left: float) -> float:
        factor = err ** (-1.0 / order) if err > 0 else math.inf
        if self.official:
            factor = float(np.float32(factor))  # the official code rounds E^(-1/order) to float32
        return min(self.theta * h * factor, rho_left)
