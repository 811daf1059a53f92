"""The model wrapper: the only place that calls the network, and the only NFE counter.

A diffusion network predicts one of several equivalent quantities; with ``x = alpha x0 + sigma eps`` they convert
into each other exactly (DPM-Solver App. D.2, the official ``model_wrapper``):

    noise     eps                                     (model_type="noise")
    x_start   x0     -> eps = (x - alpha x0) / sigma  (model_type="x_start")
    v         v = alpha eps - sigma x0 -> eps = alpha v + sigma x, x0 = alpha x - sigma v   (model_type="v")
    score     s = grad log q_t -> eps = -sigma s      (model_type="score")

and the data prediction used by DPM-Solver++ is ``x0 = (x - sigma eps) / alpha``.

The model's buffers are not trusted
-----------------------------------
A multistep sampler keeps earlier predictions and states while it calls the model again. Two kinds of model
break that silently unless the wrapper steps in (:class:`ModelGuard`):

* a model that returns the *same* output tensor on every call (a preallocated buffer, as CUDA graphs and compiled
  inference engines do) overwrites the predictions the sampler still holds;
* a model that modifies its input in place (``x.mul_(...)``) changes the sampler's state, and on the first call
  the caller's own tensor.

The wrapper keeps a model output as it is only where nothing else refers to it: no other Python reference (the
reference count, calibrated once at import as in :mod:`expsolver._buffers`) and no other tensor on its storage
(``torch._C._storage_Use_Count``). Otherwise (the model holds it, or it is a view of something) the output is
copied. Outputs that the wrapper converts (``x_start`` to noise, noise to data, ...) are new tensors already and
are never copied. Memory that a model reuses behind PyTorch's back (a new tensor wrapping the same raw memory,
so neither count shows it) cannot be seen until the next call writes over it: the wrapper then finds the new
output overlapping an output it kept that is still alive, and raises :class:`ModelBufferError` rather than
continue with a corrupted history.

Inputs: the first state the wrapper sees (in a sampler, the caller's ``x``) is passed as a copy, and whenever it
is seen again; if the model modified that copy (its version counter, ``Tensor._version``, moved), every later
call gets a copy too, so such a model works and never touches the caller's tensor. Any other state is passed
as it is, its version counter read before and after the call: a model that modifies it without having done so
on its first call raises :class:`ModelBufferError`. Tensors made in inference mode have no version counter;
they are always passed as copies. A change made through ``Tensor.data`` or raw memory bypasses the version
counter and is not detected.

Autograd: the samplers run the model under :func:`torch.no_grad`. A model that differentiates internally (a
score from an energy, guidance by a gradient) must switch gradients on itself with ``torch.enable_grad()``; its
autograd error is re-raised as :class:`ModelAutogradError` saying so.
"""

from __future__ import annotations

import sys
import weakref
from typing import Callable

import torch

from ._validation import check_bool, check_choice
from .schedules import VPDiscrete, VPSchedule

__all__ = ["ModelWrapper", "ModelGuard", "ModelOutputError", "ModelBufferError", "ModelAutogradError",
           "MODEL_TYPES", "TIME_INPUTS"]

MODEL_TYPES = ("noise", "x_start", "v", "score")
TIME_INPUTS = ("continuous", "discrete")
# Outputs kept as they are and tracked for overlaps: more than any sampler's history holds at once.
_TRACKED_OUTPUTS = 16

try:
    _storage_use_count = torch._C._storage_Use_Count  # number of tensors sharing a storage
except AttributeError:  # pragma: no cover - torch without it: every kept output is copied
    _storage_use_count = None


class ModelOutputError(ValueError):
    """The model returned a tensor of the wrong shape or device, or non-finite values."""


class ModelBufferError(ModelOutputError):
    """The model modified its input in place, or wrote over the memory of an earlier output still in use."""


class ModelAutogradError(RuntimeError):
    """The model needs autograd, which the samplers switch off (:func:`torch.no_grad`)."""


def _callee_references(out) -> int:
    return sys.getrefcount(out)


def _calibrate_references() -> int | None:
    """``sys.getrefcount`` of an output held in one local of its caller, seen inside :meth:`ModelGuard.keep`
    (the caller's local, the parameter, ``getrefcount``'s argument), measured on this interpreter; ``None`` if one
    more reference does not show in the count, in which case every kept output is copied."""
    out = torch.empty(0)
    fresh = _callee_references(out)
    held = [out]  # one more reference, which the count must show
    more = _callee_references(out)
    del held
    return fresh if more == fresh + 1 else None


_FRESH_REFERENCES = _calibrate_references()


class ModelGuard:
    """The model-buffer protections of :class:`ModelWrapper` (module docstring), one instance per model.

    Attributes
    ----------
    copy_inputs : bool
        Set once the model has been seen to modify its input: from then on every input is a copy.
    input_copies, output_copies : int
        Tensors copied so far (the price of the protections).
    """

    def __init__(self):
        self.copy_inputs = False
        self.input_copies = 0
        self.output_copies = 0
        self._first_input = None  # weak reference to the first state seen (a sampler's caller's x)
        self._kept: list[tuple] = []  # (weak reference, first byte, end byte) of outputs kept as they are

    def model_input(self, x: torch.Tensor, pool=None) -> tuple[torch.Tensor, int | None]:
        """The tensor to pass to the model for the state ``x``, and its version counter (``None``: a copy made
        where versions are not counted, nothing to check). A copy goes into a tensor from ``pool`` (optional
        :class:`~expsolver._buffers.BufferPool`) where it has one: free again after the call, it is recycled for
        the step's own work instead of being new memory."""
        versioned = not (x.is_inference() or torch.is_inference_mode_enabled())
        first = self._first_input
        if first is None:
            self._first_input = weakref.ref(x)
        elif versioned and not self.copy_inputs and first() is not x:
            return x, x._version
        self.input_copies += 1
        buf = None if pool is None else pool.take(x)
        x = x.clone() if buf is None else buf.copy_(x)
        return x, (x._version if versioned else None)

    def check_input(self, x: torch.Tensor, passed: torch.Tensor, version: int | None, where: Callable) -> None:
        """After the call: did the model modify the tensor it was given? ``where()`` says where (for errors)."""
        if version is None or passed._version == version:
            return
        if passed is not x:  # a copy: learn, and copy from now on
            self.copy_inputs = True
            return
        raise ModelBufferError(f"the model modified its input in place {where()} (not on its first call, so the "
                               f"sampler did not protect this state): a model must not write into x; compute "
                               f"out of place, or work on x.clone()")

    def keep(self, out: torch.Tensor, x: torch.Tensor, where: Callable) -> torch.Tensor:
        """``out`` (just returned by the model for the state ``x``, held in one local of the caller) made safe for
        the sampler to keep: itself if nothing else refers to it, else a copy. ``ModelBufferError`` if it overlaps
        an earlier output kept as it is and still alive (and is not simply the state the model was given)."""
        try:
            storage = out.untyped_storage()
            x_storage = x.untyped_storage()
        except (RuntimeError, NotImplementedError):  # no plain storage (e.g. a wrapper tensor): always copy
            self.output_copies += 1
            return out.clone()
        start = storage.data_ptr()
        end = start + storage.nbytes()
        x_start = x_storage.data_ptr()
        kept = self._kept
        if start < x_start + x_storage.nbytes() and x_start < end:  # the model returned its input (or a view)
            self.output_copies += 1
            return out.clone()
        for ref, kept_start, kept_end in kept:
            if start < kept_end and kept_start < end and ref() is not None:
                raise ModelBufferError(
                    f"the model output {where()} occupies the memory of an earlier output that the sampler still "
                    f"holds: the model reuses its output memory without PyTorch seeing it (e.g. a tensor made "
                    f"from an engine's buffer on every call), so that earlier output has been overwritten. "
                    f"Return a new tensor on every call (e.g. out.clone()).")
        if (_FRESH_REFERENCES is not None and _storage_use_count is not None
                and sys.getrefcount(out) == _FRESH_REFERENCES
                and _storage_use_count(storage._cdata) == 2):  # out's storage + the local ``storage``
            if len(kept) >= _TRACKED_OUTPUTS:
                kept[:] = [entry for entry in kept if entry[0]() is not None][1 - _TRACKED_OUTPUTS:]
            kept.append((weakref.ref(out), start, end))
            return out
        self.output_copies += 1
        return out.clone()


class ModelWrapper:
    """Wrap ``model(x, t)`` into noise and data predictions at a scalar time, counting every call.

    The model's input and output buffers are not trusted (module docstring): a model that returns one
    preallocated tensor on every call, or modifies its input in place, gives the same results as a well-behaved
    one or a :class:`ModelBufferError`; the state passed in is never modified.

    Parameters
    ----------
    model : callable
        ``model(x, t_input) -> tensor`` with ``x`` of shape ``(batch, *dims)`` and ``t_input`` of shape ``(batch,)``
        in the dtype and device of ``x``. Called without autograd by the samplers: a model that needs gradients
        internally must use ``with torch.enable_grad():`` itself.
    schedule : VPSchedule
    model_type : {"noise", "x_start", "v", "score"}
    time_input : {"continuous", "discrete"}
        "continuous" passes ``t``; "discrete" passes ``1000 (t - 1/N)`` (a model trained on N discrete steps,
        as the official implementation does; needs a :class:`VPDiscrete` schedule).
    check_finite : bool
        Raise :class:`ModelOutputError` naming the step and time when the model returns NaN or Inf.

    Attributes
    ----------
    nfe : int
        Model calls made.
    guard : ModelGuard
        The buffer protections and their copy counts.
    """

    def __init__(self, model: Callable, schedule: VPSchedule, model_type: str = "noise",
                 time_input: str = "continuous", check_finite: bool = True):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t), got {type(model).__name__}")
        if not isinstance(schedule, VPSchedule):
            raise TypeError(f"schedule must be a VPSchedule (VPLinear, VPCosine, VPDiscrete), got {type(schedule).__name__}")
        self.model = model
        self.schedule = schedule
        self.model_type = check_choice(model_type, "model_type", MODEL_TYPES)
        self.time_input = check_choice(time_input, "time_input", TIME_INPUTS)
        if time_input == "discrete" and not isinstance(schedule, VPDiscrete):
            raise ValueError("time_input='discrete' needs a VPDiscrete schedule")
        self.check_finite = check_bool(check_finite, "check_finite")
        self.nfe = 0
        self.guard = ModelGuard()

    def _call(self, x: torch.Tensor, t: float, pool=None) -> torch.Tensor:
        t_in = t if self.time_input == "continuous" else 1000.0 * (t - 1.0 / self.schedule.total_N)
        t_batch = torch.full((x.shape[0],), t_in, dtype=x.dtype, device=x.device)
        x_in, version = self.guard.model_input(x, pool)
        where = lambda: self._where(t)  # noqa: E731 - formatted only for an error message
        try:
            out = self.model(x_in, t_batch)
        except RuntimeError as exc:
            if torch.is_grad_enabled() or "does not require grad" not in str(exc):
                raise
            raise ModelAutogradError(
                f"the model failed {where()} because autograd is off: the samplers call the model under "
                f"torch.no_grad(). A model that differentiates internally (e.g. a score computed with "
                f"torch.autograd.grad from an energy) must enable gradients itself: wrap its body in "
                f"`with torch.enable_grad():`. The model's error: {exc}") from exc
        self.nfe += 1
        self.guard.check_input(x, x_in, version, where)
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(f"model output {self._where(t)} must be a torch.Tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ModelOutputError(f"model output {self._where(t)} has shape {tuple(out.shape)}, expected "
                                   f"{tuple(x.shape)}")
        if out.device != x.device:
            raise ModelOutputError(f"model output {self._where(t)} is on device {out.device}, expected x's device "
                                   f"{x.device}")
        # One reduction and one host sync per call: a NaN or Inf anywhere makes the sum non-finite; a finite
        # tensor whose sum overflows is told apart by the exact (slower) check, run only then.
        if self.check_finite and not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
            raise ModelOutputError(f"model output {self._where(t)} contains NaN or Inf")
        return out

    def _where(self, t: float) -> str:
        return f"at t={t:.6g}"  # the driver adds the step

    def eps(self, x: torch.Tensor, t: float, alpha: float, sigma: float, pool=None) -> torch.Tensor:
        """Noise prediction at scalar time ``t`` (``alpha``, ``sigma`` are the schedule's values there); a tensor
        the caller may keep (never one the model holds). ``pool``: as in :meth:`data`."""
        if self.model_type == "noise":
            return self._kept_call(x, t, pool)
        return self._eps(x, t, alpha, sigma, pool)

    def _kept_call(self, x: torch.Tensor, t: float, pool=None) -> torch.Tensor:
        """The model's output at ``t``, safe for the caller to keep (:meth:`ModelGuard.keep`)."""
        out = self._call(x, t, pool)  # the one local holding it, as ModelGuard.keep's reference count expects
        return self.guard.keep(out, x, lambda: self._where(t))

    def _eps(self, x, t, alpha, sigma, pool=None) -> torch.Tensor:
        """:meth:`eps`, the model's own output returned as it is for ``model_type="noise"`` (for a conversion that
        makes a new tensor from it at once)."""
        out = self._call(x, t, pool)
        if self.model_type == "noise":
            return out
        if self.model_type == "x_start":
            return (x - alpha * out) / sigma
        if self.model_type == "v":
            return alpha * out + sigma * x
        return -sigma * out

    def data(self, x: torch.Tensor, t: float, alpha: float, sigma: float, pool=None) -> torch.Tensor:
        """Data (x0) prediction ``(x - sigma eps) / alpha`` at scalar time ``t``; a tensor the caller may keep.

        ``pool`` (optional :class:`~expsolver._buffers.BufferPool`) supplies the output tensor and any copy of the
        input (:meth:`ModelGuard.model_input`); values are the same.
        """
        if self.model_type == "x_start":
            return self._kept_call(x, t, pool)
        if self.model_type == "v":
            return alpha * x - sigma * self._call(x, t, pool)
        eps = self._eps(x, t, alpha, sigma, pool)
        if isinstance(alpha, torch.Tensor) or isinstance(sigma, torch.Tensor):  # e.g. differentiable coefficients
            return (x - sigma * eps) / alpha
        # Two passes over the state: x - sigma eps (one fused kernel), then a product with the float64 scalar
        # 1/alpha (a division costs about twice a product on CPU). The model's output is never modified.
        inv_alpha = 1.0 / alpha
        buf = None if pool is None or eps.dtype != x.dtype else pool.take(x)
        if buf is None:
            return torch.add(x, eps, alpha=-sigma) * inv_alpha
        return torch.add(x, eps, alpha=-sigma, out=buf).mul_(inv_alpha)
