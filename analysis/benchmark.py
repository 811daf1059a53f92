"""Performance benchmark: solver overhead, exact-oracle throughput, reference cost, end-to-end times.

Run ``python -m analysis.benchmark`` (``--quick`` for a smoke run, ``--help`` for the options). It prints the
machine (CPU, cores, torch threads, load average) and one Markdown table per section, and saves everything as a
:class:`BenchmarkResult` to JSON (``--out``). Times are medians over ``--repeats`` repetitions.

1. **Solver overhead.** ``sample()`` with a model that costs nothing (it returns one precomputed tensor, the exact
   noise prediction at the initial state) against the same number of exact-oracle calls
   (:meth:`expsolver.GaussianMixture.eps`) on the very inputs that run passed to the model (recorded first): the
   ratio is the sampler's own work (grid, coefficients, data prediction, state updates, finiteness checks) as a
   fraction of model time. The two are timed alternately, so a change of machine load hits both. Default case: the
   16-D four-component full-covariance mixture of :func:`analysis.targets.target_16d`, 10,000 samples, 20 steps,
   DPM-Solver++ (data prediction) multistep order 3 and singlestep (DPM-Solver-fast) order 3, float64 and float32,
   the linear schedule and a discrete one (1000 betas ``linspace(1e-4, 0.02)``), 1 thread and all cores.
   Reference point: the official implementation spends 7 % (linear) and 23 % (discrete) of model time on
   its own work in float64 at one thread. The same cells also time the model-buffer protections
   (:class:`expsolver.models.ModelGuard`, part of the sampler's own work: the initial state copied once, per
   call the input's version counter read twice and the output's reference and storage counts checked) as the
   median difference between adjacent runs of the same ``sample()`` with and without them
   (:func:`protection_times`), and the one state copy per call that a model sharing its buffers costs on top,
   each as a fraction of model time (target: protections under :data:`TARGET_PROTECTION` of model time).
2. **Oracle throughput.** Exact eps evaluations per second at one time for the whole batch (what samplers pass)
   for a few ``(N, d, K)`` up to ``100,000 x 64 x 16``, against :func:`naive_eps`, a straightforward
   per-component implementation written here as the baseline (one Cholesky factorisation and solve per component
   and call, no cached eigendecomposition). Their largest difference is reported as a correctness check.
3. **Reference cost** (one torch thread). For SciPy RK45/DOP853 and torchdiffeq dopri5/dopri8, in ``lambda`` and
   in ``t``, the loosest tolerance ``rtol = atol`` on a decade ladder whose result is within ``1e-9`` (max abs
   error) of a tight solution (DOP853 in lambda at ``1e-13``, cross-checked against dopri8), with its RHS
   evaluations and seconds, on 1,000 samples of the 2-D and 16-D standard targets from ``t = 1`` to ``1e-3``;
   and whether the default
   :func:`expsolver.reference_solve` reaches ``1e-9`` in at most 600 RHS evaluations.
4. **End to end.** Wall time of the figure run from scratch (``python -m paper_figs``, into a fresh temporary
   folder, so no cached study is reused): its ``--quick`` run by default (``--figs full`` for the full run, which
   alone takes several minutes on 2 cores; ``--figs skip``), with ``--with-tests`` of the test suite
   (``python -m pytest -q -n auto``, the README's command, and its long confirmation tests, ``-m slow``), and
   with ``--scaling`` of the parallel runs on one and on several workers
   (:func:`scaling_rows`).

The whole default run takes about three minutes on an otherwise idle 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import GaussianMixture, VPDiscrete, VPLinear, reference_solve, sample
from expsolver import models
from expsolver.models import ModelGuard

from .results import provenance, result_type, save_result

__all__ = ["BenchmarkConfig", "BenchmarkResult", "OverheadRow", "BaselineRow", "baseline_section", "OracleRow", "ReferenceRow", "DefaultReferenceCheck",
           "EndToEndRow", "config_for", "run_benchmark", "naive_eps", "machine_info", "markdown", "main",
           "protection_times", "OFFICIAL_OVERHEAD", "TARGET_OVERHEAD", "TARGET_PROTECTION",
           "PROTECTION_PAIRS_PER_REPEAT"]

#: Fraction of model time the official implementation spends on its own work (float64, 1 thread).
OFFICIAL_OVERHEAD = {"linear": 0.07, "discrete": 0.23}
#: The overhead target for float64 (linear and discrete schedules).
TARGET_OVERHEAD = 0.05
#: Largest fraction of model time the model-buffer protections may cost (float64, 1 thread).
TARGET_PROTECTION = 0.01
#: Paired runs with and without the protections per repetition (:func:`protection_times`).
PROTECTION_PAIRS_PER_REPEAT = 4
ACCURACY = 1e-9
REFERENCE_NFE_BUDGET = 600
DISCRETE_BETAS = (1e-4, 0.02, 1000)  # np.linspace arguments
SECTIONS = ("overhead", "oracle", "reference", "e2e")
OVERHEAD_METHODS = {
    "multistep": dict(method="multistep", order=3),
    "singlestep": dict(method="singlestep", order=3),
}
REFERENCE_METHODS = (("scipy", "RK45"), ("scipy", "DOP853"), ("torchdiffeq", "dopri5"), ("torchdiffeq", "dopri8"))
TOLERANCE_LADDER = (1e-8, 1e-9, 1e-10, 1e-11, 1e-12)


# -- configuration and results ------------------------------------------------------------------------------------
@result_type
@dataclass(frozen=True)
class BenchmarkConfig:
    """Sizes of every section (the full run and ``--quick``)."""

    quick: bool
    seed: int
    repeats: int
    threads: tuple
    overhead_samples: int
    overhead_steps: int
    overhead_dtypes: tuple
    oracle_grid: tuple  # of (N, d, K)
    reference_samples: int
    reference_targets: tuple
    reference_methods: tuple  # of (backend, method)
    reference_variables: tuple
    reference_truth_tol: float
    figs: str
    with_tests: bool
    scaling: bool = False
    baseline: str | None = None  # another checkout whose overhead section is timed against this one's
    baseline_rounds: int = 3


def config_for(quick: bool, *, seed: int = 0, repeats: int | None = None, threads=None, figs: str = "quick",
               with_tests: bool = False, scaling: bool = False, baseline: str | None = None,
               baseline_rounds: int = 3) -> BenchmarkConfig:
    """The full configuration (acceptance sizes) or the ``--quick`` one (seconds; used by the test)."""
    threads = tuple(threads) if threads else ((1,) if quick else _default_threads())
    if quick:
        return BenchmarkConfig(
            quick=True, seed=seed, repeats=repeats or 2, threads=threads, overhead_samples=256, overhead_steps=20,
            overhead_dtypes=("float64", "float32"), oracle_grid=((1_000, 2, 6), (1_000, 16, 4)),
            reference_samples=32, reference_targets=("2d",), reference_methods=(("torchdiffeq", "dopri5"),),
            reference_variables=("lambda",), reference_truth_tol=1e-11, figs=figs, with_tests=with_tests,
            scaling=scaling, baseline=baseline, baseline_rounds=baseline_rounds)
    return BenchmarkConfig(
        quick=False, seed=seed, repeats=repeats or 5, threads=threads, overhead_samples=10_000, overhead_steps=20,
        overhead_dtypes=("float64", "float32"),
        oracle_grid=((10_000, 2, 6), (10_000, 16, 4), (100_000, 16, 4), (10_000, 64, 16), (100_000, 64, 16)),
        reference_samples=1_000, reference_targets=("2d", "16d"), reference_methods=REFERENCE_METHODS,
        reference_variables=("lambda", "t"), reference_truth_tol=1e-13, figs=figs, with_tests=with_tests,
        scaling=scaling, baseline=baseline, baseline_rounds=baseline_rounds)


def _default_threads() -> tuple:
    cores = os.cpu_count() or 1
    return (1,) if cores == 1 else (1, cores)


@result_type
@dataclass
class OverheadRow:
    """Solver overhead of one case: ``ratio = sample_s / oracle_s`` (medians)."""

    schedule: str
    method: str
    options: dict
    dtype: str
    threads: int
    n: int
    d: int
    K: int
    steps: int
    nfe: int
    sample_s: float  # sample() with the zero-cost model (median wall time)
    oracle_s: float  # the same number of oracle calls on the same inputs (median wall time)
    ratio: float  # sample_s / oracle_s
    cpu_ratio: float  # the same with process CPU time (less sensitive to other processes on the machine)
    overhead_per_nfe_us: float
    sample_times: list = field(default_factory=list)
    oracle_times: list = field(default_factory=list)
    sample_cpu_times: list = field(default_factory=list)
    oracle_cpu_times: list = field(default_factory=list)
    protection_s: float = math.nan  # what the model-buffer protections add to sample_s (median paired difference)
    protection_ratio: float = math.nan  # protection_s / oracle_s
    copy_s: float = math.nan  # one state copy per call: the extra price of a model that shares its buffers
    copy_ratio: float = math.nan  # copy_s / oracle_s
    protection_times: list = field(default_factory=list)  # the paired differences (protection_times())
    copy_times: list = field(default_factory=list)


@result_type
@dataclass
class OracleRow:
    """Exact eps throughput for one ``(N, d, K)``: evaluations (samples) per second, fast and naive."""

    N: int
    d: int
    K: int
    dtype: str
    threads: int
    fast_s: float
    naive_s: float
    fast_evals_per_s: float
    naive_evals_per_s: float
    speedup: float
    max_abs_diff: float


@result_type
@dataclass
class ReferenceRow:
    """Cost of one reference method to reach ``ACCURACY`` (max abs error vs the tight solution)."""

    target: str
    backend: str
    method: str
    variable: str
    reached: bool
    tol: float | None  # loosest ladder tolerance that reached it (None if none did)
    nfe: int | None
    seconds: float | None
    error: float | None
    tried: list = field(default_factory=list)  # [tol, nfe, seconds, error, status] per solve


@result_type
@dataclass
class DefaultReferenceCheck:
    """The default ``reference_solve`` call on one target: ``ok`` if within ``ACCURACY`` in ``<= budget`` RHS."""

    target: str
    backend: str
    method: str
    variable: str
    rtol: float
    atol: float
    nfe: int
    seconds: float
    error: float
    ok: bool
    budget: int
    methods_within_budget: list  # "backend/method/variable" reaching ACCURACY in <= budget (from the table)
    truth_nfe: int
    truth_crosscheck: float  # max |DOP853 - dopri8| of the two tight solutions


@result_type
@dataclass
class EndToEndRow:
    name: str
    command: str
    seconds: float | None
    returncode: int | None
    note: str = ""


@result_type
@dataclass
class BaselineRow:
    """The solver overhead of this source and of a baseline checkout, measured alternately in one run:
    ``relative = ratio / baseline_ratio`` (each the median over the rounds of the overhead ratio; below 1 this
    source spends less of the model time on its own work)."""

    schedule: str
    method: str
    dtype: str
    threads: int
    ratio: float
    baseline_ratio: float
    relative: float
    ratios: list = field(default_factory=list)
    baseline_ratios: list = field(default_factory=list)


@result_type
@dataclass
class BenchmarkResult:
    """Everything one benchmark run measured, with the machine and configuration."""

    date: str
    machine: dict
    config: BenchmarkConfig
    overhead: list
    oracle: list
    reference: list
    reference_default: list
    end_to_end: list
    notes: list
    provenance: dict
    total_seconds: float
    baseline: list = field(default_factory=list)  # of BaselineRow
    baseline_source: dict = field(default_factory=dict)  # path and commit of the baseline checkout


# -- machine ------------------------------------------------------------------------------------------------------
def machine_info() -> dict:
    """CPU model, cores, memory, torch threads, load average, OS, library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="utf-8") as fh:
            memory_gb = round(int(fh.readline().split()[1]) / 2**20, 1)
    load = None
    with contextlib.suppress(OSError, AttributeError):
        load = [round(v, 2) for v in os.getloadavg()]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "torch_threads_default": torch.get_num_threads(),
        "load_average_1_5_15min": load, "os": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "cuda": torch.cuda.is_available(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def _machine_line(m: dict) -> str:
    load = m.get("load_average_1_5_15min")
    load_text = "n/a" if load is None else "/".join(f"{v:g}" for v in load)
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}; Python {m['python']}, "
            f"torch {m['torch']}, numpy {m['numpy']}; load average (1/5/15 min) {load_text}")


@contextlib.contextmanager
def _threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _median(values) -> float:
    return float(statistics.median(values))


# -- 1. solver overhead -------------------------------------------------------------------------------------------
def overhead_mixture() -> tuple[GaussianMixture, str]:
    """The 16-D four-component full-covariance target (``analysis.targets.target_16d``)."""
    from .targets import target_16d

    return target_16d(), "analysis.targets.target_16d"


def benchmark_schedules() -> dict:
    """``{"linear": VPLinear(), "discrete": VPDiscrete(betas=linspace(1e-4, 0.02, 1000))}``."""
    lo, hi, n = DISCRETE_BETAS
    return {"linear": VPLinear(), "discrete": VPDiscrete(betas=np.linspace(lo, hi, n))}


class _Replay:
    """The zero-cost model: returns one precomputed tensor; optionally records the inputs it was called with."""

    def __init__(self, output: torch.Tensor, record: bool = False):
        self.output = output
        self.calls = [] if record else None

    def __call__(self, x, t):
        if self.calls is not None:
            self.calls.append((x.clone(), t.clone()))
        return self.output


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _wall_and_cpu(fn) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


class _PassThroughGuard(ModelGuard):
    """:class:`expsolver.models.ModelGuard` with every protection off: inputs passed and outputs kept as they
    are (for timing the protections only)."""

    def model_input(self, x, pool=None):
        return x, None

    def check_input(self, x, passed, version, where):
        return None

    def keep(self, out, x, where):
        return out


@contextlib.contextmanager
def _protections_off():
    """Model wrappers built inside use :class:`_PassThroughGuard`."""
    saved = models.ModelGuard
    models.ModelGuard = _PassThroughGuard
    try:
        yield
    finally:
        models.ModelGuard = saved


def protection_times(run, pairs: int) -> list:
    """What the model-buffer protections cost ``run()`` (a sampler run), in seconds: for each of ``pairs``
    adjacent pairs, the wall time with the protections minus the time of the same run with them off
    (:class:`_PassThroughGuard`), the two in alternating order so that neither always runs on a warmer machine.
    The protections' own work is a few tenths of a millisecond in a run of tens, so only such paired
    differences of the real run resolve it (a replay of the guard on its own would see other memory)."""
    diffs = []
    for i in range(pairs):
        if i % 2 == 0:
            guarded = _time(run)
        with _protections_off():
            unguarded = _time(run)
        if i % 2 == 1:
            guarded = _time(run)
        diffs.append(guarded - unguarded)
    return diffs


def _copy_time(calls: list) -> float:
    """One copy of each recorded model input: what a model that shares its buffers costs on top."""
    start = time.perf_counter()
    for x, _ in calls:
        x.clone()
    return time.perf_counter() - start


def overhead_case(mixture: GaussianMixture, schedule, schedule_name: str, method: str, options: dict,
                  dtype: torch.dtype, threads: int, n: int, steps: int, repeats: int, seed: int) -> OverheadRow:
    """One cell of section 1 (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, mixture.d, generator=gen, dtype=torch.float64).to(dtype)
    with _threads(threads):
        t_start = schedule.T
        eps0 = mixture.eps(x, t_start, schedule)  # a realistic, precomputed model output
        recorder = _Replay(eps0, record=True)
        result = sample(recorder, schedule, x, steps=steps, **options)
        calls = recorder.calls
        if len(calls) != result.nfe:
            raise RuntimeError(f"recorded {len(calls)} model calls but sample() reported nfe={result.nfe}")
        zero = _Replay(eps0)

        def run_sampler():
            sample(zero, schedule, x, steps=steps, **options)

        def run_oracle():
            for xi, ti in calls:
                mixture.eps(xi, ti, schedule)

        run_sampler()
        run_oracle()  # warm-up (parameter caches, workspaces, allocator)
        sample_times, oracle_times, sample_cpu, oracle_cpu, copy_times = [], [], [], [], []
        for _ in range(repeats):  # alternate, so that a change of machine load affects all
            wall, cpu = _wall_and_cpu(run_sampler)
            sample_times.append(wall)
            sample_cpu.append(cpu)
            wall, cpu = _wall_and_cpu(run_oracle)
            oracle_times.append(wall)
            oracle_cpu.append(cpu)
            copy_times.append(_copy_time(calls))
        guard_times = protection_times(run_sampler, PROTECTION_PAIRS_PER_REPEAT * repeats)
    sample_s, oracle_s = _median(sample_times), _median(oracle_times)
    guard_s, copy_s = _median(guard_times), _median(copy_times)
    return OverheadRow(schedule=schedule_name, method=method, options=dict(options),
                       dtype=str(dtype).replace("torch.", ""),
                       threads=threads, n=n, d=mixture.d, K=mixture.K, steps=steps, nfe=result.nfe,
                       sample_s=sample_s, oracle_s=oracle_s, ratio=sample_s / oracle_s,
                       cpu_ratio=_median(sample_cpu) / max(_median(oracle_cpu), 1e-12),
                       overhead_per_nfe_us=1e6 * sample_s / result.nfe, sample_times=sample_times,
                       oracle_times=oracle_times, sample_cpu_times=sample_cpu, oracle_cpu_times=oracle_cpu,
                       protection_s=guard_s, protection_ratio=guard_s / oracle_s, copy_s=copy_s,
                       copy_ratio=copy_s / oracle_s, protection_times=guard_times, copy_times=copy_times)


def overhead_section(cfg: BenchmarkConfig, progress=print) -> list:
    mixture, _ = overhead_mixture()
    rows = []
    for threads in cfg.threads:
        for dtype_name in cfg.overhead_dtypes:
            for schedule_name, schedule in benchmark_schedules().items():
                for method, options in OVERHEAD_METHODS.items():
                    row = overhead_case(mixture, schedule, schedule_name, method, options, getattr(torch, dtype_name),
                                        threads, cfg.overhead_samples, cfg.overhead_steps, cfg.repeats, cfg.seed)
                    progress(f"  overhead {schedule_name:8s} {method:10s} {dtype_name} threads={threads}: "
                             f"{100 * row.ratio:.1f} % (protections {100 * row.protection_ratio:.2f} %)")
                    rows.append(row)
    return rows


def overhead_profile(cfg: BenchmarkConfig, schedule_name: str = "linear", method: str = "multistep",
                     dtype: str = "float64", row_limit: int = 12) -> str:
    """A torch-profiler table (operators by self CPU time) of the zero-cost ``sample()`` run of one case."""
    from torch.profiler import ProfilerActivity, profile

    mixture, _ = overhead_mixture()
    schedule = benchmark_schedules()[schedule_name]
    x = torch.randn(cfg.overhead_samples, mixture.d, generator=torch.Generator().manual_seed(cfg.seed),
                    dtype=torch.float64).to(getattr(torch, dtype))
    zero = _Replay(mixture.eps(x, schedule.T, schedule))
    options = OVERHEAD_METHODS[method]
    with _threads(1):
        sample(zero, schedule, x, steps=cfg.overhead_steps, **options)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(cfg.repeats):
                sample(zero, schedule, x, steps=cfg.overhead_steps, **options)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def _overhead_ratios(path: str) -> dict:
    """``{(schedule, method, dtype, threads): ratio}`` from the JSON of a benchmark run (any result format that
    has ``data.overhead``, so that older checkouts can serve as the baseline)."""
    with open(path, encoding="utf-8") as fh:
        rows = json.load(fh)["data"]["overhead"]
    return {(r["schedule"], r["method"], r["dtype"], r["threads"]): r["ratio"] for r in rows}


def _checkout_commit(root: str) -> str:
    """``git describe``-like identification of the checkout at ``root`` (commit, ``+changes`` when its tracked
    files differ from it), or ``"unknown"``."""
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def baseline_section(cfg: BenchmarkConfig, progress=print) -> tuple[list, dict]:
    """Section 1 of this source against the checkout ``cfg.baseline`` (for instance one made with
    ``git worktree add /tmp/base COMMIT``), in one run: ``cfg.baseline_rounds`` rounds, each running
    ``python -m analysis.benchmark --sections overhead`` of both checkouts in fresh processes (each importing its
    own ``expsolver``), in alternating order, so that a change of machine load hits both. Overhead ratios (sampler
    / oracle time) are compared, not times, so a uniformly slower or faster machine cancels out.

    Returns ``([BaselineRow, ...], {"path", "commit", "this_commit", "command"})``."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    baseline = os.path.abspath(cfg.baseline)
    if not os.path.isfile(os.path.join(baseline, "analysis", "benchmark.py")):
        raise ValueError(f"baseline must be a checkout of this repository (with analysis/benchmark.py), got "
                         f"{cfg.baseline!r}")
    args = ["--sections", "overhead", "--figs", "skip", "--threads", ",".join(map(str, cfg.threads)),
            "--repeats", str(cfg.repeats), "--seed", str(cfg.seed)] + (["--quick"] if cfg.quick else [])
    ratios = {"this": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="expsolver-bench-baseline-") as tmp:
        for round_ in range(cfg.baseline_rounds):
            sides = [("this", here), ("baseline", baseline)]
            for side, root in sides if round_ % 2 == 0 else sides[::-1]:
                progress(f"  baseline comparison, round {round_ + 1}/{cfg.baseline_rounds}: {side} ({root})")
                out = os.path.join(tmp, f"{side}-{round_}.json")
                proc = subprocess.run([sys.executable, "-m", "analysis.benchmark", *args, "--out", out], cwd=root,
                                      env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True,
                                      check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"the overhead section of {root} failed (exit code {proc.returncode}): "
                                       f"{proc.stderr.strip()[-2000:]}")
                ratios[side].append(_overhead_ratios(out))
    rows = []
    for key in ratios["this"][0]:
        if key not in ratios["baseline"][0]:
            continue
        ours = [r[key] for r in ratios["this"]]
        theirs = [r[key] for r in ratios["baseline"]]
        rows.append(BaselineRow(*key, ratio=_median(ours), baseline_ratio=_median(theirs),
                                relative=_median(ours) / _median(theirs), ratios=ours, baseline_ratios=theirs))
    source = dict(path=baseline, commit=_checkout_commit(baseline), this_commit=_checkout_commit(here),
                  command=f"python -m analysis.benchmark {' '.join(args)} (in each checkout)")
    return rows, source


# -- 2. oracle throughput -----------------------------------------------------------------------------------------
def random_mixture(d: int, K: int, seed: int = 0) -> GaussianMixture:
    """A K-component, d-dimensional mixture with full covariances (eigenvalues log-uniform in [0.01, 1])."""
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.standard_normal((K, d)) / math.sqrt(d)
    covs = np.empty((K, d, d))
    for k in range(K):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        covs[k] = (q * np.exp(rng.uniform(np.log(0.01), 0.0, size=d))) @ q.T
        covs[k] = 0.5 * (covs[k] + covs[k].T)
    return GaussianMixture(rng.uniform(0.5, 1.5, size=K), means, covs)


def naive_eps(mixture: GaussianMixture, x: torch.Tensor, t: float, schedule) -> torch.Tensor:
    """BASELINE ONLY: the exact noise prediction written the straightforward way, one component at a time.

    For each component: ``C_k = alpha_t^2 Sigma_k + sigma_t^2 I``, its Cholesky factor ``L_k`` (recomputed every
    call), ``g_k = C_k^{-1} (x - alpha_t mu_k)`` by two triangular solves and
    ``log w_k N_k = log w_k - g_k . (x - alpha_t mu_k) / 2 - sum log diag L_k - d/2 log 2 pi``; then
    ``eps = sigma_t sum_k softmax_k(log w_k N_k) g_k``. No cached eigendecomposition, one pass per component.
    """
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    xd = x.to(torch.float64)
    eye = torch.eye(mixture.d, dtype=torch.float64)
    logits, gs = [], []
    for k in range(mixture.K):
        cov = alpha**2 * mixture.covs[k] + sigma**2 * eye
        chol = torch.linalg.cholesky(cov)
        diff = xd - alpha * mixture.means[k]
        g = torch.cholesky_solve(diff.T, chol).T
        logits.append(torch.log(mixture.weights[k]) - 0.5 * (diff * g).sum(-1) - torch.log(torch.diagonal(chol)).sum()
                      - 0.5 * mixture.d * math.log(2.0 * math.pi))
        gs.append(g)
    r = torch.softmax(torch.stack(logits), dim=0)
    return (sigma * sum(r[k, :, None] * gs[k] for k in range(mixture.K))).to(x.dtype)


def oracle_section(cfg: BenchmarkConfig, progress=print) -> list:
    schedule = VPLinear()
    t = 0.5
    rows = []
    for N, d, K in cfg.oracle_grid:
        mixture = random_mixture(d, K, seed=cfg.seed)
        x = torch.randn(N, d, generator=torch.Generator().manual_seed(cfg.seed), dtype=torch.float64)
        t_batch = torch.full((N,), t, dtype=torch.float64)  # one time for the batch, as samplers call it
        big = N * d * K > 10_000_000  # seconds per call: one timed call each, no warm-up
        for threads in cfg.threads:
            with _threads(threads):
                fast_times, naive_times, results = [], [], {}

                def run_fast():
                    results["fast"] = mixture.eps(x, t_batch, schedule)

                def run_naive():
                    results["naive"] = naive_eps(mixture, x, t, schedule)

                if not big:
                    run_fast()
                    run_naive()
                for _ in range(1 if big else cfg.repeats):
                    fast_times.append(_time(run_fast))
                    naive_times.append(_time(run_naive))
                diff = float((results["fast"] - results["naive"]).abs().max())
                results.clear()
            fast_s, naive_s = _median(fast_times), _median(naive_times)
            rows.append(OracleRow(N=N, d=d, K=K, dtype="float64", threads=threads, fast_s=fast_s, naive_s=naive_s,
                                  fast_evals_per_s=N / fast_s, naive_evals_per_s=N / naive_s,
                                  speedup=naive_s / fast_s, max_abs_diff=diff))
            progress(f"  oracle N={N} d={d} K={K} threads={threads}: {N / fast_s:.3g}/s "
                     f"({naive_s / fast_s:.1f}x naive)")
    return rows


# -- 3. reference cost --------------------------------------------------------------------------------------------
def _targets():
    from .targets import T_END, T_START, standard_schedule, target_16d, target_2d

    return {"2d": target_2d, "16d": target_16d}, standard_schedule(), T_START, T_END


def reference_section(cfg: BenchmarkConfig, progress=print) -> tuple[list, list]:
    """Section 3, at one torch thread (these batches are too small to gain from more, and on a loaded machine
    extra threads mostly wait for each other)."""
    with _threads(1):
        return _reference_section(cfg, progress)


def _reference_section(cfg: BenchmarkConfig, progress) -> tuple[list, list]:
    targets, schedule, t_start, t_end = _targets()
    rows, checks = [], []
    for name in cfg.reference_targets:
        mixture = targets[name]()
        model = mixture.as_model(schedule)
        x = torch.randn(cfg.reference_samples, mixture.d, generator=torch.Generator().manual_seed(cfg.seed),
                        dtype=torch.float64)
        tight = cfg.reference_truth_tol
        truth = reference_solve(model, schedule, x, t_start, t_end, backend="scipy", method="DOP853", rtol=tight,
                                atol=tight)
        cross = reference_solve(model, schedule, x, t_start, t_end, backend="torchdiffeq", method="dopri8",
                                rtol=tight, atol=tight)
        crosscheck = float((truth.x - cross.x).abs().max())
        for backend, method in cfg.reference_methods:
            for variable in cfg.reference_variables:
                row = _reference_row(name, model, schedule, x, t_start, t_end, backend, method, variable, truth.x)
                rows.append(row)
                status = f"tol {row.tol:g}, {row.nfe} RHS, {row.seconds:.2f} s" if row.reached else "not reached"
                progress(f"  reference {name} {backend}/{method} in {variable}: {status}")
        start = time.perf_counter()
        default = reference_solve(model, schedule, x, t_start, t_end)
        seconds = time.perf_counter() - start
        error = float((default.x - truth.x).abs().max())
        within = [f"{r.backend}/{r.method}/{r.variable}" for r in rows
                  if r.target == name and r.reached and r.nfe <= REFERENCE_NFE_BUDGET]
        checks.append(DefaultReferenceCheck(
            target=name, backend=default.backend, method=default.method, variable=default.variable,
            rtol=default.rtol, atol=default.atol, nfe=default.nfe, seconds=seconds, error=error,
            ok=bool(default.success and error <= ACCURACY and default.nfe <= REFERENCE_NFE_BUDGET),
            budget=REFERENCE_NFE_BUDGET, methods_within_budget=within, truth_nfe=truth.nfe,
            truth_crosscheck=crosscheck))
        progress(f"  default reference on {name}: {default.nfe} RHS, error {error:.2e}")
    return rows, checks


def _reference_row(name, model, schedule, x, t_start, t_end, backend, method, variable, x_true) -> ReferenceRow:
    """Walk the tolerance ladder from 1e-10 towards looser tolerances while ACCURACY holds, else towards tighter
    ones until it does; the answer is the loosest ladder tolerance that reaches ACCURACY."""
    tried = {}

    def solve(tol):
        if tol not in tried:
            start = time.perf_counter()
            res = reference_solve(model, schedule, x, t_start, t_end, backend=backend, method=method, rtol=tol,
                                  atol=tol, variable=variable)
            seconds = time.perf_counter() - start
            err = float((res.x - x_true).abs().max()) if res.success else math.inf
            tried[tol] = [tol, res.nfe, seconds, err, res.status]
        return tried[tol]

    ladder = TOLERANCE_LADDER
    i = ladder.index(1e-10)
    if solve(ladder[i])[3] <= ACCURACY:
        while i > 0 and solve(ladder[i - 1])[3] <= ACCURACY:
            i -= 1
    else:
        while i + 1 < len(ladder) and solve(ladder[i + 1])[3] > ACCURACY:
            i += 1
        i += 1
    entries = [tried[t] for t in ladder if t in tried]
    if i >= len(ladder):
        return ReferenceRow(target=name, backend=backend, method=method, variable=variable, reached=False, tol=None,
                            nfe=None, seconds=None, error=None, tried=entries)
    tol, nfe, seconds, err, _ = tried[ladder[i]]
    return ReferenceRow(target=name, backend=backend, method=method, variable=variable, reached=True, tol=tol,
                        nfe=nfe, seconds=seconds, error=err, tried=entries)


# -- 4. end to end ------------------------------------------------------------------------------------------------
def _run_command(name: str, args: list, timeout: float, note: str = "") -> EndToEndRow:
    """Run ``args`` and time it. The recorded command names the interpreter ``python`` and a temporary output
    folder ``FRESH_FOLDER`` (their paths on this machine say nothing to a reader)."""
    shown = ["python" if a == sys.executable else a for a in args]
    shown = ["FRESH_FOLDER" if shown[i - 1:i] == ["--out"] and a.startswith(tempfile.gettempdir()) else a
             for i, a in enumerate(shown)]
    command = " ".join(shown)
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return EndToEndRow(name, command, None, None, f"timed out after {timeout:g} s")
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        note = (note + "; " if note else "") + f"exit code {proc.returncode}: {tail[0][:200]}"
    return EndToEndRow(name, command, seconds, proc.returncode, note)


def end_to_end_section(cfg: BenchmarkConfig, progress=print, timeout: float = 1800.0) -> list:
    rows = []
    if cfg.figs == "skip":
        rows.append(EndToEndRow("figures", "python -m paper_figs", None, None, "skipped (--figs skip)"))
    elif importlib.util.find_spec("paper_figs") is None or importlib.util.find_spec("paper_figs.__main__") is None:
        rows.append(EndToEndRow("figures", "python -m paper_figs", None, None,
                                "skipped: paper_figs has no __main__ (figure driver not written yet)"))
    else:
        with tempfile.TemporaryDirectory(prefix="expsolver-bench-figs-") as out:
            args = [sys.executable, "-m", "paper_figs"]
            help_text = subprocess.run(args + ["--help"], capture_output=True, text=True, check=False).stdout
            note = ""
            if cfg.figs == "quick":
                args.append("--quick")
            if "--out" in help_text:
                args += ["--out", out]
                note = "fresh output folder (no cached study reused)"
            progress(f"  running {' '.join(args[1:])} ...")
            rows.append(_run_command("figures" + (" (--quick)" if cfg.figs == "quick" else " (full)"), args, timeout,
                                     note))
    if cfg.scaling:
        rows += scaling_rows(progress, timeout)
    if cfg.with_tests:
        progress("  running the test suite (the README's command) ...")
        pytest = [sys.executable, "-m", "pytest", "-q", "-n", "auto", "-p", "no:cacheprovider"]
        rows.append(_run_command("test suite (the default run, -n auto)", pytest, timeout))
        progress("  running the long confirmation tests (-m slow) ...")
        rows.append(_run_command("long confirmation tests (-m slow, -n auto)", pytest + ["-m", "slow"], timeout))
    else:
        rows.append(EndToEndRow("test suite (the default run, -n auto)", "python -m pytest -q -n auto", None, None,
                                "not timed (pass --with-tests)"))
    return rows


def scaling_rows(progress=print, timeout: float = 3600.0) -> list:
    """Wall time of the work that runs as parallel tasks, on one worker and on several: the full figure run with
    ``--jobs 1`` and with its default (the CPUs available), each into a fresh folder, and the reduced race with
    ``--jobs 1`` and ``--jobs 2`` (after one untimed-for-the-ratio run that fills the reference cache, so that
    both timed runs do the same work). The ``note`` of each parallel row holds its speed-up."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="expsolver-bench-scaling-") as out:
        for name, extra in (("figures (full, --jobs 1)", ["--jobs", "1"]), ("figures (full, default --jobs)", [])):
            progress(f"  running {name} ...")
            rows.append(_run_command(name, [sys.executable, "-m", "paper_figs", "--out",
                                            os.path.join(out, str(len(rows)))] + extra, timeout,
                                     "fresh output folder"))
    race = [sys.executable, "-m", "analysis.race", "--size", "reduced"]
    progress("  running the reduced race once to fill the reference cache ...")
    rows.append(_run_command("race (reduced), first run: references", race + ["--jobs", "1"], timeout,
                             "fills the reference cache for the two timed runs"))
    for jobs in (1, 2):
        progress(f"  running the reduced race with --jobs {jobs} ...")
        rows.append(_run_command(f"race (reduced, --jobs {jobs})", race + ["--jobs", str(jobs)], timeout))
    for serial, parallel in ((0, 1), (3, 4)):
        a, b = rows[serial].seconds, rows[parallel].seconds
        if a and b:
            rows[parallel].note = ((rows[parallel].note + "; ") if rows[parallel].note else "") + \
                f"speed-up over --jobs 1: {a / b:.2f}x"
    return rows


# -- driver -------------------------------------------------------------------------------------------------------
def run_benchmark(cfg: BenchmarkConfig, sections=SECTIONS, progress=print) -> BenchmarkResult:
    """Run the requested sections and return the result (nothing is printed except through ``progress``)."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"sections must be among {', '.join(SECTIONS)}; got {', '.join(unknown)}")
    start = time.perf_counter()
    machine = machine_info()
    overhead, oracle, reference, checks, e2e = [], [], [], [], []
    if "overhead" in sections:
        progress("1. solver overhead")
        overhead = overhead_section(cfg, progress)
    baseline, baseline_source = ([], {}) if cfg.baseline is None else baseline_section(cfg, progress)
    if "oracle" in sections:
        progress("2. oracle throughput")
        oracle = oracle_section(cfg, progress)
    if "reference" in sections:
        progress("3. reference cost")
        reference, checks = reference_section(cfg, progress)
    if "e2e" in sections:
        progress("4. end to end")
        e2e = end_to_end_section(cfg, progress)
    notes = _notes(overhead, checks)
    return BenchmarkResult(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), machine=machine,
                           config=cfg, overhead=overhead, oracle=oracle, reference=reference,
                           reference_default=checks, end_to_end=e2e, notes=notes, provenance=provenance(),
                           total_seconds=time.perf_counter() - start, baseline=baseline,
                           baseline_source=baseline_source)


def _notes(overhead, checks) -> list:
    notes = []
    for row in overhead:
        if row.dtype == "float64" and row.threads == 1 and row.ratio > TARGET_OVERHEAD:
            notes.append(f"overhead above the {100 * TARGET_OVERHEAD:g} % target: {row.schedule} {row.method} "
                         f"float64 1 thread ({100 * row.ratio:.1f} %)")
        if row.dtype == "float64" and row.threads == 1 and row.protection_ratio > TARGET_PROTECTION:
            notes.append(f"model-buffer protections above the {100 * TARGET_PROTECTION:g} % target: {row.schedule} "
                         f"{row.method} float64 1 thread ({100 * row.protection_ratio:.2f} %)")
    for check in checks:
        if not check.ok:
            notes.append(f"default reference on {check.target}: {check.nfe} RHS, error {check.error:.2e} "
                         f"(target <= {ACCURACY:g} in <= {check.budget} RHS; within budget: "
                         f"{', '.join(check.methods_within_budget) or 'none'})")
    return notes


def markdown(result: BenchmarkResult) -> str:
    """The result as Markdown tables (what ``main`` prints)."""
    lines = [f"# expsolver benchmark, {result.date}", "", f"Machine: {_machine_line(result.machine)}.", ""]
    if result.overhead:
        lines += ["## 1. Solver overhead (sample() with a zero-cost model / the same oracle calls)", "",
                  f"n = {result.overhead[0].n}, d = {result.overhead[0].d}, K = {result.overhead[0].K}, "
                  f"{result.overhead[0].steps} steps, DPM-Solver++ order 3; median of {result.config.repeats}. "
                  f"Official implementation (float64, 1 thread): linear "
                  f"{100 * OFFICIAL_OVERHEAD['linear']:g} %, discrete {100 * OFFICIAL_OVERHEAD['discrete']:g} %.", "",
                  "Overhead = sampler / oracle wall time (medians); CPU = the same ratio of process CPU times. "
                  "Protections = what the model-buffer protections add to the sampler (median difference of "
                  f"{PROTECTION_PAIRS_PER_REPEAT * result.config.repeats} adjacent runs with and without them) / "
                  "oracle time; "
                  "copies = one state copy per call (the extra price of a model that shares its buffers) / oracle "
                  f"time. Target for the protections: under {100 * TARGET_PROTECTION:g} %.", "",
                  "| schedule | method | dtype | threads | NFE | sampler (ms) | oracle (ms) | overhead | CPU | "
                  "per NFE (us) | protections | copies |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result.overhead:
            lines.append(f"| {r.schedule} | {r.method} | {r.dtype} | {r.threads} | {r.nfe} | {1e3 * r.sample_s:.2f} | "
                         f"{1e3 * r.oracle_s:.1f} | {100 * r.ratio:.1f} % | {100 * r.cpu_ratio:.1f} % | "
                         f"{r.overhead_per_nfe_us:.0f} | {100 * r.protection_ratio:.3f} % | "
                         f"{100 * r.copy_ratio:.2f} % |")
        lines.append("")
    if result.baseline:
        src = result.baseline_source
        lines += [f"## 1b. Solver overhead against a baseline ({src['path']}, commit {src['commit']})", "",
                  f"This source (commit {src['this_commit']}) and the baseline each ran `{src['command']}` "
                  f"{len(result.baseline[0].ratios)} times, alternately, in fresh processes. Overhead = sampler / "
                  "oracle wall time (median over the runs); relative = this / baseline (below 1: cheaper).", "",
                  "| schedule | method | dtype | threads | overhead | baseline | relative |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for r in result.baseline:
            lines.append(f"| {r.schedule} | {r.method} | {r.dtype} | {r.threads} | {100 * r.ratio:.1f} % | "
                         f"{100 * r.baseline_ratio:.1f} % | {r.relative:.3f} |")
        lines.append("")
    if result.oracle:
        lines += ["## 2. Exact-oracle throughput (eps evaluations per second, float64, one time per batch)", "",
                  "| N | d | K | threads | fast (ms) | evals/s | naive (ms) | naive evals/s | speed-up | "
                  "max abs diff |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result.oracle:
            lines.append(f"| {r.N} | {r.d} | {r.K} | {r.threads} | {1e3 * r.fast_s:.1f} | {r.fast_evals_per_s:.3g} | "
                         f"{1e3 * r.naive_s:.1f} | {r.naive_evals_per_s:.3g} | {r.speedup:.1f}x | "
                         f"{r.max_abs_diff:.1e} |")
        lines.append("")
    if result.reference:
        lines += [f"## 3. Reference cost to reach max abs error <= {ACCURACY:g} "
                  f"({result.config.reference_samples} samples, t = 1 -> 1e-3, rtol = atol on a decade ladder)", "",
                  "| target | backend/method | variable | tol | RHS evals | seconds | error |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for r in result.reference:
            if r.reached:
                lines.append(f"| {r.target} | {r.backend}/{r.method} | {r.variable} | {r.tol:g} | {r.nfe} | "
                             f"{r.seconds:.2f} | {r.error:.1e} |")
            else:
                lines.append(f"| {r.target} | {r.backend}/{r.method} | {r.variable} | not reached by "
                             f"{TOLERANCE_LADDER[-1]:g} | | | |")
        lines.append("")
    if result.reference_default:
        lines += [f"Default `reference_solve` (must reach {ACCURACY:g} in <= {REFERENCE_NFE_BUDGET} RHS evaluations):",
                  "", "| target | call | RHS evals | seconds | error | ok | methods within budget | "
                  "truth cross-check |",
                  "|---|---|---:|---:|---:|---|---|---:|"]
        for c in result.reference_default:
            lines.append(f"| {c.target} | {c.backend}/{c.method}, {c.variable}, rtol=atol={c.rtol:g} | {c.nfe} | "
                         f"{c.seconds:.2f} | {c.error:.1e} | {'yes' if c.ok else 'NO'} | "
                         f"{', '.join(c.methods_within_budget) or 'none'} | {c.truth_crosscheck:.1e} |")
        lines.append("")
    if result.end_to_end:
        lines += ["## 4. End to end", "", "| run | command | seconds | note |", "|---|---|---:|---|"]
        for r in result.end_to_end:
            seconds = "" if r.seconds is None else f"{r.seconds:.1f}"
            lines.append(f"| {r.name} | `{r.command}` | {seconds} | {r.note} |")
        lines.append("")
    if result.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in result.notes] + [""]
    lines.append(f"Total benchmark time: {result.total_seconds:.0f} s.")
    return "\n".join(lines)


def _parse_threads(text: str) -> tuple:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            out.append(os.cpu_count() or 1)
        else:
            try:
                value = int(part)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"threads must be a comma-separated list of ints or 'all', got {text!r}") from None
            if value < 1:
                raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {value}")
            out.append(value)
    return tuple(dict.fromkeys(out))


def _parse_sections(text: str) -> tuple:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in SECTIONS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"sections must be a comma-separated subset of {','.join(SECTIONS)}, got {text!r}")
    return parts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.benchmark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of a few seconds)")
    parser.add_argument("--out", default="benchmark.json", help="JSON file for the results")
    parser.add_argument("--threads", type=_parse_threads, default=None,
                        help="comma-separated torch thread counts, 'all' = every core (None: 1,all; --quick: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per timing (None: 5; --quick: 2)")
    parser.add_argument("--sections", type=_parse_sections, default=",".join(SECTIONS),
                        help="comma-separated subset of " + ",".join(SECTIONS))
    parser.add_argument("--figs", choices=("quick", "full", "skip"), default="quick",
                        help="time 'python -m paper_figs --quick' or the full 'python -m paper_figs' (several "
                             "minutes) from scratch, or skip it")
    parser.add_argument("--with-tests", action="store_true",
                        help="also time the test suite, 'pytest -q -n auto', and its '-m slow' tests (minutes)")
    parser.add_argument("--scaling", action="store_true",
                        help="also time the full figure run with --jobs 1 and the default, and the reduced race with "
                             "--jobs 1 and 2 (tens of minutes)")
    parser.add_argument("--baseline", default=None, metavar="CHECKOUT",
                        help="another checkout of this repository (e.g. 'git worktree add /tmp/base COMMIT'): time "
                             "its overhead section and this one's alternately in fresh processes and report the "
                             "ratio")
    parser.add_argument("--baseline-rounds", type=int, default=3, help="runs of each side with --baseline")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch-profiler table of the float64 linear multistep zero-cost run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial states and random mixtures")
    return parser


def main(argv=None) -> BenchmarkResult:
    args = build_parser().parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.baseline_rounds < 1:
        raise SystemExit(f"--baseline-rounds must be >= 1, got {args.baseline_rounds}")
    cfg = config_for(args.quick, seed=args.seed, repeats=args.repeats, threads=args.threads, figs=args.figs,
                     with_tests=args.with_tests, scaling=args.scaling, baseline=args.baseline,
                     baseline_rounds=args.baseline_rounds)
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr
    progress(f"machine: {_machine_line(machine_info())}")
    result = run_benchmark(cfg, args.sections, progress)
    print(markdown(result))
    if args.profile:
        print("\nProfile (zero-cost model, float64, linear, multistep, 1 thread):\n")
        print(overhead_profile(cfg))
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    path = save_result(result, args.out)
    progress(f"saved {path}")
    return result


if __name__ == "__main__":
    main()
