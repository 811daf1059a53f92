"""Time grids for diffusion samplers (the only grid implementation in the package).

All grids are computed in float64 (numpy) whatever torch's default dtype, run from ``t_start`` down to
``t_end``, and have their endpoints set exactly:

* ``"logSNR"``: uniform in ``lam`` (DPM-Solver Sec. 3.3): ``lam_i = lam_start + i/N (lam_end - lam_start)``;
* ``"time_uniform"``: uniform in ``t``;
* ``"time_quadratic"``: uniform in ``sqrt(t)``, i.e. ``t_i = (sqrt(t_start) + i/N (sqrt(t_end) - sqrt(t_start)))^2``;
* ``"karras"``: uniform in ``s^(1/rho)`` for the VE noise level ``s = sigma/alpha = e^{-lam}`` (EDM, Karras et
  al. 2022, eq. (5); ``rho = 7``).
"""

from __future__ import annotations

import numpy as np

from ._validation import as_real_array, check_choice, check_int
from .schedules import VPSchedule

__all__ = ["SKIP_TYPES", "time_grid", "check_grid", "explicit_grid"]

SKIP_TYPES = ("logSNR", "time_uniform", "time_quadratic", "karras")
_KARRAS_RHO = 7.0


def time_grid(schedule, skip_type: str, t_start: float, t_end: float, n_steps: int) -> np.ndarray:
    """``n_steps + 1`` strictly decreasing float64 times from ``t_start`` to ``t_end``.

    Raises ``ValueError`` for times outside the schedule's range, ``t_end >= t_start``, or a grid whose points
    collapse in float64 (some step of ``t`` or of ``lam`` not strictly positive: ``n_steps`` too large for the
    interval)."""
    _check_schedule(schedule)
    check_choice(skip_type, "skip_type", SKIP_TYPES)
    check_int(n_steps, "n_steps", minimum=1)
    t_start = schedule.check_time(t_start, "t_start")
    t_end = schedule.check_time(t_end, "t_end")
    if not t_end < t_start:
        raise ValueError(f"t_end must be < t_start (grids run backwards in time), got t_start={t_start!r}, "
                         f"t_end={t_end!r}")
    ts = _grid_times(schedule, skip_type, t_start, t_end, n_steps)
    _check_strictly_decreasing(schedule, ts, f"time_grid({skip_type!r}, n_steps={n_steps})")
    return ts


def _grid_times(schedule, skip_type: str, t_start: float, t_end: float, n_steps: int) -> np.ndarray:
    """The formulas of :func:`time_grid` without any check (the driver's inner singlestep grids, whose end points
    come from a checked grid and whose lambda ratios the driver checks itself)."""
    i = np.linspace(0.0, 1.0, n_steps + 1)
    if skip_type == "time_uniform":
        ts = t_start + i * (t_end - t_start)
    elif skip_type == "time_quadratic":
        ts = (np.sqrt(t_start) + i * (np.sqrt(t_end) - np.sqrt(t_start))) ** 2
    else:
        lam_start, lam_end = schedule.lams_of([t_start, t_end])
        if skip_type == "logSNR":
            lams = lam_start + i * (lam_end - lam_start)
        else:
            s_max, s_min = np.exp(-lam_start), np.exp(-lam_end)
            lams = -_KARRAS_RHO * np.log(s_max ** (1 / _KARRAS_RHO) + i * (s_min ** (1 / _KARRAS_RHO) - s_max ** (1 / _KARRAS_RHO)))
        ts = np.array([schedule.lam_inverse_float(float(v)) for v in lams])
    ts[0], ts[-1] = t_start, t_end
    return ts


def check_grid(schedule, timesteps, name: str = "timesteps") -> np.ndarray:
    """Validate an explicit grid: 1-D, at least 2 finite times inside the schedule's range, strictly decreasing,
    with every ``lam`` step > 0 in float64. Returns a float64 numpy copy."""
    ts = as_real_array(timesteps, name)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 times, got shape {ts.shape}")
    _check_schedule(schedule)
    for k, t in enumerate(ts):
        schedule.check_time(float(t), f"{name}[{k}]")
    _check_strictly_decreasing(schedule, ts, name)
    return ts


def explicit_grid(schedule, timesteps, *, steps=None, skip_type=None, t_start=None, t_end=None) -> np.ndarray:
    """A sampler's explicit grid (:func:`check_grid`) checked against the options it replaces: ``skip_type`` must
    be left out (``None``), ``steps`` may be given only if it equals the number of grid intervals, ``t_start`` /
    ``t_end`` only if they equal the grid's first / last time (to 1e-12 relative). Returns the checked float64
    grid."""
    ts = check_grid(schedule, timesteps)
    if skip_type is not None:
        raise ValueError(f"skip_type cannot be combined with timesteps (the grid is given); got "
                         f"skip_type={skip_type!r}")
    if steps is not None and steps != len(ts) - 1:
        raise ValueError(f"steps={steps!r} does not match timesteps ({len(ts) - 1} intervals); leave steps out "
                         f"when giving a grid")
    for name, given, value in (("t_start", t_start, ts[0]), ("t_end", t_end, ts[-1])):
        if given is not None and abs(float(given) - value) > 1e-12 * max(1.0, abs(value)):
            raise ValueError(f"{name}={given!r} does not match timesteps ({value!r})")
    return ts


def check_model_timesteps(schedule, model_timesteps, timesteps) -> np.ndarray:
    """Validate decoupled model times for the grid ``timesteps`` (already checked): a 1-D sequence of
    ``len(timesteps) - 1`` finite times inside the schedule's range, ``model_timesteps[i]`` being the time at which
    the model is queried at the grid point ``timesteps[i]`` (the points where a one-evaluation-per-step method calls
    it). Need not be monotone. Returns a float64 numpy copy."""
    mt = as_real_array(model_timesteps, "model_timesteps")
    if mt.ndim != 1 or mt.shape[0] != len(timesteps) - 1:
        raise ValueError(f"model_timesteps must hold one time per grid point where the model is called "
                         f"(len(timesteps) - 1 = {len(timesteps) - 1}), got shape {mt.shape}")
    for k, t in enumerate(mt):
        schedule.check_time(float(t), f"model_timesteps[{k}]")
    return mt


def _check_schedule(schedule) -> None:
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule (VPLinear, VPCosine, VPDiscrete), got {type(schedule).__name__}")


def _check_strictly_decreasing(schedule, ts: np.ndarray, name: str) -> None:
    """Every step of ``t`` < 0 and every step of ``lam`` > 0 in float64 (no zero-length or collapsed steps)."""
    dt = np.diff(ts)
    if np.any(dt >= 0):
        k = int(np.argmax(dt >= 0))
        raise ValueError(f"{name} must be strictly decreasing; {name}[{k}]={float(ts[k])!r} <= "
                         f"{name}[{k + 1}]={float(ts[k + 1])!r}")
    dlam = np.diff(schedule.lams_of(ts))
    if not np.all(dlam > 0):
        k = int(np.argmax(~(dlam > 0)))
        raise ValueError(f"{name} has collapsed points: the lambda step from {name}[{k}]={float(ts[k])!r} to "
                         f"{name}[{k + 1}]={float(ts[k + 1])!r} is {float(dlam[k])!r} in float64 (must be > 0)")
