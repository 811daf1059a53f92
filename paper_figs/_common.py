"""What the figure scripts share: the run configuration (full / quick), the studies as tasks, the command line.

A *study* (:func:`register_study`) is a list of independent, deterministic tasks (:class:`analysis.tasks.Task`:
one lambda_s of the local-error study, one solver run of a global-error study, one classical solver, one solver's
order verification, ...) and a merge that assembles their results, in a fixed order, into the study's result.
:func:`run_studies` runs the tasks of several studies on one executor (:func:`analysis.tasks.run_tasks`: this
process, local worker processes or Dask) and keeps every task's result under ``OUT/data/tasks/``, written by
this process only and keyed by the task's function, arguments and code: an interrupted run resumes with the
missing tasks, a damaged or foreign file is reported and recomputed, and the results do not depend on where the
tasks ran. Each merged study is also written to ``OUT/data/<name>-<tag>.json`` (+ NPZ) for reading.
:func:`get_study` returns a study from memory or runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from analysis import standard_schedule, target_16d, target_2d
from analysis.global_error import DEFAULT_STEPS, SolverRun, global_error_study, registry_runs
from analysis.local_error import local_error_study
from analysis.results import ResultFolder, fingerprint, save_result
from analysis.targets import T_END
from analysis.tasks import Task, available_cpus, code_fingerprint, one_torch_thread, open_executor, run_tasks
from analysis.verification import WARM_UP_SOLVERS, OrderVerification, VerificationProblem, verify_orders
from analysis.work_precision import DEFAULT_CLASSICAL, ClassicalSolver, work_precision_study

__all__ = ["RunConfig", "config_for", "Study", "register_study", "STUDIES", "run_studies", "get_study",
           "make_figure", "TIMINGS", "build_parser", "executor_from_args", "run_main", "DEFAULT_OUT",
           "TARGET_LABELS", "error_label", "GRID_SKIP_TYPES", "LOF_VARIANTS", "SUMMARY_STUDIES"]

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
TARGET_LABELS = {"2d": "2-D mixture (6 components)", "16d": "16-D mixture (4 comp., full cov.)"}
TARGETS = {"2d": target_2d, "16d": target_16d}
GRID_SKIP_TYPES = ("logSNR", "time_uniform", "time_quadratic")
# lower_order_final variants of figure 5: (key, label, rule(steps) -> bool)
LOF_VARIANTS = (
    ("always", "lower_order_final=True (default: always)", lambda steps: True),
    ("official", "official rule (only if steps < 10)", lambda steps: steps < 10),
    ("off", "lower_order_final=False", lambda steps: False),
)
#: The studies ``summary.json`` is made of (computed by every run of the driver).
SUMMARY_STUDIES = ("orders", "local_2d", "order_2d", "order_16d", "wp_2d", "wp_16d")


@dataclass(frozen=True)
class RunConfig:
    """Sizes of every study (the full run and ``--quick``)."""

    quick: bool
    seed: int
    local_samples: int
    local_hs: tuple
    lam_starts: tuple
    global_samples: int
    global_steps: tuple
    global_max_nfe: int
    global_algorithms_16d: tuple
    grid_nfes: tuple
    grid_samples: int
    classical_scale: int  # number of values taken from each classical sweep
    fig6_samples: int
    fig6_trajectories: int
    verification_solvers: tuple | None  # registry names whose orders are verified (None: all)
    verification_algorithms: tuple
    verification_warm_up: tuple  # solvers whose order is also verified with the driver's warm-up steps
    dpi: int = 150


def config_for(quick: bool, seed: int) -> RunConfig:
    if quick:
        return RunConfig(quick=True, seed=seed, local_samples=16,
                         local_hs=tuple(float(v) for v in np.geomspace(10**-2.5, 1.0, 9)), lam_starts=(0.5,),
                         global_samples=16, global_steps=(3, 4, 5, 6, 8, 10, 12, 16, 20, 24),
                         global_max_nfe=64, global_algorithms_16d=("dpmsolver++",),
                         grid_nfes=(5, 8, 10, 12, 15, 20), grid_samples=16, classical_scale=3,
                         fig6_samples=64, fig6_trajectories=12, verification_solvers=("DPM-Solver-2M",),
                         verification_algorithms=("dpmsolver++",), verification_warm_up=(), dpi=72)
    return RunConfig(quick=False, seed=seed, local_samples=64, dpi=150,
                     local_hs=tuple(float(v) for v in np.geomspace(10**-2.5, 1.0, 16)), lam_starts=(-2.0, 0.5, 3.0),
                     global_samples=128, global_steps=(3, 5) + DEFAULT_STEPS, global_max_nfe=800,
                     global_algorithms_16d=("dpmsolver++", "dpmsolver"),
                     grid_nfes=tuple(range(5, 26)), grid_samples=128, classical_scale=100,
                     fig6_samples=300, fig6_trajectories=40, verification_solvers=None,
                     verification_algorithms=("dpmsolver++", "dpmsolver"), verification_warm_up=WARM_UP_SOLVERS)


def error_label(study_reference: dict, t_end: float = T_END, statistic: str = "median") -> str:
    """Axis label stating the error definition."""
    return (f"{statistic} per-sample L2 error at t = {t_end:g}\n"
            f"vs {study_reference['method']} rtol {study_reference['rtol']:g}")


# -- the study registry ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    """A study: ``tasks(cfg)`` lists its tasks and ``merge(cfg, results, studies)`` assembles their results (in the
    order of the tasks) into the study's result; ``studies`` holds the studies named in ``needs``.

    A study whose tasks depend on one another's results gives ``run(cfg, out_dir, executor, store, bar, timings)``
    instead, which runs its tasks in rounds through :func:`analysis.tasks.run_tasks` with the arguments given and
    returns the study's result.
    """

    name: str
    tasks: Callable | None = None
    merge: Callable | None = None
    needs: tuple = ()
    run: Callable | None = None


#: Every registered study by name (figure modules register theirs when imported).
STUDIES: dict = {}


def register_study(name: str, tasks=None, merge=None, *, needs=(), run=None) -> Study:
    """Register a study (see :class:`Study`): either ``tasks`` and ``merge`` or ``run``."""
    if (run is None) == (tasks is None or merge is None):
        raise ValueError(f"study {name!r}: give either tasks and merge, or run")
    STUDIES[name] = Study(name, tasks, merge, tuple(needs), run)
    return STUDIES[name]


_MEMO: dict = {}
#: Per study computed in this process: number of tasks, how many were computed (not read from the store), and
#: the summed wall and CPU seconds of those tasks (spread over the workers).
TIMINGS: dict = {}


def _with_needs(names) -> list:
    out = []

    def add(name):
        if name not in STUDIES:
            raise ValueError(f"unknown study {name!r}; registered: {', '.join(sorted(STUDIES))}")
        for need in STUDIES[name].needs:
            add(need)
        if name not in out:
            out.append(name)

    for name in names:
        add(name)
    return out


def run_studies(names, out_dir: str, cfg: RunConfig, executor=None, *, bar=None, on_study=None) -> dict:
    """Compute (or load) the studies ``names`` and the studies they need, with all their tasks on one executor.

    Parameters
    ----------
    names : sequence of str
        Registered study names.
    out_dir : str
        Output folder: task results go to ``out_dir/data/tasks/``, merged studies to ``out_dir/data/``.
    cfg : RunConfig
    executor
        See :func:`analysis.tasks.open_executor` (``None``: this process).
    bar : tqdm progress bar, optional
        Advanced by every task.
    on_study : callable, optional
        ``on_study(name)`` in this process as soon as a study is complete (e.g. to make a figure meanwhile).

    Returns
    -------
    dict
        Study name -> result.
    """
    names = _with_needs(names)
    done: dict = {}
    store = ResultFolder(os.path.join(out_dir, "data", "tasks"))

    def finish(name, study, identity):
        tag = fingerprint(name, identity)[:16]
        save_result(study, os.path.join(out_dir, "data", f"{name}-{tag}.json"), key=f"{name}#{tag}")
        _MEMO[(name, os.path.abspath(out_dir), cfg)] = done[name] = study
        if on_study is not None:
            on_study(name)

    for name in names:
        key = (name, os.path.abspath(out_dir), cfg)
        if key in _MEMO:
            done[name] = _MEMO[key]
            if on_study is not None:
                on_study(name)
    flat = [n for n in names if n not in done and STUDIES[n].run is None]
    tasks = {n: list(STUDIES[n].tasks(cfg)) for n in flat}
    parts = {n: [None] * len(tasks[n]) for n in flat}
    missing = {n: len(tasks[n]) for n in flat}
    owner = [(n, j) for n in flat for j in range(len(tasks[n]))]
    timings: dict = {}

    def merge_ready():
        for n in flat:
            if n not in done and missing[n] == 0 and all(need in done for need in STUDIES[n].needs):
                finish(n, STUDIES[n].merge(cfg, parts[n], {need: done[need] for need in STUDIES[n].needs}),
                       [t.key for t in tasks[n]])
                merge_ready()
                return

    def on_result(i, value):
        n, j = owner[i]
        parts[n][j] = value
        missing[n] -= 1
        merge_ready()

    with open_executor(executor) as ex:
        merge_ready()  # studies without tasks
        run_tasks([t for n in flat for t in tasks[n]], ex, store=store, bar=bar, on_result=on_result,
                  timings=timings)
        for n in flat:
            _record_timings(n, len(tasks[n]), [timings[t.label] for t in tasks[n] if t.label in timings])
        for n in names:
            if n not in done and STUDIES[n].run is not None:
                own: dict = {}
                study = STUDIES[n].run(cfg, out_dir, ex, store, bar, own)
                _record_timings(n, None, list(own.values()))
                finish(n, study, [cfg, code_fingerprint(STUDIES[n].run.__module__)])
    return {n: done[n] for n in names}


def _record_timings(name: str, n_tasks: int | None, computed: list) -> None:
    TIMINGS[name] = dict(tasks=n_tasks, computed=len(computed),
                         task_wall_s=round(sum(s["wall_s"] for s in computed), 2),
                         task_cpu_s=round(sum(s["cpu_s"] for s in computed), 2))


def get_study(name: str, out_dir: str, cfg: RunConfig, executor=None):
    """The study ``name`` for this configuration: from memory, or run now (:func:`run_studies`, whose task store
    holds what an earlier run in ``out_dir`` computed with the same configuration and code)."""
    key = (name, os.path.abspath(out_dir), cfg)
    if key not in _MEMO:
        run_studies([name], out_dir, cfg, executor)
    return _MEMO[key]


# -- studies ---------------------------------------------------------------------------------------------------
def _local_task(cfg: RunConfig, target: str, lam_s: float):
    return local_error_study(TARGETS[target](), standard_schedule(), target_name=target, n_samples=cfg.local_samples,
                             seed=cfg.seed, lam_starts=(lam_s,), hs=cfg.local_hs)


def _local_tasks(cfg: RunConfig, target: str) -> list:
    return [Task(f"local_{target}/lam_s={lam:g}", _local_task, (cfg, target, float(lam))) for lam in cfg.lam_starts]


def _merge_local(cfg: RunConfig, parts: list, studies: dict):
    """One study over every lambda_s: curves in the order of ``lam_starts``, reference NFE summed (one reference
    solve per lambda_s), as :func:`analysis.local_error.local_error_study` does in one call."""
    return dataclasses.replace(parts[0], lam_starts=[lam for p in parts for lam in p.lam_starts],
                               curves=[c for p in parts for c in p.curves],
                               reference=dict(parts[0].reference, nfe=sum(p.reference["nfe"] for p in parts)))


def _global_task(target: str, runs: tuple, kwargs: dict):
    return global_error_study(TARGETS[target](), standard_schedule(), list(runs), target_name=target, **kwargs)


def _merge_global(cfg: RunConfig, parts: list, studies: dict):
    """One study with every run's curves, in the order of the runs (all tasks share samples and reference)."""
    return dataclasses.replace(parts[0], curves=[c for p in parts for c in p.curves])


def _order_tasks(cfg: RunConfig, target: str) -> list:
    algorithms = ("dpmsolver++", "dpmsolver") if target == "2d" else cfg.global_algorithms_16d
    kwargs = dict(nfes=cfg.global_steps, budget="steps", max_nfe=cfg.global_max_nfe, n_samples=cfg.global_samples,
                  seed=cfg.seed)
    tasks = []
    for run in registry_runs(algorithm_types=algorithms):
        # Cost ~ model calls: singlestep rules spend `order` calls per step.
        cost = int(run.options.get("order", 1)) if run.options.get("method", "").startswith("singlestep") else 1
        tasks.append(Task(f"order_{target}/{run.label}", _global_task, (target, (run,), kwargs), cost=cost))
    return tasks


def _grid_tasks(cfg: RunConfig, target: str = "2d") -> list:
    """One task per solver, skip type and lower_order_final rule (one solver run per NFE: the official rule
    depends on the number of steps)."""
    tasks = []
    kwargs = dict(n_samples=cfg.grid_samples, seed=cfg.seed)
    for name in ("DPM-Solver-2M", "DPM-Solver-3M"):
        base = dict(registry_runs([name], ("dpmsolver++",))[0].options)
        for skip in GRID_SKIP_TYPES:
            for key, _, rule in LOF_VARIANTS:
                runs = tuple(SolverRun(label=f"{name}|{skip}|{key}|{n}", name=name, budgets=(n,),
                                       options=dict(base, skip_type=skip, lower_order_final=rule(n)))
                             for n in cfg.grid_nfes)
                tasks.append(Task(f"grids_{target}/{name}|{skip}|{key}", _global_task, (target, runs, kwargs)))
    return tasks


def _classical_task(target: str, solver: ClassicalSolver, n_samples: int, seed: int):
    # No DPM-Solver runs here (dpm_runs=[]): the merge takes them from the order study on the same samples.
    return work_precision_study(TARGETS[target](), standard_schedule(), target_name=target, n_samples=n_samples,
                                seed=seed, classical=[solver], dpm_runs=[])


def _wp_tasks(cfg: RunConfig, target: str) -> list:
    tasks = []
    for c in DEFAULT_CLASSICAL:
        solver = ClassicalSolver(c.name, c.backend, c.method, c.parameter, tuple(c.values[:cfg.classical_scale]))
        tasks.append(Task(f"wp_{target}/{c.name}", _classical_task, (target, solver, cfg.global_samples, cfg.seed)))
    return tasks


def _merge_wp(target: str, parts: list, studies: dict):
    """The classical curves of every task with the DPM-Solver curves of the order study (the same samples)."""
    return dataclasses.replace(parts[0], dpm=studies[f"order_{target}"],
                               classical=[c for p in parts for c in p.classical])


def _verification_task(name: str, algorithm_type: str, warm_up: tuple):
    return verify_orders([name], [algorithm_type], warm_up=warm_up, vp=VerificationProblem(cache_dir=None))


def _verification_tasks(cfg: RunConfig) -> list:
    from expsolver import REGISTRY

    names = sorted(REGISTRY) if cfg.verification_solvers is None else cfg.verification_solvers
    tasks = []
    for name in names:
        for algorithm_type in cfg.verification_algorithms:
            config = REGISTRY[name]
            cost = config.order * (config.order if config.kind == "singlestep" else 1)
            tasks.append(Task(f"orders/{name}|{algorithm_type}", _verification_task,
                              (name, algorithm_type, tuple(cfg.verification_warm_up)), cost=cost))
    return tasks


def _merge_verification(cfg: RunConfig, parts: list, studies: dict) -> OrderVerification:
    """The measurements in the order of one :func:`analysis.verification.verify_orders` call: local, global,
    then global with the warm-up, each by solver and algorithm type."""
    groups = [("local", "exact"), ("global", "exact"), ("global", "warm-up")]
    measurements = [m for group in groups for p in parts for m in p.measurements if (m.kind, m.start) == group]
    return dataclasses.replace(parts[0], measurements=measurements)


register_study("local_2d", lambda cfg: _local_tasks(cfg, "2d"), _merge_local)
for _target in TARGETS:
    register_study(f"order_{_target}", lambda cfg, t=_target: _order_tasks(cfg, t), _merge_global)
register_study("grids_2d", _grid_tasks, _merge_global)
for _target in TARGETS:
    register_study(f"wp_{_target}", lambda cfg, t=_target: _wp_tasks(cfg, t),
                   lambda cfg, parts, studies, t=_target: _merge_wp(t, parts, studies), needs=(f"order_{_target}",))
register_study("orders", _verification_tasks, _merge_verification)


# -- figures and the command line ------------------------------------------------------------------------------
def make_figure(name: str, out_dir: str, quick: bool, seed: int) -> dict:
    """Make the figure ``paper_figs.<name>`` (its studies from memory or computed now) and return its info with
    its wall and CPU seconds."""
    module = importlib.import_module(f"paper_figs.{name}")
    wall, cpu = time.perf_counter(), time.process_time()
    with one_torch_thread():
        info = module.make(out_dir, quick, seed)
    info["seconds"] = dict(wall_s=round(time.perf_counter() - wall, 2), cpu_s=round(time.process_time() - cpu, 2))
    return info


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small studies (CI smoke run, < 30 s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder for PDF, PNG and data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample generators (>= 0)")
    parser.add_argument("--jobs", type=int, default=available_cpus(),
                        help="local worker processes for the study tasks (1: in this process; default: the CPUs "
                             "this process may use)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the study tasks on a Dask distributed cluster instead, e.g. tcp://host:8786 "
                             "(needs the extra 'distributed')")
    return parser


def executor_from_args(parser: argparse.ArgumentParser, args):
    """The executor specification of ``--jobs`` / ``--scheduler`` (see :func:`analysis.tasks.open_executor`)."""
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    return args.scheduler if args.scheduler is not None else args.jobs


def run_main(module_make, description: str, argv=None) -> dict:
    """``main()`` of a single figure script: parse the arguments, compute the figure's studies (``STUDIES`` of
    its module) on the chosen executor, make the figure, print where it went."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    executor = executor_from_args(parser, args)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    studies = getattr(sys.modules[module_make.__module__], "STUDIES", ())
    if studies:
        run_studies(studies, args.out, config_for(args.quick, args.seed), executor)
    info = module_make(args.out, args.quick, args.seed)
    print(f"{', '.join(info.get('files', []))} ({time.perf_counter() - t0:.1f} s)")
    return info
