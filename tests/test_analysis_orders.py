"""The study code and the summary's order logic.

* The figure studies (:mod:`analysis.local_error`, :mod:`analysis.global_error`) with their automatic window fits
  reproduce every declared order of the DPM-Solver family on the order-verification mixture (the same code gives
  pre-asymptotic slopes on the sharp figure targets; that is the targets, not the code). 32 standard-normal
  starting points (seed 7), linear VP schedule, SciPy DOP853 reference at 1e-12. Local: ``lam_s = 0``,
  h = 0.8 * 2^(-k/2) for k = 0..18 (down to 1.6e-3, where even the official 3M's small h^3 term dominates its h^4
  term), points below 1e-12 excluded (round-off). Global: data prediction, logSNR grid, 3 to 512 steps, points
  below 1e-10 excluded (reference error). Runtime ~8 s.
* :func:`analysis.summary.solver_summary` reports the order verification's measurements (the orders the order
  tests assert) with their agreement flags, and :func:`analysis.summary.order_agreement` counts them; a wrong
  declared order is flagged.
"""

import math

import numpy as np
import pytest
import torch

from analysis.global_error import dpm_solver_names, global_error_study, registry_runs
from analysis.local_error import local_error_study
from analysis.order import OrderFit
from analysis.summary import ORDER_TOL, order_agreement, solver_summary
from analysis.verification import OrderMeasurement, OrderVerification, VerificationProblem, verify_orders
from expsolver import REGISTRY, VPLinear

from conftest import make_mixture_2d

STEPS = (3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
LOCAL_H = 0.8 * 2.0 ** (-np.arange(19) / 2.0)


@pytest.fixture(scope="module")
def studies():
    mixture, schedule = make_mixture_2d(), VPLinear()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    local = local_error_study(mixture, schedule, target_name="small", lam_starts=(0.0,), x=x, hs=LOCAL_H,
                              floor=1e-13, cache_dir=False)
    glob = global_error_study(mixture, schedule, registry_runs(algorithm_types=("dpmsolver++",)), target_name="small",
                              nfes=STEPS, budget="steps", max_nfe=512, x=x, floor=1e-11, cache_dir=False)
    return local, glob


@pytest.mark.parametrize("name", dpm_solver_names())
def test_study_code_reproduces_the_declared_orders(studies, name):
    local, glob = studies
    declared = REGISTRY[name].order
    for curve in local.curves:
        if curve.solver == name:
            assert curve.expected == declared + 1 and curve.fit.reliable, curve.fit.reason
            assert abs(curve.fit.slope - (declared + 1)) <= ORDER_TOL
            assert curve.fit.ci_low <= curve.fit.slope <= curve.fit.ci_high
    curve = glob.curve(f"{name}|dpmsolver++")
    assert curve.expected_order == declared and curve.fit.reliable, curve.fit.reason
    assert abs(curve.fit.slope - declared) <= ORDER_TOL


def test_figure_study_entries_of_the_summary(studies):
    local, glob = studies
    summary = solver_summary(None, local, {"small": glob}, nfe_points=(10, 20))
    for name in dpm_solver_names():
        figure = summary[name]["dpmsolver++"]["figure_targets"]
        assert figure["local_slope_by_lam"]["0"]["expected"] == REGISTRY[name].order + 1
        assert figure["global_slope"]["small"]["expected"] == REGISTRY[name].order
        assert "local_order" not in summary[name]["dpmsolver++"]  # orders come from the verification only
        errs = summary[name]["dpmsolver++"]["error_at_nfe"]["small"]
        for n in ("10", "20"):
            e = errs[n]
            assert e["nfe"] is not None and e["nfe"] <= int(n) and e["median"] > 0 and 0 <= e["mode_switches"] <= 32
    # Singlestep order 3 cannot spend exactly 10 or 20 model calls with fixed steps: 9 and 18 are reported.
    assert summary["DPM-Solver-3S"]["dpmsolver++"]["error_at_nfe"]["small"]["10"]["nfe"] == 9
    # The largest budget not above 20 (this study has no 20-step run).
    assert summary["DPM-Solver-2M"]["dpmsolver++"]["error_at_nfe"]["small"]["20"]["nfe"] == max(
        n for n in STEPS if n <= 20)


@pytest.fixture(scope="module")
def verification():
    return verify_orders(["DPM-Solver-2M", "DPM-Solver-3M-official"], ("dpmsolver++",), warm_up=("DPM-Solver-2M",),
                         vp=VerificationProblem(n_samples=16))


def test_summary_reports_the_verified_orders(verification):
    summary = solver_summary(verification)
    assert set(summary) == {"DPM-Solver-2M", "DPM-Solver-3M-official"}
    for name, entry in summary.items():
        sub = entry["dpmsolver++"]
        for key, kind, start in (("local_order", "local", "exact"), ("global_order", "global", "exact")):
            m = verification.get(name, "dpmsolver++", kind, start)
            assert sub[key]["slope"] == m.fit.slope and sub[key]["window"] == list(m.fit.window)
            assert sub[key]["agrees"] == m.agrees and sub[key]["expected"] == m.expected
            assert sub[key]["kind"] == kind and sub[key]["start"] == start
        assert sub["local_order"]["expected"] == entry["declared_order"] + 1
        assert "dpmsolver" not in entry
    assert summary["DPM-Solver-2M"]["dpmsolver++"]["global_order_warm_up"]["start"] == "warm-up"
    assert "global_order_warm_up" not in summary["DPM-Solver-3M-official"]["dpmsolver++"]
    agreement = order_agreement(verification)
    assert agreement["n_fits"] == 5 and agreement["n_agree"] == 5 and agreement["disagreements"] == []


def test_a_wrong_declared_order_is_flagged(verification):
    m = verification.get("DPM-Solver-3M-official", "dpmsolver++", "global")
    assert m.agrees and abs(m.fit.slope - 2) <= ORDER_TOL  # the official 3M is second order
    wrong = OrderMeasurement(**{**m.__dict__, "expected": 3})
    assert not wrong.agrees
    unreliable = OrderMeasurement(**{**m.__dict__, "fit": OrderFit(math.nan, math.nan, math.nan, None, None, False,
                                                                   "too few points", expected=2)})
    agreement = order_agreement(OrderVerification([m, wrong, unreliable], config={}))
    assert agreement["n_fits"] == 3 and agreement["n_agree"] == 1
    assert [(d["expected"], d["slope"] is None) for d in agreement["disagreements"]] == [(3, False), (2, True)]


def test_verification_rejects_bad_arguments():
    vp = VerificationProblem(n_samples=4)
    with pytest.raises(ValueError, match="solver must be a registry name"):
        verify_orders(["DPM-Solver-9M"], vp=vp)
    with pytest.raises(ValueError, match="algorithm_type must be one of"):
        verify_orders(["DPM-Solver-2M"], ("sde-dpmsolver++",), vp=vp)
    from analysis.verification import measure_global_order

    with pytest.raises(ValueError, match="start must be"):
        measure_global_order(vp, "DPM-Solver-2M", "dpmsolver++", start="cold")
