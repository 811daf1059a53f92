"""The study code: local and global error, work-precision, targets and styles (small cases). Runtime ~5 s."""

import numpy as np
import pytest
import torch

from analysis import standard_schedule, target_16d, target_2d
from analysis.global_error import dpm_solver_names, error_statistics, global_error_study, grid_h_max, registry_runs, steps_option
from analysis.local_error import local_error_study
from analysis.style import SOLVER_STYLES, label, style
from analysis.work_precision import ClassicalSolver, work_precision_study
from expsolver import REGISTRY, VPLinear, time_grid


def test_targets_are_fixed_and_as_documented():
    a, b = target_2d(), target_2d()
    assert (a.K, a.d, a.cov_type) == (6, 2, "diag")
    assert torch.equal(a.means, b.means) and torch.equal(a.covs, b.covs)
    c = target_16d()
    assert (c.K, c.d, c.cov_type) == (4, 16, "full")
    assert torch.equal(c.covs, target_16d().covs)
    eig = torch.linalg.eigvalsh(c.covs)
    assert float(eig.min()) >= 0.01 * (1 - 1e-9) and float(eig.max()) <= 1.0 * (1 + 1e-9)
    assert isinstance(standard_schedule(), VPLinear)


def test_local_study_single_step_matches_reference_order():
    study = local_error_study(target_2d(), standard_schedule(), solvers=["DPM-Solver-2S", "DPM-Solver-3M"],
                              lam_starts=(0.5,), hs=np.geomspace(10**-2.5, 0.3, 10), n_samples=8, cache_dir=False)
    assert len(study.curves) == 4 and not study.skipped
    for curve in study.curves:
        assert curve.fit.reliable, curve.fit.reason
        assert abs(curve.fit.slope - curve.expected) < 0.15
        assert np.all(np.diff(curve.hs) > 0) and curve.hs.shape == curve.median.shape == curve.p90.shape
    assert study.curve("DPM-Solver-3M", "dpmsolver").expected == REGISTRY["DPM-Solver-3M"].order + 1


def test_local_study_drops_steps_whose_history_leaves_the_interval():
    # lam_s = -4: the 4-point history of DPM-Solver-4M reaches lam_s - 3h < lam(1) = -5.02 once h > 0.34.
    study = local_error_study(target_2d(), standard_schedule(), solvers=["DPM-Solver-4M", "DPM-Solver-1"],
                              algorithm_types=("dpmsolver++",), lam_starts=(-4.0,), hs=(0.1, 0.2, 0.3, 0.5),
                              n_samples=4, cache_dir=False)
    assert study.curve("DPM-Solver-4M", lam_s=-4.0).hs.tolist() == [0.1, 0.2, 0.3]
    assert study.curve("DPM-Solver-1", lam_s=-4.0).hs.tolist() == [0.1, 0.2, 0.3, 0.5]


def test_default_solver_set_is_the_dpm_solver_family():
    names = dpm_solver_names()
    assert names and all(n.startswith("DPM-Solver") for n in names)
    assert [r.name for r in registry_runs(algorithm_types=("dpmsolver",))] == names


def test_error_statistics_and_mode_switches():
    target, schedule = target_2d(), standard_schedule()
    x_ref = target.means.clone()  # each mean lies in its own component
    x = x_ref.clone()
    x[0] = target.means[1]  # sample 0 lands in another mode
    stats = error_statistics(x, x_ref, target, schedule, 1e-3)
    d = float((target.means[0] - target.means[1]).norm())
    assert stats["mode_switches"] == 1 and stats["max"] == pytest.approx(d)
    assert stats["median"] == 0.0 and stats["rms"] == pytest.approx(d / np.sqrt(6))


def test_grid_h_max_and_steps_option():
    schedule = standard_schedule()
    ts = time_grid(schedule, "logSNR", 1.0, 1e-3, 10)
    span = schedule.lam(1e-3) - schedule.lam(1.0)
    assert grid_h_max(schedule, ts) == pytest.approx(span / 10, rel=1e-9)
    assert steps_option({"method": "singlestep_fixed", "order": 3}, 8, "steps") == 24
    assert steps_option({"method": "multistep", "order": 3}, 8, "steps") == 8
    assert steps_option({"method": "singlestep_fixed", "order": 3}, 8, "nfe") == 8


def test_global_study_nfe_budgets_and_statistics():
    runs = registry_runs(["DPM-Solver-3S", "DPM-Solver-2M"], ("dpmsolver++",))
    study = global_error_study(target_2d(), standard_schedule(), runs, nfes=(6, 7, 8, 9, 10), n_samples=16,
                               cache_dir=False)
    three = study.curve("DPM-Solver-3S|dpmsolver++")
    assert three.nfe.tolist() == [6, 9]  # singlestep_fixed: 7 and 8 give 6 NFE again, 10 gives 9
    assert three.at_nfe(10) == (9, float(three.median[1]))
    two = study.curve("DPM-Solver-2M|dpmsolver++")
    assert two.nfe.tolist() == [6, 7, 8, 9, 10]
    assert np.all(two.max >= two.p99) and np.all(two.p99 >= two.p90) and np.all(two.p90 >= two.median)
    assert np.all(two.rms <= two.max)
    nfe, err = two.at_nfe(5)
    assert nfe is None and np.isnan(err)


def test_work_precision_counts_classical_nfe_the_same_way():
    classical = (ClassicalSolver("rk4", "torchdiffeq", "rk4", "n_steps", (2, 5)),
                 ClassicalSolver("RK45", "scipy", "RK45", "rtol", (1e-3,)))
    study = work_precision_study(target_2d(), standard_schedule(), n_samples=8, classical=classical,
                                 dpm_runs=registry_runs(["DPM-Solver-1"], ("dpmsolver++",)), nfes=(10,),
                                 cache_dir=False)
    rk4 = study.classical_curve("rk4")
    assert rk4.nfe.tolist() == [8, 20]  # four batched model calls per rk4 step
    assert rk4.median[1] < rk4.median[0] and rk4.status == ["success", "success"]
    assert study.classical_curve("RK45").nfe[0] > 0
    assert study.dpm.curve("DPM-Solver-1|dpmsolver++").nfe.tolist() == [10]


def test_styles_are_deterministic_and_distinct():
    keys = {(v["color"], v["marker"]) for k, v in SOLVER_STYLES.items() if k != "DDIM"}
    assert len(keys) == len(SOLVER_STYLES) - 1
    for name in dpm_solver_names():
        assert name in SOLVER_STYLES
    assert style("some new solver") == style("some new solver")
    assert style("DPM-Solver-2M", "dpmsolver")["linestyle"] != style("DPM-Solver-2M", "dpmsolver++")["linestyle"]
    assert style("DPM-Solver-2M", "dpmsolver")["color"] == style("DPM-Solver-2M")["color"]
    assert label("DPM-Solver-2M", "dpmsolver++") == "DPM-Solver-2M (data)"
    with pytest.raises(ValueError, match="algorithm_type"):
        style("DPM-Solver-2M", "dpm")
