"""Order verification: the measured local and global orders of every registered solver, on a problem chosen so
that they show.

This module is the protocol behind the order tests (``tests/test_orders.py`` asserts its results) and behind the
orders that ``paper_figs`` writes to ``summary.json``; the measurements are :func:`expsolver.convergence.local_order`
and :func:`expsolver.convergence.global_order`, with this problem's references and step ranges. The
figure studies (:mod:`analysis.local_error`, :mod:`analysis.global_error`) use the sharp standard targets, on
which the higher-order methods are still pre-asymptotic at the largest budgets a figure can afford; here the
problem and the step range are chosen so that every declared order is reached above the error floor.

* **Problem**: :func:`analysis.targets.verification_target` (2-D, three separated components with isotropic
  variances 0.05-0.1, unequal weights: not a single Gaussian, so no leading error term vanishes), its exact
  noise prediction, the linear VP schedule, ``n_samples`` (64) standard-normal states at ``t = 1`` (seed 7).
* **Reference**: SciPy DOP853 in the lambda variable at ``rtol = atol = 1e-12`` (verified against the
  closed-form single-Gaussian flow and torchdiffeq dopri8 in ``tests/test_reference.py``).
* **Error statistic**: the median over samples of the per-sample L2 error (samples near a mode boundary make RMS
  slopes erratic), :func:`expsolver.convergence.sample_errors`; for the global errors the lower median (the smaller
  of the two middle errors of the 64 samples, as ``torch.median`` gives it), which these measurements have always
  used.
* **Local** (expected slope ``order + 1``): one step ``lam_s -> lam_s + h`` from the exact state at ``lam_s = 0``
  for ``h = 0.8 * 2^(-j/2)``, ``j = 0..16`` (0.8 down to 0.003); a multistep rule gets the exact history
  ``(lam_s - m h, N(x_ref(lam_s - m h)))``, so the error is its truncation error alone. Errors below
  :data:`LOCAL_FLOOR` (1e-12) are round-off: two states of one reference trajectory are compared, whose errors
  largely cancel, so the local floor is lower than the global one.
* **Global** (expected slope ``order``): the path ``t = 1 -> 1e-3`` on a logSNR grid of 4 to 1024 steps (the
  NFE of a singlestep rule is ``order`` times that), stopping once the error reaches :data:`GLOBAL_FLOOR`
  (1e-10, the reference's accuracy), ``lower_order_final`` off. The step size in the fit is the largest lambda
  step of the grid (``(lam(1e-3) - lam(1)) / steps`` to rounding). The components make the fourth-order methods pre-asymptotic until small
  steps (the fitted window of DPM-Solver-4M starts at ``h = 0.05``, 192 steps, in both forms), which is why the
  grid goes that far. A multistep rule starts from exact values at its first ``order - 1`` grid points
  (``start="exact"``, the standard convergence test of a multistep method: its history holds the model values at
  the reference states). With the driver's lower-order warm-up (``start="warm-up"``, what
  :func:`expsolver.sample` does) the first, first-order step adds an ``O(h^2)`` global term; its constant is tiny
  here, because the prediction varies like ``e^{2 lam}`` near ``lam_start = -5``, but it surfaces as a floor near
  1e-9 for DPM-Solver-4M at 500-1000 steps, so the warm-up path is measured for orders 2 and 3
  (:data:`WARM_UP_SOLVERS`).
* **Fit**: :func:`expsolver.convergence.fit_order` over its automatically chosen window (floors passed as
  ``floor / 10``); a measurement *agrees* when the fit is reliable and within :data:`ORDER_TOL` (0.15) of the
  expected order.

The official third-order multistep (``DPM-Solver-3M-official``) is registered with order 2: its measured orders
(2 global, 3 local) document the defect of the official implementation (docs/official-differences.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import REGISTRY, VPLinear, time_grid
from expsolver.convergence import global_order, local_order
from expsolver.driver import check_solver
from expsolver._validation import check_int
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE

from .local_error import ALGORITHM_TYPES, PREDICTION_OF
from .order import OrderFit
from .results import cached_reference, provenance, result_type
from .targets import T_END, T_START, verification_target

__all__ = ["VerificationProblem", "OrderMeasurement", "OrderVerification", "measure_local_order",
           "measure_global_order", "verify_orders", "ORDER_TOL", "ALGORITHM_TYPES", "LOCAL_HS", "GLOBAL_STEPS",
           "GLOBAL_FLOOR", "LOCAL_FLOOR", "WARM_UP_SOLVERS", "PREDICTION_OF", "lower_median"]

#: Tolerance of the agreement between a measured and a declared order.
ORDER_TOL = 0.15
LAM_S = 0.0
#: Local lambda steps: 0.8 down to 0.003 in ratios of sqrt(2).
LOCAL_HS = tuple(float(v) for v in 0.8 * 2.0 ** (-np.arange(17) / 2.0))
#: Global step counts (logSNR grid), in ratios of about sqrt(2).
GLOBAL_STEPS = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
#: Global errors below this are at the reference's accuracy: finer grids carry no information.
GLOBAL_FLOOR = 1e-10
#: Local errors below this are round-off.
LOCAL_FLOOR = 1e-12
REFERENCE_TOL = 1e-12
#: Solvers whose global order is also measured with the driver's own lower-order warm-up steps.
WARM_UP_SOLVERS = ("DPM-Solver-2M", "DPM-Solver-3M")


class VerificationProblem:
    """The verification problem and its references (computed on first use, then kept).

    Parameters
    ----------
    n_samples : int
        Number of standard-normal starting states at ``t = 1``.
    seed : int
        Seed of their generator.
    cache_dir : str, None or False
        Disk cache of the two long reference solves (:func:`analysis.results.cached_reference`: None is its
        default folder, False no cache).
    """

    def __init__(self, n_samples: int = 64, seed: int = 7, cache_dir=False):
        n_samples, seed = check_int(n_samples, "n_samples", minimum=1), check_int(seed, "seed", minimum=0)
        self.mixture = verification_target()
        self.schedule = VPLinear()
        self.model = self.mixture.as_model(self.schedule)
        self.x = torch.randn(n_samples, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.n_samples, self.seed, self.cache_dir = n_samples, seed, cache_dir
        self.span = self.schedule.lam(T_END) - self.schedule.lam(T_START)
        self._global_reference = None
        self._local_states = None
        self._start_states = {}

    def _reference(self, t_end, ts=None, cache_dir=None):
        return cached_reference(self.mixture, self.schedule, self.x, T_START, t_end, ts=ts, rtol=REFERENCE_TOL,
                                atol=REFERENCE_TOL, cache_dir=self.cache_dir if cache_dir is None else cache_dir)

    @property
    def global_reference(self) -> torch.Tensor:
        """Reference states at ``t = 1e-3``."""
        if self._global_reference is None:
            self._global_reference = self._reference(T_END)["x"]
        return self._global_reference

    def local_state(self, lam: float) -> torch.Tensor:
        """Reference states at ``lam`` (one of ``LAM_S``, ``LAM_S + h``, ``LAM_S - m h`` for ``h`` in
        :data:`LOCAL_HS`, ``m = 1..3``), all from one reference trajectory."""
        if self._local_states is None:
            lams = sorted({LAM_S} | {LAM_S + h for h in LOCAL_HS}
                          | {LAM_S - m * h for h in LOCAL_HS for m in (1, 2, 3)})
            ts = [self.schedule.lam_inverse_float(float(v)) for v in lams]
            xs = self._reference(ts[-1], ts=[T_START] + ts)["xs"]
            self._local_states = {v: xs[i + 1] for i, v in enumerate(lams)}
        nearest = min(self._local_states, key=lambda v: abs(v - lam))
        if abs(nearest - lam) > 1e-12:
            raise ValueError(f"lam={lam!r} is not one of the verification problem's reference points")
        return self._local_states[nearest]

    def start_states(self, ts) -> list:
        """Reference states at the times ``ts`` (``ts[0] = 1``): the exact starting values of a multistep rule,
        kept for the other rules that start on the same grid points."""
        key = tuple(float(t) for t in ts)
        if key not in self._start_states:
            # Short solves (the first few steps), many of them: not worth a disk cache.
            self._start_states[key] = ([self.x] if len(key) == 1
                                       else list(self._reference(key[-1], ts=key, cache_dir=False)["xs"]))
        return self._start_states[key]

    def problem(self, algorithm_type: str) -> DiffusionODE:
        """A fresh :class:`~expsolver.problems.DiffusionODE` in the prediction of ``algorithm_type``."""
        return DiffusionODE(self.schedule, ModelWrapper(self.model, self.schedule), PREDICTION_OF[algorithm_type])


@result_type
@dataclass
class OrderMeasurement:
    """Errors against step size and the fitted order of one solver, prediction and kind of error.

    Attributes
    ----------
    solver : str
        Registry name.
    algorithm_type : {"dpmsolver++", "dpmsolver"}
        Data or noise prediction.
    kind : {"local", "global"}
    start : {"exact", "warm-up"}
        How the history of a multistep rule is started (module docstring); "exact" for singlestep rules.
    hs : numpy.ndarray
        Lambda step sizes actually taken.
    errors : numpy.ndarray
        Median per-sample L2 errors.
    nfe : numpy.ndarray
        Model evaluations of each global run (local: one entry, the model calls of all the one-step runs,
        history values included).
    fit : OrderFit
    expected : int
        Declared order (global) or declared order + 1 (local).
    """

    solver: str
    algorithm_type: str
    kind: str
    start: str
    hs: np.ndarray
    errors: np.ndarray
    nfe: np.ndarray
    fit: OrderFit
    expected: int

    @property
    def agrees(self) -> bool:
        """The fit is reliable and within :data:`ORDER_TOL` of the expected order."""
        return self.fit.agrees(self.expected, ORDER_TOL)

    def to_summary(self) -> dict:
        """JSON-ready fit (``slope``, ``ci_low``, ``ci_high``, ``window``, ``h_range``, ``reliable``, ``reason``
        ...) with ``expected``, ``agrees``, ``kind``, ``start``, the step-size range studied and (global) the
        largest NFE run."""
        entry = self.fit.to_dict()
        entry.update(expected=self.expected, agrees=self.agrees, kind=self.kind, start=self.start,
                     h_studied=[float(np.min(self.hs)), float(np.max(self.hs))])
        if self.kind == "global":
            entry["max_nfe"] = int(np.max(self.nfe))
        return entry


@result_type
@dataclass
class OrderVerification:
    """All measurements of :func:`verify_orders` with the protocol's settings."""

    measurements: list
    config: dict
    provenance: dict = field(default_factory=provenance)

    def get(self, solver: str, algorithm_type: str, kind: str, start: str = "exact") -> OrderMeasurement:
        for m in self.measurements:
            if (m.solver, m.algorithm_type, m.kind, m.start) == (solver, algorithm_type, kind, start):
                return m
        raise KeyError(f"no {kind} measurement of {solver!r} ({algorithm_type}, start={start!r})")

    @property
    def n_agree(self) -> int:
        return sum(m.agrees for m in self.measurements)


def lower_median(errors: np.ndarray) -> float:
    """The lower median of the per-sample errors: the smaller middle value for an even count (``torch.median``)."""
    return float(np.sort(errors)[(len(errors) - 1) // 2])


def _config(name: str):
    if name not in REGISTRY:
        raise ValueError(f"solver must be a registry name ({', '.join(sorted(REGISTRY))}), got {name!r}")
    return REGISTRY[name]


def _solver(solver):
    """``(label, solver object)`` of a registry name or a solver object (the protocol of
    :class:`expsolver.Solver`)."""
    if isinstance(solver, str):
        return solver, _config(solver).make()
    return repr(check_solver(solver)), solver


def _check_algorithm_type(algorithm_type: str) -> None:
    if algorithm_type not in PREDICTION_OF:
        raise ValueError(f"algorithm_type must be one of {ALGORITHM_TYPES}, got {algorithm_type!r}")


def measure_local_order(vp: VerificationProblem, solver, algorithm_type: str) -> OrderMeasurement:
    """One step of every size in :data:`LOCAL_HS` from the exact state at ``lam_s = 0`` (module docstring), by
    :func:`expsolver.convergence.local_order`. ``solver``: a registry name or a solver object."""
    name, rule = _solver(solver)
    _check_algorithm_type(algorithm_type)
    problem = vp.problem(algorithm_type)
    result = local_order(problem, rule, vp.x, T_START, LOCAL_HS, t_step=problem.t_of_rho(LAM_S),
                         reference=lambda times: [vp.local_state(problem.rho(t)) for t in times],
                         expected=rule.order + 1, floor=LOCAL_FLOOR / 10, name=name)
    return OrderMeasurement(solver=name, algorithm_type=algorithm_type, kind="local", start="exact",
                            hs=result.hs, errors=result.errors, nfe=np.array([int(result.nfe.sum())]), fit=result.fit,
                            expected=rule.order + 1)


def measure_global_order(vp: VerificationProblem, solver, algorithm_type: str,
                         start: str = "exact") -> OrderMeasurement:
    """Whole paths on logSNR grids of :data:`GLOBAL_STEPS` steps until the error reaches :data:`GLOBAL_FLOOR`
    (module docstring), by :func:`expsolver.convergence.global_order`. ``solver``: a registry name or a solver
    object; ``start``: "exact" starting values of a multistep rule, or the driver's "warm-up"."""
    name, rule = _solver(solver)
    _check_algorithm_type(algorithm_type)
    if start not in ("exact", "warm-up"):
        raise ValueError(f"start must be 'exact' or 'warm-up', got {start!r}")

    def reference(times):
        if times == [T_END]:
            return [vp.global_reference]
        return vp.start_states([T_START] + times)[1:]

    result = global_order(vp.problem(algorithm_type), rule, vp.x, T_START, T_END, GLOBAL_STEPS, start=start,
                          grid=lambda n: time_grid(vp.schedule, "logSNR", T_START, T_END, n), reference=reference,
                          statistic=lower_median, expected=rule.order, floor=GLOBAL_FLOOR / 10,
                          stop_below=GLOBAL_FLOOR, name=name)
    return OrderMeasurement(solver=name, algorithm_type=algorithm_type, kind="global", start=start, hs=result.hs,
                            errors=result.errors, nfe=result.nfe, fit=result.fit, expected=rule.order)


def verify_orders(names=None, algorithm_types=ALGORITHM_TYPES, *, warm_up=WARM_UP_SOLVERS,
                  vp: VerificationProblem | None = None, progress: bool = False) -> OrderVerification:
    """Local and global orders of the registry solvers ``names`` (default: all) in every algorithm type, plus the
    global orders with the driver's warm-up for the solvers in ``warm_up`` that are among ``names``.

    ``progress`` shows a progress bar (tqdm, on stderr). Returns an :class:`OrderVerification`.
    """
    names = sorted(REGISTRY) if names is None else list(names)
    for name in names:
        _config(name)
    for algorithm_type in algorithm_types:
        _check_algorithm_type(algorithm_type)
    vp = VerificationProblem() if vp is None else vp
    jobs = [(n, a, "local", "exact") for n in names for a in algorithm_types]
    jobs += [(n, a, "global", "exact") for n in names for a in algorithm_types]
    jobs += [(n, a, "global", "warm-up") for n in names if n in warm_up for a in algorithm_types]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="order verification", unit="fit", leave=False)
    measurements = []
    for name, algorithm_type, kind, start in jobs:
        if kind == "local":
            measurements.append(measure_local_order(vp, name, algorithm_type))
        else:
            measurements.append(measure_global_order(vp, name, algorithm_type, start))
    config = dict(problem="analysis.targets.verification_target", schedule="VPLinear()", n_samples=vp.n_samples,
                  seed=vp.seed, t_start=T_START, t_end=T_END, lam_s=LAM_S, local_hs=list(LOCAL_HS),
                  global_steps=list(GLOBAL_STEPS), global_floor=GLOBAL_FLOOR, local_floor=LOCAL_FLOOR,
                  tolerance=ORDER_TOL, statistic="median per-sample L2 error",
                  reference=dict(backend="scipy", method="DOP853", rtol=REFERENCE_TOL, atol=REFERENCE_TOL))
    return OrderVerification(measurements=measurements, config=config)
