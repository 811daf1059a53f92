"""Solver objects in the figure studies (analysis/global_error.py, work_precision.py, race.py, results.py).

A user's solver written against the public protocol (``examples/custom_solver.py``) runs through the global-error
study, the work-precision study and the race by :class:`analysis.global_error.SolverRun`. Checked here: the
exponential Ralston method measures global order 2 in the study and is not silently replaced by another rule (its
errors differ from DPM-Solver-2M's on the same grids); the object of a registry entry gives the option run's errors
bitwise; cache keys tell solvers apart (class, parameters) while option runs keep their keys; results save and
load; a solver that cannot reach worker processes is refused up front. Order-verification mixture, linear VP
schedule, 32 float64 states (seed 7), one reference solve shared by the module. Runtime ~20 s.
"""

import pickle
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from analysis.global_error import SolverRun, global_error_study, registry_runs
from analysis.race import LINEUP, RaceConfig, _config_record, best_official, race_config, race_studies
from analysis.results import (ResultStore, cached_reference, content_digest, fingerprint, load_result, save_result,
                              solver_id)
from analysis.summary import ORDER_TOL
from analysis.targets import T_END, T_START
from analysis.tasks import check_picklable
from analysis.work_precision import ClassicalSolver, work_precision_study
from examples.custom_solver import ExponentialHeun, ExponentialRalston
from expsolver import REGISTRY, VPLinear, sample
from expsolver.solvers import solver_from_options

from conftest import make_mixture_2d

#: Grid steps of the order fit: above the pre-asymptotic range of the Ralston method, below the reference's floor.
STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256)
#: Budgets of the two DPM-Solver-2M runs (options and object), compared bitwise.
STEPS_2M = (4, 6, 8, 16, 32)
STATS = ("nfe", "steps", "h_max", "rms", "median", "p90", "p99", "max", "mode_switches")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Mixture, schedule, states and a reference cache of this module (one reference solve)."""
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return make_mixture_2d(), VPLinear(), x, str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def study(setting, tmp_path_factory):
    mixture, schedule, x, cache = setting
    store = ResultStore(str(tmp_path_factory.mktemp("store") / "store.json"))
    runs = [SolverRun.from_solver(ExponentialRalston()),
            replace(registry_runs(["DPM-Solver-2M"], ("dpmsolver++",))[0], budgets=STEPS_2M),
            SolverRun.from_solver(REGISTRY["DPM-Solver-2M"].make(), name="DPM-Solver-2M",
                                  label="DPM-Solver-2M object|dpmsolver++", budgets=STEPS_2M)]
    out = global_error_study(mixture, schedule, runs, target_name="small", nfes=STEPS, budget="steps", x=x,
                             floor=1e-11, cache_dir=cache, store=store)
    return out, store


def test_user_solver_measures_its_declared_order(study):
    ralston = study[0].curve("exponential Ralston|dpmsolver++")
    assert ralston.expected_order == ExponentialRalston.order == 2
    assert ralston.steps.tolist() == list(STEPS) and ralston.nfe.tolist() == [2 * n for n in STEPS]
    assert ralston.fit.reliable, ralston.fit.reason
    assert abs(ralston.fit.slope - 2) <= ORDER_TOL
    assert np.all(np.diff(ralston.median) < 0)
    assert ralston.options["solver"]["type"] == "examples.custom_solver.ExponentialRalston"
    assert ralston.options["solver"]["parameters"]["c2"] == repr(2.0 / 3.0)


def test_user_solver_is_not_replaced_by_another_rule(study):
    """The same grids (equal largest lambda steps), other errors: the study ran the object, not DPM-Solver-2M."""
    ralston, two_m = study[0].curve("exponential Ralston|dpmsolver++"), study[0].curve("DPM-Solver-2M|dpmsolver++")
    for n in (16, 32):
        i, j = list(ralston.steps).index(n), list(two_m.steps).index(n)
        assert ralston.h_max[i] == two_m.h_max[j]
        assert not np.isclose(ralston.median[i], two_m.median[j], rtol=1e-2)


def test_registry_object_gives_the_option_runs_errors_bitwise(study):
    options, obj = study[0].curve("DPM-Solver-2M|dpmsolver++"), study[0].curve("DPM-Solver-2M object|dpmsolver++")
    for name in STATS:
        assert np.array_equal(getattr(options, name), getattr(obj, name)), name
    assert options.fit.slope == obj.fit.slope
    assert "solver" not in options.options and obj.options["solver"]["repr"] == repr(REGISTRY["DPM-Solver-2M"].make())


def test_store_keys_of_option_runs_are_unchanged_and_objects_are_keyed_by_class_and_parameters(study, setting):
    _, store = study
    run = registry_runs(["DPM-Solver-2M"], ("dpmsolver++",))[0]
    assert f"small|DPM-Solver-2M|dpmsolver++|{sorted(run.options.items())!r}|16|0|32" in store.keys()
    ralston = [k for k in store.keys() if k.startswith("small|exponential Ralston|")]
    assert len(ralston) == len(STEPS) and all(solver_id(ExponentialRalston()) in k for k in ralston)
    # Equal objects share an id (a cached result is reused); another class or another parameter does not.
    changed = ExponentialRalston()
    changed.c2 = 0.5
    ids = {solver_id(ExponentialRalston()), solver_id(ExponentialHeun()), solver_id(changed)}
    assert len(ids) == 3 and solver_id(ExponentialRalston()) == solver_id(ExponentialRalston())
    assert fingerprint(ExponentialRalston()) != fingerprint(changed)


def test_a_stored_result_is_never_reused_for_another_solver_of_the_same_label(setting, tmp_path):
    mixture, schedule, x, cache = setting
    store = ResultStore(str(tmp_path / "store.json"))
    kwargs = dict(target_name="small", nfes=(8,), budget="steps", x=x, cache_dir=cache, store=store)
    heun_like = ExponentialRalston()
    heun_like.c2 = 1.0  # the exponential Heun rule under the Ralston class
    medians = []
    for solver in (ExponentialRalston(), ExponentialHeun(), heun_like):
        study = global_error_study(mixture, schedule, [SolverRun.from_solver(solver, label="mine")], **kwargs)
        medians.append(study.curve("mine").median[0])
    assert len(store) == 3
    assert medians[0] != medians[1] and medians[1] == medians[2]


def test_results_with_solver_objects_save_and_load(study, tmp_path):
    path = save_result(study[0], str(tmp_path / "global"))
    loaded = load_result(path)
    assert content_digest(loaded) == content_digest(study[0])
    assert loaded.curve("exponential Ralston|dpmsolver++").options["solver"]["order"] == 2


def test_work_precision_includes_solver_object_runs(setting, tmp_path):
    mixture, schedule, _, cache = setting
    study = work_precision_study(mixture, schedule, n_samples=8, nfes=(8, 12), cache_dir=cache,
                                 classical=(ClassicalSolver("rk4", "torchdiffeq", "rk4", "n_steps", (2,)),),
                                 dpm_runs=[ExponentialRalston(), "DPM-Solver-2M"])
    ralston = study.dpm.curve("exponential Ralston|dpmsolver++")
    assert ralston.nfe.tolist() == [8, 12] and ralston.steps.tolist() == [4, 6]  # two model calls per step
    assert study.dpm.curve("DPM-Solver-2M|dpmsolver++").nfe.tolist() == [8, 12]
    assert study.classical_curve("rk4").nfe.tolist() == [8]
    loaded = load_result(save_result(study, str(tmp_path / "wp")))
    assert content_digest(loaded) == content_digest(study)


def test_solver_runs_are_validated():
    with pytest.raises(ValueError, match="options: .* do not also give method, order"):
        SolverRun("x", dict(method="multistep", order=2), solver=ExponentialRalston())
    with pytest.raises(TypeError, match="solver must implement the solver protocol"):
        SolverRun.from_solver(ExponentialRalston)  # the class, not an instance
    with pytest.raises(TypeError, match="runs: .* neither a SolverRun"):
        global_error_study(make_mixture_2d(), VPLinear(), [object()], nfes=(4,), n_samples=2, cache_dir=False)
    with pytest.raises(ValueError, match="runs: 'nope' is neither"):
        global_error_study(make_mixture_2d(), VPLinear(), ["nope"], nfes=(4,), n_samples=2, cache_dir=False)
    with pytest.raises(TypeError, match="configs must hold"):
        best_official(None, VPLinear(), None, None, 10, configs=[3])


def test_best_official_searches_solver_objects(setting, study):
    mixture, schedule, x, cache = setting
    ref = cached_reference(mixture, schedule, x, T_START, T_END, cache_dir=cache)
    assert ref["cached"]
    model = mixture.as_model(schedule)
    configs = [ExponentialHeun(), SolverRun.from_solver(ExponentialRalston()),
               dict(method="multistep", order=2, skip_type="logSNR")]
    best = best_official(model, schedule, x, ref["x"], 10, configs=configs)
    rms = []
    for kwargs in (dict(solver=ExponentialHeun(), steps=5), dict(solver=ExponentialRalston(), steps=5),
                   dict(method="multistep", order=2, steps=10)):
        out = sample(model, schedule, x, t_start=T_START, t_end=T_END, skip_type="logSNR", **kwargs)
        rms.append(float(torch.sqrt(((out.x - ref["x"]) ** 2).sum(dim=1).mean())))
    assert best["rms"] == pytest.approx(min(rms), rel=1e-12) and best["nfe"] == 10
    winner = int(np.argmin(rms))
    assert ("solver" in best["options"]) == (winner < 2)


@pytest.fixture(scope="module")
def race(tmp_path_factory):
    """A small race with the exponential Ralston method on standard and optimised grids, and DDIM both by name and
    by its solver object."""
    ralston = SolverRun.from_solver(ExponentialRalston(), label="exponential Ralston")
    ddim = SolverRun.from_solver(solver_from_options(**LINEUP["DDIM"])[0], label="DDIM object")
    cfg = RaceConfig(target="2d", n_pool=160, n_test=40, n_holdout=40, nfes=(5, 6, 10), optimise_nfes=(10,),
                     official_nfes=(10,), lineup=("DDIM", ddim, ralston), optimised=(ralston,), shifted=(),
                     n_train=64, strata=(0.5,), max_iter_nfe=60, n_validation=64, n_starts=1, n_bootstrap=50,
                     official_methods=("multistep",), n_population=0, boundary_perturbations=4)
    with pytest.MonkeyPatch.context() as patch:  # the race's tasks read the reference cache named by the environment
        patch.setenv("EXPSOLVER_CACHE_DIR", str(tmp_path_factory.mktemp("race_cache")))
        yield cfg, race_studies([cfg])[0]


def test_race_runs_solver_objects_on_standard_and_optimised_grids(race, tmp_path):
    cfg, result = race
    standard = result.curve("exponential Ralston", "standard")
    assert standard.nfe.tolist() == [6, 10]  # two model calls per step: NFE 5 is out of reach
    optimised = result.curve("exponential Ralston", "optimised")
    assert optimised.nfe.tolist() == [10] and optimised.options["solver"]["type"].endswith("ExponentialRalston")
    (grid,) = result.grids
    assert grid["solver"] == "exponential Ralston" and grid["config"]["steps"] == 5
    assert result.acceptance["10"]["solver"] == "exponential Ralston"
    assert result.config["lineup"][2]["options"]["solver"]["repr"] == "exponential Ralston"
    loaded = load_result(save_result(result, str(tmp_path / "race")))
    assert content_digest(loaded) == content_digest(result)


def test_race_object_of_a_lineup_entry_gives_its_curve_bitwise(race):
    _, result = race
    by_name, by_object = result.curve("DDIM", "standard"), result.curve("DDIM object", "standard")
    assert by_name.nfe.tolist() == by_object.nfe.tolist() == [5, 6, 10]
    assert by_name.skip_types == by_object.skip_types
    for split in ("test", "holdout"):
        for key, values in getattr(by_name, split).items():
            assert np.array_equal(values, getattr(by_object, split)[key]), (split, key)


def test_race_configurations_of_names_are_saved_as_before():
    for size in ("full", "reduced", "quick"):
        cfg = race_config("2d", size)
        assert _config_record(cfg) == asdict(cfg)


def test_race_refuses_what_cannot_run(race):
    cfg, _ = race

    class Local(ExponentialRalston):  # defined in a function: cannot be pickled for worker processes
        pass

    local = replace(cfg, lineup=(SolverRun.from_solver(Local(), label="local"),), optimised=())
    with pytest.raises(TypeError, match=r"cfgs \(the solver of 'local'\) must be picklable"):
        race_studies([local], executor=2)
    with pytest.raises(TypeError, match="cfgs: lineup entries must be LINEUP names or SolverRun"):
        race_studies([replace(cfg, lineup=(ExponentialRalston(),))])
    with pytest.raises(ValueError, match="cfgs: optimise_nfes holds 9"):
        race_studies([replace(cfg, optimise_nfes=(9,))])
    with pytest.raises(ValueError, match="cfgs: two different SolverRun entries are labelled 'r'"):
        race_studies([replace(cfg, lineup=(SolverRun.from_solver(ExponentialRalston(), label="r"),),
                              optimised=(SolverRun.from_solver(ExponentialHeun(), label="r"),))])
    with pytest.raises(ValueError, match="'DDIM' names both a LINEUP entry and a SolverRun"):
        race_studies([replace(cfg, lineup=("DDIM", SolverRun.from_solver(ExponentialRalston(), label="DDIM")))])


def test_example_solvers_pickle():
    for solver in (ExponentialRalston(), ExponentialHeun()):
        assert check_picklable(solver, "solver") is solver
        run = pickle.loads(pickle.dumps(SolverRun.from_solver(solver)))
        assert type(run.solver) is type(solver) and solver_id(run.solver) == solver_id(solver)
