"""The summary's order logic (analysis.summary, used for paper_figs/summary.json) agrees with the registry's
declared orders on a small case. Runtime ~8 s.

This checks the *study code* (local and global studies, their automatic window fits and the agreement flags of
the summary), not the solvers themselves: those are tests/test_orders.py. Problem: the 2-D three-component
mixture of ``conftest.make_mixture_2d`` with 32 standard-normal starting points (seed 7), linear VP schedule,
SciPy DOP853 reference at 1e-12. Local: ``lam_s = 0``, h = 0.8 * 2^(-k/2) for k = 0..18 (down to 1.6e-3, where even
the official 3M's small h^3 term dominates its h^4 term), points below 1e-12 excluded (round-off). Global: data
prediction, logSNR grid, 3 to 512 steps (at most 512 NFE), points below 1e-10 excluded (reference error). Both
predictions are studied locally, data prediction globally.
"""

import numpy as np
import pytest
import torch

from analysis.global_error import dpm_solver_names, global_error_study, registry_runs
from analysis.local_error import local_error_study
from analysis.summary import ORDER_TOL, solver_summary
from expsolver import REGISTRY, VPLinear

from conftest import make_mixture_2d

STEPS = (3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
LOCAL_H = 0.8 * 2.0 ** (-np.arange(19) / 2.0)


@pytest.fixture(scope="module")
def summary():
    mixture, schedule = make_mixture_2d(), VPLinear()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    local = local_error_study(mixture, schedule, target_name="small", lam_starts=(0.0,), x=x, hs=LOCAL_H,
                              floor=1e-13, cache_dir=False)
    glob = global_error_study(mixture, schedule, registry_runs(algorithm_types=("dpmsolver++",)), target_name="small",
                              nfes=STEPS, budget="steps", max_nfe=512, x=x, floor=1e-11, cache_dir=False)
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
            assert e["nfe"] is not None and e["nfe"] <= int(n) and e["median"] > 0 and 0 <= e["mode_switches"] <= 32
    # Singlestep order 3 cannot spend exactly 10 or 20 model calls with fixed steps: 9 and 18 are reported.
    assert summary["DPM-Solver-3S"]["dpmsolver++"]["error_at_nfe"]["small"]["10"]["nfe"] == 9
    # The largest budget not above 20 (this study has no 20-step run).
    assert summary["DPM-Solver-2M"]["dpmsolver++"]["error_at_nfe"]["small"]["20"]["nfe"] == max(
        n for n in STEPS if n <= 20)


def test_agreement_flag_can_fail(summary, monkeypatch):
    """A wrong declared order must be flagged: rebuild one entry's fit against a shifted expectation."""
    from analysis.order import OrderFit
    from analysis.summary import _fit_entry

    entry = summary["DPM-Solver-3M-official"]["dpmsolver++"]["global_order"]["small"]
    fit = OrderFit.from_dict({k: v for k, v in entry.items() if k not in ("agrees",)})
    assert _fit_entry(fit, 2)["agrees"]
    assert not _fit_entry(fit, 3)["agrees"]  # the official 3M is not third order
