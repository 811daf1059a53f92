"""High-accuracy reference solutions: of any semi-linear problem, and of the probability-flow ODE (SciPy and
torchdiffeq).

The solvers are judged against these; a reference is itself checked (closed-form solutions: a linear problem's
``expm(L t) x0``, the single-Gaussian flow; and two independent integrators agreeing) before it is trusted.

Two call forms of :func:`reference_solve`:

* ``reference_solve(problem, x, t_start, t_end, ...)`` for any :class:`~expsolver.problems.SemiLinearProblem`
  with a right-hand side ``problem.rhs(t, x)`` (a user's :class:`~expsolver.problems.SemiLinearODE`, e.g.):
  ``dx/dt = rhs(t, x)`` integrated in ``t``, in either direction. Stiff problems take ``method="Radau"`` or
  ``"BDF"``, whose Jacobian ``d rhs / dx`` (``L + dN/dx`` for a :class:`~expsolver.problems.SemiLinearODE`) comes
  from autograd (``jacobian="autograd"``) or central differences (``jacobian="fd"``). A
  :class:`~expsolver.problems.DiffusionODE` is integrated as the diffusion form below, with its own model; a
  :class:`~expsolver.problems.LamDiffusionODE`, whose time is ``lam``, like any problem (its ``rhs`` is (R)
  below, the times are ``lam``).
  ``error_estimate=True`` (the default of this form) also solves at tolerances 10 times tighter and reports the
  difference.
* ``reference_solve(model, schedule, x, t_start, t_end, ...)``: the probability-flow ODE of a noise-prediction
  ``model`` under a VP ``schedule``, as follows.

The probability-flow ODE
------------------------
For a VP schedule ``x_t = alpha_t x_0 + sigma_t eps`` and a noise-prediction model ``eps(x, t)`` the
probability-flow ODE is (DPM-Solver eq. (2.3))

    dx/dt = f(t) x + g^2(t) / (2 sigma_t) eps(x, t),       f = d log alpha_t / dt,  g^2 = -2 sigma_t^2 d lam_t / dt,

integrated from ``t_start`` down to ``t_end``. Two integration variables are offered. Both right-hand sides are
the problem's own: :meth:`DiffusionODE.rhs` in ``t`` and :meth:`LamDiffusionODE.rhs` in ``lam`` (noise form), the
same ODE the samplers and the grid optimiser integrate.

``variable="lambda"`` (default). Change the time to the half log-SNR ``lam_t = log alpha_t - log sigma_t``,
strictly decreasing in ``t``. With ``alpha^2 + sigma^2 = 1``,

    log alpha = -softplus(-2 lam) / 2,      so      d log alpha / d lam = sigmoid(-2 lam) = sigma^2,

and variation of constants (DPM-Solver eq. (3.3)) says ``d(x/alpha)/d lam = -e^{-lam} eps``, i.e.
``d x/d lam = (d log alpha/d lam) x + alpha d(x/alpha)/d lam``:

    dx/dlam = sigma^2(lam) x - sigma(lam) eps(x, t(lam)),     sigma^2(lam) = sigmoid(-2 lam),           (R)

integrated from ``lam(t_start)`` up to ``lam(t_end)``. Both coefficients are analytic in ``lam`` and do not
depend on the schedule at all: the schedule only enters through the time ``t(lam) = schedule.inverse_lam(lam)``
given to the model. For a model that depends on ``t`` only through ``(alpha_t, sigma_t)`` (the exact
Gaussian-mixture noise prediction) the whole right-hand side is analytic in ``lam``, even for the discrete
schedule whose ``f(t)`` is piecewise constant. The interval is short (``lam`` from about -5 to about 5) and
``lam`` never leaves it, so the schedule's range is never left.

``variable="t"``. The plain right-hand side above, integrated from ``t_start`` down to ``t_end``. Its
coefficients vary fast near ``t = 0`` (``g^2 / sigma_t ~ t^{-1/2}`` for the linear schedule) and are only
piecewise smooth for :class:`~expsolver.schedules.VPDiscrete` (``f`` jumps at each of the N grid times), so
adaptive solvers need more steps; it is provided as an independent check of the ``lambda`` results.

In both variables the time handed to the coefficients and the model is clamped into
``[t_end, t_start]`` (``[lam(t_start), lam(t_end)]``). Integrators only evaluate the right-hand side at their
stage points; the steps used for the answer never leave the interval (SciPy clips the last step to the end
point, torchdiffeq is told to step exactly onto the end point and onto every requested output time), so
the clamp only changes probe evaluations such as torchdiffeq's initial-step heuristic, which would otherwise
reach ``t < 0`` where ``sigma_t`` is NaN.

Backends
--------
* ``backend="scipy"``: the :mod:`scipy.integrate` solvers behind ``solve_ivp`` (``"RK45"``, ``"DOP853"``,
  ``"Radau"``, ``"BDF"``), driven step by step in float64 NumPy on the whole batch flattened into one system: one right-hand
  side evaluation is one batched model call. The error norm is SciPy's RMS norm over the whole batch.
* ``backend="torchdiffeq"``: :func:`torchdiffeq.odeint` on the state's device and dtype (adaptive ``"dopri5"``,
  ``"dopri8"``, ``"bosh3"``, ``"adaptive_heun"``, ``"fehlberg2"``; fixed-grid ``"euler"``, ``"midpoint"``,
  ``"rk4"``, ``"explicit_adams"``, ``"implicit_adams"``, which need ``n_steps=`` or ``options={"step_size": h}``).

Every model call goes through :class:`~expsolver.models.ModelWrapper` (or the problem's own counter,
``problem.nfe``), which gives the reported ``nfe`` (SciPy's ``nfev`` misses the calls made for the implicit
methods' Jacobians; torchdiffeq reports none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from ._validation import (
    check_bool,
    check_choice,
    check_finite_array,
    check_float,
    check_int,
    check_positive_float,
    check_state,
)
from .models import ModelWrapper
from .problems import DiffusionODE, LamDiffusionODE, SemiLinearProblem
from .schedules import VPSchedule

__all__ = [
    "ReferenceResult",
    "reference_solve",
    "BACKENDS",
    "SCIPY_METHODS",
    "IMPLICIT_METHODS",
    "TORCHDIFFEQ_METHODS",
    "FIXED_GRID_METHODS",
    "VARIABLES",
    "JACOBIANS",
    "sample_errors",
]

BACKENDS = ("scipy", "torchdiffeq")
SCIPY_METHODS = ("RK45", "DOP853", "Radau", "BDF")
#: SciPy methods that use the Jacobian (stiff problems).
IMPLICIT_METHODS = ("Radau", "BDF")
TORCHDIFFEQ_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED_GRID_METHODS = ("rk4", "euler", "midpoint", "explicit_adams", "implicit_adams")
TORCHDIFFEQ_METHODS = TORCHDIFFEQ_ADAPTIVE_METHODS + FIXED_GRID_METHODS
VARIABLES = ("lambda", "t")
#: How the implicit methods get ``d rhs / dx`` of a problem: autograd, or central differences.
JACOBIANS = ("autograd", "fd")
DEFAULT_METHODS = {"scipy": "DOP853", "torchdiffeq": "dopri8"}
#: The error estimate compares with a solve at tolerances this many times tighter (or this many times more steps).
ERROR_ESTIMATE_FACTOR = 10

# Options passed through to the integrator, per family (everything else is set by reference_solve).
_SCIPY_OPTIONS = ("first_step", "max_step")
_TORCHDIFFEQ_ADAPTIVE_OPTIONS = ("first_step", "max_step", "safety", "ifactor", "dfactor", "max_num_steps")
_FIXED_GRID_OPTIONS = {
    "rk4": ("step_size",),
    "euler": ("step_size",),
    "midpoint": ("step_size",),
    "explicit_adams": ("step_size", "max_order"),
    "implicit_adams": ("step_size", "max_order", "max_iters"),
}

_SUCCESS = "success"
_FAILED = "failed"
_REACHED_END = "The solver successfully reached the end of the integration interval."


@dataclass(frozen=True)
class ReferenceResult:
    """Outcome of :func:`reference_solve`.

    Attributes
    ----------
    x : torch.Tensor, shape (batch, *dims)
        The state at ``t_end`` (dtype and device of the input). If the integration failed: the last accepted
        state, at time ``t_reached``.
    nfe : int
        Model calls actually made (each batched call counts once), including start-up and Jacobian calls.
    status : {"success", "failed"}
    message : str
        The integrator's message (or the exception text of a failed torchdiffeq run).
    backend, method, variable : str
        What was run (``method`` is the resolved default when ``None`` was passed).
    rtol, atol : float
        Tolerances handed to the integrator (ignored by fixed-grid methods other than implicit_adams).
    n_steps : int or None
        Accepted steps (adaptive methods) or grid steps (fixed-grid methods).
    t_reached : float
        The time of ``x``: ``t_end`` on success.
    ts : numpy.ndarray or None, shape (n_ts,)
        The requested output times (float64), if any.
    xs : torch.Tensor or None, shape (n_ts, batch, *dims)
        States at ``ts``; rows not reached by a failed integration are NaN.
    error_estimate : float or None
        With ``error_estimate=True``: the largest per-sample L2 norm of the difference between this solution and
        one at tolerances :data:`ERROR_ESTIMATE_FACTOR` times tighter (fixed-grid methods: that many times more
        steps), over ``x`` and ``xs``; NaN if that solve failed. ``nfe`` includes its model calls.
    """

    x: torch.Tensor
    nfe: int
    status: str
    message: str
    backend: str
    method: str
    rtol: float
    atol: float
    variable: str
    n_steps: int | None
    t_reached: float
    ts: np.ndarray | None = None
    xs: torch.Tensor | None = None
    error_estimate: float | None = None

    @property
    def success(self) -> bool:
        """``status == "success"``."""
        return self.status == _SUCCESS



class _Rhs:
    """The probability-flow ODE's right-hand side in the chosen variable ``s`` (``lam`` or ``t``), on tensors of the
    state's shape: ``problem.rhs`` of the :class:`~expsolver.problems.LamDiffusionODE` (``dx/dlam``, (R)) or of the
    :class:`~expsolver.problems.DiffusionODE` (``dx/dt``), in the noise form.

    ``s`` is clamped into ``[s_lo, s_hi]`` (see the module docstring), the model is called at :meth:`to_time` and
    every model call goes through the :class:`ModelWrapper` (the NFE counter).
    """

    def __init__(self, wrapper: ModelWrapper, schedule: VPSchedule, variable: str, t_start: float, t_end: float):
        self.schedule = schedule
        self.variable = variable
        self.t_start, self.t_end = t_start, t_end
        if variable == "lambda":
            self.s_start, self.s_end = schedule.lam(t_start), schedule.lam(t_end)
            self.problem = LamDiffusionODE(schedule, wrapper, "noise", time_of_lam=self.to_time)
        else:
            self.s_start, self.s_end = t_start, t_end
            self.problem = DiffusionODE(schedule, wrapper, "noise")
        self.s_lo, self.s_hi = min(self.s_start, self.s_end), max(self.s_start, self.s_end)

    def to_variable(self, t: float) -> float:
        """The integration variable at time ``t`` (exact at the two end points)."""
        if t == self.t_start:
            return self.s_start
        if t == self.t_end:
            return self.s_end
        return self.schedule.lam(t) if self.variable == "lambda" else t

    def to_time(self, s: float) -> float:
        """The time at the integration variable ``s`` (clamped into ``[t_end, t_start]``)."""
        s = min(max(s, self.s_lo), self.s_hi)
        if s == self.s_start:
            return self.t_start
        if s == self.s_end:
            return self.t_end
        t = self.schedule.inverse_lam(s) if self.variable == "lambda" else s
        return min(max(t, self.t_end), self.t_start)

    def jacobian_blocks(self, s: float, x: torch.Tensor):
        """None: the implicit methods use central differences (:func:`_fd_blocks`)."""
        return None

    def __call__(self, s: float, x: torch.Tensor) -> torch.Tensor:
        return self.problem.rhs(min(max(s, self.s_lo), self.s_hi), x)


class _ProblemRhs:
    """``problem.rhs(t, x)`` in ``t`` for :func:`_solve_scipy` / :func:`_solve_torchdiffeq`: the interface of
    :class:`_Rhs` (``s_start``, ``s_end``, ``to_variable``, ``to_time``, ``jacobian_blocks``) with ``s = t``, clamped
    into the interval like :class:`_Rhs`."""

    variable = "t"

    def __init__(self, problem: SemiLinearProblem, t_start: float, t_end: float, jacobian: str):
        self.problem, self.jacobian = problem, jacobian
        self.t_start = self.s_start = t_start
        self.t_end = self.s_end = t_end
        self.s_lo, self.s_hi = min(t_start, t_end), max(t_start, t_end)

    def to_variable(self, t: float) -> float:
        return t

    def to_time(self, s: float) -> float:
        return min(max(s, self.s_lo), self.s_hi)

    def __call__(self, s: float, x: torch.Tensor) -> torch.Tensor:
        out = self.problem.rhs(self.to_time(s), x)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"problem.rhs(t, x) must return a tensor of the state's shape {tuple(x.shape)}, got {got}")
        return out

    def jacobian_blocks(self, s: float, x: torch.Tensor):
        """``d rhs / dx`` of every sample, shape ``(batch, dim, dim)`` (float64 NumPy), by autograd: the rows of the
        Jacobian of the batch sum (samples are independent). None with ``jacobian="fd"``."""
        if self.jacobian == "fd":
            return None
        batch, shape = x.shape[0], x.shape

        def summed(y):
            return self(s, y.reshape(shape)).reshape(batch, -1).sum(0)

        try:
            with torch.enable_grad():
                jac = torch.autograd.functional.jacobian(summed, x.detach().reshape(batch, -1), vectorize=True)
        except RuntimeError as exc:
            raise ValueError(f"jacobian='autograd' could not differentiate problem.rhs ({exc}); pass "
                             f"jacobian='fd' for central differences") from None
        return jac.permute(1, 0, 2).detach().to(torch.float64).cpu().numpy()


def reference_solve(problem, *args, backend: str = "scipy", method: str | None = None, rtol: float = 1e-10,
                    atol: float = 1e-10, variable: str | None = None, ts=None, n_steps: int | None = None,
                    options: dict | None = None, jacobian: str | None = None,
                    error_estimate: bool | None = None) -> ReferenceResult:
    r"""Integrate an ODE from ``t_start`` to ``t_end`` to high accuracy.

    Call forms (module docstring):

    * ``reference_solve(problem, x, t_start, t_end, **options)``: any :class:`~expsolver.problems.SemiLinearProblem`
      with ``rhs(t, x)``, in ``t`` (a ``DiffusionODE`` in ``variable``, default ``"lambda"``);
    * ``reference_solve(model, schedule, x, t_start, t_end, **options)``: the probability-flow ODE
      ``dx/dt = f(t) x + g^2(t) / (2 sigma_t) eps(x, t)`` (DPM-Solver eq. (2.3)), by default in the half log-SNR,
      where it reads ``dx/dlam = sigma^2 x - sigma eps(x, t(lam))`` with ``sigma^2 = sigmoid(-2 lam)`` (module
      docstring).

    Parameters
    ----------
    problem : SemiLinearProblem or callable
        The problem (first form), or the noise prediction ``model(x, t) -> eps`` (second form) with ``x`` of shape
        ``(batch, *dims)`` and ``t`` of shape ``(batch,)`` (all entries equal) in ``x``'s dtype and device, called
        under :func:`torch.no_grad` (a model that needs autograd internally must enable it itself). Either must
        treat samples (the first dimension of ``x``) independently: the whole batch is one ODE system, and the
        implicit methods' Jacobian assumes it is block diagonal.
    *args
        ``x, t_start, t_end`` (first form) or ``schedule, x, t_start, t_end`` (second form): the
        :class:`~expsolver.schedules.VPSchedule`; the state ``x`` at ``t_start``, shape ``(batch, *dims)``
        (float32 or float64, finite); the start and end times (diffusion: ``schedule.t_min <= t_end < t_start <=
        schedule.T``; a problem: any two distinct times).
    backend : {"scipy", "torchdiffeq"}
    method : str, optional
        ``"RK45"``, ``"DOP853"`` (default), ``"Radau"`` or ``"BDF"`` for SciPy; ``"dopri8"`` (default),
        ``"dopri5"``, ``"bosh3"``, ``"adaptive_heun"``, ``"fehlberg2"`` or the fixed-grid ``"rk4"``, ``"euler"``,
        ``"midpoint"``, ``"explicit_adams"``, ``"implicit_adams"`` for torchdiffeq. ``"Radau"`` and ``"BDF"``
        (stiff problems) use a block-diagonal Jacobian and a sparse LU of size ``batch * d``. The diffusion form
        forms it by central differences with ``2 d`` batched model calls (``d = prod(dims)``; all samples are
        perturbed at once): fine for small ``d``, wasteful for that non-stiff problem in general.
    rtol, atol : float
        Relative and absolute tolerances (> 0) on the integrated state (``x``, in either variable), applied by
        both backends in an RMS norm over the whole batch, so the worst sample's error can exceed them and grows
        slowly with the batch size. Chosen by a work-precision measurement (1,000 samples, ``t`` from 1 to 1e-3,
        linear schedule, 2-D 3-component and 16-D 4-component mixtures, against DOP853 at 1e-13): DOP853 in
        ``lambda`` at the default 1e-10 made 650 and 626 model calls for maximal absolute errors of 3.3e-9 and
        1.0e-9; dopri8 made 821 calls for 2.3e-10 (2-D). Reaching a guaranteed max error <= 1e-9 took
        ``rtol = atol = 3e-11`` with DOP853 (about 700-750 calls); RK45 and dopri5 need 1,000-1,400.
    variable : {None, "lambda", "t"}
        Integration variable of the diffusion ODE: ``"lambda"`` (smooth, recommended; the default) or ``"t"`` (the
        plain ODE). Other problems are integrated in their own time ``t`` (``None`` or ``"t"``; ``lam`` for a
        :class:`~expsolver.problems.LamDiffusionODE`).
    ts : sequence of float, optional
        Strictly monotone times inside the interval, in the direction of integration, at which to also return the
        state (``.xs``). The integrators step exactly onto them (no dense-output interpolation): SciPy restarts at
        each one (one extra model call per output time), torchdiffeq is given them as ``step_t``.
    n_steps : int, optional
        Fixed-grid torchdiffeq methods only: number of uniform steps in the integration variable (output times
        ``ts`` are added to the grid). Exclusive with ``options={"step_size": h}``, which is turned into
        ``n_steps = ceil(span / h)``.
    options : dict, optional
        Extra integrator options: SciPy ``first_step``, ``max_step``; torchdiffeq adaptive ``first_step``,
        ``max_step``, ``safety``, ``ifactor``, ``dfactor``, ``max_num_steps``; fixed grid ``step_size`` (and
        ``max_order``, ``max_iters`` for the Adams methods). Steps are in the integration variable.
    jacobian : {None, "autograd", "fd"}
        First form, implicit methods: ``d rhs / dx`` by autograd through ``problem.rhs`` (the default) or by
        central differences (``2 d`` calls). The diffusion form always uses central differences.
    error_estimate : bool, optional
        Also solve at tolerances :data:`ERROR_ESTIMATE_FACTOR` times tighter (fixed grid: that many times more
        steps) and report the difference as ``.error_estimate`` (default True for a problem, False for the
        diffusion form, whose cost it would double).

    Returns
    -------
    ReferenceResult
        ``.x`` the state at ``t_end``, ``.nfe`` the model calls, ``.status`` ``"success"`` or ``"failed"``
        (then ``.x`` is the last accepted state, at ``.t_reached``, and ``.message`` says why), ``.xs`` the states
        at ``ts``, ``.error_estimate``.

    Raises
    ------
    TypeError
        Unknown keyword, wrong number of positional arguments, model not callable, schedule not a VPSchedule, ``x``
        not a floating-point tensor.
    ValueError
        Unknown backend, method, variable or jacobian; non-positive tolerances; ``t_end >= t_start`` (diffusion) or
        ``t_end == t_start``; times outside the schedule; bad ``ts``, ``n_steps`` or ``options``; non-finite ``x``;
        a model output of the wrong shape or non-finite (:class:`~expsolver.models.ModelOutputError`, naming the
        time); a problem's ``rhs`` of the wrong shape.

    Examples
    --------
    >>> from expsolver.gmm import GaussianMixture
    >>> from expsolver.schedules import VPLinear
    >>> sched = VPLinear()
    >>> gmm = GaussianMixture([1.0], [[0.0, 1.0]], [0.5])
    >>> x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> res = reference_solve(gmm.as_model(sched), sched, x, 1.0, 1e-3)
    >>> bool((res.x - gmm.flow(x, 1.0, 1e-3, sched)).abs().max() < 1e-8), res.status
    (True, 'success')
    >>> from expsolver.problems import SemiLinearODE
    >>> ode = SemiLinearODE(torch.tensor([[-2.0, 1.0], [0.0, -3.0]]), lambda x, t: torch.zeros_like(x))
    >>> res = reference_solve(ode, torch.ones(1, 2, dtype=torch.float64), 0.0, 1.0, rtol=1e-12, atol=1e-12)
    >>> exact = torch.ones(1, 2, dtype=torch.float64) @ torch.linalg.matrix_exp(ode.L).T
    >>> bool((res.x - exact).abs().max() < 1e-10), res.error_estimate < 1e-10
    (True, True)
    """
    run = dict(backend=backend, method=method, rtol=rtol, atol=atol, ts=ts, n_steps=n_steps, options=options)
    if isinstance(problem, SemiLinearProblem):
        if len(args) != 3:
            raise TypeError(f"reference_solve(problem, x, t_start, t_end, ...) takes 3 positional arguments after the "
                            f"problem, got {len(args)}")
        return _solve_problem(problem, *args, variable, "autograd" if jacobian is None else jacobian,
                              True if error_estimate is None else error_estimate, run)
    if len(args) != 4:
        raise TypeError(f"reference_solve(model, schedule, x, t_start, t_end, ...) takes 4 positional arguments after "
                        f"the model, got {len(args)}")
    if jacobian is not None:
        raise ValueError(f"jacobian applies to a problem (reference_solve(problem, x, t_start, t_end)); the diffusion "
                         f"form uses central differences, got jacobian={jacobian!r}")
    return _solve_diffusion(problem, *args, "lambda" if variable is None else variable,
                            False if error_estimate is None else error_estimate, run)


def _solve_diffusion(model: Callable, schedule: VPSchedule, x: torch.Tensor, t_start: float, t_end: float,
                     variable: str, error_estimate: bool, run: dict) -> ReferenceResult:
    """The second form of :func:`reference_solve`."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, t), got {type(model).__name__}")
    if not isinstance(schedule, VPSchedule):
        raise TypeError(
            f"schedule must be a VPSchedule (VPLinear, VPCosine, VPDiscrete), got {type(schedule).__name__}"
        )
    return _solve_diffusion_problem(ModelWrapper(model, schedule), x, t_start, t_end, variable, error_estimate, run)


def _solve_diffusion_problem(wrapper: ModelWrapper, x, t_start, t_end, variable, error_estimate, run):
    schedule = wrapper.schedule
    variable = check_choice(variable, "variable", VARIABLES)
    t_start = schedule.check_time(t_start, "t_start")
    t_end = schedule.check_time(t_end, "t_end")
    if t_end >= t_start:
        raise ValueError(
            f"t_end must be < t_start (the ODE is solved backwards in time), got t_end={t_end!r}, t_start={t_start!r}"
        )
    rhs = _Rhs(wrapper, schedule, variable, t_start, t_end)
    return _solve(rhs, lambda: wrapper.nfe, x, error_estimate, run)


def _solve_problem(problem: SemiLinearProblem, x: torch.Tensor, t_start: float, t_end: float, variable, jacobian,
                   error_estimate, run: dict) -> ReferenceResult:
    """The first form of :func:`reference_solve`."""
    jacobian = check_choice(jacobian, "jacobian", JACOBIANS)
    if isinstance(problem, DiffusionODE) and not isinstance(problem, LamDiffusionODE):
        return _solve_diffusion_problem(problem.model, x, t_start, t_end, "lambda" if variable is None else variable,
                                        error_estimate, run)
    if variable not in (None, "t"):
        raise ValueError(f"variable must be None or 't' for a {type(problem).__name__} (integrated in t); got "
                         f"{variable!r}")
    t_start, t_end = check_float(t_start, "t_start"), check_float(t_end, "t_end")
    if t_end == t_start:
        raise ValueError(f"t_end must differ from t_start, got both {t_start!r}")
    return _solve(_ProblemRhs(problem, t_start, t_end, jacobian), lambda: problem.nfe, x, error_estimate, run)


def _solve(rhs, count, x, error_estimate, run: dict) -> ReferenceResult:
    """Check the integrator options, run, and (``error_estimate``) run again at tighter settings."""
    error_estimate = check_bool(error_estimate, "error_estimate")
    run = _RunOptions.checked(rhs, **run)
    x = check_state(x, "x")
    nfe_before = count()
    result = _run(rhs, x, run)
    if error_estimate:
        check = _run(rhs, x, run.tighter())
        result = replace(result, error_estimate=_difference(result, check))
    return replace(result, nfe=count() - nfe_before)


def _difference(result: ReferenceResult, check: ReferenceResult) -> float:
    """Largest per-sample error of ``result`` against ``check`` over the final state and the output states."""
    if not (result.success and check.success):
        return math.nan
    pairs = [(result.x, check.x)] + ([] if result.xs is None else list(zip(result.xs, check.xs)))
    return max(float(sample_errors(a, b).max()) for a, b in pairs)


def sample_errors(x: torch.Tensor, x_ref: torch.Tensor) -> np.ndarray:
    """Per-sample errors ``||x_i - x_ref_i||_2`` over every dimension but the first (float64 NumPy, shape
    ``(batch,)``): the one error of every measurement of expsolver."""
    if x.shape != x_ref.shape:
        raise ValueError(f"x and x_ref must have the same shape, got {tuple(x.shape)} and {tuple(x_ref.shape)}")
    diff = (x.detach() - x_ref.detach().to(x)).reshape(x.shape[0], -1)
    return diff.norm(dim=1).to(torch.float64).cpu().numpy()


@dataclass(frozen=True)
class _RunOptions:
    """The integrator settings of one :func:`reference_solve` call, checked."""

    backend: str
    method: str
    rtol: float
    atol: float
    ts: np.ndarray | None
    n_steps: int | None
    options: dict

    @classmethod
    def checked(cls, rhs, *, backend, method, rtol, atol, ts, n_steps, options) -> "_RunOptions":
        backend = check_choice(backend, "backend", BACKENDS)
        valid_methods = SCIPY_METHODS if backend == "scipy" else TORCHDIFFEQ_METHODS
        method = DEFAULT_METHODS[backend] if method is None else method
        if not isinstance(method, str) or method not in valid_methods:
            raise ValueError(
                f"method must be one of {', '.join(repr(m) for m in valid_methods)} for backend={backend!r}; "
                f"got {method!r}"
            )
        rtol, atol = check_positive_float(rtol, "rtol"), check_positive_float(atol, "atol")
        ts_arr = _check_ts(ts, rhs.t_start, rhs.t_end)
        options = _check_options(options, backend, method)
        n_steps = _check_n_steps(n_steps, backend, method, options)
        return cls(backend, method, rtol, atol, ts_arr, n_steps, options)

    @property
    def fixed_grid(self) -> bool:
        return self.backend == "torchdiffeq" and self.method in FIXED_GRID_METHODS

    def tighter(self) -> "_RunOptions":
        """The settings of the error estimate's comparison solve."""
        k = ERROR_ESTIMATE_FACTOR
        if not self.fixed_grid:
            return replace(self, rtol=self.rtol / k, atol=self.atol / k)
        if self.n_steps is not None:
            return replace(self, n_steps=self.n_steps * k)
        return replace(self, options=dict(self.options, step_size=self.options["step_size"] / k))


def _run(rhs, x: torch.Tensor, run: _RunOptions) -> ReferenceResult:
    """One integration with the settings ``run``; ``nfe`` is filled in by the caller."""
    x_in = x.detach()
    with torch.no_grad():
        if run.backend == "scipy":
            x_out, xs, n_done, status, message, t_reached = _solve_scipy(rhs, x_in, run.ts, run.method, run.rtol,
                                                                         run.atol, run.options)
        else:
            x_out, xs, n_done, status, message, t_reached = _solve_torchdiffeq(
                rhs, x_in, run.ts, run.method, run.rtol, run.atol, run.options, run.n_steps
            )
    if status == _SUCCESS and not bool(torch.isfinite(x_out).all()):
        status, message = _FAILED, "the integrator returned non-finite values"
    return ReferenceResult(x=x_out, nfe=0, status=status, message=message, backend=run.backend, method=run.method,
                           rtol=run.rtol, atol=run.atol, variable=rhs.variable, n_steps=n_done, t_reached=t_reached,
                           ts=run.ts, xs=xs)


# -- argument checks ----------------------------------------------------------------------------------------------
def _check_ts(ts, t_start: float, t_end: float) -> np.ndarray | None:
    if ts is None:
        return None
    arr = check_finite_array(ts, "ts", ndim=1)
    if arr.shape[0] == 0:
        raise ValueError("ts must contain at least one time, got an empty sequence")
    sign = 1.0 if t_end > t_start else -1.0
    if np.any(sign * np.diff(arr) <= 0):
        word = "increasing" if sign > 0 else "decreasing"
        raise ValueError(f"ts must be strictly {word} (from t_start towards t_end), got {arr.tolist()!r}")
    lo, hi = min(t_start, t_end), max(t_start, t_end)
    if arr.min() < lo or arr.max() > hi:
        raise ValueError(
            f"ts must lie inside [t_end, t_start] = [{t_end!r}, {t_start!r}], got [{arr[-1]!r}, {arr[0]!r}]"
            if sign < 0 else
            f"ts must lie inside [t_start, t_end] = [{t_start!r}, {t_end!r}], got [{arr[0]!r}, {arr[-1]!r}]"
        )
    return arr


def _check_n_steps(n_steps, backend: str, method: str, options: dict) -> int | None:
    fixed_grid = backend == "torchdiffeq" and method in FIXED_GRID_METHODS
    if n_steps is not None:
        if not fixed_grid:
            raise ValueError(
                f"n_steps is only used by the fixed-grid torchdiffeq methods ({', '.join(FIXED_GRID_METHODS)}); "
                f"got n_steps={n_steps!r} with backend={backend!r}, method={method!r}"
            )
        n_steps = check_int(n_steps, "n_steps", minimum=1)
        if "step_size" in options:
            raise ValueError(f"give n_steps or options['step_size'], not both; got n_steps={n_steps}")
    elif fixed_grid and "step_size" not in options:
        raise ValueError(f"method={method!r} is a fixed-grid method: give n_steps= or options={{'step_size': h}}")
    return n_steps


def _check_options(options, backend: str, method: str) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    if backend == "scipy":
        allowed = _SCIPY_OPTIONS
    elif method in FIXED_GRID_METHODS:
        allowed = _FIXED_GRID_OPTIONS[method]
    else:
        allowed = _TORCHDIFFEQ_ADAPTIVE_OPTIONS
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"options has unknown key(s) {', '.join(map(repr, unknown))} for backend={backend!r}, method={method!r}; "
            f"allowed: {', '.join(map(repr, allowed))}"
        )
    out = dict(options)
    for key in ("first_step", "max_step", "step_size"):
        if key in out:
            out[key] = check_positive_float(out[key], f"options[{key!r}]")
    return out


def _output_nodes(rhs, ts_arr) -> list[float]:
    """Points the integration must step onto, in the integration variable: the ``ts`` after the start, then the
    end point (each once, in the direction of integration)."""
    nodes = [] if ts_arr is None else [rhs.to_variable(float(t)) for t in ts_arr if float(t) != rhs.t_start]
    if not nodes or nodes[-1] != rhs.s_end:
        nodes.append(rhs.s_end)
    return nodes


def _assemble_xs(ts_arr, rhs, x0: torch.Tensor, states: dict) -> torch.Tensor | None:
    """Stack the states at ``ts`` (keyed by the integration variable); missing ones are NaN."""
    if ts_arr is None:
        return None
    rows = []
    for t in ts_arr:
        t = float(t)
        if t == rhs.t_start:
            rows.append(x0.clone())
        else:
            rows.append(states.get(rhs.to_variable(t), torch.full_like(x0, float("nan"))))
    return torch.stack(rows)


# -- SciPy ----------------------------------------------------------------------------------------------------------
def _solve_scipy(rhs, x: torch.Tensor, ts_arr, method: str, rtol: float, atol: float, options: dict):
    from scipy import integrate, sparse

    shape, dtype, device = x.shape, x.dtype, x.device
    batch, dim = shape[0], int(np.prod(shape[1:], dtype=np.int64))

    def to_torch(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(y).reshape(shape)).to(dtype=dtype, device=device)

    def fun(s, y):
        return rhs(float(s), to_torch(y)).detach().to(torch.float64).cpu().numpy().reshape(-1)

    def jac(s, y):
        # Block-diagonal Jacobian (samples are independent): the problem's own blocks, or central differences.
        y2 = y.reshape(batch, dim)
        blocks = rhs.jacobian_blocks(float(s), to_torch(y))
        blocks = _fd_blocks(fun, s, y2) if blocks is None else blocks
        return sparse.bsr_matrix(
            (blocks, np.arange(batch), np.arange(batch + 1)), shape=(batch * dim, batch * dim)
        ).tocsc()

    solver_cls = {"RK45": integrate.RK45, "DOP853": integrate.DOP853, "Radau": integrate.Radau,
                  "BDF": integrate.BDF}[method]
    extra = {"jac": jac} if method in IMPLICIT_METHODS else {}
    y = x.detach().to(torch.float64).cpu().numpy().reshape(-1).copy()
    s_now = rhs.s_start
    first_step = options.get("first_step")
    max_step = options.get("max_step", np.inf)
    states: dict = {}
    n_done, status, message = 0, _SUCCESS, _REACHED_END
    for node in _output_nodes(rhs, ts_arr):
        if first_step is not None:
            first_step = min(first_step, abs(node - s_now))
        solver = solver_cls(fun, s_now, y, node, rtol=rtol, atol=atol, max_step=max_step, first_step=first_step,
                            **extra)
        while solver.status == "running":
            msg = solver.step()
            if solver.status == "failed":
                status, message = _FAILED, str(msg)
                break
            n_done += 1
        y, s_now = solver.y, float(solver.t)
        if status == _FAILED:
            break
        states[node] = to_torch(y)
        s_now = node  # exactly (solver.t == node already; avoid any rounding)
        # Carry the step size over to the next segment (the restart would otherwise re-probe with a tiny step).
        h_next = getattr(solver, "h_abs", None)
        first_step = float(h_next) if h_next is not None and np.isfinite(h_next) and h_next > 0 else None
    x_out = to_torch(y)
    xs = _assemble_xs(ts_arr, rhs, x, states)
    return x_out, xs, n_done, status, message, rhs.to_time(s_now)


def _fd_blocks(fun, s, y2: np.ndarray) -> np.ndarray:
    """``(batch, dim, dim)`` Jacobian blocks of ``fun`` (flat float64 in and out) by central differences: perturbing
    coordinate j of every sample at once gives column j of every block in one batched call."""
    batch, dim = y2.shape
    blocks = np.empty((batch, dim, dim))
    for j in range(dim):
        h = np.sqrt(np.finfo(np.float64).eps) ** (2.0 / 3.0) * np.maximum(1.0, np.abs(y2[:, j]))
        yp, ym = y2.copy(), y2.copy()
        yp[:, j] += h
        ym[:, j] -= h
        diff = (fun(s, yp.reshape(-1)) - fun(s, ym.reshape(-1))).reshape(batch, dim)
        blocks[:, :, j] = diff / (yp[:, j] - ym[:, j])[:, None]  # the steps actually representable
    return blocks


# -- torchdiffeq ----------------------------------------------------------------------------------------------------
class _OdeintFunc:
    """The right-hand side as torchdiffeq wants it, recording the last accepted state and counting steps
    through torchdiffeq's callbacks (``callback_step`` runs at the start of every attempted step, with the last
    accepted state; ``callback_accept_step`` after each accepted adaptive step)."""

    def __init__(self, rhs, adaptive: bool):
        self.rhs = rhs
        self.n_steps = 0
        self.last = None
        self.model_error = None
        if adaptive:
            self.callback_accept_step = self._count
        self.callback_step = self._record if adaptive else self._record_and_count

    def __call__(self, s, y):
        try:
            return self.rhs(float(s), y)
        except AssertionError as exc:  # keep the model's own assertions apart from torchdiffeq's
            self.model_error = exc
            raise

    def _count(self, s0, y0, ds):
        self.n_steps += 1

    def _record(self, s0, y0, ds):
        self.last = (float(s0), y0)

    def _record_and_count(self, s0, y0, ds):
        self.last = (float(s0), y0)
        self.n_steps += 1


def _solve_torchdiffeq(rhs, x: torch.Tensor, ts_arr, method: str, rtol: float, atol: float, options: dict,
                       n_steps: int | None):
    import torchdiffeq

    nodes = _output_nodes(rhs, ts_arr)
    out_s = [rhs.s_start] + nodes
    out_t = torch.tensor(out_s, dtype=torch.float64, device=x.device)
    adaptive = method in TORCHDIFFEQ_ADAPTIVE_METHODS
    func = _OdeintFunc(rhs, adaptive)
    opts = dict(options)
    if adaptive:
        # Step exactly onto every output point: no dense-output interpolation, and no step past the end point.
        opts["step_t"] = out_t[1:].clone()
    else:
        span = abs(rhs.s_end - rhs.s_start)
        if n_steps is None:
            step_size = opts.pop("step_size")
            n_steps = max(1, math.ceil(span / step_size * (1 - 1e-12)))
        grid = _fixed_grid(rhs.s_start, rhs.s_end, n_steps, nodes)
        grid_t = torch.tensor(grid, dtype=torch.float64, device=x.device)
        opts["grid_constructor"] = lambda f, y0, t: grid_t
    try:
        sol = torchdiffeq.odeint(func, x, out_t, rtol=rtol, atol=atol, method=method, options=opts)
    except AssertionError as exc:  # torchdiffeq signals step-size underflow, max_num_steps, non-finite state so
        if exc is func.model_error:
            raise
        s_last, x_last = func.last if func.last is not None else (rhs.s_start, x)
        xs = _assemble_xs(ts_arr, rhs, x, {})
        return x_last.clone(), xs, func.n_steps, _FAILED, f"torchdiffeq: {exc}", rhs.to_time(s_last)
    states = {s: sol[i + 1] for i, s in enumerate(nodes)}
    xs = _assemble_xs(ts_arr, rhs, x, states)
    return sol[-1], xs, func.n_steps, _SUCCESS, _REACHED_END, rhs.t_end


def _fixed_grid(s_start: float, s_end: float, n_steps: int, nodes: list[float]) -> list[float]:
    """``n_steps`` uniform steps from ``s_start`` to ``s_end`` with the output ``nodes`` added (a grid point within
    ``1e-9`` of a step of a node is moved onto it rather than leaving a sliver step)."""
    grid = list(np.linspace(s_start, s_end, n_steps + 1))
    grid[0], grid[-1] = s_start, s_end
    h = abs(s_end - s_start) / n_steps
    for node in nodes[:-1]:
        i = int(np.argmin([abs(g - node) for g in grid]))
        if abs(grid[i] - node) <= 1e-9 * h and 0 < i < len(grid) - 1:
            grid[i] = node
        elif grid[i] != node:
            grid.append(node)
    sign = 1.0 if s_end > s_start else -1.0
    return sorted(set(float(g) for g in grid), key=lambda g: sign * g)
