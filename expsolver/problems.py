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
diagonal one) or matrices acting on the state's last dimension (a dense one: ``linear`` and the integrals as
:class:`PhiCombination`, ``z`` as :class:`MatrixCoefficient`). Solvers only add them, scale them by floats and hand
them to :func:`combine` (DEIS also exponentiates ``z``), so one solver code serves all three.

Problems here:

* :class:`SemiLinearODE`: a user's ``dx/dt = L x + N(x, t)`` in ``rho = t`` with ``z = L`` scalar, diagonal or
  dense (classical exponential time differencing, Cox & Matthews 2002; Hochbruck & Ostermann 2010).
* :class:`DiffusionODE`: the probability-flow ODE (DPM-Solver eq. (2.4)) in ``rho = lam``.
  Noise form (DPM-Solver eq. (3.4), seed (16)): ``N = eps_theta``, ``linear = alpha_t/alpha_s``,
  ``scale = -sigma_t``, ``z = 1``. Data form (DPM-Solver++ eq. (9)): ``N = x0_theta``,
  ``linear = sigma_t/sigma_s``, ``scale = alpha_t``, ``z = -1``.
* :class:`LamDiffusionODE`: the same ODE with ``lam`` itself as the time variable, its coefficients floats or
  differentiable 0-dim tensors of ``lam`` and its ``rhs`` ``dx/dlam``: the one diffusion ODE in ``lam`` that the
  samplers, the reference solutions and the grid optimiser share.
* :class:`BernoulliETDProblem`: the :class:`SemiLinearODE` ``dx/dt = L x + c x^2`` (diagonal ``L``) whose exact
  solution is known.
"""

from __future__ import annotations

import abc
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from ._buffers import BufferPool
from ._validation import check_choice, check_float
from .models import ModelWrapper
from .schedules import VPSchedule, log_alpha_of_lam, log_sigma_of_lam
from .phi_functions import _DifferentiablePhis, phi_matrices, phis

__all__ = ["StepCoefficients", "PhiCombination", "MatrixCoefficient", "SemiLinearProblem", "SemiLinearODE", "DiffusionODE",
           "LamDiffusionODE", "BernoulliETDProblem", "PREDICTIONS", "combine"]

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
class _DenseStepCoefficients(StepCoefficients):
    """:class:`StepCoefficients` of a dense linear part: ``linear`` and the integrals are :class:`PhiCombination` of
    the step's matrices (:class:`_StepMatrices`)."""

    matrices: object = field(default=None, compare=False, repr=False)

    def integrals(self, n: int) -> list:
        return [self.matrices.unit(j + 2) for j in range(n)]


class _StepMatrices:
    """The matrices of one step of a dense ``L``: ``B_0 = I``, ``B_1 = e^{h L}``, ``B_{j+2} = I_j =
    h^{j+1} phi_{j+1}(h L)`` (float64), taken from the problem's cache as far as they are needed."""

    def __init__(self, problem: "SemiLinearODE", h: float):
        self.problem, self.h = problem, h

    def unit(self, index: int) -> "PhiCombination":
        return PhiCombination(self, (0.0,) * index + (1.0,))

    def apply(self, weighted: list) -> torch.Tensor:
        """``sum_i y_i M_i^T`` for ``weighted = [(M_i, y_i)]`` (``M_i`` a :class:`PhiCombination` of this step, ``y_i``
        a state): the states are combined per basis matrix first, so each ``B_b`` multiplies one state."""
        per_basis = {}
        for w, y in weighted:
            for b, c in enumerate(w.coefficients):
                if c != 0.0:
                    per_basis[b] = y * c if b not in per_basis else per_basis[b].add(y, alpha=c)
        matrices = self.problem.step_matrices(self.h, max(per_basis, default=0) - 1)
        out = per_basis.pop(0, None)
        for b, y in per_basis.items():
            term = y @ matrices[b - 1].to(y.dtype).T
            out = term if out is None else out + term
        return out


def _is_real(value) -> bool:
    return type(value) is float or (isinstance(value, (int, float, np.integer, np.floating))
                                    and not isinstance(value, (bool, np.bool_)))


class PhiCombination:
    """A step coefficient of a dense linear part ``L``: ``sum_b c_b B_b``, a linear combination with float
    coefficients of the identity ``B_0``, ``B_1 = e^{h L}`` and the integrals ``B_{j+2} = h^{j+1} phi_{j+1}(h L)``
    of one step (``linear`` and ``integrals(n)`` of :class:`SemiLinearODE` with a dense ``L``).

    Solvers treat step coefficients as numbers: they add them, scale them by floats and pass them to
    :func:`combine`. This class supports exactly that algebra on its float coefficients (cheap: no matrix is formed;
    :func:`combine` sums the states per basis matrix and multiplies each ``B_b`` once), so every solver runs
    unchanged on a dense ``L``. A real number ``a`` next to a combination stands for ``a I`` (UniPC's ``bh1``
    weight ``h / 2`` next to ``I_0``). Products with anything but a real number, and combinations of two different
    steps, raise ``TypeError``: entry by entry they would silently give another operator.
    """

    __slots__ = ("steps", "coefficients")

    def __init__(self, steps: _StepMatrices, coefficients: tuple):
        self.steps, self.coefficients = steps, coefficients

    def _sum(self, other, sign: float):
        if isinstance(other, PhiCombination):
            if other.steps is not self.steps:
                raise TypeError("PhiCombination of two different steps cannot be combined")
            c = other.coefficients
        elif _is_real(other):
            c = (float(other),)
        else:
            return NotImplemented
        a = self.coefficients
        if len(c) > len(a):
            a = a + (0.0,) * (len(c) - len(a))
        return PhiCombination(self.steps, tuple(u + sign * v for u, v in zip(a, c)) + a[len(c):])

    def __add__(self, other):
        return self._sum(other, 1.0)

    __radd__ = __add__

    def __sub__(self, other):
        return self._sum(other, -1.0)

    def __rsub__(self, other):
        return (-self)._sum(other, 1.0)

    def __neg__(self):
        return PhiCombination(self.steps, tuple(-u for u in self.coefficients))

    def __mul__(self, other):
        if not _is_real(other):
            raise TypeError(f"a PhiCombination (a matrix) multiplies real numbers only, got {type(other).__name__}; "
                            f"it is applied to a state by expsolver.problems.combine")
        return PhiCombination(self.steps, tuple(u * other for u in self.coefficients))

    __rmul__ = __mul__

    def __truediv__(self, other):
        if not _is_real(other):
            raise TypeError(f"a PhiCombination (a matrix) is divided by real numbers only, got {type(other).__name__}")
        return PhiCombination(self.steps, tuple(u / other for u in self.coefficients))

    def matrix(self) -> torch.Tensor:
        """The ``(d, d)`` float64 matrix ``sum_b c_b B_b``."""
        eye = torch.eye(self.steps.problem.L.shape[0], dtype=torch.float64)
        return self.steps.apply([(self, eye)]).T

    def __repr__(self):
        return f"PhiCombination({list(self.coefficients)}, h={self.steps.h!r})"


_EXP = frozenset({"exp", "exp_"})
_ADD = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__isub__",
                  "__rsub__", "rsub", "subtract"})
_SCALE = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_", "__truediv__",
                    "__itruediv__", "true_divide", "divide"})
_NOT_LINEAR = frozenset({"__rdiv__", "__rtruediv__", "reciprocal", "pow", "pow_", "__pow__", "__rpow__",
                         "__ipow__", "float_power", "log", "sqrt"})


class MatrixCoefficient(torch.Tensor):
    """A step coefficient that is a matrix ``M`` (float64, shape ``(..., d, d)``) acting on the last dimension of
    the state, ``x -> x M^T``: ``z = L`` of a problem with a dense linear part, and what a solver computes from it
    (DEIS's weights ``sum_q w_q e^{z (h - u_q)}``).

    Solvers treat step coefficients as numbers: they add them, scale them by floats, exponentiate ``z`` and pass
    them to :func:`combine`. This tensor supports exactly that algebra, so every solver runs unchanged:

    * sums and differences of matrices and products or quotients with scalars are the tensor's own;
    * a scalar ``a`` added to (subtracted from) a matrix means ``a I``: a scalar coefficient is ``a`` times the
      identity;
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


#: Matrix exponentials kept by :func:`_matrix_exp` (bytes of arguments and results, oldest dropped first).
_EXP_CACHE_BYTES = 2**26
_exp_cache: OrderedDict = OrderedDict()


def _matrix_exp(a: torch.Tensor) -> torch.Tensor:
    """:func:`torch.linalg.matrix_exp`, memoised on the argument: a solver that exponentiates matrices itself
    (DEIS's kernels at its quadrature nodes, 2 x 32 matrices per step) meets the same arguments on every step of a
    uniform grid. Looked up by two sums, confirmed by comparing the whole argument."""
    key = (str(a.device), a.dtype, tuple(a.shape), float(a.sum()), float(a.abs().sum()))
    hit = _exp_cache.get(key)
    if hit is not None and torch.equal(hit[0], a):
        _exp_cache.move_to_end(key)
        return hit[1].clone()
    value = torch.linalg.matrix_exp(a)
    _exp_cache[key] = (a.clone(), value)
    while len(_exp_cache) > 1 and 2 * sum(v.numel() * v.element_size() for _, v in _exp_cache.values()) > _EXP_CACHE_BYTES:
        _exp_cache.popitem(last=False)
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
    coefficients (float64) meet the state (in its own dtype). A :class:`PhiCombination` or :class:`MatrixCoefficient`
    acts on the state's last dimension (``x @ M^T``, the matrix cast to the state's dtype)."""
    if isinstance(c.linear, PhiCombination):
        _check_last_dimension(c.linear.steps.problem.L.shape[0], x)
        weighted, direct = [(c.linear, x)], []
        for w, n in terms:
            w = c.scale * w
            if isinstance(w, MatrixCoefficient):
                direct.append(n @ w.as_subclass(torch.Tensor).to(n.dtype).T)
            else:
                weighted.append((w if isinstance(w, PhiCombination) else c.linear.steps.unit(0) * w, n))
        out = c.linear.steps.apply(weighted)
        for term in direct:
            out = out + term
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


def _check_last_dimension(d: int, x: torch.Tensor) -> None:
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"a {d} x {d} linear part acts on the last dimension of the state, which is "
                         f"{x.shape[-1] if x.ndim else None} (state shape {tuple(x.shape)})")


_CACHE_SIZE = 64
_MIN_PHI_INDEX = 3


class SemiLinearODE(SemiLinearProblem):
    """``dx/dt = L x + N(x, t)``: a user's semi-linear ODE, integrated in ``rho = t`` with ``z = L``.

    Over a step ``s -> t`` (``h = t - s``) formula (*) is ``x_t = e^{h L} x_s + int_0^h e^{(h-u) L} N du``:
    ``linear = e^{h L}``, ``scale = 1``, ``z = L`` and the integrals ``I_j = h^{j+1} phi_{j+1}(h L)``.

    * scalar ``L``: floats (:func:`expsolver.phi_functions.phis`);
    * diagonal ``L`` (1-D tensor of length ``d``): tensors of shape ``(d,)``, broadcast against the state's last
      dimension;
    * dense ``L`` (2-D ``(d, d)`` tensor, acting on the state's last dimension, ``x @ L^T``): every
      ``phi_k(h L)`` from one exponential of an augmented block matrix (:func:`expsolver.phi_functions.phi_matrices`) in
      float64, cached per step size (the float steps of a uniform grid take a handful of distinct values);
      ``linear`` and the integrals are :class:`PhiCombination` and ``z`` a :class:`MatrixCoefficient`, so that every
      solver runs unchanged.

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
        matrices = _StepMatrices(self, h)
        return _DenseStepCoefficients(h, matrices.unit(1), 1.0, self._L_matrix, matrices=matrices)

    def step_matrices(self, h: float, n: int) -> list:
        """``[e^{h L}, I_0, ..., I_{n-1}]`` (at least), ``I_j = h^{j+1} phi_{j+1}(h L)``, of the dense ``L``
        (float64), cached per ``h`` (the last 64 step sizes)."""
        values = self._phis.get(h)
        if values is None or len(values) <= n:
            phis_hl = phi_matrices(max(n, _MIN_PHI_INDEX), h * self.L)
            values = [phis_hl[0]] + [h ** j * phis_hl[j] for j in range(1, len(phis_hl))]
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
    """The probability-flow ODE of a VP diffusion model (DPM-Solver eq. (2.4)), integrated in the half log-SNR ``lam``.

    ``dx/dt = f(t) x + g^2(t) / (2 sigma_t) eps_theta(x, t)`` (:meth:`rhs`), integrated exactly in its linear part
    (:meth:`coefficients`):

    * ``prediction="noise"`` (DPM-Solver eq. (3.4)):
      ``x_t = (alpha_t/alpha_s) x_s - alpha_t int_{lam_s}^{lam_t} e^{-lam} eps dlam``
    * ``prediction="data"`` (DPM-Solver++ eq. (9)):
      ``x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lam_s}^{lam_t} e^{lam} x0 dlam``

    The time variable is ``t``: float64 times, ``rho = lam_t``, and ``(lam, log alpha, alpha, sigma)`` from the
    schedule (:meth:`point`). :class:`LamDiffusionODE` is this ODE with ``lam`` itself as the time variable (the
    reference solutions and the grid optimiser integrate it): it inherits the step coefficients, the model
    evaluation and the data prediction, and replaces only the map from its time to the quantities they use.

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

    def model_time(self, t: float) -> float:
        """The schedule time at which the model is called at the problem time ``t``: ``t`` itself."""
        return t

    def rho(self, t: float) -> float:
        return self.point(t)[0]

    def t_of_rho(self, rho: float) -> float:
        return self.schedule.lam_inverse_float(rho)

    def nonlinear(self, x: torch.Tensor, t: float) -> torch.Tensor:
        t = self._query_times.get(t, t)
        self.latest = self._prediction(x, t, self.prediction, self._pool)
        return self.latest  # also what the driver's callback reports as the prediction

    def data_at(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """The data prediction ``x0_theta(x, t)`` whatever the form (``denoise_to_zero``); one model call."""
        return self._prediction(x, t, "data")

    def _prediction(self, x, t, prediction: str, pool=None) -> torch.Tensor:
        """The model's ``prediction`` at the problem time ``t`` (float): called at :meth:`model_time`, converted
        with ``alpha`` and ``sigma`` of :meth:`point`."""
        _, _, alpha, sigma = self.point(t)
        if prediction == "noise":
            return self.model.eps(x, self.model_time(t), alpha, sigma, pool=pool)
        return self.model.data(x, self.model_time(t), alpha, sigma, pool=pool)

    def coefficients(self, s, t) -> StepCoefficients:
        """Formula (*) for ``s -> t``, ``h = lam_t - lam_s``: noise form ``linear = alpha_t/alpha_s =
        exp(log alpha_t - log alpha_s)``, ``scale = -sigma_t``, ``z = 1`` (DPM-Solver eq. (3.4)); data form
        ``linear = sigma_t/sigma_s``, ``scale = alpha_t``, ``z = -1`` (DPM-Solver++ eq. (9)). The quantities come
        from :meth:`_step_quantities`.

        Floats at float times; 0-dim float64 tensors, differentiable in the times, at tensor times (a
        :class:`LamDiffusionODE` on a grid of tensors), their integrals by :class:`_DifferentiableStepCoefficients`.
        """
        h, log_alpha_s, log_alpha_t, alpha_t, sigma_t, sigma_ratio = self._step_quantities(s, t)
        make = _DifferentiableStepCoefficients if isinstance(h, torch.Tensor) else StepCoefficients
        if self.prediction == "noise":
            return make(h, _exp(log_alpha_t - log_alpha_s), -sigma_t, 1.0, self._pool)
        return make(h, sigma_ratio, alpha_t, -1.0, self._pool)

    def _step_quantities(self, s, t) -> tuple:
        """``(h, log alpha_s, log alpha_t, alpha_t, sigma_t, sigma_t / sigma_s)`` of the step ``s -> t``, from the
        cached :meth:`point` at both ends. In ``t`` the schedule gives ``log alpha`` and ``sigma = sqrt(-expm1(2 log
        alpha))``, so ``sigma_t / sigma_s`` is the quotient of the sigmas (the official implementation's arithmetic,
        which :func:`expsolver.sample` reproduces bit for bit)."""
        lam_s, log_alpha_s, _, sigma_s = self.point(s)
        lam_t, log_alpha_t, alpha_t, sigma_t = self.point(t)
        return lam_t - lam_s, log_alpha_s, log_alpha_t, alpha_t, sigma_t, sigma_t / sigma_s

    def rhs(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """``dx/dt = f(t) x + g^2(t) / (2 sigma_t) eps_theta(x, t)`` (one model call; the model's output in the
        state's dtype). ``f``, ``g^2``, ``alpha``, ``sigma`` are the schedule's (validated) values at ``t``."""
        f, g2, sigma = self.schedule.f(t), self.schedule.g2(t), self.schedule.sigma(t)
        eps = self.model.eps(x, t, self.schedule.alpha(t), sigma).to(x.dtype)
        return f * x + (g2 / (2.0 * sigma)) * eps


class LamDiffusionODE(DiffusionODE):
    """The :class:`DiffusionODE` with the half log-SNR ``lam`` as its time variable (``rho = t = lam``).

    For a VP schedule ``alpha`` and ``sigma`` are functions of ``lam`` alone (``log alpha = -softplus(-2 lam)/2``,
    ``log sigma = -softplus(2 lam)/2``: :func:`~expsolver.schedules.log_alpha_of_lam`,
    :func:`~expsolver.schedules.log_sigma_of_lam`); the schedule enters only through the time ``t(lam)`` handed to
    the model. Only that map differs from :class:`DiffusionODE`, whose step coefficients
    (:meth:`~DiffusionODE.coefficients`) and model evaluation this class uses:

    * :meth:`point` and :meth:`_step_quantities` of float ``lam`` give floats, of 0-dim float64 tensors 0-dim
      tensors differentiable in ``lam``: on a grid of tensors every step coefficient is differentiable in the grid
      (the grid optimiser, :func:`expsolver.optimize_timesteps`);
    * the model is called at ``time_of_lam(lam)`` (a float), converted with ``alpha``, ``sigma`` of ``lam``;
    * :meth:`rhs` is ``dx/dlam``: with ``d log alpha / d lam = sigma^2`` and ``d(x/alpha)/dlam = -e^{-lam} eps``
      (DPM-Solver eq. (3.3)),

          dx/dlam = sigma^2(lam) x - sigma(lam) eps_theta(x, t(lam)),                                       (R)

      the right-hand side of the reference solutions in ``lam`` (:func:`expsolver.reference_solve`).

    Parameters
    ----------
    schedule, model, prediction
        As for :class:`DiffusionODE`.
    query_times : dict, optional
        Decoupled model times: grid ``lam`` (float) -> the ``lam`` at which the model is queried there, a float or
        a 0-dim tensor. Where that tensor requires grad, the prediction's derivative in it is a one-sided finite
        difference (step ``1e-6 max(1, |lam|)``, one more model call): the model's time input need not be
        differentiable.
    time_of_lam : callable, optional
        ``lam (float) -> t``, the time at which the model is called; default ``schedule.lam_inverse_float``.
    """

    def __init__(self, schedule, model: ModelWrapper, prediction: str = "noise", query_times: dict | None = None,
                 time_of_lam=None):
        super().__init__(schedule, model, prediction, query_times)
        if time_of_lam is not None and not callable(time_of_lam):
            raise TypeError(f"time_of_lam must be callable as time_of_lam(lam), got {type(time_of_lam).__name__}")
        self._time_of_lam = schedule.lam_inverse_float if time_of_lam is None else time_of_lam

    def point(self, lam) -> tuple:
        """``(lam, log_alpha, alpha, sigma)`` at ``lam``: floats for a float, 0-dim tensors for a tensor."""
        log_alpha = log_alpha_of_lam(lam)
        return lam, log_alpha, _exp(log_alpha), _exp(log_sigma_of_lam(lam))

    def model_time(self, lam: float) -> float:
        return self._time_of_lam(lam)

    def _step_quantities(self, s, t) -> tuple:
        """As :meth:`DiffusionODE._step_quantities`, from ``log alpha`` and ``log sigma`` at both ends, which in
        ``lam`` are computed first: ``sigma_t / sigma_s = exp(log sigma_t - log sigma_s)``, like ``alpha_t /
        alpha_s`` one exponential of a difference (on a grid of tensors, one smooth function of the two ``lam``)."""
        log_alpha_s, log_sigma_s = log_alpha_of_lam(s), log_sigma_of_lam(s)
        log_alpha_t, log_sigma_t = log_alpha_of_lam(t), log_sigma_of_lam(t)
        return (t - s, log_alpha_s, log_alpha_t, _exp(log_alpha_t), _exp(log_sigma_t),
                _exp(log_sigma_t - log_sigma_s))

    def rho(self, t):
        return t

    def t_of_rho(self, rho):
        return rho

    def nonlinear(self, x: torch.Tensor, t) -> torch.Tensor:
        query = self._query_times.get(_float(t), t)
        lam = _float(query)
        n = self._prediction(x, lam, self.prediction, self._pool)
        if isinstance(query, torch.Tensor) and query.requires_grad:
            # d N / d lam at fixed x, by a one-sided difference: the model's time input need not be differentiable.
            with torch.no_grad():
                delta = _FD_STEP * max(1.0, abs(lam))
                slope = (self._prediction(x.detach(), lam + delta, self.prediction, self._pool) - n.detach()) / delta
            n = n + (query - query.detach()).to(n.dtype) * slope
        self.latest = n
        return n

    def rhs(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """``dx/dlam`` of (R) at ``lam = t`` (one model call; the model's output in the state's dtype)."""
        _, _, alpha, sigma = self.point(t)
        eps = self.model.eps(x, self.model_time(t), alpha, sigma).to(x.dtype)
        return (sigma * sigma) * x - sigma * eps


#: Relative step of the finite difference in a decoupled model time (:class:`LamDiffusionODE`).
_FD_STEP = 1e-6


def _exp(value):
    """``e^value`` of a float (float) or a tensor (tensor, differentiable)."""
    return torch.exp(value) if isinstance(value, torch.Tensor) else math.exp(value)


def _float(value) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


@dataclass(frozen=True)
class _DifferentiableStepCoefficients(StepCoefficients):
    """:class:`StepCoefficients` of a step whose times are 0-dim float64 tensors (``h`` a tensor, ``z`` a float):
    ``integrals`` through :class:`~expsolver.phi_functions._DifferentiablePhis`, differentiable in ``h``."""

    def integrals(self, n: int) -> list:
        values = _DifferentiablePhis.apply(self.z * self.h, n)
        return [self.h ** (j + 1) * values[j] for j in range(n)]


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
