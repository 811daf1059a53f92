"""expsolver.convergence on users' own stiff semi-linear ODEs with dense linear parts.

Every registered ODE solver (``REGISTRY``, ``config.make()``) shows its declared global order and its local order
(declared + 1) within 0.15 on two problems of ``tests/semilinear_problems.py``: Allen-Cahn with a symmetric
Neumann finite-difference Laplacian (eigenvalues to -1.31e3) and upwind advection-diffusion (a non-normal ``L``),
64 points, ``t`` from 0 to 1, float64. Multistep methods start with the singlestep exponential Runge-Kutta start
(no reference needed for it). Global: uniform grids of 32 to 1024 steps (DEIS: to 256; its quadrature
exponentiates 32 matrices per step); local: one step of ``h = 0.04 / 2^j`` (j = 0..5) from ``t = 0.12``. One Radau
reference per problem (``ReferencePath``, error estimate ~1e-13 as the fit's floor). No method shows stiff order
reduction on these problems (docs/convergence.md says why), so every order is the declared one.
"""

import matplotlib
import numpy as np
import pytest

from expsolver.convergence import (ReferencePath, assert_order, fit_order, global_order, local_order,
                                   work_precision)
from expsolver.solvers import REGISTRY, DPMSolverSinglestep, Solver, Step, UniPC

from semilinear_problems import (PROBLEMS, advection_diffusion, advection_diffusion_states, allen_cahn,
                                 allen_cahn_states)

T_END = 1.0
COUNTS = (32, 64, 128, 256, 512, 1024)
DEIS_COUNTS = (32, 64, 128, 256)
LOCAL_HS = tuple(0.04 / 2**j for j in range(6))
T_STEP = 3 * LOCAL_HS[0]  # the longest history (4 values) of the largest step starts at t = 0
NAMES = sorted(REGISTRY)


@pytest.fixture(scope="module", params=sorted(PROBLEMS))
def setup(request):
    make_problem, make_states = PROBLEMS[request.param]
    problem, x0 = make_problem(), make_states()
    reference = ReferencePath(problem, x0, 0.0)
    times = {T_END, T_STEP} | {T_STEP + h for h in LOCAL_HS} | {T_STEP - j * h for h in LOCAL_HS for j in (1, 2, 3)}
    reference(sorted(times - {0.0}))
    return problem, x0, reference


@pytest.mark.parametrize("name", NAMES)
def test_global_order(setup, name):
    problem, x0, reference = setup
    counts = DEIS_COUNTS if name.startswith("DEIS") else COUNTS
    result = global_order(problem, REGISTRY[name].make(), x0, 0.0, T_END, counts, reference=reference, name=name)
    assert result.expected == REGISTRY[name].order and result.floor < 1e-12
    assert_order(result)


@pytest.mark.parametrize("name", NAMES)
def test_local_order(setup, name):
    problem, x0, reference = setup
    result = local_order(problem, REGISTRY[name].make(), x0, 0.0, LOCAL_HS, t_step=T_STEP, reference=reference,
                         name=name)
    assert result.expected == REGISTRY[name].order + 1
    assert_order(result)


@pytest.fixture(scope="module")
def allen_cahn_setup():
    problem, x0 = allen_cahn(), allen_cahn_states()
    return problem, x0, ReferencePath(problem, x0, 0.0)


@pytest.mark.parametrize("name, warm_up_order", [("DPM-Solver-3M", 2), ("DPM-Solver-4M", 2), ("DEIS-tAB2", 2),
                                                  ("UniPC-3-bh2", 3)])
def test_the_warm_up_caps_the_order_and_exact_values_restore_it(allen_cahn_setup, name, warm_up_order):
    """The driver's first-order first step costs one order of a multistep method on a general ODE (UniPC's first
    step is corrected, so it loses one order less); exact starting values, with the model evaluated at the exact
    states (UniPC included), give the declared order."""
    problem, x0, reference = allen_cahn_setup
    counts = DEIS_COUNTS if name.startswith("DEIS") else COUNTS
    for start, expected in (("warm-up", warm_up_order), ("exact", REGISTRY[name].order)):
        result = global_order(problem, REGISTRY[name].make(), x0, 0.0, T_END, counts, start=start,
                              reference=reference, name=name)
        assert result.start == start
        assert_order(result, expected)


def test_a_fifth_order_method_starts_with_substeps():
    """UniPC-4 (order 5) needs starting values of O(h^5): the third-order singlestep start takes ceil(n^(1/3))
    substeps per start interval, and the method shows order 5 without a reference for its start."""
    problem, x0 = advection_diffusion(), advection_diffusion_states()
    solver = UniPC(4, "bh2", True, lower_order_final=False)
    assert_order(global_order(problem, solver, x0, 0.0, T_END, (32, 64, 128, 256)), 5)


class _OverClaiming(Solver):
    """DPM-Solver-2 declaring order 3."""

    order, name = 3, "DPM-Solver-2 claiming order 3"

    def nfe(self, order):
        return 2

    def step(self, problem, x, step, state):
        return DPMSolverSinglestep(2, "taylor").step(problem, x, Step(step.index, step.s, step.t, 2), state)


def test_assert_order_fails_readably_one_order_below_the_claim(allen_cahn_setup):
    problem, x0, reference = allen_cahn_setup
    result = global_order(problem, _OverClaiming(), x0, 0.0, T_END, (16, 32, 64, 128), reference=reference)
    assert result.fit.reliable and abs(result.fit.slope - 2.0) < 0.05
    with pytest.raises(AssertionError) as info:
        assert_order(result)
    message = str(info.value)
    assert message.startswith(f"DPM-Solver-2 claiming order 3 (global, start='none'): order {result.fit.slope:.2f} "
                              f"(95% CI [{result.fit.ci_low:.2f}, {result.fit.ci_high:.2f}]) over h in")
    assert "expected 3 +- 0.15" in message
    lines = message.splitlines()
    assert lines[1].split() == ["h", "median", "error", "pair", "slope"]
    assert len(lines) == 2 + 4 and sum(line.endswith(" *") for line in lines) == result.fit.n_points
    assert lines[2].split()[0] == "0.0625" and lines[-1].split()[-2] == "2.00"  # largest h first, pair slopes
    assert_order(result, 2)


def test_assert_order_reports_an_unreliable_fit(allen_cahn_setup):
    problem, x0, reference = allen_cahn_setup
    result = global_order(problem, REGISTRY["DPM-Solver-2M"].make(), x0, 0.0, T_END, (32, 64), reference=reference)
    assert not result.fit.reliable
    with pytest.raises(AssertionError, match=r"no reliable order \(too few points: 2 < min_points=3\); expected 2"):
        assert_order(result)


def test_work_precision_and_plots(allen_cahn_setup, tmp_path):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problem, x0, reference = allen_cahn_setup
    solvers = {name: REGISTRY[name].make() for name in ("DPM-Solver-2M", "DPM-Solver-3S")}
    wp = work_precision(problem, solvers, x0, 0.0, T_END, (16, 32, 64), reference=reference,
                        reference_methods=("DOP853",), tolerances=(1e-6, 1e-8, 1e-10))
    assert [c.label for c in wp.curves] == ["DPM-Solver-2M", "DPM-Solver-3S", "DOP853"]
    two_m, three_s, dop = wp.curves
    # 2M: the start (one DPM-Solver-2 step, 2 calls) and the first history value (1 call) replace its first step
    assert list(two_m.nfe) == [18, 34, 66] and list(three_s.nfe) == [48, 96, 192]
    for curve in wp.curves:
        assert np.all(np.diff(curve.errors) < 0) and np.all(np.diff(curve.nfe) > 0)
    assert dop.kind == "reference" and list(dop.parameters) == [1e-6, 1e-8, 1e-10]
    assert wp.curve("DOP853") is dop
    fig, (a, b) = plt.subplots(1, 2)
    wp.plot(a)
    global_order(problem, solvers["DPM-Solver-2M"], x0, 0.0, T_END, (16, 32, 64), reference=reference).plot(b)
    assert len(a.get_lines()) == 3 and len(b.get_lines()) >= 2  # measurements, fitted line (and floor)
    fig.savefig(tmp_path / "wp.png")
    plt.close(fig)


def test_reference_path_extends_on_demand(allen_cahn_setup):
    problem, x0, _ = allen_cahn_setup
    path = ReferencePath(problem, x0, 0.0)
    late = path([0.5, 1.0])
    early = path([0.25])  # solved from t = 0 (the latest known time before it)
    again = path([0.5])  # kept
    assert again[0] is late[0] and path.floor < 1e-12 and path.nfe > 0
    whole = ReferencePath(problem, x0, 0.0)([0.25, 0.5, 1.0])
    assert float((early[0] - whole[0]).abs().max()) < 1e-10 and float((late[1] - whole[2]).abs().max()) < 1e-10
    with pytest.raises(ValueError, match="lies before it"):
        ReferencePath(problem, x0, 0.5)([0.25])


def test_bad_arguments(allen_cahn_setup):
    problem, x0, reference = allen_cahn_setup
    rule = REGISTRY["DPM-Solver-3M"].make()
    with pytest.raises(ValueError, match="start must be one of"):
        global_order(problem, rule, x0, 0.0, 1.0, (8, 16, 32), start="cold", reference=reference)
    with pytest.raises(ValueError, match="statistic must be one of"):
        local_order(problem, rule, x0, 0.0, LOCAL_HS, statistic="mode", reference=reference)
    with pytest.raises(ValueError, match="hs must be"):
        local_order(problem, rule, x0, 0.0, (0.1, -0.1), reference=reference)
    with pytest.raises(TypeError, match="reference must be None, a dict"):
        global_order(problem, rule, x0, 0.0, 1.0, (8, 16, 32), reference=1.0)
    with pytest.raises(ValueError, match=r"grid\(8\) must return 9 times"):
        global_order(problem, rule, x0, 0.0, 1.0, (8,), grid=lambda n: np.linspace(0.0, 1.0, n), reference=reference)
    with pytest.raises(ValueError, match="too early"):
        local_order(problem, rule, x0, 0.0, LOCAL_HS, t_step=0.01)
    with pytest.raises(ValueError, match="must return 1 states of shape"):
        global_order(problem, rule, x0, 0.0, 1.0, (8,), reference=lambda times: [x0[:1]])
    with pytest.raises(TypeError, match="solver protocol"):
        global_order(problem, object(), x0, 0.0, 1.0, (8,), reference=reference)


def test_fit_order_reason_for_a_drifting_fourth_order_method():
    h = 2.0 ** -np.arange(4, 9)
    e = h**4 * (1.0 + 30.0 * h)  # pair slopes rising towards 4: pre-asymptotic
    fit = fit_order(h, e, expected=4)
    assert not fit.reliable and "drift from" in fit.reason
