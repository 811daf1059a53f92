"""The benchmark (analysis/benchmark.py) runs at tiny sizes and reports every section; no timing assertions.

Runtime: about 5 s on an idle 2-core machine (the ``--quick`` run; most of it is the reference section).
"""

import contextlib
import io
import json
import math
import statistics

import numpy as np
import pytest
import torch

from analysis.benchmark import (OVERHEAD_METHODS, PROTECTION_PAIRS_PER_REPEAT, TOLERANCE_LADDER, BenchmarkResult,
                                _PassThroughGuard, _protections_off, build_parser, config_for, main, naive_eps,
                                protection_times, random_mixture)
from analysis.results import load_result
from expsolver import VPDiscrete, VPLinear
from expsolver.models import ModelGuard


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        result = main(["--quick", "--out", str(out), "--figs", "skip", "--threads", "1", "--repeats", "1"])
    return result, printed.getvalue(), out


def test_quick_run_prints_every_table(quick_run):
    _, printed, _ = quick_run
    for heading in ("## 1. Solver overhead", "## 2. Exact-oracle throughput", "## 3. Reference cost",
                    "Default `reference_solve`", "## 4. End to end", "Machine: "):
        assert heading in printed
    assert "| linear | multistep | float64 | 1 | 20 |" in printed


def test_json_round_trip_and_structure(quick_run):
    result, _, out = quick_run
    payload = json.loads(out.read_text())
    assert payload["format"] == "expsolver-result/2" and payload["data"]["__type__"] == "BenchmarkResult"
    loaded = load_result(str(out))
    assert isinstance(loaded, BenchmarkResult)
    assert loaded.config == result.config and loaded.machine == result.machine
    assert loaded.machine["cores"] >= 1 and "cpu" in loaded.machine and "load_average_1_5_15min" in loaded.machine


def test_overhead_rows_cover_the_grid(quick_run):
    result, _, _ = quick_run
    cfg = result.config
    keys = {(r.schedule, r.method, r.dtype, r.threads) for r in result.overhead}
    assert keys == {(s, m, d, 1) for s in ("linear", "discrete") for m in OVERHEAD_METHODS
                    for d in ("float64", "float32")}
    for row in result.overhead:
        assert row.nfe == cfg.overhead_steps == 20 and row.n == cfg.overhead_samples
        assert (row.d, row.K) == (16, 4)
        assert len(row.sample_times) == len(row.oracle_times) == cfg.repeats
        assert row.sample_s > 0 and row.oracle_s > 0 and math.isclose(row.ratio, row.sample_s / row.oracle_s)
        assert len(row.copy_times) == cfg.repeats
        assert len(row.protection_times) == PROTECTION_PAIRS_PER_REPEAT * cfg.repeats
        assert row.protection_s == statistics.median(row.protection_times)  # a difference: either sign in noise
        assert math.isfinite(row.protection_s) and math.isclose(row.protection_ratio, row.protection_s / row.oracle_s)
        assert row.copy_s > 0 and math.isclose(row.copy_ratio, row.copy_s / row.oracle_s)


def test_protection_fields_reach_the_json_and_the_table(quick_run):
    result, printed, out = quick_run
    rows = json.loads(out.read_text())["data"]["overhead"]
    assert all(isinstance(r["protection_ratio"], float) and isinstance(r["copy_ratio"], float) for r in rows)
    assert "| protections | copies |" in printed
    row = result.overhead[0]
    assert f"| {100 * row.protection_ratio:.3f} % | {100 * row.copy_ratio:.2f} % |" in printed


def test_protections_off_runs_the_same_sampler_without_the_guard():
    """The timed difference is the guard and only the guard: with the protections off, sample() builds its
    wrapper with the pass-through guard (no input copied) and returns the same state."""
    from expsolver import VPLinear, sample
    from expsolver import models

    wrappers = []
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def model(x_in, t):
        wrappers.append(x_in is x)
        return torch.tanh(x_in) * t[:, None]

    guarded = sample(model, VPLinear(), x, steps=6, method="multistep", order=3).x
    with _protections_off():
        assert models.ModelGuard is _PassThroughGuard
        unguarded = sample(model, VPLinear(), x, steps=6, method="multistep", order=3).x
    assert models.ModelGuard is ModelGuard
    assert torch.equal(guarded, unguarded)
    assert wrappers[0] is False and wrappers[6] is True  # the first input: a copy, then the caller's x itself
    diffs = protection_times(lambda: sample(model, VPLinear(), x, steps=6), pairs=3)
    assert len(diffs) == 3 and all(math.isfinite(d) for d in diffs)


def test_oracle_rows_agree_with_the_naive_baseline(quick_run):
    result, _, _ = quick_run
    assert [(r.N, r.d, r.K) for r in result.oracle] == list(result.config.oracle_grid)
    for row in result.oracle:
        assert row.max_abs_diff <= 1e-10, row
        assert row.fast_evals_per_s > 0 and row.naive_evals_per_s > 0


def test_reference_rows_and_default_check(quick_run):
    result, _, _ = quick_run
    assert len(result.reference) == 1
    row = result.reference[0]
    assert (row.target, row.backend, row.method, row.variable) == ("2d", "torchdiffeq", "dopri5", "lambda")
    assert row.tried and all(entry[0] in TOLERANCE_LADDER for entry in row.tried)
    if row.reached:  # the loosest tolerance tried that reached 1e-9, and the next looser one did not
        assert row.error <= 1e-9 and row.nfe > 0
        looser = [e for e in row.tried if e[0] > row.tol]
        assert all(e[3] > 1e-9 for e in looser)
    (check,) = result.reference_default
    assert check.target == "2d" and check.nfe > 0 and check.truth_nfe > 0 and check.truth_crosscheck < 1e-9
    assert check.ok == (check.error <= 1e-9 and check.nfe <= check.budget)


def test_end_to_end_rows(quick_run):
    result, _, _ = quick_run
    names = [r.name for r in result.end_to_end]
    assert names == ["figures", "test suite (the default run, -n auto)"]
    assert all(r.seconds is None and r.note for r in result.end_to_end)  # skipped / not requested


@pytest.mark.parametrize("schedule", [VPLinear(), VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000))],
                         ids=["linear", "discrete"])
def test_naive_baseline_is_the_exact_eps(schedule):
    mixture = random_mixture(5, 3, seed=1)
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t in (0.01, 0.3, 1.0):
        assert torch.allclose(naive_eps(mixture, x, t, schedule), mixture.eps(x, t, schedule), rtol=0, atol=1e-12)


def test_cli_validation():
    parser = build_parser()
    assert parser.parse_args(["--threads", "1,all"]).threads[0] == 1
    for bad in (["--threads", "0"], ["--threads", "two"], ["--sections", "overhead,nope"], ["--figs", "maybe"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert config_for(True).quick and not config_for(False).quick
    assert config_for(False).oracle_grid[-1] == (100_000, 64, 16) and config_for(False).overhead_samples == 10_000


def test_baseline_comparison_runs_both_checkouts_alternately():
    """--baseline times the overhead section of another checkout (here this one) against this source's in fresh
    processes and reports the ratios; a folder that is not a checkout is a ValueError naming the argument."""
    import os

    from analysis.benchmark import baseline_section

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = config_for(True, repeats=1, threads=(1,), figs="skip", baseline=root, baseline_rounds=1)
    rows, source = baseline_section(cfg, progress=lambda msg: None)
    assert {(r.schedule, r.method, r.dtype) for r in rows} == {
        (s, m, d) for s in ("linear", "discrete") for m in OVERHEAD_METHODS for d in ("float64", "float32")}
    for r in rows:
        assert len(r.ratios) == len(r.baseline_ratios) == 1 and r.ratio > 0 and r.baseline_ratio > 0
        assert math.isclose(r.relative, r.ratio / r.baseline_ratio)
    assert source["path"] == root and source["commit"] and "--sections overhead" in source["command"]
    with pytest.raises(ValueError, match="baseline"):
        baseline_section(config_for(True, baseline=os.path.join(root, "docs")), progress=lambda msg: None)
