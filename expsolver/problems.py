"""Semi-linear problems for exponential integrators.

A semi-linear ODE ``dx/dt = a(t) x + b(t) N(x, t)`` is written, in a reparametrised time ``rho``, so that over a
step ``s -> t`` with ``h = rho_t - rho_s`` the variation-of-constants formula reads

    x_t = linear(s, t) * x_s + scale(t) * int_0^h e^{z (h - u)} N(x(rho_s + u), rho_s + u) du.         (*)

An exponential integrator replaces ``N`` by a polynomial in ``u`` and integrates it exactly with the
phi-functions: ``int_0^h e^{z (h-u)} u^j / j! du = h^{j+1} phi_{j+1}(z h)``. A problem therefore exposes
``rho(t)``, its inverse, the nonlinear term ``N`` and, per step, the numbers ``(h, linear, scale, z)``
(:class:`StepCoefficients`). It also exposes the plain right-hand side ``rhs(t, x)`` for classical solvers.

Problems here:

* :class:`DiffusionODE`: the probability-flow ODE (DPM-Solver eq. (2.4); seed eq. (8)) in ``rho = lam``.
  Noise form (DPM-Solver eq. (3.4), seed (16)): ``N = eps_theta``, ``linear = alpha_t/alpha_s``,
  ``scale = -sigma_t``, ``z = 1``. Data form (DPM-Solver++ eq. (9)): ``N = x0_theta``,
  ``linear = sigma_t/sigma_s``, ``scale = alpha_t``, ``z = -1``.
* :class:`BernoulliETDProblem`: a non-diffusion test problem ``dx/dt = L x + c x^2`` (diagonal ``L``) in
  ``rho = t`` with ``z = L``, whose exact solution is known, to show the machinery is generic (classical
  exponential time differencing, Cox & Matthews 2002; Hochbruck & Ostermann 2010).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._buffers import BufferPool
from ._validation import check_choice, check_float
from .models import ModelWrapper
from .schedules import VPSchedule
from .phi import phis

__all__ = ["StepCoefficients", "SemiLinearProblem", "DiffusionODE", "BernoulliETDProblem", "PREDICTIONS", "combine"]

PREDICTIONS = ("noise", "data")


@dataclass(frozen=True)
class StepCoefficients:
    """The numbers of formula (*) for one step: ``h`` (float, > 0 in the direction of integration) and
    ``linear``, ``scale``, ``z`` (floats, or tensors broadcastable against the state for diagonal linear parts).
    ``pool`` (optional :class:`~expsolver._buffers.BufferPool`) is where :func:`combine` takes its output tensor
    from; it does not change any value."""

    h: float
    linear: object
    scale: object
    z: object
    pool: object = field(default=None, compare=False, repr=False)

    def integrals(self, n: int) -> list:
        """``[I_0, ..., I_{n-1}]`` with ``I_j = h^{j+1} phi_{j+1}(z h)``: the exact integral of ``u^j / j!``
        against the kernel ``e^{z (h - u)}`` over ``[0, h]``."""
        values = phis(n, self.z * self.h)
        return [self.h ** (j + 1) * values[j + 1] for j in range(n)]


class SemiLinearProblem:
    """Interface of a semi-linear problem (see the module docstring)."""

    def rho(self, t: float) -> float:
        raise NotImplementedError

    def t_of_rho(self, rho: float) -> float:
        raise NotImplementedError

    def nonlinear(self, x: torch.Tensor, t: float) -> torch.Tensor:
        raise NotImplementedError

    def coefficients(self, s: float, t: float) -> StepCoefficients:
        raise NotImplementedError

    def rhs(self, t: float, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def nfe(self) -> int:
        raise NotImplementedError


def combine(c: StepCoefficients, x: torch.Tensor, terms) -> torch.Tensor:
    """``linear * x + scale * sum_j w_j N_j`` for ``terms = [(w_j, N_j), ...]``: the only place where step
    coefficients (float64) meet the state (in its own dtype)."""
    if isinstance(c.linear, float) and isinstance(c.scale, float) and all(isinstance(w, float) for w, _ in terms):
        buf = None if c.pool is None else c.pool.take(x)
        out = x * c.linear if buf is None else torch.mul(x, c.linear, out=buf)
        for w, n in terms:
            out.add_(n, alpha=c.scale * w)  # in place on the fresh ``out``: no temporary per term
        return out
    out = c.linear * x
    for w, n in terms:
        out = out + (c.scale * w) * n
    return out


class DiffusionODE(SemiLinearProblem):
    """The probability-flow ODE of a VP diffusion model in the half log-SNR ``lam``.

    ``dx/dt = f(t) x + g^2(t) / (2 sigma_t) eps_theta(x, t)``, integrated exactly in its linear part:

    * ``prediction="noise"``: ``x_t = (alpha_t/alpha_s) x_s - alpha_t int_{lam_s}^{lam_t} e^{-lam} eps dlam``
    * ``prediction="data"``: ``x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lam_s}^{lam_t} e^{lam} x0 dlam``

    Parameters
    ----------
    schedule : VPSchedule
    model : ModelWrapper
        Wrapping the same ``schedule`` object (``ValueError`` otherwise).
    prediction : {"noise", "data"}
    query_times : dict of float to float, optional
        Decoupled model times: where the nonlinear term is evaluated at a grid time ``t`` that is a key, the model
        is queried at ``query_times[t]`` instead, its output converted with ``alpha`` and ``sigma`` of that time
        (the prediction the solver integrates, as the model gives it at the query time); see ``model_timesteps``
        of :func:`expsolver.sample`. The step coefficients stay those of the grid.
    """

    def __init__(self, schedule, model: ModelWrapper, prediction: str = "noise", query_times: dict | None = None):
        if not isinstance(schedule, VPSchedule):
            raise TypeError(f"schedule must be a VPSchedule (VPLinear, VPCosine, VPDiscrete), got {type(schedule).__name__}")
        if not isinstance(model, ModelWrapper):
            raise TypeError(f"model must be a ModelWrapper, got {type(model).__name__}")
        if model.schedule is not schedule:
            # The wrapper converts the model's output with its own schedule's alpha and sigma: two schedules would
            # silently mix two ODEs.
            raise ValueError(f"model must wrap the same schedule object as the problem: the ModelWrapper holds "
                             f"{model.schedule!r}, the problem {schedule!r}")
        self.schedule = schedule
        self.model = model
        self.prediction = check_choice(prediction, "prediction", PREDICTIONS)
        self._points: dict[float, tuple[float, float, float, float]] = {}
        self._query_times = dict(query_times or {})
        self._pool = BufferPool()  # work tensors of this integration (CPU, no autograd); values unaffected

    @property
    def nfe(self) -> int:
        return self.model.nfe

    def point(self, t: float) -> tuple[float, float, float, float]:
        """``(lam, log_alpha, alpha, sigma)`` at a float64 time, cached (grids revisit their times)."""
        p = self._points.get(t)
        if p is None:
            log_alpha = self.schedule.log_alpha_float(t)
            if not -math.inf < log_alpha < 0.0:  # sigma_t = 0 or NaN: lam is not defined there
                self.schedule.check_time(t, "t")  # names the schedule's valid range
                raise ValueError(f"t={t!r} gives log alpha_t = {log_alpha!r}; the diffusion ODE needs "
                                 f"-inf < log alpha_t < 0")
            sigma = math.sqrt(-math.expm1(2.0 * log_alpha))
            lam = log_alpha - math.log(sigma)
            p = (lam, log_alpha, math.exp(log_alpha), sigma)
            self._points[t] = p
        return p

    def rho(self, t: float) -> float:
        return self.point(t)[0]

    def t_of_rho(self, rho: float) -> float:
        return self.schedule.lam_inverse_float(rho)

    def nonlinear(self, x: torch.Tensor, t: float) -> torch.Tensor:
        t = self._query_times.get(t, t)
        _, _, alpha, sigma = self.point(t)
        if self.prediction == "noise":
            self.latest = self.model.eps(x, t, alpha, sigma)
        else:
            self.latest = self.model.data(x, t, alpha, sigma, pool=self._pool)
        return self.latest  # also what the driver's callback reports as the prediction

    def coefficients(self, s: float, t: float) -> StepCoefficients:
        lam_s, log_alpha_s, _, sigma_s = self.point(s)
        lam_t, log_alpha_t, alpha_t, sigma_t = self.point(t)
        h = lam_t - lam_s
        if self.prediction == "noise":
            return StepCoefficients(h, math.exp(log_alpha_t - log_alpha_s), -sigma_t, 1.0, self._pool)
        return StepCoefficients(h, sigma_t / sigma_s, alpha_t, -1.0, self._pool)

    def rhs(self, t: float, x: torch.Tensor) -> torch.Tensor:
        _, _, alpha, sigma = self.point(t)
        f, g2 = self.schedule.f(t), self.schedule.g2(t)
        return f * x + (g2 / (2.0 * sigma)) * self.model.eps(x, t, alpha, sigma)


class BernoulliETDProblem(SemiLinearProblem):
    """``dx/dt = L x + c x^2`` with diagonal ``L`` (a Bernoulli equation), integrated in ``rho = t``.

    With ``v = 1/x``: ``v' = -L v - c``, so the exact solution is

        x(t) = 1 / ((1/x_0 + c/L) e^{-L (t - t_0)} - c/L)            (componentwise).

    Stiff when ``L`` has large negative entries: explicit Runge-Kutta methods then need ``|L| h`` small, while
    exponential integrators keep their order with ``|L| h`` large. ``N(x, t) = c x^2`` depends on ``x``, so the
    stage values matter and the leading error terms do not vanish.
    """

    def __init__(self, L, c: float = 1.0):
        L = torch.as_tensor(L, dtype=torch.float64)
        if L.ndim != 1 or not bool(torch.isfinite(L).all()) or bool((L == 0).any()):
            raise ValueError("L must be a 1-D tensor of finite, non-zero diagonal entries")
        self.L = L
        self.c = check_float(c, "c")
        self._nfe = 0

    @property
    def nfe(self) -> int:
        return self._nfe

    def rho(self, t: float) -> float:
        return t

    def t_of_rho(self, rho: float) -> float:
        return rho

    def nonlinear(self, x, t):
        self._nfe += 1
        return self.c * x * x

    def coefficients(self, s, t):
        h = t - s
        L = self.L
        return StepCoefficients(h, torch.exp(L * h), 1.0, L)

    def rhs(self, t, x):
        self._nfe += 1
        return self.L * x + self.c * x * x

    def exact(self, x0: torch.Tensor, t0: float, t: float) -> torch.Tensor:
        """The exact solution at ``t`` from ``x0`` at ``t0``."""
        L = self.L.to(x0)
        ratio = self.c / L
        return 1.0 / ((1.0 / x0 + ratio) * torch.exp(-L * (t - t0)) - ratio)
