"""Semi-linear problems for exponential integrators.

A semi-linear ODE ``dx/dt = a(t) x + b(t) N(x, t)`` is written, in a reparametrised time ``rho``, so that over a
step ``s -> t`` with ``h = rho_t - rho_s`` the variation-of-constants formula reads

    x_t = linear(s, t) * x_s + scale(t) * int_0^h e^{z (h - u)} N(x(rho_s + u), rho_s + u) du.         (*)

An exponential integrator replaces ``N`` by a polynomial in ``u`` and integrates it exactly with the
phi-functions: ``int_0^h e^{z (h-u)} u^j / j! du = h^{j+1} phi_{j+1}(z h)``. A problem therefore exposes
``rho(t)``, its inverse, the nonlinear term ``N`` and, per step, the numbers ``(h, linear, scale, z)``
(:class:`StepCoefficients`). It may also expose the plain right-hand side ``rhs(t, x)`` for classical solvers
and reference solutions.

``linear``, ``z`` and the integrals are numbers (a scalar linear part), tensors broadcast against the state (a
diagonal one) or :class:`MatrixCoefficient` (a dense one, acting on the state's last dimension). Solvers only add
them, scale them by floats and hand them to :func:`combine`, so one solver code serves all three.

Problems here:

* :class:`SemiLinearODE`: a user's ``dx/dt = L x + N(x, t)`` in ``rho = t`` with ``z = L`` scalar, diagonal or
  dense (classical exponential time differencing, Cox & Matthews 2002; Hochbruck & Ostermann 2010).
* :class:`DiffusionODE`: the probability-flow ODE (DPM-Solver eq. (2.4); seed eq. (8)) in ``rho = lam``.
  Noise form (DPM-Solver eq. (3.4), seed (16)): ``N = eps_theta``, ``linear = alpha_t/alpha_s``,
  ``scale = -sigma_t``, ``z = 1``. Data form (DPM-Solver++ eq. (9)): ``N = x0_theta``,
  ``linear = sigma_t/sigma_s``, ``scale = alpha_t``, ``z = -1``.
* :class:`BernoulliETDProblem`: the :class:`SemiLinearODE` ``dx/dt = L x + c x^2`` (diagonal ``L``) whose exact
  solution is known.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ._buffers import BufferPool
from ._validation import check_choice, check_float
from .models import ModelWrapper
from .schedules import VPSchedule
from .phi import phi_matrices, phis

__all__ = ["StepCoefficients", "MatrixCoefficient", "SemiLinearProblem", "SemiLinearODE", "DiffusionODE",
           "BernoulliETDProblem", "PREDICTIONS", "combine"]

PREDICTIONS = ("noise", "data")


@dataclass(frozen=True)
class StepCoefficients:
    """The numbers of formula (*) for one step: ``h`` (float, > 0 in the direction of integration) and
    ``linear``, ``scale``, ``z`` (floats, tensors broadcastable against the state for diagonal linear parts, or
    :class:`MatrixCoefficient` for dense ones). ``pool`` (optional :class:`~expsolver._buffers.BufferPool`) is where
    :func:`combine` takes its output tensor from; it does not change any value."""

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


@dataclass(frozen=True)
class _MatrixStepCoefficients(StepCoefficients):
    """:class:`StepCoefficients` of a dense linear part: the phi-functions of ``h L`` come from the problem's cache
    (``phis_of_step(n) = [phi_0(h L), ..., phi_n(h L)]``), one augmented matrix exponential per step size."""

    phis_of_step: object = field(default=None, compare=False, repr=False)

    def integrals(self, n: int) -> list:
        values = self.phis_of_step(n)
        return [self.h ** (j + 1) * values[j + 1] for j in range(n)]


_EXP = frozenset({"exp", "exp_"})
_ADD = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__isub__",
                  "__rsub__", "rsub", "subtract"})
_SCALE = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_", "__truediv__",
                    "__itruediv__", "true_divide", "divide"})
_NOT_LINEAR = frozenset({"__rdiv__", "__rtruediv__", "reciprocal", "pow", "pow_", "__pow__", "__rpow__",
                         "__ipow__", "float_power", "log", "sqrt"})


class MatrixCoefficient(torch.Tensor):
    """A step coefficient that is a matrix ``M`` (float64, shape ``(..., d, d)``) acting on the last dimension of
    the state, ``x -> x M^T``: ``linear = e^{h L}``, ``z = L`` and the integrals ``h^{j+1} phi_{j+1}(h L)`` of a
    problem with a dense linear part ``L``.

    Solvers treat step coefficients as numbers: they add them, scale them by floats and pass them to
    :func:`combine`. Matrices support exactly that algebra, so every solver runs unchanged on a dense ``L``:

    * sums and differences of matrices and products or quotients with scalars are the tensor's own;
    * a scalar ``a`` added to (subtracted from) a matrix means ``a I``: a scalar coefficient is ``a`` times the
      identity (UniPC's ``bh1`` weight ``h / 2`` next to the matrix ``I_0``);
    * ``exp`` is the matrix exponential (DEIS's quadrature kernels ``e^{z (h - u)}``,
      :func:`expsolver.solvers.deis.deis_weights`).

    Products of two matrices or with a tensor that is not one scalar per matrix, divisions by a matrix and powers
    raise ``TypeError``: done entry by entry they would silently give another operator (the phi-functions of a
    matrix are not those of its entries). :func:`combine` applies a matrix to a state as ``x @ M^T``.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _EXP:
            return _matrix_exp(args[0].as_subclass(torch.Tensor)).as_subclass(cls)
        if name in _NOT_LINEAR:
            raise TypeError(f"{name} of a MatrixCoefficient is not defined (it would act entry by entry on a matrix "
                            f"that stands for a linear operator)")
        if name in _ADD or name in _SCALE:
            a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
            matrix = a if isinstance(a, MatrixCoefficient) else b
            other = b if matrix is a else a
            if not isinstance(other, MatrixCoefficient):
                if not _scalar_like(other):
                    raise TypeError(f"{name} of a MatrixCoefficient and a tensor of shape {tuple(other.shape)}: only "
                                    f"scalars (or one scalar per matrix) combine with it; a matrix is applied to a "
                                    f"state by expsolver.problems.combine")
                if name in _ADD:  # a scalar next to a matrix is that scalar times the identity
                    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
                    other = torch.as_tensor(other, dtype=matrix.dtype, device=matrix.device) * eye
                    args = (a, other) + tuple(args[2:]) if matrix is a else (other, b) + tuple(args[2:])
            elif name in _SCALE:
                raise TypeError(f"{name} of two MatrixCoefficients is not defined entry by entry; use @ for the "
                                f"product of the operators")
        return super().__torch_function__(func, types, args, kwargs)


#: Matrix exponentials kept by :func:`_matrix_exp` (bytes of results, oldest dropped first).
_EXP_CACHE_BYTES = 2**26
_exp_cache: OrderedDict = OrderedDict()


def _matrix_exp(a: torch.Tensor) -> torch.Tensor:
    """:func:`torch.linalg.matrix_exp`, memoised on the argument's contents: a solver that exponentiates matrices
    itself (DEIS's kernels at its quadrature nodes, 2 x 32 matrices per step) meets the same arguments on every step
    of a uniform grid."""
    data = a.detach().cpu().contiguous()
    key = (str(a.device), a.dtype, tuple(a.shape), hashlib.blake2b(data.numpy().tobytes(), digest_size=16).digest())
    value = _exp_cache.get(key)
    if value is None:
        value = torch.linalg.matrix_exp(a)
        _exp_cache[key] = value
        while sum(v.numel() * v.element_size() for v in _exp_cache.values()) > _EXP_CACHE_BYTES and len(_exp_cache) > 1:
            _exp_cache.popitem(last=False)
    _exp_cache.move_to_end(key)
    return value.clone()


def _scalar_like(value) -> bool:
    """A real number, a 0-dim tensor, or a tensor of shape ``(..., 1, 1)`` (one scalar per matrix)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    return isinstance(value, torch.Tensor) and (value.ndim == 0 or (value.ndim >= 2 and value.shape[-2:] == (1, 1)))


class SemiLinearProblem(abc.ABC):
    """Interface of a semi-linear problem (see the module docstring).

    A subclass implements :meth:`rho`, :meth:`t_of_rho`, :meth:`nonlinear`, :meth:`coefficients` and the
    property :attr:`nfe`; one that misses any of them is a ``TypeError`` at construction, naming them.
    :meth:`rhs` is optional (classical solvers and :func:`expsolver.reference_solve` use it).
    """

    @abc.abstractmethod
    def rho(self, t: float) -> float:
        """The integration variable at time ``t``."""

    @abc.abstractmethod
    def t_of_rho(self, rho: float) -> float:
        """The time at the integration variable ``rho`` (inverse of :meth:`rho`)."""

    @abc.abstractmethod
    def nonlinear(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``N(x, t)``: one model call."""

    @abc.abstractmethod
    def coefficients(self, s: float, t: float) -> StepCoefficients:
        """The numbers of formula (*) for the step ``s -> t``."""

    @property
    @abc.abstractmethod
    def nfe(self) -> int:
        """Model calls made so far."""

    def rhs(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """The plain right-hand side ``dx/dt`` (one model call)."""
        raise NotImplementedError(f"{type(self).__name__} does not define rhs(t, x), the plain right-hand side "
                                  f"that classical solvers and reference solutions need")


def combine(c: StepCoefficients, x: torch.Tensor, terms) -> torch.Tensor:
    """``linear * x + scale * sum_j w_j N_j`` for ``terms = [(w_j, N_j), ...]``: the only place where step
    coefficients (float64) meet the state (in its own dtype). A :class:`MatrixCoefficient` acts on the state's last
    dimension (``x @ M^T``, in the state's dtype)."""
    if isinstance(c.linear, MatrixCoefficient):
        out = _apply(c.linear, x)
        for w, n in terms:
            out = out + _apply(c.scale * w, n)
        return out
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


def _apply(w, x: torch.Tensor) -> torch.Tensor:
    """``x @ w^T`` for a matrix ``w``, ``w * x`` for a scalar one."""
    if not isinstance(w, MatrixCoefficient):
        return w * x
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"a {w.shape[-1]} x {w.shape[-1]} linear part acts on the last dimension of the state, "
                         f"which is {x.shape[-1]} (state shape {tuple(x.shape)})")
    return x @ w.as_subclass(torch.Tensor).to(x.dtype).T


_CACHE_SIZE = 64
_MIN_PHI_INDEX = 3


class SemiLinearODE(SemiLinearProblem):
    """``dx/dt = L x + N(x, t)``: a user's semi-linear ODE, integrated in ``rho = t`` with ``z = L``.

    Over a step ``s -> t`` (``h = t - s``) formula (*) is ``x_t = e^{h L} x_s + int_0^h e^{(h-u) L} N du``:
    ``linear = e^{h L}``, ``scale = 1``, ``z = L`` and the integrals ``I_j = h^{j+1} phi_{j+1}(h L)``.

    * scalar ``L``: floats (:func:`expsolver.phi.phis`);
    * diagonal ``L`` (1-D tensor of length ``d``): tensors of shape ``(d,)``, broadcast against the state's last
      dimension;
    * dense ``L`` (2-D ``(d, d)`` tensor, acting on the state's last dimension, ``x @ L^T``): every
      ``phi_k(h L)`` from one exponential of an augmented block matrix (:func:`expsolver.phi.phi_matrices`) in
      float64, cached per step size (the float steps of a uniform grid take a handful of distinct values), as
      :class:`MatrixCoefficient` so that every solver runs unchanged.

    Parameters
    ----------
    linear : float, or torch.Tensor / array of shape (d,) or (d, d)
        ``L``: scalar, diagonal or dense (any real matrix, e.g. a finite-difference Laplacian or a non-normal
        advection-diffusion operator), finite.
    nonlinear : callable
        ``N(x, t) -> tensor of x's shape``, ``x`` of shape ``(batch, *dims)`` (``dims[-1] = d`` unless ``L`` is
        scalar), ``t`` a float. Each call counts as one model evaluation (:attr:`nfe`).

    Raises
    ------
    TypeError
        ``linear`` not a number or real tensor/array; ``nonlinear`` not callable.
    ValueError
        ``linear`` not finite, empty, of more than 2 dimensions or not square; later, a state whose last dimension
        is not ``d``, or an ``N`` of another shape than the state.
    """

    def __init__(self, linear, nonlinear):
        self.L = _as_linear_part(linear, "linear")
        if not callable(nonlinear):
            raise TypeError(f"nonlinear must be callable as nonlinear(x, t), got {type(nonlinear).__name__}")
        self._nonlinear = nonlinear
        self._nfe = 0
        self._phis: OrderedDict = OrderedDict()
        self._L_matrix = self.L.as_subclass(MatrixCoefficient) if self.kind == "dense" else None

    @property
    def kind(self) -> str:
        """``"scalar"``, ``"diagonal"`` or ``"dense"``."""
        return "scalar" if isinstance(self.L, float) else ("diagonal" if self.L.ndim == 1 else "dense")

    @property
    def nfe(self) -> int:
        return self._nfe

    def rho(self, t: float) -> float:
        return t

    def t_of_rho(self, rho: float) -> float:
        return rho

    def check_state(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` if its last dimension fits ``L`` (``ValueError`` otherwise)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"the state must be a torch.Tensor, got {type(x).__name__}")
        if self.kind != "scalar" and (x.ndim < 2 or x.shape[-1] != self.L.shape[0]):
            raise ValueError(f"the state must have shape (batch, ..., {self.L.shape[0]}) to match the {self.kind} L "
                             f"of size {self.L.shape[0]} (which acts on its last dimension); got {tuple(x.shape)}")
        return x

    def nonlinear(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.check_state(x)
        self._nfe += 1
        out = self._nonlinear(x, t)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"nonlinear(x, t) must return a tensor of the state's shape {tuple(x.shape)}, got {got}")
        return out

    def apply_linear(self, x: torch.Tensor) -> torch.Tensor:
        """``L x`` (on the state's last dimension for a dense ``L``)."""
        self.check_state(x)
        if self.kind == "dense":
            return x @ self.L.to(x.dtype).T
        return self.L * x if self.kind == "scalar" else self.L.to(x.dtype) * x

    def rhs(self, t: float, x: torch.Tensor) -> torch.Tensor:
        return self.apply_linear(x) + self.nonlinear(x, t)

    def coefficients(self, s: float, t: float) -> StepCoefficients:
        h = t - s
        if self.kind == "scalar":
            return StepCoefficients(h, math.exp(self.L * h), 1.0, self.L)
        if self.kind == "diagonal":
            return StepCoefficients(h, torch.exp(self.L * h), 1.0, self.L)
        return _MatrixStepCoefficients(h, self.matrix_phis(h, 0)[0], 1.0, self._L_matrix,
                                       phis_of_step=lambda n: self.matrix_phis(h, n))

    def matrix_phis(self, h: float, n: int) -> list:
        """``[phi_0(h L), ..., phi_n(h L)]`` (at least) of the dense ``L`` as :class:`MatrixCoefficient`, cached per
        ``h`` (the last 64 step sizes)."""
        values = self._phis.get(h)
        if values is None or len(values) <= n:
            computed = phi_matrices(max(n, _MIN_PHI_INDEX), h * self.L)
            values = [v.as_subclass(MatrixCoefficient) for v in computed]
            self._phis[h] = values
            if len(self._phis) > _CACHE_SIZE:
                self._phis.popitem(last=False)
        self._phis.move_to_end(h)
        return values


def _as_linear_part(value, name: str):
    """``L`` as a float (scalar) or a float64 tensor of shape ``(d,)`` or ``(d, d)``, checked."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real number or a real tensor/array of shape (d,) or (d, d), "
                        f"got {type(value).__name__} ({value!r})")
    if isinstance(value, (int, float)):
        return check_float(value, name)
    try:
        tensor = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a real number or a real tensor/array of shape (d,) or (d, d), "
                        f"got {type(value).__name__}") from exc
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.float64)
    if tensor.ndim == 0:
        return check_float(tensor.item(), name)
    if tensor.ndim > 2 or tensor.numel() == 0 or (tensor.ndim == 2 and tensor.shape[0] != tensor.shape[1]):
        raise ValueError(f"{name} must be a scalar, a non-empty 1-D tensor (diagonal) or a square 2-D tensor "
                         f"(dense, acting on the state's last dimension); got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite")
    return tensor.clone()


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


class BernoulliETDProblem(SemiLinearODE):
    """``dx/dt = L x + c x^2`` with diagonal ``L`` (a Bernoulli equation), integrated in ``rho = t``.

    With ``v = 1/x``: ``v' = -L v - c``, so the exact solution is

        x(t) = 1 / ((1/x_0 + c/L) e^{-L (t - t_0)} - c/L)            (componentwise).

    Stiff when ``L`` has large negative entries: explicit Runge-Kutta methods then need ``|L| h`` small, while
    exponential integrators keep their order with ``|L| h`` large. ``N(x, t) = c x^2`` depends on ``x``, so the
    stage values matter and the leading error terms do not vanish.

    Parameters
    ----------
    L : tensor or array of shape (d,)
        Finite, non-zero diagonal entries.
    c : float
    """

    def __init__(self, L, c: float = 1.0):
        L = _as_linear_part(L, "L")
        if isinstance(L, float) or L.ndim != 1 or bool((L == 0).any()):
            raise ValueError("L must be a 1-D tensor of finite, non-zero diagonal entries")
        self.c = check_float(c, "c")
        super().__init__(L, self._quadratic)

    def _quadratic(self, x, t):
        return self.c * x * x

    def exact(self, x0: torch.Tensor, t0: float, t: float) -> torch.Tensor:
        """The exact solution at ``t`` from ``x0`` at ``t0``."""
        L = self.L.to(x0)
        ratio = self.c / L
        return 1.0 / ((1.0 / x0 + ratio) * torch.exp(-L * (t - t0)) - ratio)
