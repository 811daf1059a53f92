"""Order verification on non-uniform grids: the global order, in the number of steps, of every registered solver
on the standard non-uniform grid families and on an optimised one.

:mod:`analysis.verification` measures orders on logSNR grids only (uniform in lambda). A sampler is mostly run on
other grids (``time_uniform`` is :func:`expsolver.sample`'s default), whose lambda steps vary along the path. For a
family of grids ``lam_i = L(i / N)``, ``i = 0..N``, built from one smooth map ``L`` (a fixed ``skip_type``, or a
fixed interpolant), a method of order ``p`` has a global error ``C_L N^{-p}`` once every step is small; how large
``N`` must be for that depends on the map. The protocol is :mod:`analysis.verification`'s, with the grid replaced:

* **Problem, reference, statistic**: :class:`analysis.verification.VerificationProblem` (the three-component 2-D
  mixture of :func:`analysis.targets.verification_target`, 64 states at ``t = 1``, seed 7, SciPy DOP853 at
  ``rtol = atol = 1e-12``), median per-sample L2 error at ``t = 1e-3``.
* **Grids** (:data:`GRIDS`): ``logSNR`` (the baseline, as in :mod:`analysis.verification`), ``time_uniform``,
  ``time_quadratic``, ``karras`` (:func:`expsolver.time_grid`), and ``optimized``: the monotone cubic
  (PCHIP, Fritsch & Carlson 1980) interpolant ``L(u)`` through the 9 points ``(i/8, lam_i)`` of a grid that
  :func:`expsolver.optimize_timesteps` returned for DPM-Solver++(3M) at 8 steps on the same problem
  (:data:`OPTIMIZED_LAM_FRACTIONS`, :data:`OPTIMIZED_SETTINGS`; :func:`optimized_lam_fractions` recomputes them).
  Its steps vary by more than two decades along the path (:func:`grid_shapes`). The member with ``N = 8`` is the
  optimised grid itself.
* **Path**: from the reference state at the first point of the path to ``t = 1e-3``. A multistep rule starts
  from exact values at its first ``order - 1`` points (its history filled by its own steps from the reference
  states, as in :mod:`analysis.verification`), ``lower_order_final`` off; a singlestep rule takes the plan of
  :meth:`expsolver.Solver.plan` (for the standard grids, intermediate points from the inner grid of the
  same type, as ``sample`` does; for ``optimized``, the rule's default ``r``). The path starts at ``t = 1``
  except on ``time_uniform`` (:data:`PATH_START`): there it starts at the first grid point with ``t <= 0.01``,
  because that grid is pre-asymptotic until ``N`` is in the thousands (its last lambda step is
  ``~ 0.5 log(1 + 1/(N t_end))``: 0.46 at ``N = 800``, 0.15 at 3,200) and the whole path at such ``N`` is too
  long to repeat for every solver; the stretch left out has small, slowly varying lambda steps (the measured
  full-path errors are recorded next to it in the results, :func:`head_check`).
* **Fit**: error against the mean lambda step ``(lam(1e-3) - lam(1)) / N`` (so against ``1/N``) by
  :func:`analysis.order.fit_order`, floors as in :mod:`analysis.verification`; the points beyond the first
  error below :data:`~analysis.verification.GLOBAL_FLOOR` are not computed. A measurement agrees when the fit is
  reliable and within :data:`~analysis.verification.ORDER_TOL` (0.15) of the expected order: the declared order,
  except where :data:`THEORY` names another value and the reason.

``python -m analysis.grid_orders --out docs/results/grid_orders.json`` runs the study (:data:`STUDY_STEPS`);
:func:`render_sections` writes its Markdown tables, and ``--page`` replaces them in a page between the markers
``<!-- grid-orders:NAME:begin -->`` and ``<!-- grid-orders:NAME:end -->``. ``tests/test_grid_orders.py``
re-measures the non-uniform grids on the coarser :data:`TEST_STEPS`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import REGISTRY, SKIP_TYPES, check_grid, integrate, time_grid
from expsolver.sampling import sampling_grid
from expsolver.solvers import solver_from_options

from .markdown import markdown_table
from .order import fit_order
from .results import atomic_write_bytes, provenance, result_type
from .targets import T_END, T_START
from .verification import (ALGORITHM_TYPES, GLOBAL_FLOOR, ORDER_TOL, REFERENCE_TOL, OrderMeasurement,
                           VerificationProblem)

__all__ = ["GRIDS", "NONUNIFORM_GRIDS", "PATH_START", "STUDY_STEPS", "TEST_STEPS", "OPTIMIZED_LAM_FRACTIONS",
           "OPTIMIZED_SETTINGS", "THEORY", "GridOrderMeasurement", "GridOrderStudy", "grid_times", "lam_steps",
           "quick_steps", "expected_order", "measure_grid_order", "grid_orders", "head_check", "grid_shapes",
           "optimized_lam_fractions", "run_from_exact_values", "render_table", "render_head_table",
           "render_shapes_table", "render_sections", "section_markers", "replace_section", "update_page",
           "summary_json", "PAGE_PREFIX", "main"]

GRIDS = ("logSNR", "time_uniform", "time_quadratic", "karras", "optimized")
NONUNIFORM_GRIDS = GRIDS[1:]
#: First time of the measured path (module docstring); T_START where not listed.
PATH_START = {"time_uniform": 0.01}


def _sqrt2_steps(lo: int, hi: int) -> tuple:
    """Step counts from ``lo`` to ``hi`` (powers of 2) in ratios of about sqrt(2)."""
    out = []
    n = lo
    while n <= hi:
        out += [n, int(round(n * math.sqrt(2)))]
        n *= 2
    return tuple(v for v in out if v <= hi)


#: Step counts of the study, per grid (ratios of about sqrt(2)).
STUDY_STEPS = {"logSNR": _sqrt2_steps(4, 1024), "time_uniform": _sqrt2_steps(512, 32768),
               "time_quadratic": _sqrt2_steps(8, 2048), "karras": _sqrt2_steps(8, 2048),
               "optimized": _sqrt2_steps(8, 4096)}
#: Step counts of the test, per grid, by ``(registry name, algorithm_type)``, else by name, else by ``(kind,
#: declared order)``: three or four points inside the windows the study fitted, the cheapest whose fits come within
#: 0.12 of the expected order (so that every solver is tested in under a minute). On ``time_uniform`` the rules
#: that converge late in ``N`` get larger step counts (the path there has only about ``N / 100`` steps).
TEST_STEPS = {"time_uniform": {("singlestep", 1): (724, 1024, 1448), ("singlestep", 2): (5793, 8192, 11585),
                               ("singlestep", 3): (1448, 2048, 2896), ("multistep", 2): (2896, 4096, 5793),
                               ("multistep", 3): (4096, 5793, 8192), ("multistep", 4): (5793, 8192, 11585),
                               "DPM-Solver-3M-official": (11585, 16384, 23170), "UniPC-2-bh1": (11585, 16384, 23170),
                               "UniPC-2-bh2": (5793, 8192, 11585), "UniPC-3-bh1": (11585, 16384, 23170, 32768),
                               ("DEIS-tAB2", "dpmsolver"): (11585, 16384, 23170)},
              "time_quadratic": {("singlestep", 1): (8, 11, 16), ("singlestep", 2): (45, 64, 91),
                                 ("singlestep", 3): (45, 64, 91), ("multistep", 2): (91, 128, 181),
                                 ("multistep", 3): (91, 128, 181), ("multistep", 4): (128, 256, 512),
                                 "DPM-Solver-3M-official": (362, 512, 724)},
              "karras": {("singlestep", 1): (11, 16, 23), ("singlestep", 2): (23, 32, 45),
                         ("singlestep", 3): (91, 128, 181), ("multistep", 2): (64, 91, 128),
                         ("multistep", 3): (181, 256, 362), ("multistep", 4): (256, 362, 512),
                         "DPM-Solver-3M-official": (256, 362, 512)},
              "optimized": {("singlestep", 1): (8, 11, 16), ("singlestep", 2): (11, 23, 45),
                            ("singlestep", 3): (23, 45, 91), ("multistep", 2): (32, 45, 64),
                            ("multistep", 3): (181, 256, 362), ("multistep", 4): (362, 512, 724),
                            "DPM-Solver-3M-official": (256, 362, 512)}}

#: ``(lam_i - lam_0) / (lam_8 - lam_0)`` of the grid :func:`optimized_lam_fractions` returns (module docstring).
OPTIMIZED_LAM_FRACTIONS = (0.0, 0.33275551788503394, 0.4415934202181221, 0.5514160597009553, 0.6411368007369197,
                           0.7214557873288673, 0.8413757886634401, 0.8437936989438753, 1.0)
#: How :data:`OPTIMIZED_LAM_FRACTIONS` were made: :func:`expsolver.optimize_timesteps` options and the pool.
OPTIMIZED_SETTINGS = dict(steps=8, method="multistep", order=3, algorithm_type="dpmsolver++",
                          lower_order_final=False, n_train=128, n_validation=128, max_iter=60, max_time=None,
                          n_starts=1, pool_size=1536, pool_seed=11)

_LATE_ON_TIME_UNIFORM = ("time_uniform: the slope in N reaches the order only once N t_end >> 1 (the last lambda "
                         "step is about log(1 + 1/(N t_end)) / 2, and the error has a second term of relative size "
                         "~ 1/(N t_end)); a fourth-order error reaches the reference floor (1e-10) first, at "
                         "N t_end ~ 10-30, so the measurable slope stays below 4: the value is the study's fit")
#: ``(solver, grid, algorithm_type) -> (expected slope, reason)`` where theory predicts a value other than the
#: declared order at the step counts that can be measured (grid or algorithm_type None: every one).
THEORY = {("DPM-Solver-4M", "time_uniform", "dpmsolver"): (3.79, _LATE_ON_TIME_UNIFORM),
          ("UniPC-3-bh1", "time_uniform", "dpmsolver"): (3.41, _LATE_ON_TIME_UNIFORM),
          ("UniPC-3-bh2", "time_uniform", "dpmsolver++"): (3.71, _LATE_ON_TIME_UNIFORM),
          ("UniPC-3-bh2", "time_uniform", "dpmsolver"): (3.80, _LATE_ON_TIME_UNIFORM)}

#: Prefix of the page's markers of this module's sections (:func:`section_markers`).
PAGE_PREFIX = "grid-orders"


def optimized_lam_fractions() -> np.ndarray:
    """Recompute :data:`OPTIMIZED_LAM_FRACTIONS`: :func:`expsolver.optimize_timesteps` with
    :data:`OPTIMIZED_SETTINGS` on the verification problem's model, pool of standard-normal states at ``t = 1``
    (deterministic: ``max_time=None``). About half a minute."""
    from expsolver import optimize_timesteps

    vp = VerificationProblem(n_samples=1)
    options = dict(OPTIMIZED_SETTINGS)
    pool_size, pool_seed = options.pop("pool_size"), options.pop("pool_seed")
    pool = torch.randn(pool_size, 2, generator=torch.Generator().manual_seed(pool_seed), dtype=torch.float64)
    grid = optimize_timesteps(vp.model, vp.schedule, pool, t_start=T_START, t_end=T_END, **options)
    lams = np.asarray(grid.lams, dtype=np.float64)
    return (lams - lams[0]) / (lams[-1] - lams[0])


def grid_times(schedule, grid: str, n_steps: int) -> np.ndarray:
    """The ``n_steps``-step member of the family ``grid`` (:data:`GRIDS`) from ``T_START`` to ``T_END``: float64
    times, strictly decreasing."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    if grid in SKIP_TYPES:
        return time_grid(schedule, grid, T_START, T_END, n_steps)
    from scipy.interpolate import PchipInterpolator

    knots = np.linspace(0.0, 1.0, len(OPTIMIZED_LAM_FRACTIONS))
    fractions = PchipInterpolator(knots, OPTIMIZED_LAM_FRACTIONS)(np.linspace(0.0, 1.0, n_steps + 1))
    lam_start, lam_end = schedule.lams_of([T_START, T_END])
    ts = np.array([schedule.lam_inverse_float(float(v)) for v in lam_start + fractions * (lam_end - lam_start)])
    ts[0], ts[-1] = T_START, T_END
    return check_grid(schedule, ts)


def lam_steps(schedule, ts) -> tuple[np.ndarray, np.ndarray]:
    """The lambda steps ``h_i = lam_{i+1} - lam_i`` of the grid ``ts`` and the ratios ``h_i / h_{i-1}``."""
    h = np.diff(schedule.lams_of(ts))
    return h, h[1:] / h[:-1]


def quick_steps(name: str, algorithm_type: str, grid: str) -> tuple:
    """The step counts :data:`TEST_STEPS` gives the registry solver ``name`` in ``algorithm_type`` on ``grid``."""
    table = TEST_STEPS[grid]
    for key in ((name, algorithm_type), name):
        if key in table:
            return table[key]
    return table[(REGISTRY[name].kind, REGISTRY[name].order)]


def grid_shapes(schedule, grids=GRIDS, steps=(64, 1024)) -> list:
    """How non-uniform each family is: per grid and step count, the largest and smallest lambda step of the whole
    grid and the largest and smallest ratio of consecutive steps."""
    rows = []
    for grid in grids:
        for n in steps:
            h, ratios = lam_steps(schedule, grid_times(schedule, grid, n))
            rows.append(dict(grid=grid, steps=n, max_h=float(h.max()), min_h=float(h.min()),
                             max_ratio=float(ratios.max()), min_ratio=float(ratios.min())))
    return rows


def expected_order(name: str, grid: str, algorithm_type: str) -> tuple[float, str]:
    """``(expected slope, reason)``: the :data:`THEORY` entry, or the declared order and ``""``."""
    for key in ((name, grid, algorithm_type), (name, grid, None), (name, None, algorithm_type), (name, None, None)):
        if key in THEORY:
            return THEORY[key]
    return float(REGISTRY[name].order), ""


@result_type
@dataclass
class GridOrderMeasurement:
    """The global order of one solver and prediction on one grid family.

    Attributes
    ----------
    grid : str
        A name of :data:`GRIDS`.
    measurement : OrderMeasurement
        Errors against the mean lambda step and the fit (``kind="global"``, ``start="exact"``).
    steps : numpy.ndarray
        The step counts ``N`` of the points.
    max_h, max_ratio : numpy.ndarray
        Per ``N``: the largest lambda step and the largest ratio of consecutive lambda steps on the measured path.
    path_start : float
        First time of the measured path.
    expected : float
        :func:`expected_order`.
    reason : str
        Why ``expected`` differs from the declared order ("" when it does not).
    """

    grid: str
    measurement: OrderMeasurement
    steps: np.ndarray
    max_h: np.ndarray
    max_ratio: np.ndarray
    path_start: float
    expected: float
    reason: str = ""

    @property
    def agrees(self) -> bool:
        """The fit is reliable and within :data:`~analysis.verification.ORDER_TOL` of :attr:`expected`."""
        return self.measurement.fit.agrees(self.expected, ORDER_TOL)

    def to_summary(self) -> dict:
        """JSON-ready: solver, prediction, grid, the points (steps, errors to 6 significant digits, largest lambda step
        and step ratio on the path to 4) and the fit."""
        m = self.measurement
        fit = m.fit.to_dict()
        window = fit["window"]
        return dict(solver=m.solver, algorithm_type=m.algorithm_type, grid=self.grid, declared=REGISTRY[m.solver].order,
                    expected=self.expected, reason=self.reason, agrees=self.agrees, path_start=self.path_start,
                    steps=[int(v) for v in self.steps], errors=[_round(v, 6) for v in m.errors],
                    max_h=[_round(v, 4) for v in self.max_h], max_ratio=[_round(v, 4) for v in self.max_ratio],
                    slope=fit["slope"], ci_low=fit["ci_low"], ci_high=fit["ci_high"], reliable=fit["reliable"],
                    fit_reason=fit["reason"],
                    window_steps=None if window is None else _window_steps(self.steps, window))


def _round(value: float, digits: int) -> float:
    """``value`` to ``digits`` significant digits (the results file keeps what its tables and readers need)."""
    return float(f"{float(value):.{digits - 1}e}")


def _window_steps(steps, window) -> list:
    """The step counts at the ends of a fit window (the window indexes the points sorted by step size, i.e. by
    decreasing ``N``)."""
    ordered = sorted((int(v) for v in steps), reverse=True)
    return [ordered[window[1] - 1], ordered[window[0]]]


@result_type
@dataclass
class GridOrderStudy:
    """All measurements of :func:`grid_orders`, with the protocol's settings."""

    measurements: list
    config: dict
    head: list = field(default_factory=list)
    shapes: list = field(default_factory=list)
    provenance: dict = field(default_factory=provenance)

    def get(self, solver: str, algorithm_type: str, grid: str) -> GridOrderMeasurement:
        for m in self.measurements:
            if (m.measurement.solver, m.measurement.algorithm_type, m.grid) == (solver, algorithm_type, grid):
                return m
        raise KeyError(f"no measurement of {solver!r} ({algorithm_type}) on {grid!r}")

    def to_summary(self) -> dict:
        return dict(config=self.config, measurements=[m.to_summary() for m in self.measurements], head=self.head,
                    shapes=self.shapes, provenance=self.provenance)


def _median_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).reshape(x.shape[0], -1).norm(dim=1).median())


def _path_plan(vp: VerificationProblem, config, grid: str, n: int, ts: np.ndarray, first: int) -> list:
    """The steps of the measured path: the grid from point ``first`` on (module docstring)."""
    k = config.options["order"]
    if config.kind == "multistep":
        return config.make().plan(ts[first:])
    if grid not in SKIP_TYPES:
        return config.make().plan(ts)[first:]
    # Only the path's steps are planned (the inner grids of a long plan are costly). A path that starts late is
    # one of time_uniform's: its last n - first steps are the (n - first)-step time_uniform grid from ts[first].
    solver, _ = solver_from_options("singlestep_fixed", k, config.options.get("solver_type", "dpmsolver"),
                                    skip_type=grid)
    plan = solver.plan(sampling_grid(vp.schedule, grid, float(ts[first]), T_END, n - first), vp.problem("dpmsolver++"))
    if not np.allclose([st.s for st in plan], ts[first:-1], rtol=1e-12, atol=0.0):
        raise ValueError(f"the {grid} grid from t={ts[first]!r} is not the end of the {n}-step {grid} grid; a path "
                         f"start (PATH_START) needs a grid family whose sub-grids are members")
    return plan


def _run_path(vp: VerificationProblem, config, algorithm_type: str, plan: list):
    """The solver over ``plan`` from exact values: a multistep rule's first ``order - 1`` steps run from the
    reference states (filling its history), the rest from its own states. Returns ``(x_end, nfe)``."""
    n_exact = config.options["order"] - 1 if config.kind == "multistep" else 0
    ts = [plan[0].s] + [st.t for st in plan[:3]]  # one key per path for every solver: one reference solve
    problem = vp.problem(algorithm_type)
    return run_from_exact_values(problem, config.make(), plan, vp.start_states(ts), n_exact), problem.nfe


def run_from_exact_values(problem, rule, plan: list, exact: list, n_exact: int) -> torch.Tensor:
    """``rule`` over ``plan`` whose first ``n_exact`` steps start from the exact states ``exact[:n_exact]`` (they
    only fill a multistep rule's history: their results are replaced by ``exact[1..n_exact]``); the rest runs
    from the rule's own states, from ``exact[n_exact]`` on. Returns the final state."""
    state = rule.init(problem, exact[0])
    for i in range(n_exact):
        rule.step(problem, exact[i], plan[i], state)
    return integrate(problem, rule, exact[n_exact], plan[n_exact:], state=state).x


def measure_grid_order(vp: VerificationProblem, name: str, algorithm_type: str, grid: str,
                       steps=None) -> GridOrderMeasurement:
    """The global order of the registry solver ``name`` on the grid family ``grid`` (module docstring), over the
    step counts ``steps`` (default :data:`STUDY_STEPS`), stopping after the first error below the floor."""
    if name not in REGISTRY:
        raise ValueError(f"solver must be a registry name ({', '.join(sorted(REGISTRY))}), got {name!r}")
    if algorithm_type not in ALGORITHM_TYPES:
        raise ValueError(f"algorithm_type must be one of {ALGORITHM_TYPES}, got {algorithm_type!r}")
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    steps = STUDY_STEPS[grid] if steps is None else tuple(steps)
    if not steps or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 4 for n in steps):
        raise ValueError(f"steps must be a non-empty sequence of ints >= 4, got {steps!r}")
    config = REGISTRY[name]
    path_start = PATH_START.get(grid, T_START)
    ns, hs, errors, nfes, max_h, max_ratio = [], [], [], [], [], []
    for n in sorted(steps):
        ts = grid_times(vp.schedule, grid, n)
        first = int(np.argmax(ts <= path_start))
        if n - first < 4:
            raise ValueError(f"the path of the {n}-step {grid} grid from t <= {path_start} has {n - first} steps; "
                             f"need at least 4")
        x_end, nfe = _run_path(vp, config, algorithm_type, _path_plan(vp, config, grid, n, ts, first))
        h, ratios = lam_steps(vp.schedule, ts[first:])
        ns.append(n)
        hs.append(vp.span / n)
        errors.append(_median_error(x_end, vp.global_reference))
        nfes.append(nfe)
        max_h.append(float(h.max()))
        max_ratio.append(float(ratios.max()))
        if errors[-1] < GLOBAL_FLOOR:
            break
    expected, reason = expected_order(name, grid, algorithm_type)
    fit = fit_order(hs, errors, expected=expected, floor=GLOBAL_FLOOR / 10)
    measurement = OrderMeasurement(solver=name, algorithm_type=algorithm_type, kind="global", start="exact",
                                   hs=np.array(hs), errors=np.array(errors), nfe=np.array(nfes), fit=fit,
                                   expected=config.order)
    return GridOrderMeasurement(grid=grid, measurement=measurement, steps=np.array(ns), max_h=np.array(max_h),
                                max_ratio=np.array(max_ratio), path_start=float(path_start), expected=expected,
                                reason=reason)


def head_check(vp: VerificationProblem, names, algorithm_types=ALGORITHM_TYPES, grid: str = "time_uniform",
               n_steps: int = 1024) -> list:
    """How much of the error the path of ``grid`` leaves out: per solver and prediction, the median error of the
    whole path from ``t = 1`` and of the measured path from :data:`PATH_START` on the ``n_steps`` grid."""
    ts = grid_times(vp.schedule, grid, n_steps)
    first = int(np.argmax(ts <= PATH_START.get(grid, T_START)))
    rows = []
    for name in names:
        config = REGISTRY[name]
        for algorithm_type in algorithm_types:
            errs = [_median_error(_run_path(vp, config, algorithm_type,
                                            _path_plan(vp, config, grid, n_steps, ts, start))[0], vp.global_reference)
                    for start in (0, first)]
            rows.append(dict(solver=name, algorithm_type=algorithm_type, grid=grid, steps=n_steps,
                             full_path=errs[0], measured_path=errs[1]))
    return rows


def grid_orders(names=None, algorithm_types=ALGORITHM_TYPES, grids=GRIDS, *, steps=None,
                vp: VerificationProblem | None = None, head_steps: int | None = 1024,
                progress: bool = False) -> GridOrderStudy:
    """:func:`measure_grid_order` for every solver ``names`` (default: the whole registry), prediction and grid;
    ``steps`` maps a grid to its step counts (default :data:`STUDY_STEPS`). With ``head_steps``, also
    :func:`head_check` at that many steps for the grids in :data:`PATH_START`. Returns a :class:`GridOrderStudy`."""
    names = sorted(REGISTRY) if names is None else list(names)
    steps = STUDY_STEPS if steps is None else steps
    vp = VerificationProblem() if vp is None else vp
    jobs = [(g, n, a) for g in grids for n in names for a in algorithm_types]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="grid orders", unit="fit", leave=False)
    measurements = [measure_grid_order(vp, n, a, g, steps[g]) for g, n, a in jobs]
    head = []
    if head_steps is not None:
        for g in grids:
            if g in PATH_START:
                head += head_check(vp, names, algorithm_types, g, head_steps)
    config = dict(problem="analysis.targets.verification_target", schedule="VPLinear()", n_samples=vp.n_samples,
                  seed=vp.seed, t_start=T_START, t_end=T_END, path_start=PATH_START, grids=list(grids),
                  steps={g: list(steps[g]) for g in grids}, global_floor=GLOBAL_FLOOR, tolerance=ORDER_TOL,
                  statistic="median per-sample L2 error", optimized_lam_fractions=list(OPTIMIZED_LAM_FRACTIONS),
                  optimized_settings=OPTIMIZED_SETTINGS,
                  reference=dict(backend="scipy", method="DOP853", rtol=REFERENCE_TOL, atol=REFERENCE_TOL))
    return GridOrderStudy(measurements=measurements, config=config, head=head, shapes=grid_shapes(vp.schedule, grids))


# -- the page's table ---------------------------------------------------------------------------------------------
_PREDICTION_LABEL = {"dpmsolver++": "data", "dpmsolver": "noise"}


def _cell(entry: dict) -> str:
    if not entry["reliable"]:
        return "unreliable"
    lo, hi = entry["window_steps"]
    mark = "" if entry["agrees"] else " **x**"
    return f"{entry['slope']:.2f} [{entry['ci_low']:.2f}, {entry['ci_high']:.2f}] N {lo}-{hi}{mark}"


def render_table(summary: dict) -> str:
    """The Markdown table of a study summary (:meth:`GridOrderStudy.to_summary`, e.g. read from the results
    JSON): one row per solver and prediction, one column per grid; a cell is the fitted slope, its 95 %
    interval and the step counts of the fitted window, marked **x** where it does not agree with the expected
    order; then the entries whose expected order is not the declared one, with the reason."""
    grids = summary["config"]["grids"]
    entries = {(e["solver"], e["algorithm_type"], e["grid"]): e for e in summary["measurements"]}
    solvers = list(dict.fromkeys(e["solver"] for e in summary["measurements"]))
    predictions = list(dict.fromkeys(e["algorithm_type"] for e in summary["measurements"]))
    table = []
    notes = {}  # reason -> entries expected to differ from the declared order for it
    for solver in solvers:
        for a in predictions:
            row = [entries[(solver, a, g)] for g in grids if (solver, a, g) in entries]
            if not row:
                continue
            table.append([solver, _PREDICTION_LABEL[a], row[0]["declared"]]
                         + [_cell(entries[(solver, a, g)]) if (solver, a, g) in entries else "" for g in grids])
            for e in row:
                if e["reason"]:
                    notes.setdefault(e["reason"], []).append(
                        f"{solver} ({_PREDICTION_LABEL[a]}, {e['grid']}): {e['expected']:g}")
    lines = [markdown_table(["solver", "prediction", "declared"] + list(grids), table).rstrip("\n")]
    for reason, which in notes.items():
        lines += ["", f"Expected {'; '.join(which)}. Reason: {reason}."]
    return "\n".join(lines) + "\n"


def render_head_table(summary: dict) -> str:
    """The Markdown table of :func:`head_check`'s rows in a study summary: the median error of the whole path
    and of the measured path."""
    return markdown_table(
        ["solver", "prediction", "grid", "N", "whole path from t = 1", "measured path"],
        [[r["solver"], _PREDICTION_LABEL[r["algorithm_type"]], r["grid"], r["steps"], f"{r['full_path']:.2e}",
          f"{r['measured_path']:.2e}"] for r in summary["head"]])


def render_shapes_table(summary: dict) -> str:
    """The Markdown table of :func:`grid_shapes`' rows in a study summary."""
    return markdown_table(
        ["grid", "N", "largest lambda step", "smallest", "largest / smallest", "largest ratio of consecutive steps",
         "smallest ratio"],
        [[r["grid"], r["steps"], f"{r['max_h']:.3g}", f"{r['min_h']:.3g}", f"{r['max_h'] / r['min_h']:.3g}",
          f"{r['max_ratio']:.3g}", f"{r['min_ratio']:.3g}"] for r in summary["shapes"]])


def render_sections(summary: dict) -> dict:
    """The page's generated sections of a study summary: section name -> Markdown."""
    return {"shapes": render_shapes_table(summary), "table": render_table(summary),
            "head": render_head_table(summary)}


def section_markers(prefix: str, name: str) -> tuple:
    """The two marker lines around the generated section ``name`` of a page (``prefix``: the module's)."""
    return f"<!-- {prefix}:{name}:begin -->", f"<!-- {prefix}:{name}:end -->"


def replace_section(text: str, markers: tuple, content: str) -> str:
    """``text`` with everything between the two ``markers`` lines replaced by ``content``."""
    begin, end = markers
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"the page must hold the markers {begin!r} and {end!r} once each, in that order")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{content}{end}{tail}"


def update_page(page: str, prefix: str, sections: dict) -> None:
    """Replace every generated section ``name -> content`` of the Markdown file ``page`` (markers
    :func:`section_markers`)."""
    with open(page, encoding="utf-8") as fh:
        text = fh.read()
    for name, content in sections.items():
        text = replace_section(text, section_markers(prefix, name), content)
    with open(page, "w", encoding="utf-8") as fh:
        fh.write(text)


def summary_json(summary: dict) -> str:
    """A study summary as JSON text with one line per measurement (a small file with readable diffs)."""
    rest = json.dumps({k: v for k, v in summary.items() if k != "measurements"}, indent=1, allow_nan=False)
    lines = ",\n".join(json.dumps(m, allow_nan=False) for m in summary["measurements"])
    return '{\n "measurements": [\n' + lines + "\n ],\n" + rest[2:] + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="docs/results/grid_orders.json", help="results JSON")
    parser.add_argument("--page", default=None, help="Markdown page whose table to replace (between the markers)")
    parser.add_argument("--render-only", action="store_true", help="only render --out into --page")
    parser.add_argument("--optimize", action="store_true",
                        help="recompute the optimised grid's lambda fractions and print them, nothing else")
    parser.add_argument("--quick", action="store_true", help="DPM-Solver-3M only, at the test's step counts")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.optimize:
        print(json.dumps(optimized_lam_fractions().tolist()))
        return 0
    if not args.render_only:
        if args.quick:
            study = grid_orders(["DPM-Solver-3M"], grids=NONUNIFORM_GRIDS,
                                steps={g: quick_steps("DPM-Solver-3M", "dpmsolver++", g) for g in NONUNIFORM_GRIDS},
                                head_steps=None,
                                progress=True)
        else:
            study = grid_orders(progress=True)
        atomic_write_bytes(args.out, summary_json(study.to_summary()).encode("utf-8"))
    if args.page:
        with open(args.out, encoding="utf-8") as fh:
            update_page(args.page, PAGE_PREFIX, render_sections(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
