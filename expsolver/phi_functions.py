"""Stable phi-functions of exponential integrators.

The phi-functions are the exact integrals of polynomial times exponential kernels,

    phi_0(z) = e^z,    phi_{k+1}(z) = (phi_k(z) - 1/k!) / z,    phi_k(0) = 1/k!,

equivalently ``phi_k(z) = int_0^1 e^{(1-u) z} u^{k-1} / (k-1)! du`` (k >= 1). An exponential integrator that
approximates the nonlinear term ``N`` by a polynomial in the step variable ``u in [0, h]`` uses

    int_0^h e^{z (h-u)} u^j / j! du = h^{j+1} phi_{j+1}(z h).

The recurrence cancels catastrophically for small ``|z|``, so for ``|z| < 2`` the Taylor series
``phi_k(z) = sum_j z^j / (j+k)!`` is summed instead (30 terms: truncation below 1e-23 relative). For
``|z| >= 2`` each recurrence level amplifies round-off by at most ``(k+1)/|z|``, which keeps ``phi_1..phi_5``
within a few ulps. This module is the only implementation of these functions in the package.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

__all__ = ["phi", "phis", "phi_matrices"]

_SERIES_RADIUS = 2.0
_SERIES_TERMS = 30
# 1/j! for every j the series and the recurrence use (exactly the values 1.0 / math.factorial(j) would give).
_INV_FACTORIAL = tuple(1.0 / math.factorial(j) for j in range(_SERIES_TERMS + 16))
# Largest z with e^z finite in float64 (math.exp raises OverflowError above it).
_MAX_EXP_ARGUMENT = math.log(torch.finfo(torch.float64).max)


def phis(max_k: int, z):
    """Return ``[phi_0(z), ..., phi_max_k(z)]``.

    Parameters
    ----------
    max_k : int
        Highest index, ``>= 0``.
    z : float or torch.Tensor
        Argument. A Python float gives Python floats (computed in float64); a tensor gives tensors of the same
        shape, dtype and device (computed in float64 where the device supports it).

    Raises
    ------
    TypeError
        ``max_k`` not an int; ``z`` not a real number or a floating-point tensor.
    ValueError
        ``max_k < 0``; ``z`` (or an entry of it) NaN or infinite; a meta tensor.
    OverflowError
        A value is too large for the result's dtype: ``e^z`` overflows float64 for ``z`` above
        ``log(DBL_MAX) ~ 709.78`` (float32 tensors: above ``~88.72``). The float and the tensor paths agree.
    """
    return _phis(_check_index(max_k, "max_k"), z)


def phi(k: int, z):
    """Return ``phi_k(z)`` (see :func:`phis`; the same errors, naming ``k``)."""
    return _phis(_check_index(k, "k"), z)[-1]


class _DifferentiablePhis(torch.autograd.Function):
    """``[phi_1(z), ..., phi_n(z)]`` of a 0-dim float64 tensor ``z`` (a step differentiated in its times): the
    values of :func:`phis` on the float, with the derivative ``phi_k'(z) = phi_k(z) - k phi_{k+1}(z)`` (from
    ``phi_k(z) = int_0^1 e^{(1-u) z} u^{k-1}/(k-1)! du``). Much cheaper than differentiating the 30-term series.
    Call as ``_DifferentiablePhis.apply(z, n)``."""

    @staticmethod
    def forward(ctx, z, n):
        values = phis(n + 1, float(z))
        ctx.save_for_backward(torch.tensor(values, dtype=torch.float64))
        return torch.tensor(values[1:n + 1], dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad):
        (values,) = ctx.saved_tensors
        k = torch.arange(1, len(grad) + 1, dtype=torch.float64)
        return torch.sum(grad * (values[1:-1] - k * values[2:])), None


def _check_index(k, name: str) -> int:
    if type(k) is not int:  # the common case costs one comparison (this runs every step)
        if isinstance(k, bool) or not hasattr(k, "__index__"):
            raise TypeError(f"{name} must be an int, got {type(k).__name__} ({k!r})")
        k = k.__index__()  # numpy integers
    if k < 0:
        raise ValueError(f"{name} must be >= 0, got {k!r}")
    return k


def _phis(max_k: int, z):
    if isinstance(z, torch.Tensor):
        if not z.is_floating_point():
            # An integer tensor would get its phi-values truncated back to integers.
            raise TypeError(f"z must be a float or a floating-point tensor, got a tensor of dtype {z.dtype}")
        if z.device.type == "meta":
            raise ValueError("z is a meta tensor (shape and dtype only, no values); pass a tensor that holds data")
        values = [v.to(z.dtype) for v in _phis_tensor(max_k, z.to(torch.float64))]
        # One host read for both checks: every value is finite exactly when z is finite and nothing overflowed.
        if not bool(torch.stack([torch.isfinite(v.detach()).all() for v in values]).all()):
            if not bool(torch.isfinite(z.detach()).all()):
                raise ValueError("z must be finite, got a tensor with NaN or Inf entries")
            raise OverflowError(_overflow_message(float(z.detach().max()), z.dtype))
        return values
    if isinstance(z, (int, float)) and not isinstance(z, bool):
        z = float(z)
        if not math.isfinite(z):
            raise ValueError(f"z must be finite, got {z!r}")
        if z > _MAX_EXP_ARGUMENT:
            raise OverflowError(_overflow_message(z, torch.float64))
        return list(_phis_float(max_k, z))
    raise TypeError(f"z must be a float or a torch.Tensor, got {type(z).__name__}")


def _overflow_message(z_max: float, dtype: torch.dtype) -> str:
    limit = math.log(torch.finfo(dtype).max)
    return (f"z={z_max!r} is too large: phi_0(z) = e^z overflows {str(dtype).replace('torch.', '')} for "
            f"z > {limit:.6g} (the phi-functions grow like e^z / z^k)")


def _phis_tensor(max_k: int, z: torch.Tensor) -> list[torch.Tensor]:
    small = z.abs() < _SERIES_RADIUS
    # Recurrence branch: evaluate on a safe argument where the series is used, so no 0/0 appears.
    z_rec = torch.where(small, torch.full_like(z, _SERIES_RADIUS), z)
    values = [torch.exp(z)]
    rec = torch.exp(z_rec)
    for k in range(1, max_k + 1):
        rec = (rec - _inv_factorial(k - 1)) / z_rec
        series = _series(k, z)
        values.append(torch.where(small, series, rec))
    return values


@lru_cache(maxsize=4096)
def _phis_float(max_k: int, z: float) -> tuple:
    """Scalar path (the per-step coefficients of the samplers): same algorithm, no tensor overhead. Cached: runs
    over the same grid meet the same arguments, so each grid's values are computed once."""
    values = [math.exp(z)]
    for k in range(1, max_k + 1):
        if abs(z) < _SERIES_RADIUS:
            values.append(_series(k, z))
        else:
            values.append((values[-1] - _inv_factorial(k - 1)) / z)
    return tuple(values)


def _series(k: int, z):
    """Horner evaluation of ``sum_{j < J} z^j / (j+k)!`` (float or tensor ``z``)."""
    coeffs = _INV_FACTORIAL[k:k + _SERIES_TERMS]
    if len(coeffs) < _SERIES_TERMS:
        coeffs = tuple(_inv_factorial(j + k) for j in range(_SERIES_TERMS))
    acc = 0.0 * z + coeffs[-1]
    for j in range(_SERIES_TERMS - 2, -1, -1):
        acc = acc * z + coeffs[j]
    return acc


def _inv_factorial(j: int) -> float:
    """``1 / j!`` (tabulated; the same value as ``1.0 / math.factorial(j)``)."""
    return _INV_FACTORIAL[j] if j < len(_INV_FACTORIAL) else 1.0 / math.factorial(j)


def phi_matrices(max_k: int, A: torch.Tensor) -> list[torch.Tensor]:
    """Return ``[phi_0(A), ..., phi_max_k(A)]`` of a square matrix ``A`` (float64).

    The phi-functions of a matrix are those of the module docstring with ``z`` replaced by ``A``:
    ``phi_k(A) = int_0^1 e^{(1-u) A} u^{k-1} / (k-1)! du`` (k >= 1), ``phi_0(A) = e^A``. The recurrence
    ``phi_{k+1}(A) = A^{-1} (phi_k(A) - I/k!)`` fails for singular or ill-conditioned ``A`` (a Neumann Laplacian has
    the eigenvalue 0), so all of them come from one exponential of the augmented block matrix of size
    ``(max_k + 1) d``,

        W = [[A, I, 0, ..., 0],
             [0, 0, I, ..., 0],
             ...
             [0, 0, 0, ..., I],
             [0, 0, 0, ..., 0]],        exp(W) = [[phi_0(A), phi_1(A), ..., phi_max_k(A)], [0, ...], ...],

    whose first block row holds them (Saad 1992, Prop. 2.1; Al-Mohy & Higham 2011, Thm. 2.1; Hochbruck &
    Ostermann 2010, Sec. 2.1). The exponential is :func:`torch.linalg.matrix_exp` (scaling and squaring with
    optimised Taylor polynomials, Bader, Blanes & Casas 2019) in float64; it needs no spectral decomposition, so
    non-normal ``A`` are as accurate as symmetric ones.

    Parameters
    ----------
    max_k : int
        Highest index, ``>= 0``.
    A : torch.Tensor, shape (d, d)
        Finite real matrix.

    Returns
    -------
    list of torch.Tensor
        ``max_k + 1`` float64 tensors of shape ``(d, d)`` on ``A``'s device.
    """
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 0:
        raise ValueError(f"max_k must be an int >= 0, got {max_k!r}")
    if not isinstance(A, torch.Tensor) or A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square 2-D tensor, got "
                         f"{tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__}")
    A = A.detach().to(torch.float64)
    if not bool(torch.isfinite(A).all()):
        raise ValueError("A must be finite")
    d = A.shape[0]
    W = torch.zeros((max_k + 1) * d, (max_k + 1) * d, dtype=torch.float64, device=A.device)
    W[:d, :d] = A
    eye = torch.eye(d, dtype=torch.float64, device=A.device)
    for k in range(max_k):
        W[k * d:(k + 1) * d, (k + 1) * d:(k + 2) * d] = eye
    top = torch.linalg.matrix_exp(W)[:d]
    return [top[:, k * d:(k + 1) * d].clone() for k in range(max_k + 1)]
