"""Global-error study: the error at ``t_end`` against the number of steps / NFE, with several statistics.

For each solver run (:class:`SolverRun`: a set of :func:`expsolver.sample` options, or a solver object of the
protocol :class:`expsolver.Solver` with the options of its grid and prediction type) and each NFE budget, the
samples (drawn from the exact marginal ``q_{t_start}``, fixed seed) are integrated from ``t_start`` to ``t_end``
and compared with a high-accuracy reference of the same ODE (SciPy DOP853, rtol = atol = 1e-12, cached on disk).
Per budget the study records, over samples of the per-sample L2 error ``||x - x_ref||_2``:

* RMS, median, 90th and 99th percentiles and the maximum: a few samples near mode boundaries dominate the RMS,
  so the median is the statistic used for slopes;
* ``mode_switches``: how many samples end in a different mixture component than their reference
  (:meth:`GaussianMixture.component` at ``t_end``, the most responsible component);
* the actual NFE (model calls made) and the largest lambda step ``h_max`` of the grid used.

The global order is the slope of log median error against log ``h_max`` (:func:`expsolver.convergence.fit_order`,
automatically chosen window); a solver of order ``k`` shows ``k``, i.e. the error falls like ``NFE^-k``.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import REGISTRY, GaussianMixture, Solver, VPSchedule, sample
from expsolver.convergence import sample_errors
from expsolver.driver import check_solver
from expsolver.sampling import check_solver_options

from .order import OrderFit, fit_order
from .results import ResultStore, cached_reference, provenance, result_type, solver_id, solver_record
from .targets import T_END, T_START

__all__ = ["error_at_nfe", "dpm_solver_names", "SolverRun", "as_solver_run", "GlobalErrorCurve", "GlobalErrorStudy",
           "global_error_study", "registry_runs", "error_statistics", "grid_h_max", "steps_option", "DEFAULT_NFES",
           "DEFAULT_STEPS", "STATISTICS"]

DEFAULT_NFES = (6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)
#: Default grid-step budgets of an order study (``budget="steps"``): ratio ~1.5 from 4 to 512.
DEFAULT_STEPS = (4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
STATISTICS = ("rms", "median", "p90", "p99", "max")
_DEFAULT_REFERENCE = dict(backend="scipy", method="DOP853", rtol=1e-12, atol=1e-12)
#: The options of sample() that choose a solver (a solver object carries them): the keyword-only parameters of
#: check_solver_options, which validates exactly those.
_SOLVER_OPTIONS = tuple(name for name, p in inspect.signature(check_solver_options).parameters.items()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY)


@result_type
@dataclass
class SolverRun:
    """One solver configuration to run: a label, the :func:`expsolver.sample` options (without ``steps``), the
    expected global order (``None`` when there is no claim), the registry ``name`` (for styles), optionally its
    own ``budgets`` (instead of the study's) and optionally a ``solver`` object.

    With ``solver`` (any object of the protocol :class:`expsolver.Solver`, a user's own included; see
    :meth:`from_solver`) every harness runs ``sample(..., solver=run.solver, **run.options)``, and ``options`` holds
    only what is not the solver's: the grid (``skip_type``), the prediction type (``algorithm_type``), the model
    (``model_type``, ...). The options that choose a built-in solver (``method``, ``order``, ``solver_type``,
    ``variant``, ``use_corrector``, ``compat``, ``lower_order_final``) are then a ``ValueError``. Saved results
    record the object by :func:`analysis.results.solver_record` and cached results are keyed by
    :func:`analysis.results.solver_id` (:meth:`record`, :meth:`cache_id`); the object itself is not saved.
    Runs that go to worker processes (the race with an executor) need a solver that pickles: an instance of a
    class defined at the top level of an importable module.
    """

    label: str
    options: dict
    expected_order: int | None = None
    name: str = ""
    budgets: tuple | None = None  # overrides the study's budgets for this run
    solver: Solver | None = None

    def __post_init__(self):
        if not isinstance(self.options, dict):
            raise TypeError(f"options must be a dict of sample() options, got {type(self.options).__name__}")
        if self.solver is not None:
            check_solver(self.solver, "solver")
            chosen = [key for key in _SOLVER_OPTIONS if key in self.options]
            if chosen:
                raise ValueError(f"options: with solver={self.solver!r} the object carries its own configuration; "
                                 f"do not also give {', '.join(chosen)}")
        if not self.name:
            self.name = self.label

    @classmethod
    def from_solver(cls, solver, *, label: str | None = None, name: str | None = None,
                    algorithm_type: str = "dpmsolver++", skip_type: str = "logSNR", expected_order: int | None = None,
                    budgets: tuple | None = None) -> "SolverRun":
        """The run of a solver object on ``skip_type`` grids with ``algorithm_type``'s prediction (defaults: those of
        a registry name given to :func:`global_error_study`). ``name`` defaults to the solver's ``name`` (its class
        name when it has none of its own), ``label`` to ``"name|algorithm_type"`` (as :func:`registry_runs`) and
        ``expected_order`` to the solver's declared ``order``."""
        check_solver(solver, "solver")
        if name is None:
            own = getattr(solver, "name", None)
            name = own if isinstance(own, str) and own and own != Solver.name else type(solver).__qualname__
        return cls(label=f"{name}|{algorithm_type}" if label is None else label, name=name, budgets=budgets,
                   options=dict(algorithm_type=algorithm_type, skip_type=skip_type), solver=solver,
                   expected_order=int(solver.order) if expected_order is None else expected_order)

    @property
    def sample_kwargs(self) -> dict:
        """The keyword arguments of :func:`expsolver.sample` that select this run (without the grid size)."""
        return dict(self.options) if self.solver is None else dict(self.options, solver=self.solver)

    def with_options(self, **options) -> "SolverRun":
        """A copy with ``options`` added to (or replacing) :attr:`options`, e.g. another ``skip_type``."""
        return dataclasses.replace(self, options=dict(self.options, **options))

    def record(self) -> dict:
        """The configuration as saved results record it: :attr:`options`, and with a solver object its
        :func:`~analysis.results.solver_record` under ``"solver"``."""
        return dict(self.options) if self.solver is None else dict(self.options, solver=solver_record(self.solver))

    def cache_id(self) -> str:
        """The configuration in result-store keys: the sorted options and, with a solver object, its
        :func:`~analysis.results.solver_id` (class, repr and a digest of its parameters and source)."""
        key = repr(sorted(self.options.items()))
        return key if self.solver is None else f"{key}|solver={solver_id(self.solver)}"

    def steps_for(self, n: int, budget: str = "nfe") -> int:
        """The ``steps`` option of :func:`expsolver.sample` for a budget of ``n`` model calls (``budget="nfe"``) or
        ``n`` grid steps (``"steps"``): :func:`steps_option` for options; for a solver object, whose ``steps``
        counts grid intervals, ``n`` steps or as many steps as ``n`` calls pay for (``solver.nfe(order)`` each,
        possibly 0)."""
        if self.solver is None:
            return steps_option(self.options, n, budget)
        if budget == "steps":
            return n
        return n // int(self.solver.nfe(self.solver.steps_order))

    def model_calls(self, steps: int) -> int:
        """The model calls that the ``steps`` option is planned to cost (the NFE budget itself for options)."""
        return steps if self.solver is None else steps * int(self.solver.nfe(self.solver.steps_order))

    def too_few_steps(self, steps: int) -> bool:
        """Whether ``steps`` cannot run: fewer than ``order`` steps of a multistep method (``sample()`` refuses
        them for options; a solver object with a history is held to the same rule, so that its budgets are those
        of the same solver given by options) or no step at all."""
        if self.solver is None:
            return self.options.get("method") in ("multistep", "singlestep_fixed") and steps < int(
                self.options.get("order", 1))
        return steps < 1 or (bool(self.solver.carries_history) and steps < int(self.solver.steps_order))


def dpm_solver_names() -> list:
    """The DPM-Solver family of :data:`expsolver.REGISTRY` (names starting with ``"DPM-Solver"``): the default
    solver set of the studies (other registered families are run by naming them)."""
    return [name for name in REGISTRY if name.startswith("DPM-Solver")]


def registry_runs(names=None, algorithm_types=("dpmsolver++", "dpmsolver"), skip_type: str = "logSNR") -> list:
    """A :class:`SolverRun` per registry configuration and algorithm type (label ``"name|algorithm_type"``), by its
    options; ``names`` defaults to :func:`dpm_solver_names`. (For the same run by the configuration's solver
    object: ``SolverRun.from_solver(REGISTRY[name].make(), name=name, ...)``.)"""
    names = dpm_solver_names() if names is None else list(names)
    runs = []
    for name in names:
        config = REGISTRY[name]
        for algorithm_type in algorithm_types:
            runs.append(SolverRun(label=f"{name}|{algorithm_type}", name=name, expected_order=config.order,
                                  options=dict(config.options, algorithm_type=algorithm_type, skip_type=skip_type)))
    return runs


def as_solver_run(run) -> SolverRun:
    """``run`` as a :class:`SolverRun`: a registry name by its options (:func:`registry_runs`), a solver object by
    :meth:`SolverRun.from_solver` (data prediction, logSNR grid both); a ``TypeError`` or ``ValueError`` naming
    ``runs`` for anything else."""
    if isinstance(run, SolverRun):
        return run
    if isinstance(run, str):
        if run not in REGISTRY:
            raise ValueError(f"runs: {run!r} is neither a SolverRun, a solver object nor a registry name "
                             f"({', '.join(REGISTRY)})")
        return registry_runs([run], ("dpmsolver++",))[0]
    try:
        return SolverRun.from_solver(run)
    except TypeError:
        raise TypeError(f"runs: {run!r} is neither a SolverRun, a registry name nor a solver object (an object of "
                        f"the protocol expsolver.Solver: order, nfe, init, step, plan)") from None


@result_type
@dataclass
class GlobalErrorCurve:
    """Errors of one solver run at several NFE budgets (arrays sorted by NFE). ``options`` is the run's
    :meth:`SolverRun.record`: its ``sample()`` options and, for a solver object, a description of it under
    ``"solver"`` (:func:`analysis.results.solver_record`: class, repr, declared order, parameters)."""

    label: str
    name: str
    options: dict
    nfe: np.ndarray
    steps: np.ndarray
    h_max: np.ndarray
    rms: np.ndarray
    median: np.ndarray
    p90: np.ndarray
    p99: np.ndarray
    max: np.ndarray
    mode_switches: np.ndarray
    fit: OrderFit
    expected_order: int | None = None

    @property
    def algorithm_type(self) -> str:
        return self.options.get("algorithm_type", "dpmsolver++")

    def at_nfe(self, nfe: int, statistic: str = "median") -> tuple[int | None, float]:
        """``(actual_nfe, error)`` of the largest budget with ``actual NFE <= nfe`` (``(None, nan)`` if none)."""
        return error_at_nfe(self.nfe, getattr(self, statistic), nfe)


def error_at_nfe(nfes, errors, nfe: int, valid=None) -> tuple[int | None, float]:
    """``(actual_nfe, error)`` of the entry with the largest NFE ``<= nfe`` among the ``valid`` ones (all by
    default); ``(None, nan)`` if there is none."""
    nfes = np.asarray(nfes)
    mask = nfes <= nfe if valid is None else (nfes <= nfe) & np.asarray(valid)
    ok = np.nonzero(mask)[0]
    if ok.size == 0:
        return None, float("nan")
    i = int(ok[np.argmax(nfes[ok])])
    return int(nfes[i]), float(np.asarray(errors)[i])


@result_type
@dataclass
class GlobalErrorStudy:
    """All curves of a global-error study, with its configuration and provenance."""

    target: str
    schedule: str
    n_samples: int
    seed: int
    dtype: str
    t_start: float
    t_end: float
    reference: dict
    curves: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def curve(self, label: str) -> GlobalErrorCurve:
        for c in self.curves:
            if c.label == label:
                return c
        raise KeyError(f"no curve labelled {label!r}; have {[c.label for c in self.curves]}")


def error_statistics(x: torch.Tensor, x_ref: torch.Tensor, target=None, schedule=None, t_end=None) -> dict:
    """Per-sample L2 errors (:func:`expsolver.convergence.sample_errors`) summarised: rms, median, p90, p99, max, and
    mode switches (if ``target`` is given)."""
    err = sample_errors(x, x_ref)
    out = dict(rms=float(np.sqrt(np.mean(err**2))), median=float(np.median(err)),
               p90=float(np.percentile(err, 90)), p99=float(np.percentile(err, 99)), max=float(err.max()))
    if target is not None:
        same = target.component(x, t_end, schedule) == target.component(x_ref, t_end, schedule)
        out["mode_switches"] = int((~same).sum())
    return out


def grid_h_max(schedule, timesteps) -> float:
    """Largest lambda step of a time grid."""
    return float(np.max(np.diff(schedule.lams_of(np.asarray(timesteps, dtype=np.float64)))))


def steps_option(options: dict, n: int, budget: str) -> int:
    """The ``steps`` option of :func:`expsolver.sample` for a budget ``n``: the NFE budget itself
    (``budget="nfe"``), or ``n`` grid steps (``budget="steps"``: ``n * order`` for the singlestep methods, whose
    ``steps`` option counts model calls)."""
    if budget == "nfe":
        return n
    if options.get("method") in ("singlestep", "singlestep_fixed"):
        return n * int(options.get("order", 1))
    return n


def global_error_study(target, schedule, runs, *, target_name: str = "target", nfes=DEFAULT_NFES,
                       budget: str = "nfe", max_nfe: int | None = None, n_samples: int = 128, seed: int = 0,
                       t_start: float = T_START, t_end: float = T_END, reference: dict | None = None,
                       cache_dir=None, store: ResultStore | None = None, progress=None, x=None,
                       floor: float | None = None, **kwargs) -> GlobalErrorStudy:
    """Run the global-error study (module docstring).

    Parameters
    ----------
    target : GaussianMixture
    schedule : VPSchedule
    runs : sequence of SolverRun, str or Solver
        Solver runs; a string is a registry name and a solver object (:class:`expsolver.Solver`, a user's own
        included) is :meth:`SolverRun.from_solver`, both run with data prediction on a logSNR grid.
    nfes : sequence of int
        Budgets: NFE (``budget="nfe"``, the ``steps`` option) or numbers of grid steps (``budget="steps"``, see
        :meth:`SolverRun.steps_for`). A budget a configuration cannot use (``steps < order``) is skipped, and one
        that gives the same actual NFE as a smaller one (``singlestep_fixed``) is dropped.
    budget : {"nfe", "steps"}
    max_nfe : int, optional
        Skip budgets planned to cost more model calls (:meth:`SolverRun.model_calls`; keeps singlestep runs as cheap
        as multistep ones).
    n_samples, seed : int
        Samples from ``q_{t_start}`` drawn with ``torch.Generator().manual_seed(seed)`` (ignored if ``x`` given).
    t_start, t_end : float
    reference : dict, optional
        Reference options (default SciPy DOP853 at rtol = atol = 1e-12).
    cache_dir : str, None or False
        Reference cache (see :func:`analysis.results.cached_reference`).
    store : ResultStore, optional
        Completed points are read from and written to it (an interrupted study resumes).
    progress : callable, optional
        Called after every solver run.
    x : torch.Tensor, optional
        Initial states at ``t_start`` instead of drawn ones.
    floor : float, optional
        Known error floor (e.g. the reference's error) handed to :func:`analysis.order.fit_order`.

    Returns
    -------
    GlobalErrorStudy
    """
    if kwargs:
        raise TypeError(f"global_error_study() got unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    if budget not in ("nfe", "steps"):
        raise ValueError(f"budget must be 'nfe' or 'steps', got {budget!r}")
    if not isinstance(target, GaussianMixture):
        raise TypeError(f"target must be an expsolver.GaussianMixture, got {type(target).__name__}")
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    runs = [as_solver_run(r) for r in runs]
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in nfes) or len(nfes) == 0:
        raise ValueError(f"nfes must be a non-empty sequence of ints >= 1, got {list(nfes)!r}")
    if x is None and (isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1):
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    if store is not None and not isinstance(store, ResultStore):
        raise TypeError(f"store must be an analysis.results.ResultStore or None, got {type(store).__name__}")
    ref_opts = dict(_DEFAULT_REFERENCE, **(reference or {}))
    if x is None:
        x = target.sample(n_samples, generator=torch.Generator().manual_seed(seed), t=t_start, schedule=schedule)
    ref = cached_reference(target, schedule, x, t_start, t_end, cache_dir=cache_dir, **ref_opts)
    model = target.as_model(schedule)
    study = GlobalErrorStudy(target=target_name, schedule=repr(schedule), n_samples=int(x.shape[0]), seed=seed,
                             dtype=str(x.dtype), t_start=float(t_start), t_end=float(t_end),
                             reference=dict(ref_opts, nfe=ref["nfe"]), provenance=provenance())
    for run in runs:
        points = []
        seen_nfe = set()
        for n in sorted(int(v) for v in (nfes if run.budgets is None else run.budgets)):
            steps = run.steps_for(n, budget)
            if run.too_few_steps(steps) or (max_nfe is not None and run.model_calls(steps) > max_nfe):
                continue
            key = f"{target_name}|{run.label}|{run.cache_id()}|{steps}|{seed}|{x.shape[0]}"
            point = store.get(key) if store is not None else None
            if point is None:
                res = sample(model, schedule, x, steps=steps, t_start=t_start, t_end=t_end, **run.sample_kwargs)
                point = dict(error_statistics(res.x, ref["x"], target, schedule, t_end), nfe=int(res.nfe),
                             steps=steps, h_max=grid_h_max(schedule, res.timesteps))
                if store is not None:
                    store.put(key, point)
            if point["nfe"] in seen_nfe or any(abs(point["h_max"] - p["h_max"]) <= 1e-12 for p in points):
                continue
            seen_nfe.add(point["nfe"])
            points.append(point)
        points.sort(key=lambda p: p["nfe"])
        arrays = {k: np.array([p[k] for p in points]) for k in ("nfe", "steps", "h_max", "mode_switches")
                  + STATISTICS}
        fit = fit_order(arrays["h_max"], arrays["median"], expected=run.expected_order, floor=floor)
        study.curves.append(GlobalErrorCurve(label=run.label, name=run.name, options=run.record(), fit=fit,
                                             expected_order=run.expected_order, **arrays))
        if progress is not None:
            progress()
    return study
