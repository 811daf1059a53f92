"""Work-precision (error vs NFE): the DPM-Solver family against classical Runge-Kutta solvers.

Every configuration runs on the same samples and is compared with the same reference (SciPy DOP853 at
rtol = atol = 1e-12). NFE is counted the same way for all: the number of batched model calls made, as counted
by :class:`expsolver.models.ModelWrapper` (``SampleResult.nfe`` and ``ReferenceResult.nfe``), including the
start-up calls of adaptive solvers (initial step selection) and rejected steps.

* DPM-Solver family: a :class:`analysis.global_error.GlobalErrorStudy` over NFE budgets (its runs may also be
  solver objects, a user's own included: :class:`analysis.global_error.SolverRun`);
* classical solvers, through :func:`expsolver.reference_solve` in the smooth ``lambda`` variable (the same ODE,
  ``dx/dlam = sigma^2 x - sigma eps``): torchdiffeq ``rk4`` (fixed grid, several ``n_steps``) and ``dopri5``
  (several tolerances), SciPy ``RK45`` and ``DOP853`` (several tolerances, ``atol = rtol``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import reference_solve

from .global_error import (DEFAULT_NFES, STATISTICS, GlobalErrorStudy, error_at_nfe, error_statistics,
                           global_error_study, registry_runs)
from .results import cached_reference, provenance, result_type
from .targets import T_END, T_START

__all__ = ["ClassicalSolver", "ClassicalCurve", "WorkPrecisionStudy", "work_precision_study", "DEFAULT_CLASSICAL"]


@result_type
@dataclass
class ClassicalSolver:
    """A classical solver to sweep: ``name``, ``backend``, ``method``, the swept ``parameter`` (``"rtol"`` with
    ``atol = rtol``, or ``"n_steps"``) and its ``values``."""

    name: str
    backend: str
    method: str
    parameter: str
    values: tuple


DEFAULT_CLASSICAL = (
    ClassicalSolver("rk4", "torchdiffeq", "rk4", "n_steps", (2, 3, 4, 6, 8, 12, 16, 25)),
    ClassicalSolver("dopri5", "torchdiffeq", "dopri5", "rtol", (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)),
    ClassicalSolver("RK45", "scipy", "RK45", "rtol", (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)),
    ClassicalSolver("DOP853", "scipy", "DOP853", "rtol", (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)),
)


@result_type
@dataclass
class ClassicalCurve:
    """Errors of one classical solver over its swept parameter (arrays in the order of ``values``)."""

    name: str
    backend: str
    method: str
    parameter: str
    values: np.ndarray
    nfe: np.ndarray
    rms: np.ndarray
    median: np.ndarray
    p90: np.ndarray
    p99: np.ndarray
    max: np.ndarray
    mode_switches: np.ndarray
    status: list = field(default_factory=list)

    def at_nfe(self, nfe: int, statistic: str = "median") -> tuple[int | None, float]:
        """``(actual_nfe, error)`` of the successful run with the largest NFE ``<= nfe``."""
        return error_at_nfe(self.nfe, getattr(self, statistic), nfe, valid=np.isfinite(self.median))


@result_type
@dataclass
class WorkPrecisionStudy:
    """DPM-Solver curves (``dpm``) and classical curves on one target."""

    target: str
    schedule: str
    n_samples: int
    seed: int
    t_start: float
    t_end: float
    reference: dict
    dpm: GlobalErrorStudy
    classical: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def classical_curve(self, name: str) -> ClassicalCurve:
        for c in self.classical:
            if c.name == name:
                return c
        raise KeyError(f"no classical curve {name!r}")


def work_precision_study(target, schedule, *, target_name: str = "target", dpm_runs=None, nfes=DEFAULT_NFES,
                         classical=DEFAULT_CLASSICAL, n_samples: int = 128, seed: int = 0,
                         t_start: float = T_START, t_end: float = T_END, reference: dict | None = None,
                         cache_dir=None, dpm_study: GlobalErrorStudy | None = None, progress=None,
                         **kwargs) -> WorkPrecisionStudy:
    """Run the work-precision study (module docstring).

    Parameters
    ----------
    target, schedule
    target_name : str
    dpm_runs : sequence of SolverRun, str or Solver, optional
        Default: every registry configuration with both algorithm types (:func:`registry_runs`), logSNR grid. As
        for :func:`analysis.global_error.global_error_study`: a registry name, or a solver object of the protocol
        :class:`expsolver.Solver` (:meth:`~analysis.global_error.SolverRun.from_solver`, data prediction, logSNR
        grid), or a :class:`~analysis.global_error.SolverRun` of either.
    nfes : sequence of int
        NFE budgets of the DPM-Solver runs.
    classical : sequence of ClassicalSolver
    n_samples, seed, t_start, t_end, reference, cache_dir
        As for :func:`analysis.global_error.global_error_study`.
    dpm_study : GlobalErrorStudy, optional
        Reuse an existing study (same samples and reference) instead of running ``dpm_runs``.
    progress : callable, optional
        Called after every DPM run and every classical run.

    Returns
    -------
    WorkPrecisionStudy
    """
    if kwargs:
        raise TypeError(f"work_precision_study() got unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    ref_opts = dict(backend="scipy", method="DOP853", rtol=1e-12, atol=1e-12, **(reference or {}))
    x = target.sample(n_samples, generator=torch.Generator().manual_seed(seed), t=t_start, schedule=schedule)
    if dpm_study is None:
        dpm_study = global_error_study(target, schedule, registry_runs() if dpm_runs is None else dpm_runs,
                                       target_name=target_name, nfes=nfes, seed=seed, t_start=t_start,
                                       t_end=t_end, reference=reference, cache_dir=cache_dir, progress=progress,
                                       x=x)
    ref = cached_reference(target, schedule, x, t_start, t_end, cache_dir=cache_dir, **ref_opts)
    model = target.as_model(schedule)
    curves = []
    for solver in classical:
        rows, statuses = [], []
        for value in solver.values:
            if solver.parameter == "n_steps":
                opts = dict(n_steps=int(value))
            elif solver.parameter == "rtol":
                opts = dict(rtol=float(value), atol=float(value))
            else:
                raise ValueError(f"classical parameter must be 'n_steps' or 'rtol', got {solver.parameter!r}")
            res = reference_solve(model, schedule, x, t_start, t_end, backend=solver.backend, method=solver.method,
                                  **opts)
            statuses.append(res.status)
            if res.success:
                stats = error_statistics(res.x, ref["x"], target, schedule, t_end)
            else:
                stats = dict({k: float("nan") for k in STATISTICS}, mode_switches=-1)
            rows.append(dict(stats, nfe=res.nfe))
            if progress is not None:
                progress()
        arrays = {k: np.array([r[k] for r in rows]) for k in ("nfe", "mode_switches") + STATISTICS}
        curves.append(ClassicalCurve(name=solver.name, backend=solver.backend, method=solver.method,
                                     parameter=solver.parameter, values=np.array(solver.values, dtype=np.float64),
                                     status=statuses, **arrays))
    return WorkPrecisionStudy(target=target_name, schedule=repr(schedule), n_samples=int(x.shape[0]), seed=seed,
                              t_start=float(t_start), t_end=float(t_end), reference=dict(ref_opts, nfe=ref["nfe"]),
                              dpm=dpm_study, classical=curves, provenance=provenance())
