"""What the figure scripts share: the run configuration (full / quick), the command line, and the studies.

Every study a figure needs is computed once per output folder by :func:`get_study`, saved as JSON + NPZ under
``OUT/data/`` with a fingerprint of its configuration and of the library's source code, and loaded from there by
the other figures (and by a later run with the same configuration and code). Global-error points go through a
:class:`analysis.results.ResultStore`, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from analysis import T_END, standard_schedule, target_16d, target_2d
from analysis.global_error import DEFAULT_STEPS, SolverRun, global_error_study, registry_runs
from analysis.local_error import local_error_study
from analysis.results import ResultStore, fingerprint, load_result, save_result
from analysis.verification import WARM_UP_SOLVERS, VerificationProblem, verify_orders
from analysis.work_precision import work_precision_study

__all__ = ["RunConfig", "config_for", "get_study", "compute_studies", "make_figure", "TIMINGS", "build_parser",
           "run_main", "DEFAULT_OUT", "TARGET_LABELS", "error_label", "code_fingerprint", "GRID_SKIP_TYPES",
           "LOF_VARIANTS"]

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


def code_fingerprint() -> str:
    """Hash of the source of ``expsolver`` and of the study modules of ``analysis``: a cached study is reused only
    by the same code."""
    if _CODE_FP:
        return _CODE_FP[0]
    import analysis
    import expsolver

    parts = []
    for pkg, only in ((expsolver, None), (analysis, _STUDY_MODULES)):
        root = os.path.dirname(pkg.__file__)
        for folder, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                if name.endswith(".py") and (only is None or name in only):
                    with open(os.path.join(folder, name), "rb") as fh:
                        parts.append(name + fh.read().decode("utf-8", "replace"))
    _CODE_FP.append(fingerprint(*parts)[:16])
    return _CODE_FP[0]


# Computed once per run (and handed to the helper process), so that a source edit during a run cannot split it.
_CODE_FP: list = []


# The analysis modules whose code determines study data (plot styles and summaries do not).
_STUDY_MODULES = ("targets.py", "order.py", "results.py", "local_error.py", "global_error.py", "work_precision.py",
                  "verification.py")


# -- studies ---------------------------------------------------------------------------------------------------
def _local(cfg: RunConfig, out_dir: str, target: str):
    return local_error_study(TARGETS[target](), standard_schedule(), target_name=target, n_samples=cfg.local_samples,
                             seed=cfg.seed, lam_starts=cfg.lam_starts, hs=cfg.local_hs)


def _order(cfg: RunConfig, out_dir: str, target: str):
    algorithms = ("dpmsolver++", "dpmsolver") if target == "2d" else cfg.global_algorithms_16d
    store = ResultStore(os.path.join(out_dir, "data", f"order_{target}.store.json"),
                        config=dict(asdict(cfg), code=code_fingerprint(), target=target))
    return global_error_study(TARGETS[target](), standard_schedule(), registry_runs(algorithm_types=algorithms),
                              target_name=target, nfes=cfg.global_steps, budget="steps",
                              max_nfe=cfg.global_max_nfe, n_samples=cfg.global_samples, seed=cfg.seed, store=store)


def _work_precision(cfg: RunConfig, out_dir: str, target: str):
    from analysis.work_precision import DEFAULT_CLASSICAL, ClassicalSolver

    classical = [ClassicalSolver(c.name, c.backend, c.method, c.parameter,
                                 tuple(c.values[:cfg.classical_scale])) for c in DEFAULT_CLASSICAL]
    return work_precision_study(TARGETS[target](), standard_schedule(), target_name=target,
                                n_samples=cfg.global_samples, seed=cfg.seed, classical=classical,
                                dpm_study=get_study(f"order_{target}", out_dir, cfg))


def _grids(cfg: RunConfig, out_dir: str, target: str = "2d"):
    runs = []
    for name in ("DPM-Solver-2M", "DPM-Solver-3M"):
        base = dict(registry_runs([name], ("dpmsolver++",))[0].options)
        for skip in GRID_SKIP_TYPES:
            for key, _, rule in LOF_VARIANTS:
                for n in cfg.grid_nfes:
                    # One run per NFE: the official rule depends on the number of steps.
                    runs.append(SolverRun(label=f"{name}|{skip}|{key}|{n}", name=name, budgets=(n,),
                                          options=dict(base, skip_type=skip, lower_order_final=rule(n))))
    store = ResultStore(os.path.join(out_dir, "data", f"grids_{target}.store.json"),
                        config=dict(asdict(cfg), code=code_fingerprint(), target=target))
    return global_error_study(TARGETS[target](), standard_schedule(), runs, target_name=target,
                              n_samples=cfg.grid_samples, seed=cfg.seed, store=store)


def _orders(cfg: RunConfig, out_dir: str):
    return verify_orders(cfg.verification_solvers, cfg.verification_algorithms, warm_up=cfg.verification_warm_up,
                         vp=VerificationProblem(cache_dir=None))


_STUDIES = {"local_2d": lambda c, o: _local(c, o, "2d"),
            "order_2d": lambda c, o: _order(c, o, "2d"),
            "order_16d": lambda c, o: _order(c, o, "16d"),
            "wp_2d": lambda c, o: _work_precision(c, o, "2d"),
            "wp_16d": lambda c, o: _work_precision(c, o, "16d"),
            "grids_2d": lambda c, o: _grids(c, o, "2d"),
            "orders": _orders}
STUDY_NAMES = tuple(_STUDIES)
_MEMO: dict = {}
#: Wall and CPU seconds of every study computed in this process (studies nested in others are included in both).
TIMINGS: dict = {}


def get_study(name: str, out_dir: str, cfg: RunConfig):
    """The study ``name`` for this configuration: from memory, from ``out_dir/data`` if computed there before
    with the same configuration and code, or computed now (and saved)."""
    tag = fingerprint(name, repr(asdict(cfg)), code_fingerprint())[:16]
    key = (name, os.path.abspath(out_dir), tag)
    if key in _MEMO:
        return _MEMO[key]
    path = os.path.join(out_dir, "data", f"{name}-{tag}.json")
    if os.path.exists(path):
        study = load_result(path)
    else:
        wall, cpu = time.perf_counter(), time.process_time()
        study = _STUDIES[name](cfg, out_dir)
        TIMINGS[name] = dict(wall_s=round(time.perf_counter() - wall, 2), cpu_s=round(time.process_time() - cpu, 2))
        save_result(study, path)
    _MEMO[key] = study
    return study


def compute_studies(names, out_dir: str, quick: bool, seed: int, code: str | None = None) -> dict:
    """Compute (or load) the named studies and return this process's timings (the driver's helper process);
    ``code`` is the caller's :func:`code_fingerprint`."""
    torch.set_num_threads(1)
    if code is not None:
        _CODE_FP[:] = [code]
    cfg = config_for(quick, seed)
    for name in names:
        get_study(name, out_dir, cfg)
    return dict(TIMINGS)


def make_figure(name: str, out_dir: str, quick: bool, seed: int, code: str | None = None) -> dict:
    """Make the figure ``paper_figs.<name>`` and return its info with its wall and CPU seconds (also the entry
    point of the driver's helper process; ``code`` is the caller's :func:`code_fingerprint`)."""
    torch.set_num_threads(1)
    if code is not None:
        _CODE_FP[:] = [code]
    module = importlib.import_module(f"paper_figs.{name}")
    wall, cpu = time.perf_counter(), time.process_time()
    info = module.make(out_dir, quick, seed)
    info["seconds"] = dict(wall_s=round(time.perf_counter() - wall, 2), cpu_s=round(time.process_time() - cpu, 2))
    return info


# -- command line ----------------------------------------------------------------------------------------------
def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small studies (CI smoke run, < 30 s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder for PDF, PNG and data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample generators")
    return parser


def run_main(module_make, description: str, argv=None) -> dict:
    """``main()`` of a single figure script: parse the arguments, make the figure, print where it went."""
    args = build_parser(description).parse_args(argv)
    if args.seed < 0:
        raise SystemExit(f"--seed must be >= 0, got {args.seed}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    info = module_make(args.out, args.quick, args.seed)
    print(f"{', '.join(info.get('files', []))} ({time.perf_counter() - t0:.1f} s)")
    return info
