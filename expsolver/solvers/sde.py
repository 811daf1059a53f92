"""Stochastic samplers of the reverse diffusion SDE: SDE-DPM-Solver++(1, 2M), SDE-DPM-Solver(1, 2M),
Euler-Maruyama and the DDPM ancestral step.

The reverse SDE and its variation-of-constants form
---------------------------------------------------
The reverse SDE (Song et al. 2021 eq. (6)), integrated from ``t_start`` down to ``t_end``, is

    dx = [f(t) x + g^2(t)/sigma_t eps_theta(x, t)] dt + g(t) dw_bar,     f = dlog alpha/dt, g^2 = -2 sigma^2 dlam/dt.

In the half log-SNR, with ``g dw_bar = sqrt(2) sigma dB_lam`` (:mod:`expsolver.brownian`) and ``h = lam_t - lam_s``:

* **data form** (``x0 = (x - sigma eps)/alpha``): the drift is ``(-dlog alpha + 2 dlog sigma)/dt x +
  2 alpha (dlam/dt) x0``, whose linear part integrates to ``(sigma_t^2/sigma_s^2)(alpha_s/alpha_t) =
  (sigma_t/sigma_s) e^{-h}``. Variation of constants gives (the SDE variant of DPM-Solver++, Lu et al. 2022b;
  the ``sde-dpmsolver++`` of diffusers)

      x_t = (sigma_t/sigma_s) e^{-h} x_s + 2 alpha_t int_0^h e^{-2(h-u)} x0(lam_s + u) du
            + sqrt(2) sigma_t int_{lam_s}^{lam_t} e^{-(lam_t - lam)} dB_lam,

  i.e. the semi-linear form of :mod:`expsolver.problems` with ``linear = (sigma_t/sigma_s) e^{-h}``,
  ``scale = 2 alpha_t``, ``z = -2``, and a noise of variance ``sigma_t^2 (1 - e^{-2h})``. Freezing ``x0`` gives
  ``2 alpha_t h phi_1(-2h) = alpha_t (1 - e^{-2h})``: **SDE-DPM-Solver++1** (the last line of the seed)

      x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0_theta(x_s, s) + sigma_t sqrt(1 - e^{-2h}) z.

  **SDE-DPM-Solver++(2M)** adds the first difference ``D1 = (x0_0 - x0_{-1})/r0`` (``r0 = h_prev/h``) with weight
  ``2 alpha_t I_0/2 = alpha_t (1 - e^{-2h})/2`` (``solver_type="dpmsolver"``, diffusers "midpoint") or
  ``2 alpha_t I_1/h = alpha_t (1 - (1 - e^{-2h})/(2h))`` (``"taylor"``, diffusers "heun": the exact integral of the
  linear interpolant).
* **noise form**: the linear part integrates to ``alpha_t/alpha_s`` and the kernel is
  ``-2 alpha_t e^{-lam} = -2 sigma_t e^{(lam_t - lam)}``: ``scale = -2 sigma_t``, ``z = 1`` (twice the
  probability-flow ODE's ``-sigma_t``), and the noise ``sqrt(2) alpha_t int e^{-lam} dB =
  sqrt(2) sigma_t int e^{(lam_t - lam)} dB`` has variance ``sigma_t^2 (e^{2h} - 1)``. Freezing ``eps`` gives
  **SDE-DPM-Solver-1** (diffusers ``sde-dpmsolver``)

      x_t = (alpha_t/alpha_s) x_s - 2 sigma_t (e^h - 1) eps_theta(x_s, s) + sigma_t sqrt(e^{2h} - 1) z,

  and its 2M variant adds ``-sigma_t (e^h - 1) D1`` ("dpmsolver") or ``-2 sigma_t ((e^h - 1)/h - 1) D1``
  ("taylor").

The deterministic part of every multistep step is therefore exactly :meth:`DPMSolverMultistep.update` applied to
:class:`ReverseDiffusionSDE` (whose ``coefficients`` carry the numbers above); the rule only adds the noise.

Baselines in ``t`` (:func:`expsolver.reverse_sde_sample`)
-------------------------------------------------------
* **Euler-Maruyama** on (7): ``x_t = x_s + (t - s) [f(s) x_s + g^2(s)/sigma_s eps(x_s, s)] + g(s) sqrt(s - t) z``.
* **DDPM ancestral step** (Ho et al. 2020, Alg. 2 with the posterior variance ``beta_tilde``), written for a
  step ``s -> t`` of a continuous schedule: ``a = alpha_s^2/alpha_t^2``,
  ``x_t = (alpha_t/alpha_s) (x_s - (1 - a)/sigma_s eps(x_s, s)) + sigma_t sqrt(1 - e^{-2h}) z``
  (``beta_tilde = (1 - a) sigma_t^2/sigma_s^2 = sigma_t^2 (1 - e^{-2h})``). Its mean is algebraically the mean of
  SDE-DPM-Solver++1 (both are the posterior mean ``E[x_t | x_s, x_0 = x0_theta]``), and its noise is the same, so
  the two coincide; tests check the identity between the two independently written formulas.

Orders (additive noise; ``h`` the step in ``lam``, or in ``t`` for Euler-Maruyama)
----------------------------------------------------------------------------------
The noise integral is sampled exactly by the exponential schemes, so their only error is the drift quadrature.
Freezing the prediction leaves ``int K(t, lam) [F(x_lam) - F(x_s)] dlam`` per step; ``x_lam - x_s`` contains the
Brownian increment, so this local error has a zero-mean part of size ``h^{3/2}`` (independent across steps, adding
up to ``h`` globally) and a mean part ``O(h^2)``: **strong order 1, weak order 1** for SDE-DPM-Solver(++)1, the
DDPM step and Euler-Maruyama (Kloeden & Platen 1992, Ch. 10 and 14, additive noise; Jentzen & Kloeden 2009 for
the exponential Euler). The 2M correction interpolates through the *previous* point, which does not
sample the iterated integral ``int (B_lam - B_s) dlam`` of the current step, so its strong order stays 1. Its
weak order is 2: in expectation the backward difference ``b_s - b_{s-1}`` supplies the drift's second Taylor term
except for ``c^2 grad^2 u : grad b h^2/2``, which is exactly the covariance of the Brownian increment with the
missing iterated integral, and the two cancel (a derivation sketch in :mod:`analysis.sde_study`, confirmed by
the exact single-Gaussian computation and the Monte-Carlo study). The one-step schemes have weak order 1. :data:`SDE_REGISTRY` records these orders
with every scheme; the tests assert them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validation import check_choice, check_int
from ..brownian import GeneratorNoise, NoiseSource
from ..problems import DiffusionODE, StepCoefficients
from .base import MultistepSolver, Solver, Step
from .dpm_solver import SOLVER_TYPES, DPMSolverMultistep

__all__ = ["ReverseDiffusionSDE", "SDEDPMSolverMultistep", "EulerMaruyama", "DDPMAncestral", "SDESolverConfig",
           "SDE_REGISTRY", "SDE_ALGORITHM_TYPES", "SDE_MAX_ORDER"]

#: ``algorithm_type`` values of :func:`expsolver.sample` that select a stochastic solver, and their prediction.
SDE_ALGORITHM_TYPES = {"sde-dpmsolver++": "data", "sde-dpmsolver": "noise"}
#: Highest multistep order of the SDE-DPM-Solvers (as in diffusers; see the module docstring on why more
#: interpolation points cannot raise the strong order above 1).
SDE_MAX_ORDER = 2


class ReverseDiffusionSDE(DiffusionODE):
    """The reverse diffusion SDE (Song et al. 2021 eq. (6)) in ``rho = lam``: drift part in semi-linear form plus exact noise.

    Same ``rho``, ``nonlinear`` (``eps`` or ``x0``) and cached ``point`` as :class:`~expsolver.DiffusionODE`; the
    step numbers differ (module docstring):

    * ``prediction="data"``: ``linear = (sigma_t/sigma_s) e^{-h}``, ``scale = 2 alpha_t``, ``z = -2``; noise rate
      ``-1`` and standard deviation ``sigma_t sqrt(1 - e^{-2h})``;
    * ``prediction="noise"``: ``linear = alpha_t/alpha_s``, ``scale = -2 sigma_t``, ``z = 1``; noise rate ``+1`` and
      standard deviation ``sigma_t sqrt(e^{2h} - 1)``.

    :meth:`drift` and :meth:`diffusion` give the SDE in ``t`` (Euler-Maruyama); the inherited ``rhs`` is still the
    probability-flow ODE's right-hand side (the drift of the deterministic counterpart), not the SDE drift.

    Parameters
    ----------
    schedule : VPSchedule
    model : ModelWrapper
    prediction : {"data", "noise"}
    """

    noise_variable = "lam"

    def __init__(self, schedule, model, prediction: str = "data"):
        super().__init__(schedule, model, prediction)

    @property
    def noise_rate(self) -> float:
        """Rate ``kappa`` of the noise kernel ``e^{kappa (lam_t - lam)}``: -1 (data form), +1 (noise form)."""
        return -1.0 if self.prediction == "data" else 1.0

    def coefficients(self, s: float, t: float) -> StepCoefficients:
        lam_s, log_alpha_s, _, sigma_s = self.point(s)
        lam_t, log_alpha_t, alpha_t, sigma_t = self.point(t)
        h = lam_t - lam_s
        if self.prediction == "data":
            return StepCoefficients(h, math.exp(math.log(sigma_t / sigma_s) - h), 2.0 * alpha_t, -2.0)
        return StepCoefficients(h, math.exp(log_alpha_t - log_alpha_s), -2.0 * sigma_t, 1.0)

    def noise_std(self, s: float, t: float) -> float:
        """Standard deviation of the exact noise term over ``s -> t``: ``sqrt(2) sigma_t sqrt(v_kappa(h))``, i.e.
        ``sigma_t sqrt(1 - e^{-2h})`` (data) or ``sigma_t sqrt(e^{2h} - 1)`` (noise), via ``expm1``."""
        lam_s = self.point(s)[0]
        lam_t, _, _, sigma_t = self.point(t)
        h = lam_t - lam_s
        return sigma_t * math.sqrt(-math.expm1(-2.0 * h) if self.prediction == "data" else math.expm1(2.0 * h))

    def drift(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """The drift of (7) in ``t``: ``f(t) x + g^2(t)/sigma_t eps_theta(x, t)`` (one model call)."""
        _, _, alpha, sigma = self.point(t)
        return self.schedule.f(t) * x + (self.schedule.g2(t) / sigma) * self.model.eps(x, t, alpha, sigma)

    def diffusion(self, t: float) -> float:
        """``g(t) = sqrt(g^2(t))``."""
        return math.sqrt(self.schedule.g2(t))


def _check_problem(problem, rule):
    if not isinstance(problem, ReverseDiffusionSDE):
        raise TypeError(f"{rule.name} needs a ReverseDiffusionSDE problem, got {type(problem).__name__}")


def _check_noise(noise) -> NoiseSource:
    if noise is None:
        return GeneratorNoise(None)
    if not isinstance(noise, NoiseSource):
        raise TypeError(f"noise must be a NoiseSource (GeneratorNoise, TensorNoise, BrownianPath), "
                        f"got {type(noise).__name__}")
    return noise


class SDEDPMSolverMultistep(MultistepSolver):
    """SDE-DPM-Solver++(kM) / SDE-DPM-Solver-kM, k = 1, 2: multistep exponential integrators of the reverse SDE.

    ``x_t = [deterministic multistep update of ReverseDiffusionSDE] + noise_std(s, t) z`` with ``z`` from the noise
    source (module docstring for the formulas). One NFE per step; prediction type from the problem (data:
    SDE-DPM-Solver++, noise: SDE-DPM-Solver). Strong and weak order 1 (module docstring).

    Parameters
    ----------
    order : {1, 2}
    solver_type : {"dpmsolver", "taylor"}
        Weight of the first difference (diffusers "midpoint" / "heun").
    noise : NoiseSource, optional
        Where the standard normals come from (:class:`~expsolver.brownian.GeneratorNoise`,
        :class:`~expsolver.brownian.TensorNoise`, :class:`~expsolver.BrownianPath`; default: torch's global
        generator).
    lower_order_final, lower_order_final_below
        See :class:`~expsolver.solvers.base.MultistepSolver`.
    """

    stochastic = True

    def __init__(self, order: int = 2, solver_type: str = "dpmsolver", noise: NoiseSource | None = None, *,
                 lower_order_final: bool = True, lower_order_final_below: int | None = None):
        self.order = check_int(order, "order", minimum=1, maximum=SDE_MAX_ORDER)
        self.solver_type = check_choice(solver_type, "solver_type", SOLVER_TYPES)
        self.noise = _check_noise(noise)
        self._set_final(lower_order_final, lower_order_final_below)
        self._drift = DPMSolverMultistep(self.order, self.solver_type, "corrected")
        self.name = f"SDE-DPM-Solver multistep-{order} ({solver_type})"

    def init(self, problem, x):
        _check_problem(problem, self)
        return []  # history of (lam, prediction), most recent last

    def update(self, problem, x, step: Step, history):
        """The deterministic multistep update of the reverse SDE plus its exactly sampled noise."""
        mean = self._drift.update(problem, x, step, history)
        z = self.noise.normal(step.index, "lam", history[-1][0], problem.rho(step.t), problem.noise_rate, x)
        return mean + problem.noise_std(step.s, step.t) * z


class _OneStepSDERule(Solver):
    """A one-NFE stochastic step rule of the reverse SDE: takes its noise source, checks its problem."""

    stochastic = True

    def __init__(self, noise: NoiseSource | None = None):
        self.noise = _check_noise(noise)

    def init(self, problem, x):
        _check_problem(problem, self)
        return None


class EulerMaruyama(_OneStepSDERule):
    """Euler-Maruyama in ``t`` for the reverse SDE (7), one NFE per step; strong and weak order 1 (additive noise).

    ``x_t = x_s + (t - s) [f(s) x_s + g^2(s)/sigma_s eps_theta(x_s, s)] + g(s) sqrt(s - t) z``, with
    ``z = (W_t - W_s)/sqrt(s - t)`` the normalised increment in the variable ``t`` (noise rate 0).
    """

    order = 1
    name = "Euler-Maruyama"

    def step(self, problem, x, step: Step, state):
        s, t = step.s, step.t
        z = self.noise.normal(step.index, "t", s, t, 0.0, x)
        return x + (t - s) * problem.drift(s, x) + (problem.diffusion(s) * math.sqrt(s - t)) * z


class DDPMAncestral(_OneStepSDERule):
    """The DDPM ancestral step (Ho et al. 2020, Alg. 2, posterior variance) on a continuous schedule; one NFE.

    With ``a = alpha_s^2/alpha_t^2`` (DDPM's ``alpha`` of the step) and ``h = lam_t - lam_s``:
    ``x_t = (alpha_t/alpha_s) (x_s - (1 - a)/sigma_s eps_theta(x_s, s)) + sigma_t sqrt(1 - e^{-2h}) z``.
    Identical to SDE-DPM-Solver++1 (module docstring); its noise is requested with rate -1 in ``lam`` so that the
    two consume the same normal from any noise source.
    """

    order = 1
    name = "DDPM ancestral"

    def step(self, problem, x, step: Step, state):
        s, t = step.s, step.t
        lam_s, log_alpha_s, alpha_s, sigma_s = problem.point(s)
        lam_t, log_alpha_t, _, sigma_t = problem.point(t)
        eps = problem.model.eps(x, s, alpha_s, sigma_s)
        one_minus_a = -math.expm1(2.0 * (log_alpha_s - log_alpha_t))
        ratio = math.exp(log_alpha_t - log_alpha_s)
        std = sigma_t * math.sqrt(-math.expm1(-2.0 * (lam_t - lam_s)))
        z = self.noise.normal(step.index, "lam", lam_s, lam_t, -1.0, x)
        return ratio * (x - (one_minus_a / sigma_s) * eps) + std * z


@dataclass(frozen=True)
class SDESolverConfig:
    """A named stochastic solver configuration (the SDE counterpart of :class:`~expsolver.solvers.SolverConfig`).

    The ODE :data:`~expsolver.solvers.REGISTRY` is deliberately not used: its order tests compare deterministic
    trajectories with an ODE reference, which a stochastic solver does not follow.

    Attributes
    ----------
    name : str
    entry : {"sample", "reverse_sde_sample"}
        The front door that runs it.
    options : dict
        Keyword options of that function (``algorithm_type``/``order``/... or ``scheme``).
    strong_order, weak_order : float
        Orders predicted by theory for additive noise (module docstring), asserted by the tests.
    noise_variable : {"lam", "t"}
        Variable its noise integral is taken in (a coupled :class:`~expsolver.brownian.BrownianPath` must use it).
    noise_rate : float
        Kernel rate of its noise integral.
    prediction : {"data", "noise"}
        Prediction of the :class:`ReverseDiffusionSDE` it runs on.
    note : str
    """

    name: str
    entry: str
    options: dict
    strong_order: float
    weak_order: float
    noise_variable: str
    noise_rate: float
    prediction: str = "data"
    note: str = ""

    def make(self, noise: NoiseSource | None = None):
        """A new solver object of this configuration with the given noise source, built from :attr:`options` by
        the translation :func:`expsolver.sample` and :func:`expsolver.reverse_sde_sample` use."""
        from .options import SDE_SCHEMES, solver_from_options  # the options module imports this one

        if self.entry == "reverse_sde_sample":
            return SDE_SCHEMES[self.options["scheme"]](noise)
        return solver_from_options(**self.options, noise=noise)[0]


SDE_REGISTRY: dict[str, SDESolverConfig] = {}


def _register(config: SDESolverConfig) -> None:
    if config.name in SDE_REGISTRY:
        raise ValueError(f"SDE solver name {config.name!r} is already registered")
    SDE_REGISTRY[config.name] = config


def _register_sde_solvers():
    for algorithm_type, prediction in SDE_ALGORITHM_TYPES.items():
        base = "SDE-DPM-Solver++" if prediction == "data" else "SDE-DPM-Solver-"
        rate = -1.0 if prediction == "data" else 1.0
        for order, solver_type in ((1, "dpmsolver"), (2, "dpmsolver"), (2, "taylor")):
            name = (f"{base}1" if order == 1 else
                    (f"{base}(2M)" if prediction == "data" else f"{base}2M") + ("-taylor" if solver_type == "taylor" else ""))
            _register(SDESolverConfig(
                name=name, entry="sample",
                options=dict(algorithm_type=algorithm_type, method="multistep", order=order, solver_type=solver_type,
                             lower_order_final=False),
                strong_order=1.0, weak_order=float(order), noise_variable="lam", noise_rate=rate,
                prediction=prediction,
                note="SDE-DPM-Solver++1 (Lu et al. 2022b)" if (order == 1 and prediction == "data") else ""))
    _register(SDESolverConfig(
        name="Euler-Maruyama", entry="reverse_sde_sample", options=dict(scheme="euler_maruyama"),
        strong_order=1.0, weak_order=1.0, noise_variable="t", noise_rate=0.0,
        prediction="noise",
        note="the reverse SDE (Song et al. 2021 eq. (6)) discretised in t (the slow DDPM-style baseline)"))
    _register(SDESolverConfig(
        name="DDPM-ancestral", entry="reverse_sde_sample", options=dict(scheme="ddpm_ancestral"),
        strong_order=1.0, weak_order=1.0, noise_variable="lam", noise_rate=-1.0,
        prediction="noise",
        note="identical to SDE-DPM-Solver++1"))


_register_sde_solvers()
