"""Argument checks shared by the public entry points.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, bad value) with a message
that names the argument, the value received and what is allowed.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch


def _is_real_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_has_data(value: torch.Tensor, name: str) -> torch.Tensor:
    """A tensor that holds values: not on the ``meta`` device (shape and dtype only), where every check that
    reads a value would fail with an error that does not say which argument is at fault."""
    if value.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shape and dtype only, no values); pass a tensor on a device "
                         f"that holds data (CPU or an accelerator)")
    return value


def check_float(value, name: str) -> float:
    """A finite real number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = check_has_data(value, name).item()
    if not _is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_positive_float(value, name: str) -> float:
    value = check_float(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(value, name: str, choices: Iterable) -> object:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r})")
    return bool(value)


def as_real_array(value, name: str) -> np.ndarray:
    """A float64 numpy copy of an array-like of real numbers (list, numpy array, tensor).

    ``TypeError`` naming ``name`` for anything else: strings, booleans, complex numbers (NumPy would silently drop
    their imaginary part), ragged nesting, objects that are not numbers; ``ValueError`` for a meta tensor."""
    what = type(value).__name__
    if isinstance(value, torch.Tensor):
        check_has_data(value, name)
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be an array of real numbers, got a tensor of dtype {value.dtype}")
        value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(value)
        if arr.dtype.kind == "O":  # e.g. a list of Python numbers and tensors: each converted by float()
            if any(v is None for v in arr.flat):  # NumPy would turn None into NaN
                raise TypeError(f"{name} must be an array of real numbers, got {what} containing None")
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers, got {what}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got {what} of dtype {arr.dtype}")
    return arr.astype(np.float64)


def check_finite_array(value, name: str, ndim: int | None = 1) -> np.ndarray:
    """A float64 numpy copy of an array-like of real numbers (:func:`as_real_array`), checked finite (and of the
    given number of dimensions)."""
    arr = as_real_array(value, name)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite everywhere, got non-finite entries")
    return arr


def check_state(x, name: str = "x") -> torch.Tensor:
    """A floating-point tensor of shape ``(batch, *dims)`` with finite entries."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (batch, *dims) with batch >= 1, got {tuple(x.shape)}")
    check_has_data(x, name)
    # The sum is non-finite whenever an entry is (one fast reduction); only then is the exact elementwise check
    # needed, since a sum of finite entries can also overflow.
    if not bool(torch.isfinite(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def reject_unknown_kwargs(kwargs: dict, where: str) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(f"{where}() got unexpected keyword argument(s): {names}")
