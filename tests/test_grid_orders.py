"""Orders on non-uniform grids and the final steps of time-uniform grids, in float64 with fixed seeds.

The protocol is :mod:`analysis.grid_orders` (that of :mod:`analysis.verification` with the logSNR grid replaced by
a family of grids from one map; error against ``1/N``); here it runs on the coarse step counts
:data:`analysis.grid_orders.TEST_STEPS`, inside the windows the full study fitted. Every registered solver must
reach its declared order within 0.15 on every non-uniform grid family, or the value
:data:`analysis.grid_orders.THEORY` names with its reason. The page ``docs/nonuniform-grids.md`` must show the
renderings of the committed results.
"""

import json
import math
import os

import numpy as np
import pytest
import torch

from analysis import final_steps, grid_orders
from analysis.grid_orders import (NONUNIFORM_GRIDS, OPTIMIZED_LAM_FRACTIONS, expected_order, grid_times,
                                  measure_grid_order, quick_steps)
from analysis.targets import T_END, T_START, standard_schedule
from analysis.verification import ALGORITHM_TYPES, ORDER_TOL, VerificationProblem
from expsolver import time_grid
from expsolver.problems import StepCoefficients
from expsolver.solvers import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "nonuniform-grids.md")
GRID_RESULTS = os.path.join(ROOT, "docs", "results", "grid_orders.json")
FINAL_RESULTS = os.path.join(ROOT, "docs", "results", "final_steps.json")


@pytest.fixture(scope="module")
def vp():
    return VerificationProblem()


@pytest.mark.parametrize("algorithm_type", ALGORITHM_TYPES)
@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("grid", NONUNIFORM_GRIDS)
def test_global_order_on_nonuniform_grids(vp, grid, name, algorithm_type):
    m = measure_grid_order(vp, name, algorithm_type, grid, quick_steps(name, algorithm_type, grid))
    fit = m.measurement.fit
    expected, reason = expected_order(name, grid, algorithm_type)
    assert (m.expected, m.reason) == (expected, reason)
    assert fit.reliable, (fit.reason, m.steps.tolist(), m.measurement.errors.tolist())
    assert abs(fit.slope - expected) <= ORDER_TOL, (fit.slope, fit.window, m.measurement.errors.tolist(), reason)
    assert m.agrees


def test_theory_exceptions_name_registered_solvers_and_a_reason():
    for (name, grid, algorithm_type), (value, reason) in grid_orders.THEORY.items():
        assert name in REGISTRY and grid in (None,) + grid_orders.GRIDS
        assert algorithm_type in (None,) + ALGORITHM_TYPES
        assert value != REGISTRY[name].order and reason


def test_optimized_family_passes_through_the_optimised_grid():
    schedule = standard_schedule()
    ts = grid_times(schedule, "optimized", 8)
    lams = schedule.lams_of(ts)
    np.testing.assert_allclose((lams - lams[0]) / (lams[-1] - lams[0]), OPTIMIZED_LAM_FRACTIONS, atol=1e-12)
    assert ts[0] == T_START and ts[-1] == T_END
    fine = schedule.lams_of(grid_times(schedule, "optimized", 64))
    assert np.all(np.diff(fine) > 0)
    np.testing.assert_allclose(fine[::8], lams, atol=1e-12)


def test_standard_families_are_the_sampler_grids():
    schedule = standard_schedule()
    for grid in ("time_uniform", "time_quadratic", "karras"):
        np.testing.assert_array_equal(grid_times(schedule, grid, 37), time_grid(schedule, grid, T_START, T_END, 37))


def test_measure_grid_order_rejects_bad_arguments(vp):
    with pytest.raises(ValueError, match="grid must be one of"):
        measure_grid_order(vp, "DPM-Solver-2M", "dpmsolver++", "uniform")
    with pytest.raises(ValueError, match="solver must be a registry name"):
        measure_grid_order(vp, "DPM-Solver-9M", "dpmsolver++", "karras")
    with pytest.raises(ValueError, match="algorithm_type must be one of"):
        measure_grid_order(vp, "DPM-Solver-2M", "sde-dpmsolver", "karras")
    with pytest.raises(ValueError, match="steps must be"):
        measure_grid_order(vp, "DPM-Solver-2M", "dpmsolver++", "karras", steps=(2, 4))
    with pytest.raises(ValueError, match="from t <= 0.01 has"):
        measure_grid_order(vp, "DPM-Solver-2M", "dpmsolver++", "time_uniform", steps=(32,))


def test_replace_section_needs_both_markers_once():
    markers = ("<!-- a -->", "<!-- b -->")
    assert grid_orders.replace_section("x\n<!-- a -->\nold\n<!-- b -->\ny", markers, "new\n") == \
        "x\n<!-- a -->\nnew\n<!-- b -->\ny"
    with pytest.raises(ValueError, match="markers"):
        grid_orders.replace_section("<!-- b -->\n<!-- a -->", markers, "new\n")


# -- the final steps of time-uniform grids ------------------------------------------------------------------------
def _final_lams(n):
    schedule = standard_schedule()
    return schedule.lams_of(time_grid(schedule, "time_uniform", T_START, T_END, n))


@pytest.mark.parametrize("z", (-1.0, 1.0))
@pytest.mark.parametrize("n", (200, 800))
def test_corrected_weights_integrate_quadratics_exactly_on_the_final_steps(n, z):
    """The corrected rule's variable-step weights are the exact integral of the interpolating quadratic on the
    very uneven final steps of a time-uniform grid; the official ones are exact for lines only."""
    lams = _final_lams(n)
    rules = {name: REGISTRY[reg].make() for name, reg in final_steps.RULES.items()}
    for i in range(n - 3, n):
        h = lams[i + 1] - lams[i]
        integrals = StepCoefficients(h, 0.0, 1.0, z).integrals(3)  # int_0^h e^{z (h-u)} u^j / j! du
        u = lams[i - 2:i + 1] - lams[i]
        for j in range(3):
            values = u**j / math.factorial(j)
            got = {name: final_steps._weights(rule, lams, i, z) @ values for name, rule in rules.items()}
            assert got["corrected"] == pytest.approx(integrals[j], rel=1e-10, abs=1e-14)
            if j < 2:
                assert got["official"] == pytest.approx(integrals[j], rel=1e-10, abs=1e-14)
            else:
                assert abs(got["official"] - integrals[j]) > 0.1 * abs(integrals[j])


def test_official_defect_is_smaller_on_the_last_steps_with_grid_or_equal_nodes():
    """On N(lam) = e^{-2 lam} (data prediction near t = 0) the official update's defect is smaller than the
    corrected one's on the last steps of an 800-step time-uniform grid, with the grid's nodes and with equally
    spaced ones: the step ratios are not what makes the difference."""
    rows = final_steps.model_defects(_final_lams(800), -2.0, -1.0)
    for r in rows[-2:]:
        assert r["corrected_grid"] > 0 and r["corrected_uniform"] > 0
        assert abs(r["official_grid"]) < 0.5 * r["corrected_grid"]
        assert abs(r["official_uniform"]) < r["corrected_uniform"]


def test_parasitic_roots_are_damped_at_800_steps():
    roots = final_steps.parasitic_roots(_final_lams(800))
    assert roots["corrected"]["max"] < 1 and roots["official"]["max"] < 1


@pytest.mark.slow
def test_official_wins_at_800_steps_and_loses_at_6400_on_time_uniform():
    """The anomaly on the 2-D ring target (data prediction): the official 3M is more accurate at 800 steps and
    less accurate at 6,400, where both rules show their orders."""
    torch.set_num_threads(1)
    rows = final_steps.sampler_errors("2d", (800, 6400), ("time_uniform",), ("3M", "3M-official"),
                                      ("dpmsolver++",), cache_dir=False)
    e = {(r["config"], r["steps"]): r["error"] for r in rows}
    assert e[("3M-official", 800)] < 0.5 * e[("3M", 800)]
    assert e[("3M", 6400)] < 0.5 * e[("3M-official", 6400)]


# -- the page ---------------------------------------------------------------------------------------------------
def _section(text, markers):
    begin, end = markers
    assert text.count(begin) == 1 and text.count(end) == 1, markers
    return text.split(begin)[1].split(end)[0].lstrip("\n")


def test_page_tables_are_the_renderings_of_the_committed_results():
    with open(PAGE, encoding="utf-8") as fh:
        page = fh.read()
    for module, path in ((grid_orders, GRID_RESULTS), (final_steps, FINAL_RESULTS)):
        with open(path, encoding="utf-8") as fh:
            sections = module.render_sections(json.load(fh))
        for name, content in sections.items():
            assert _section(page, grid_orders.section_markers(module.PAGE_PREFIX, name)) == content, name


def test_committed_study_agrees_with_the_expected_orders():
    """The committed full study (wider step ranges than the test) agrees everywhere, with the current THEORY."""
    with open(GRID_RESULTS, encoding="utf-8") as fh:
        summary = json.load(fh)
    assert {(e["solver"], e["algorithm_type"], e["grid"]) for e in summary["measurements"]} == \
        {(n, a, g) for n in REGISTRY for a in ALGORITHM_TYPES for g in grid_orders.GRIDS}
    for e in summary["measurements"]:
        assert (e["expected"], e["reason"]) == expected_order(e["solver"], e["grid"], e["algorithm_type"])
        assert e["agrees"], (e["solver"], e["algorithm_type"], e["grid"], e["slope"])
