"""The summary's order logic (analysis.summary, used for paper_figs/summary.json) agrees with the registry's
declared orders on a small case. Runtime ~10 s.

This checks the *study code* (local and global studies, their window fits and the agreement flags of the
summary), not the solvers themselves: those are tests/test_orders.py. Problem: the 2-D three-component mixture of
``conftest.make_mixture_2d`` (smooth enough that every DPM-Solver configuration is asymptotic by 128 steps), linear
VP schedule, 16 samples, data prediction for the global study (both predictions for the local one).
"""

import numpy as np
import pytest

from analysis.global_error import dpm_solver_names, global_error_study, registry_runs
from analysis.local_error import local_error_study
from analysis.summary import ORDER_TOL, solver_summary
from expsolver import REGISTRY, VPLinear

from conftest import make_mixture_2d

STEPS = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


@pytest.fixture(scope="module")
def summary():
    mixture, schedule = make_mixture_2d(), VPLinear()
    local = local_error_study(mixture, schedule, target_name="small", lam_starts=(0.0,), n_samples=16,
                              hs=np.geomspace(10**-2.5, 0.8, 12), cache_dir=False)
    glob = global_error_study(mixture, schedule, registry_runs(algorithm_types=("dpmsolver++",)), target_name="small",
                              nfes=STEPS, budget="steps", n_samples=16, cache_dir=False)
    return solver_summary(local, {"small": glob}, nfe_points=(10, 20))


@pytest.mark.parametrize("name", dpm_solver_names())
def test_summary_orders_agree_with_registry(summary, name):
    declared = REGISTRY[name].order
    entry = summary[name]
    assert entry["declared_order"] == declared
    for algorithm_type in ("dpmsolver++", "dpmsolver"):
        local = entry[algorithm_type]["local_order"]
        assert local["expected"] == declared + 1 and local["lam_s"] == 0.0
        assert local["reliable"] and local["window"] is not None, local["reason"]
        assert abs(local["slope"] - (declared + 1)) <= ORDER_TOL and local["agrees"]
        assert local["ci_low"] <= local["slope"] <= local["ci_high"]
    glob = entry["dpmsolver++"]["global_order"]["small"]
    assert glob["expected"] == declared and glob["reliable"], glob["reason"]
    assert abs(glob["slope"] - declared) <= ORDER_TOL and glob["agrees"]
    assert "dpmsolver" not in entry or "global_order" not in entry["dpmsolver"]


def test_error_at_nfe_reports_actual_nfe(summary):
    for name in dpm_solver_names():
        errs = summary[name]["dpmsolver++"]["error_at_nfe"]["small"]
        for n in ("10", "20"):
            e = errs[n]
            assert e["nfe"] is not None and e["nfe"] <= int(n) and e["median"] > 0 and 0 <= e["mode_switches"] <= 16
    # Singlestep order 3 cannot spend exactly 10 or 20 model calls with fixed steps: 9 and 18 are reported.
    assert summary["DPM-Solver-3S"]["dpmsolver++"]["error_at_nfe"]["small"]["10"]["nfe"] == 9
    assert summary["DPM-Solver-2M"]["dpmsolver++"]["error_at_nfe"]["small"]["20"]["nfe"] == 20


def test_agreement_flag_can_fail(summary, monkeypatch):
    """A wrong declared order must be flagged: rebuild one entry's fit against a shifted expectation."""
    from analysis.order import OrderFit
    from analysis.summary import _fit_entry

    entry = summary["DPM-Solver-3M-official"]["dpmsolver++"]["global_order"]["small"]
    fit = OrderFit.from_dict({k: v for k, v in entry.items() if k not in ("agrees",)})
    assert _fit_entry(fit, 2)["agrees"]
    assert not _fit_entry(fit, 3)["agrees"]  # the official 3M is not third order
