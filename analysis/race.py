"""The accuracy-per-NFE race: official DPM-Solver, DPM-Solver++, UniPC on standard and optimised time grids.

At 5-25 model evaluations the error per NFE is what matters. For one target (:mod:`analysis.targets`) the study
draws three independent sets of states from the exact marginal ``q_{t_start}`` with fixed seeds,

* ``pool`` (training states for :func:`expsolver.optimize_timesteps`, which stratifies and weights them),
* ``test`` (1,000 states) and ``holdout`` (5,000 states), never seen by any optimisation,

integrates them with high accuracy (SciPy DOP853 in lambda, ``rtol = atol = 1e-10``: about 1e-8 worst-case error on
these targets, checked against ``rtol = 1e-12`` and torchdiffeq dopri8) and measures, on ``test`` and ``holdout``,
the per-state error ``|x - x_ref|_2`` at ``t_end``: its RMS (what users quote, dominated by the few states whose
trajectories pass near the saddle between two modes) and its median.

* **Lineup** (:data:`LINEUP`): DDIM, DPM-Solver-3 (singlestep, DPM-Solver-fast orders), DPM-Solver++(2M) and
  (3M) as the official implementation has them (``compat="official"``) and corrected (3M: exact exponential Adams),
  UniPC-2/3 (``bh1``/``bh2``, predictor order p with the corrector) and UniPC-4-bh1; each on the four standard grids
  (the best one per NFE is drawn, chosen on the test states, which favours the baselines) and, for
  :data:`OPTIMISED` solvers, on a grid optimised for that solver and NFE on the pool; for :data:`SHIFTED` solvers
  also on a grid optimised together with its model times (``shift_model_times=True`` of
  :func:`expsolver.optimize_timesteps`; curve name suffix :data:`MODEL_TIMES_SUFFIX`).
* **Best official**: for each acceptance NFE, the smallest RMS over every official configuration
  (:func:`official_configs`: methods, orders, skip types, prediction types, solver types, ``lower_order_final``)
  run with ``compat="official"`` and NFE <= the budget, selected separately on the test and the holdout states.
* **Acceptance** (the 1/3 target): the optimised configuration with the smallest validation RMS (pool states outside its
  training subset; never selected on test or holdout) must reach at most 1/3 of the best official RMS on both test
  and holdout at NFE 10 and 20. Bootstrap 95 % intervals of every RMS (resampling states) are recorded, because a
  handful of states carry most of it.
* **Switch analysis** (:func:`switch_analysis`): for each acceptance NFE and evaluation set, the states that end
  in another mode than the reference under our sampler and under the best official configuration, the fraction of
  random perturbations of size 1e-2 at ``t_start`` that change each one's exact end mode
  (:func:`boundary_sensitivity`: non-zero means it lies within 1e-2 of a basin boundary), and the number of
  switches the 1/3 criterion leaves room for given our error on all other states.
* **Population estimate**: since 1,000 or 5,000 states hold only a few of the mode-switching states that carry the
  RMS, the acceptance grids and the best official configuration (the full sweep again) are also measured on
  ``n_population`` (30,000) further independent states.
* **Your own solvers**: an entry of the lineup (and of the optimised and shifted solvers) is a :data:`LINEUP` name
  or a :class:`analysis.global_error.SolverRun`, e.g. ``SolverRun.from_solver(ExponentialRalston(), label=...)``
  for any object of the solver protocol (:class:`expsolver.Solver`); it runs as ``sample(..., solver=obj)`` with
  ``n // solver.nfe(order)`` grid steps at NFE ``n`` (the race chooses the grids: a ``skip_type`` of the run is
  not used). :func:`best_official` searches given configurations (``configs``: options, runs or solver objects)
  as well. With worker processes the solver objects must pickle (:func:`analysis.tasks.check_picklable`).
* **Execution**: every standard-grid curve, best-official search, grid optimisation, switch analysis and
  population estimate is an independent task (:func:`race_studies`), run in this process, on local worker
  processes or on a Dask cluster with the same results, bitwise; ``python -m analysis.race [--size reduced]
  [--jobs N]`` runs the race and prints its wall time (:func:`main`).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from expsolver import SKIP_TYPES, optimize_timesteps, reference_solve, sample

from .global_error import SolverRun, as_solver_run
from .results import cached_reference, provenance, result_type, save_result
from .targets import T_END, T_START, get_target, standard_schedule
from .tasks import Task, available_cpus, check_picklable, open_executor, run_tasks

__all__ = ["LINEUP", "OPTIMISED", "SHIFTED", "MODEL_TIMES_SUFFIX", "RaceConfig", "RaceCurve", "RaceResult",
           "official_configs", "best_official", "rms_interval", "race_study", "race_studies", "race_config",
           "RACE_SIZES", "ACCEPTANCE_NFES", "boundary_sensitivity", "switch_analysis", "main"]

#: name -> sample() options of the solvers in the race.
LINEUP = {
    "DDIM": dict(method="multistep", order=1),
    "DPM-Solver-3": dict(method="singlestep", order=3, algorithm_type="dpmsolver", compat="official"),
    "DPM-Solver++(2M) official": dict(method="multistep", order=2, compat="official"),
    "DPM-Solver++(2M)": dict(method="multistep", order=2),
    "DPM-Solver++(3M) official": dict(method="multistep", order=3, compat="official"),
    "DPM-Solver++(3M) corrected": dict(method="multistep", order=3, solver_type="taylor"),
    "UniPC-2-bh1": dict(method="unipc", order=2, variant="bh1"),
    "UniPC-2-bh2": dict(method="unipc", order=2, variant="bh2"),
    "UniPC-3-bh1": dict(method="unipc", order=3, variant="bh1"),
    "UniPC-3-bh2": dict(method="unipc", order=3, variant="bh2"),
    "UniPC-4-bh1": dict(method="unipc", order=4, variant="bh1"),
}
#: Solvers whose grids are optimised (one grid per NFE of ``RaceConfig.optimise_nfes``).
OPTIMISED = ("DDIM", "DPM-Solver++(2M)", "DPM-Solver++(3M) corrected", "UniPC-2-bh1", "UniPC-2-bh2", "UniPC-3-bh1",
             "UniPC-3-bh2", "UniPC-4-bh1")
#: Solvers whose grids are also optimised with decoupled model times (learned per grid point).
SHIFTED = ("UniPC-2-bh2", "UniPC-3-bh2")
MODEL_TIMES_SUFFIX = " + model times"
ACCEPTANCE_NFES = (10, 20)


@dataclass(frozen=True)
class RaceConfig:
    """Sizes, seeds and optimiser settings of one race study.

    ``lineup``, ``optimised`` and ``shifted`` name the solvers: each entry is a :data:`LINEUP` name or a
    :class:`analysis.global_error.SolverRun` (its ``label`` is its name in the race; a solver object's run through
    ``sample(..., solver=...)``, see the module docstring). An optimised solver object must reach every NFE of
    ``optimise_nfes`` with whole steps.
    """

    target: str
    n_pool: int = 20000
    n_test: int = 1000
    n_holdout: int = 5000
    seeds: tuple = (21, 12, 13)  # pool, test, holdout
    n_population: int = 30000
    population_seed: int = 99
    nfes: tuple = tuple(range(5, 26))
    optimise_nfes: tuple = (5, 10, 15, 20, 25)
    official_nfes: tuple = (5, 10, 15, 20, 25)
    lineup: tuple = tuple(LINEUP)
    optimised: tuple = OPTIMISED
    shifted: tuple = SHIFTED
    reference_rtol: float = 1e-10
    n_train: int = 1024
    strata: tuple = (0.5, 0.9, 0.99, 0.998)
    error_cap: float | None = 0.3
    # Objective evaluations per L-BFGS descent: max_iter_nfe // NFE (200 at NFE 10, 80 at NFE 25); no wall-time
    # limit (max_time=None), so the grids do not depend on the machine's speed or load.
    max_iter_nfe: int = 2000
    max_time: float | None = None
    n_validation: int = 8192
    n_starts: int = 3
    official_methods: tuple = ("singlestep", "singlestep_fixed", "multistep")
    n_bootstrap: int = 2000
    boundary_radius: float = 1e-2
    boundary_perturbations: int = 20


#: Sizes of :func:`race_config`.
RACE_SIZES = ("full", "reduced", "quick")


def race_config(target: str, size: str = "full") -> RaceConfig:
    """The race of the figure (``"full"``), a smaller one of about 20 tasks per target to compare wall times
    with different numbers of workers (``"reduced"``: 4 solvers, grids optimised at NFE 10 and 20 on 4,000 pool
    states and three strata, no population estimate), or a smoke run (``"quick"``)."""
    if size == "quick":
        return RaceConfig(target=target, n_pool=500, n_test=100, n_holdout=150, nfes=(6, 10), optimise_nfes=(10,),
                          official_nfes=(10,), lineup=("DDIM", "UniPC-3-bh1"), optimised=("UniPC-3-bh1",),
                          shifted=("UniPC-3-bh1",),
                          n_train=96, strata=(0.5, 0.9), max_iter_nfe=50, n_validation=128, n_starts=1,
                          n_bootstrap=100, official_methods=("multistep",), n_population=0,
                          boundary_perturbations=4)
    if size == "reduced":
        return RaceConfig(target=target, n_pool=4000, n_test=500, n_holdout=1000, nfes=(5, 10, 15, 20, 25),
                          optimise_nfes=(10, 20), official_nfes=(10, 20),
                          lineup=("DDIM", "DPM-Solver++(2M)", "UniPC-2-bh2", "UniPC-3-bh1"),
                          optimised=("DPM-Solver++(2M)", "UniPC-2-bh2", "UniPC-3-bh1"), shifted=("UniPC-2-bh2",),
                          n_train=512, strata=(0.5, 0.9, 0.99), max_iter_nfe=600, n_validation=2048, n_starts=2,
                          n_bootstrap=500, official_methods=("multistep",), n_population=0, boundary_perturbations=8)
    if size == "full":
        return RaceConfig(target=target)
    raise ValueError(f"size must be one of {', '.join(map(repr, RACE_SIZES))}, got {size!r}")


@result_type
@dataclass
class RaceCurve:
    """Errors of one solver against NFE on one kind of grid (``grid`` = ``"standard"`` or ``"optimised"``).

    ``skip_types[i]`` is the grid used at ``nfe[i]`` (the best standard one on the test states, or
    ``"optimised"``); ``test`` / ``holdout`` hold arrays ``rms``, ``median``, ``rms_low``, ``rms_high`` (95 %
    bootstrap interval), ``mode_switches``.
    """

    name: str
    options: dict
    grid: str
    nfe: np.ndarray
    skip_types: list
    test: dict
    holdout: dict


@result_type
@dataclass
class RaceResult:
    """Everything the race figure and its tables are made of (see the module docstring)."""

    target: str
    config: dict
    reference: dict
    curves: list
    official_best: dict
    grids: list
    acceptance: dict
    timings: dict
    provenance: dict = field(default_factory=provenance)

    def curve(self, name: str, grid: str) -> RaceCurve:
        for c in self.curves:
            if c.name == name and c.grid == grid:
                return c
        raise KeyError(f"no curve {name!r} on {grid!r} grids")


def official_configs(methods=("singlestep", "singlestep_fixed", "multistep")) -> list:
    """Every configuration of the official DPM-Solver (``compat="official"``) at a given NFE: methods
    singlestep (DPM-Solver-fast), singlestep_fixed and multistep; orders 1-3; skip types logSNR, time_uniform,
    time_quadratic (the official ones); noise and data prediction; solver types dpmsolver and taylor; and, for
    multistep, ``lower_order_final`` on and off. Duplicates (order 1 ignores the solver type) are dropped."""
    out, seen = [], set()
    for method, order, skip, alg, solver_type, lof in itertools.product(
            methods, (1, 2, 3), ("logSNR", "time_uniform", "time_quadratic"),
            ("dpmsolver++", "dpmsolver"), ("dpmsolver", "taylor"), (True, False)):
        if order == 1:
            solver_type, method = "dpmsolver", "multistep" if method != "singlestep_fixed" else method
        if method != "multistep":
            lof = True
        options = dict(method=method, order=order, skip_type=skip, algorithm_type=alg, solver_type=solver_type,
                       lower_order_final=lof, compat="official")
        key = tuple(sorted(options.items()))
        if key not in seen:
            seen.add(key)
            out.append(options)
    return out


def _errors(x, ref) -> np.ndarray:
    return (x - ref).reshape(x.shape[0], -1).norm(dim=1).detach().cpu().numpy().astype(np.float64)


def rms_interval(errors, n_bootstrap: int = 2000, seed: int = 0) -> tuple:
    """95 % bootstrap interval (percentile) of the RMS of ``errors`` (resampling states)."""
    rng = np.random.default_rng(seed)
    sq = np.asarray(errors, dtype=np.float64) ** 2
    idx = rng.integers(0, len(sq), size=(n_bootstrap, len(sq)))
    values = np.sqrt(sq[idx].mean(axis=1))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def best_official(model, schedule, x, ref, nfe: int, *, t_start: float = T_START, t_end: float = T_END,
                  methods=("singlestep", "singlestep_fixed", "multistep"), configs=None) -> dict:
    """The official configuration (:func:`official_configs`, NFE <= ``nfe``) with the smallest RMS on ``x``.

    ``configs`` searches other configurations instead (in order; the first of equal RMS wins): ``sample()``
    option dicts, :class:`~analysis.global_error.SolverRun` s or solver objects (any object of the protocol
    :class:`expsolver.Solver`; :meth:`~analysis.global_error.SolverRun.from_solver`, logSNR grid, data
    prediction), each run with as many steps as ``nfe`` model calls pay for
    (:meth:`~analysis.global_error.SolverRun.steps_for`).

    Returns ``dict(rms, median, nfe, options)``; ``options`` is the winner's
    :meth:`~analysis.global_error.SolverRun.record` (a solver object described under ``"solver"``).
    """
    runs = [_as_run(c, "configs") for c in (official_configs(methods) if configs is None else configs)]
    best = None
    for run in runs:
        try:
            result = sample(model, schedule, x, steps=run.steps_for(nfe), t_start=t_start, t_end=t_end,
                            **run.sample_kwargs)
        except ValueError:
            continue  # e.g. steps < order for singlestep_fixed
        if result.nfe > nfe:
            continue
        err = _errors(result.x, ref)
        rms = float(np.sqrt(np.mean(err**2)))
        if best is None or rms < best["rms"]:
            best = dict(rms=rms, median=float(np.median(err)), nfe=int(result.nfe), options=run.record())
    return best


def _as_run(config, name: str) -> SolverRun:
    """A configuration as a :class:`SolverRun`: ``sample()`` options (a dict), a run, or a solver object."""
    if isinstance(config, dict):
        return SolverRun(label="options", options=config)
    if isinstance(config, str):
        raise TypeError(f"{name}: give sample() options, a SolverRun or a solver object, not the name {config!r}")
    try:
        return as_solver_run(config)
    except TypeError:
        raise TypeError(f"{name} must hold sample() option dicts, SolverRun objects or solver objects (the "
                        f"protocol expsolver.Solver), got {config!r}") from None


def _stats(errors, target, x, ref, schedule, n_bootstrap, seed):
    lo, hi = rms_interval(errors, n_bootstrap, seed)
    switches = int((target.component(x, T_END, schedule) != target.component(ref, T_END, schedule)).sum())
    return dict(rms=float(np.sqrt(np.mean(errors**2))), median=float(np.median(errors)), rms_low=lo, rms_high=hi,
                mode_switches=switches)


def race_study(cfg: RaceConfig, *, executor=None, store=None, bar=None) -> RaceResult:
    """Run the race for ``cfg.target`` (module docstring): :func:`race_studies` of this one configuration."""
    return race_studies([cfg], executor=executor, store=store, bar=bar)[0]


def race_studies(cfgs, *, executor=None, store=None, bar=None, timings: dict | None = None) -> list:
    """Run the races of several configurations (e.g. both targets) at once; returns their :class:`RaceResult` s.

    Every solver's standard-grid curve, every best-official search, every grid optimisation, every switch
    analysis and population estimate is a task (:class:`analysis.tasks.Task`), run by
    :func:`analysis.tasks.run_tasks` in three rounds, the tasks of all configurations together: (1) the reference
    solutions of the state sets, which fill the reference cache the other tasks read; (2) the standard curves,
    the best official configurations and the optimised grids; (3) what needs the selected grids: the switch
    analysis and the population estimate.

    Parameters
    ----------
    cfgs : sequence of RaceConfig
    executor
        Where the tasks run (see :func:`analysis.tasks.open_executor`): ``None`` this process, an int that many
        local worker processes, a Dask ``Client`` or scheduler address, or a ``concurrent.futures.Executor``.
        Results do not depend on it.
    store : analysis.results.ResultFolder, optional
        Task results are kept there (an interrupted race resumes).
    bar : tqdm progress bar, optional
    timings : dict, optional
        Filled with the seconds of every task computed (``label -> {"wall_s", "cpu_s"}``).

    Returns
    -------
    list of RaceResult
        In the order of ``cfgs``. Their ``timings`` hold, per part of the study, the summed wall seconds of its
        tasks computed in this call (spread over the workers), and ``wall_s``, the wall time of the whole call.
    """
    cfgs = list(cfgs)
    for cfg in cfgs:
        if not isinstance(cfg, RaceConfig):
            raise TypeError(f"cfgs must hold RaceConfig objects, got {type(cfg).__name__}")
        _check_entries(cfg)
    in_process = executor is None or (isinstance(executor, int) and not isinstance(executor, bool) and executor == 1)
    if not in_process:
        for cfg in cfgs:
            for run in _entries(cfg).values():
                if run.solver is not None:
                    check_picklable(run.solver, f"cfgs (the solver of {run.label!r})")
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    with open_executor(executor) as ex:
        second = [_second_round(cfg) for cfg in cfgs]
        firsts = [t for cfg, tasks in zip(cfgs, second) for t in _reference_tasks(cfg)
                  if store is None or not all(os.path.exists(store.path(u.key)) for u in tasks)]
        run_tasks(firsts, ex, bar=bar, timings=timings)
        values = iter(run_tasks([t for tasks in second for t in tasks], ex, store=store, bar=bar, timings=timings))
        parts = [_assemble(cfg, [next(values) for _ in tasks]) for cfg, tasks in zip(cfgs, second)]
        third = [_third_round(cfg, part) for cfg, part in zip(cfgs, parts)]
        values = iter(run_tasks([t for tasks in third for t in tasks], ex, store=store, bar=bar, timings=timings))
        for cfg, part, tasks in zip(cfgs, parts, third):
            _finish(cfg, part, [next(values) for _ in tasks])
    wall = time.perf_counter() - t0
    out = []
    for cfg, tasks2, tasks3, part in zip(cfgs, second, third, parts):
        own = {t.label for t in _reference_tasks(cfg) + tasks2 + tasks3}
        groups = {}
        for label, seconds in timings.items():
            if label in own:
                group = f"{_GROUP_SECONDS[label.split('/')[1]]}_s"
                groups[group] = round(groups.get(group, 0.0) + seconds["wall_s"], 2)
        out.append(RaceResult(target=cfg.target, config=_config_record(cfg), reference=dict(
            backend="scipy", method="DOP853", rtol=cfg.reference_rtol, atol=cfg.reference_rtol, t_start=T_START,
            t_end=T_END), curves=part["curves"], official_best=part["official"], grids=part["grids"],
            acceptance=part["acceptance"], timings=dict(groups, wall_s=round(wall, 2))))
    return out


def _name(entry) -> str:
    """The name of a lineup entry in the race (curve names, task labels): the LINEUP name or the run's label."""
    return entry if isinstance(entry, str) else entry.label


def _entries(cfg: RaceConfig) -> dict:
    """name -> :class:`SolverRun` of every solver of ``cfg``: a LINEUP name by its options, a given run without its
    ``skip_type`` (the race chooses the grids)."""
    out = {}
    for entry in cfg.lineup + cfg.optimised + cfg.shifted:
        if isinstance(entry, str):
            out.setdefault(entry, SolverRun(label=entry, options=LINEUP[entry]))
        else:
            out[entry.label] = replace(entry, options={k: v for k, v in entry.options.items() if k != "skip_type"})
    return out


def _race_run(cfg: RaceConfig, name: str) -> SolverRun:
    return _entries(cfg)[name]


def _check_entries(cfg: RaceConfig) -> None:
    """``TypeError`` / ``ValueError`` naming ``cfgs`` for a lineup entry that is neither a LINEUP name nor a
    :class:`SolverRun`, for a name given to two different solvers, and for an optimised solver object that cannot
    spend an NFE of ``optimise_nfes`` in whole steps."""
    runs, names = {}, set()
    for field_name in ("lineup", "optimised", "shifted"):
        for entry in getattr(cfg, field_name):
            if isinstance(entry, str):
                if entry not in LINEUP:
                    raise ValueError(f"cfgs: {field_name} entry {entry!r} is not in LINEUP ({', '.join(LINEUP)}); "
                                     f"give a SolverRun for another solver")
                names.add(entry)
            elif isinstance(entry, SolverRun):
                if runs.setdefault(entry.label, entry).cache_id() != entry.cache_id():
                    raise ValueError(f"cfgs: two different SolverRun entries are labelled {entry.label!r}")
            else:
                raise TypeError(f"cfgs: {field_name} entries must be LINEUP names or SolverRun objects "
                                f"(SolverRun.from_solver(solver) for a solver object), got {entry!r}")
    if names & set(runs):
        raise ValueError(f"cfgs: {', '.join(map(repr, sorted(names & set(runs))))} names both a LINEUP entry and a "
                         f"SolverRun; label the run otherwise")
    entries = _entries(cfg)
    for entry in cfg.optimised + cfg.shifted:
        run = entries[_name(entry)]
        for n in cfg.optimise_nfes:
            if run.solver is not None and run.model_calls(run.steps_for(n)) != n:
                raise ValueError(f"cfgs: optimise_nfes holds {n}, which {run.label!r} "
                                 f"({run.solver.nfe(run.solver.steps_order)} model calls per step) cannot spend in "
                                 f"whole steps")


def _config_record(cfg: RaceConfig) -> dict:
    """``cfg`` as saved (:func:`dataclasses.asdict`), a :class:`SolverRun` entry as its label and the
    :meth:`~SolverRun.record` of the run the race makes of it (the solver object itself is not saved)."""
    runs = _entries(cfg)

    def record(entries):
        return tuple(e if isinstance(e, str) else dict(label=e.label, options=runs[e.label].record()) for e in entries)

    return asdict(replace(cfg, lineup=record(cfg.lineup), optimised=record(cfg.optimised),
                          shifted=record(cfg.shifted)))


#: Task kind (second part of a race task's label) -> part of the study it is timed under.
_GROUP_SECONDS = {"reference": "references", "standard": "standard", "official": "official",
                  "optimise": "optimisation", "switches": "switch_analysis", "population": "population"}


# -- the race's tasks (module-level functions: worker processes import them by name) -------------------------------
@functools.lru_cache(maxsize=8)
def _states(target: str, n: int, seed: int, rtol: float) -> tuple:
    """``n`` states drawn from ``q_{T_START}`` of ``target`` with ``seed`` and their references at ``T_END``
    (from the reference cache), kept for the next task in this process."""
    schedule, mixture = standard_schedule(), get_target(target)
    x = mixture.sample(n, generator=torch.Generator().manual_seed(seed), t=T_START, schedule=schedule)
    return x, cached_reference(mixture, schedule, x, T_START, T_END, rtol=rtol, atol=rtol)["x"]


def _split(cfg: RaceConfig, split: str) -> tuple:
    n, seed = {"pool": (cfg.n_pool, cfg.seeds[0]), "test": (cfg.n_test, cfg.seeds[1]),
               "holdout": (cfg.n_holdout, cfg.seeds[2]),
               "population": (cfg.n_population, cfg.population_seed)}[split]
    return _states(cfg.target, n, seed, cfg.reference_rtol)


def _reference_task(cfg: RaceConfig, split: str) -> None:
    _split(cfg, split)


def _reference_tasks(cfg: RaceConfig) -> list:
    splits = ("population", "pool", "holdout", "test") if cfg.n_population else ("pool", "holdout", "test")
    sizes = dict(population=cfg.n_population, pool=cfg.n_pool, holdout=cfg.n_holdout, test=cfg.n_test)
    return [Task(f"race_{cfg.target}/reference/{split}", _reference_task, (cfg, split), cost=sizes[split],
                 keep=False) for split in splits]


def _run(cfg: RaceConfig, run, n: int, split: str, timesteps=None, model_timesteps=None):
    """``sample()`` of the states ``split`` with ``run`` (``sample()`` options, a :class:`SolverRun` or a solver
    object) at NFE ``n`` (:meth:`SolverRun.steps_for` steps), or on the given grid, and the per-state errors."""
    run = _as_run(run, "run")
    x, ref = _split(cfg, split)
    schedule = standard_schedule()
    kw = (dict(timesteps=timesteps, model_timesteps=model_timesteps) if timesteps is not None
          else dict(steps=run.steps_for(n), t_start=T_START, t_end=T_END))
    result = sample(get_target(cfg.target).as_model(schedule), schedule, x, **kw, **run.sample_kwargs)
    return result, _errors(result.x, ref)


def _run_grid(cfg: RaceConfig, entry: dict, split: str):
    return _run(cfg, _race_run(cfg, entry["solver"]), entry["config"]["steps"], split, entry["timesteps"],
                entry["model_timesteps"])


def _grid_nfe(cfg: RaceConfig, entry: dict) -> int:
    """The NFE an optimised grid was made for: its steps times the model calls of one step of its solver."""
    return _race_run(cfg, entry["solver"]).model_calls(entry["config"]["steps"])


def _split_stats(cfg: RaceConfig, result, err, split: str, seed: int) -> dict:
    return _stats(err, get_target(cfg.target), result.x, _split(cfg, split)[1], standard_schedule(), cfg.n_bootstrap,
                  seed)


def _standard_task(cfg: RaceConfig, name: str) -> list:
    """Rows ``(nfe, skip_type, test stats, holdout stats)`` of ``name`` on its best standard grid per NFE (every
    skip type, the best on the test states drawn: favours the baselines)."""
    run = _race_run(cfg, name)
    skips = SKIP_TYPES if run.options.get("compat") != "official" else ("logSNR", "time_uniform", "time_quadratic")
    rows = []
    for n in cfg.nfes:
        if run.too_few_steps(run.steps_for(n)):
            continue
        best = None
        for skip in skips:
            result, err = _run(cfg, run.with_options(skip_type=skip), n, "test")
            if result.nfe != n:
                continue
            rms = float(np.sqrt(np.mean(err**2)))
            if best is None or rms < best[0]:
                best = (rms, skip, result, err)
        if best is None:
            continue
        _, skip, result, err = best
        hold_result, hold_err = _run(cfg, run.with_options(skip_type=skip), n, "holdout")
        rows.append((n, skip, _split_stats(cfg, result, err, "test", n),
                     _split_stats(cfg, hold_result, hold_err, "holdout", n)))
    return rows


def _official_task(cfg: RaceConfig, n: int, split: str, methods: tuple) -> dict | None:
    x, ref = _split(cfg, split)
    schedule = standard_schedule()
    return best_official(get_target(cfg.target).as_model(schedule), schedule, x, ref, n, methods=methods)


def _optimise_task(cfg: RaceConfig, name: str, solver: str, shift: bool, n: int) -> dict:
    """The grid of ``solver`` optimised for ``n`` NFE on the pool (with learned model times if ``shift``) and its
    test and holdout statistics."""
    schedule = standard_schedule()
    run = _race_run(cfg, solver)
    (pool, ref_pool), (test, ref_test), (holdout, ref_holdout) = (_split(cfg, s) for s in ("pool", "test", "holdout"))
    grid = optimize_timesteps(get_target(cfg.target).as_model(schedule), schedule, pool, steps=run.steps_for(n),
                              t_start=T_START,
                              t_end=T_END, ref_train=ref_pool, x_test=test, ref_test=ref_test, x_holdout=holdout,
                              ref_holdout=ref_holdout, n_train=cfg.n_train, strata=cfg.strata,
                              error_cap=cfg.error_cap, max_iter=max(1, cfg.max_iter_nfe // n),
                              max_time=cfg.max_time, n_validation=cfg.n_validation, n_starts=cfg.n_starts,
                              shift_model_times=shift, **run.sample_kwargs)
    entry = grid.to_dict()
    entry.update(name=name, solver=solver)
    stats = {}
    for split in ("test", "holdout"):
        result, err = _run_grid(cfg, entry, split)
        stats[split] = _split_stats(cfg, result, err, split, n)
    return dict(entry=entry, **stats)


def _switches_task(cfg: RaceConfig, grid: dict, official: dict, split: str) -> dict:
    """:func:`switch_analysis` of the selected grid against the best official configuration ``official``."""
    n = _grid_nfe(cfg, grid)
    ours, _ = _run_grid(cfg, grid, split)
    best, _ = _run(cfg, official["options"], n, split)
    x, ref = _split(cfg, split)
    return switch_analysis(get_target(cfg.target), standard_schedule(), x, ref, ours.x, best.x,
                           allowed_rms=official["rms"] / 3.0, cfg=cfg)


def _population_task(cfg: RaceConfig, grid: dict) -> dict:
    result, err = _run_grid(cfg, grid, "population")
    return _split_stats(cfg, result, err, "population", _grid_nfe(cfg, grid))


def _second_round(cfg: RaceConfig) -> list:
    tasks = [Task(f"race_{cfg.target}/standard/{name}", _standard_task, (cfg, name), cost=4.0)
             for name in map(_name, cfg.lineup)]
    tasks += [Task(f"race_{cfg.target}/official/{n}/{split}", _official_task,
                   (cfg, n, split, tuple(cfg.official_methods)), cost=4.0)
              for n in cfg.official_nfes for split in ("test", "holdout")]
    tasks += [Task(f"race_{cfg.target}/optimise/{name}/{n}", _optimise_task, (cfg, name, solver, shift, n),
                   cost=10.0 * n) for name, solver, shift in _optimisations(cfg) for n in cfg.optimise_nfes]
    return tasks


def _optimisations(cfg: RaceConfig) -> list:
    """``(curve name, solver, shift_model_times)`` of every optimised curve."""
    return ([(name, name, False) for name in map(_name, cfg.optimised)]
            + [(name + MODEL_TIMES_SUFFIX, name, True) for name in map(_name, cfg.shifted)])


def _assemble(cfg: RaceConfig, values: list) -> dict:
    """Curves, best official configurations, grids and acceptance from the second round's results (in the order
    of :func:`_second_round`)."""
    values = iter(values)
    curves = [_curve(name, _race_run(cfg, name).record(), "standard", next(values))
              for name in map(_name, cfg.lineup)]
    official = {}
    for n in cfg.official_nfes:
        official[str(n)] = {split: next(values) for split in ("test", "holdout")}
    grids = []
    for name, solver, _ in _optimisations(cfg):
        rows = []
        for n in cfg.optimise_nfes:
            value = next(values)
            grids.append(value["entry"])
            rows.append((n, "optimised", value["test"], value["holdout"]))
        curves.append(_curve(name, _race_run(cfg, solver).record(), "optimised", rows))
    acceptance = _acceptance(cfg, grids, official, curves)
    chosen = {n: next(g for g in grids if g["name"] == entry["solver"] and _grid_nfe(cfg, g) == int(n))
              for n, entry in acceptance.items()}
    return dict(curves=curves, official=official, grids=grids, acceptance=acceptance, chosen=chosen)


def _third_round(cfg: RaceConfig, part: dict) -> list:
    tasks = []
    for n, grid in part["chosen"].items():
        for split in ("test", "holdout"):
            tasks.append(Task(f"race_{cfg.target}/switches/{n}/{split}", _switches_task,
                              (cfg, grid, part["official"][n][split], split), cost=2.0))
        if cfg.n_population:
            tasks.append(Task(f"race_{cfg.target}/population/{n}/ours", _population_task, (cfg, grid)))
            # The official sweep on the population, one task per method (the best of them is the best overall).
            tasks += [Task(f"race_{cfg.target}/population/{n}/official-{method}", _official_task,
                           (cfg, int(n), "population", (method,)), cost=20.0) for method in cfg.official_methods]
    return tasks


def _finish(cfg: RaceConfig, part: dict, values: list) -> None:
    """Enter the third round's results (in the order of :func:`_third_round`) into the acceptance entries."""
    values = iter(values)
    for n, entry in part["acceptance"].items():
        for split in ("test", "holdout"):
            entry[split]["switches"] = next(values)
        if cfg.n_population:
            ours = next(values)
            best = None
            for candidate in (next(values) for _ in cfg.official_methods):
                # Strictly smaller, in method order: the choice of one best_official() call over all methods.
                if candidate is not None and (best is None or candidate["rms"] < best["rms"]):
                    best = candidate
            entry["population"] = dict(ours, n=cfg.n_population, official_rms=best["rms"],
                                       official_median=best["median"], official_options=best["options"],
                                       ratio=float(ours["rms"] / best["rms"]))


def boundary_sensitivity(target, schedule, x, ref_components, *, radius: float = 1e-2, n_perturbations: int = 20,
                         seed: int = 0, rtol: float = 1e-10) -> np.ndarray:
    """How close each state lies to a boundary between the basins of two modes of the exact flow.

    For each state ``x_i`` at ``T_START``: the fraction of ``n_perturbations`` perturbed states ``x_i + radius u``
    (``u`` uniform on the unit sphere, seeded) whose exact flow (SciPy DOP853 in lambda at ``rtol``) ends at
    ``T_END`` in another mixture component than ``ref_components[i]``, the component of ``x_i``'s own reference
    end state. A non-zero fraction means ``x_i`` is within ``radius`` of a basin boundary: a sampler whose error,
    carried back to ``T_START``, exceeds that distance can send it to the other mode, where its error is about the
    distance between two modes.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if len(x) == 0:
        return np.zeros(0)
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn((len(x), n_perturbations) + tuple(x.shape[1:]), generator=gen, dtype=torch.float64)
    u = u / u.reshape(len(x), n_perturbations, -1).norm(dim=2).reshape((len(x), n_perturbations) + (1,) * (x.ndim - 1))
    xs = (x.unsqueeze(1) + radius * u).reshape((-1,) + tuple(x.shape[1:]))
    result = reference_solve(target.as_model(schedule), schedule, xs, T_START, T_END, rtol=rtol, atol=rtol)
    if not result.success:
        raise RuntimeError(f"reference solve of the perturbed states failed: {result.message}")
    ends = target.component(result.x, T_END, schedule).reshape(len(x), n_perturbations)
    return (ends != torch.as_tensor(ref_components).reshape(-1, 1)).double().mean(dim=1).numpy()


def switch_analysis(target, schedule, x, ref, ours, official, *, allowed_rms: float, cfg: RaceConfig) -> dict:
    """Which states end in another mode than the reference under our sampler (``ours``, end states) and under
    the best official configuration (``official``), how close they lie to a basin boundary
    (:func:`boundary_sensitivity`), and how many switches the acceptance (RMS <= ``allowed_rms``) leaves room for.

    ``allowed_switches`` = ``floor((n allowed_rms^2 - sum of our squared errors over the states we do not switch)
    / mean squared error of a switched state)`` (the switch error of the official configuration when we switch
    none): the number of mode switches our sampler may make on these states and still pass.
    """
    comp_ref = target.component(ref, T_END, schedule)
    switched = {name: torch.nonzero(target.component(xe, T_END, schedule) != comp_ref).flatten().tolist()
                for name, xe in (("ours", ours), ("official", official))}
    hard = sorted(set(switched["ours"]) | set(switched["official"]))
    flips = boundary_sensitivity(target, schedule, x[hard], comp_ref[hard], radius=cfg.boundary_radius,
                                 n_perturbations=cfg.boundary_perturbations, rtol=cfg.reference_rtol)
    err = _errors(ours, ref)
    mask = np.zeros(len(err), dtype=bool)
    mask[switched["ours"]] = True
    if mask.any():
        per_switch = float(np.mean(err[mask] ** 2))
    else:
        official_err = _errors(official, ref)[switched["official"]]
        per_switch = float(np.mean(official_err**2)) if len(official_err) else math.inf
    room = len(err) * allowed_rms**2 - float(np.sum(err[~mask] ** 2))
    allowed = int(max(0.0, math.floor(room / per_switch))) if math.isfinite(per_switch) else None
    return dict(ours=switched["ours"], official=switched["official"],
                flip_fraction={str(i): float(f) for i, f in zip(hard, flips)}, radius=cfg.boundary_radius,
                n_perturbations=cfg.boundary_perturbations, allowed_switches=allowed,
                switch_error=math.sqrt(per_switch) if math.isfinite(per_switch) else None)


def _curve(name, options, grid, rows) -> RaceCurve:
    keys = ("rms", "median", "rms_low", "rms_high", "mode_switches")
    return RaceCurve(name=name, options=dict(options), grid=grid, nfe=np.array([r[0] for r in rows]),
                     skip_types=[r[1] for r in rows],
                     test={k: np.array([r[2][k] for r in rows]) for k in keys},
                     holdout={k: np.array([r[3][k] for r in rows]) for k in keys})


def _acceptance(cfg: RaceConfig, grids, official, curves) -> dict:
    """Per acceptance NFE: the optimised configuration with the smallest validation RMS, its test and holdout
    RMS against the best official on the same states, and whether both ratios are <= 1/3."""
    out = {}
    for n in ACCEPTANCE_NFES:
        if str(n) not in official:
            continue
        candidates = [g for g in grids if _grid_nfe(cfg, g) == n]
        if not candidates:
            continue
        chosen = min(candidates, key=lambda g: g["errors"].get("validation", g["errors"]["train"])["rms"])
        curve = next(c for c in curves if c.name == chosen["name"] and c.grid == "optimised")
        i = int(np.flatnonzero(curve.nfe == n)[0])
        entry = dict(solver=chosen["name"], label=chosen["label"], optimisation_time_s=chosen["optimization_time_s"],
                     selected_by="smallest validation RMS (pool states outside the training subset)")
        ok = True
        for split in ("test", "holdout"):
            ours = getattr(curve, split)
            best = official[str(n)][split]
            ratio = float(ours["rms"][i] / best["rms"])
            ok = ok and ratio <= 1.0 / 3.0
            entry[split] = dict(rms=float(ours["rms"][i]), rms_interval=[float(ours["rms_low"][i]),
                                                                          float(ours["rms_high"][i])],
                                median=float(ours["median"][i]), mode_switches=int(ours["mode_switches"][i]),
                                official_rms=best["rms"], official_median=best["median"],
                                official_options=best["options"], ratio=ratio)
        entry["meets_one_third"] = ok
        out[str(n)] = entry
    return out


def main(argv=None) -> list:
    """``python -m analysis.race``: run the race (no result store: every task is computed) and print its wall
    time, e.g. to compare ``--jobs 1`` with ``--jobs 2`` (with the same, warm reference cache)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.race", description=main.__doc__.split(":")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", choices=RACE_SIZES, default="reduced", help="race configuration (race_config)")
    parser.add_argument("--targets", nargs="+", choices=("2d", "16d"), default=["2d", "16d"])
    parser.add_argument("--jobs", type=int, default=available_cpus(),
                        help="local worker processes (1: in this process)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="a Dask distributed scheduler instead, e.g. tcp://host:8786")
    parser.add_argument("--out", default=None, help="save the results to this JSON (+ NPZ) path")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    from tqdm import tqdm

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tqdm(total=0, desc="race", unit="task", file=sys.stderr) as bar:
        results = race_studies([race_config(t, args.size) for t in args.targets],
                               executor=args.scheduler or args.jobs, bar=bar)
    wall = time.perf_counter() - t0
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else (
        f"{args.jobs} local worker processes" if args.jobs > 1 else "this process")
    print(f"race ({args.size}, targets {' '.join(args.targets)}) on {where}: {wall:.1f} s wall")
    if args.out is not None:
        save_result({r.target: r for r in results}, args.out)
    return results


if __name__ == "__main__":
    # Through the package module, so that worker processes import the task functions from analysis.race.
    from analysis.race import main as _main

    _main()
