"""The model wrapper: the only place that calls the network, and the only NFE counter.

A diffusion network predicts one of several equivalent quantities; with ``x = alpha x0 + sigma eps`` they convert
into each other exactly (DPM-Solver App. D.2, the official ``model_wrapper``):

    noise     eps                                     (model_type="noise")
    x_start   x0     -> eps = (x - alpha x0) / sigma  (model_type="x_start")
    v         v = alpha eps - sigma x0 -> eps = alpha v + sigma x, x0 = alpha x - sigma v   (model_type="v")
    score     s = grad log q_t -> eps = -sigma s      (model_type="score")

and the data prediction used by DPM-Solver++ is ``x0 = (x - sigma eps) / alpha``.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._validation import check_bool, check_choice
from .schedules import VPDiscrete, VPSchedule

__all__ = ["ModelWrapper", "ModelOutputError", "MODEL_TYPES", "TIME_INPUTS"]

MODEL_TYPES = ("noise", "x_start", "v", "score")
TIME_INPUTS = ("continuous", "discrete")


class ModelOutputError(ValueError):
    """The model returned a tensor of the wrong shape, or non-finite values."""


class ModelWrapper:
    """Wrap ``model(x, t)`` into noise and data predictions at a scalar time, counting every call.

    Parameters
    ----------
    model : callable
        ``model(x, t_input) -> tensor`` with ``x`` of shape ``(batch, *dims)`` and ``t_input`` of shape ``(batch,)``
        in the dtype and device of ``x``.
    schedule : VPSchedule
    model_type : {"noise", "x_start", "v", "score"}
    time_input : {"continuous", "discrete"}
        "continuous" passes ``t``; "discrete" passes ``1000 (t - 1/N)`` (a model trained on N discrete steps,
        as the official implementation does; needs a :class:`VPDiscrete` schedule).
    check_finite : bool
        Raise :class:`ModelOutputError` naming the step and time when the model returns NaN or Inf.
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
        self.step_index: int | None = None

    def _call(self, x: torch.Tensor, t: float) -> torch.Tensor:
        t_in = t if self.time_input == "continuous" else 1000.0 * (t - 1.0 / self.schedule.total_N)
        t_batch = torch.full((x.shape[0],), t_in, dtype=x.dtype, device=x.device)
        out = self.model(x, t_batch)
        self.nfe += 1
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(f"model output {self._where(t)} must be a torch.Tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ModelOutputError(f"model output {self._where(t)} has shape {tuple(out.shape)}, expected "
                                   f"{tuple(x.shape)}")
        # One reduction and one host sync per call: a NaN or Inf anywhere makes the sum non-finite; a finite
        # tensor whose sum overflows is told apart by the exact (slower) check, run only then.
        if self.check_finite and not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
            raise ModelOutputError(f"model output {self._where(t)} contains NaN or Inf")
        return out

    def _where(self, t: float) -> str:
        return f"at t={t:.6g}" + ("" if self.step_index is None else f" (step {self.step_index})")

    def eps(self, x: torch.Tensor, t: float, alpha: float, sigma: float) -> torch.Tensor:
        """Noise prediction at scalar time ``t`` (``alpha``, ``sigma`` are the schedule's values there)."""
        out = self._call(x, t)
        if self.model_type == "noise":
            return out
        if self.model_type == "x_start":
            return (x - alpha * out) / sigma
        if self.model_type == "v":
            return alpha * out + sigma * x
        return -sigma * out

    def data(self, x: torch.Tensor, t: float, alpha: float, sigma: float, pool=None) -> torch.Tensor:
        """Data (x0) prediction ``(x - sigma eps) / alpha`` at scalar time ``t``.

        ``pool`` (optional :class:`~expsolver._buffers.BufferPool`) supplies the output tensor; values are the same.
        """
        if self.model_type == "x_start":
            return self._call(x, t)
        if self.model_type == "v":
            return alpha * x - sigma * self._call(x, t)
        eps = self.eps(x, t, alpha, sigma)
        if isinstance(alpha, torch.Tensor) or isinstance(sigma, torch.Tensor):  # e.g. differentiable coefficients
            return (x - sigma * eps) / alpha
        # Two passes over the state: x - sigma eps (one fused kernel), then a product with the float64 scalar
        # 1/alpha (a division costs about twice a product on CPU). The model's output is never modified.
        inv_alpha = 1.0 / alpha
        buf = None if pool is None or eps.dtype != x.dtype else pool.take(x)
        if buf is None:
            return torch.add(x, eps, alpha=-sigma) * inv_alpha
        return torch.add(x, eps, alpha=-sigma, out=buf).mul_(inv_alpha)
