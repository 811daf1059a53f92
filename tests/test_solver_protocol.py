"""The open solver interface: solver objects, ``sample(solver=...)``, ``integrate``, the registry, a user's own solver.

Every built-in option set of ``sample()`` has an equivalent solver object built here with the keyword constructors
(independently of :func:`expsolver.solvers.solver_from_options`, the translation under test), and the two give
bitwise-identical states. The user's solvers of ``examples/custom_solver.py`` are measured by the public harness.
"""

import ast
import importlib
import importlib.util
import itertools
import pathlib

import numpy as np
import pytest
import torch

import expsolver
from analysis.targets import verification_target
from analysis.verification import VerificationProblem, measure_global_order
from expsolver import AdaptiveController, GaussianMixture, REGISTRY, VPDiscrete, VPLinear, convergence, integrate, sample
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE
from expsolver.sampling import sampling_grid
from expsolver.solvers import (DEISMultistep, DPMSolverFast, DPMSolverMultistep, DPMSolverSinglestep,
                               SDEDPMSolverMultistep, Solver, SolverConfig, UniPC, register)
from expsolver.brownian import GeneratorNoise

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEDULES = {"linear": VPLinear(), "discrete": VPDiscrete(betas=torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))}
MIXTURE = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64),
                          torch.tensor([[1.0, -0.5, 0.2], [-1.0, 0.4, 0.8]], dtype=torch.float64),
                          torch.tensor([0.3, 0.5], dtype=torch.float64))


def _examples():
    spec = importlib.util.spec_from_file_location("custom_solver", ROOT / "examples" / "custom_solver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLES = _examples()


def _x(n=5, seed=1):
    return torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _equivalent(schedule, method, order, solver_type, skip_type, lof, compat, steps, variant=None, corrector=None):
    """``(solver, sample kwargs)`` equivalent to the option set, from the keyword constructors."""
    official = compat == "official"
    grid = dict(steps=steps, skip_type=skip_type)
    if official:  # the official grid is built in float32; an explicit grid carries that
        n = steps // order if method == "singlestep_fixed" else steps
        grid = dict(timesteps=sampling_grid(schedule, skip_type, 1.0, schedule.t_min if isinstance(schedule, VPDiscrete)
                                            else 1e-3, n, "official"))
    if method == "multistep":
        return DPMSolverMultistep(order=order, solver_type=solver_type,
                                  coefficients="official" if official else "corrected", lower_order_final=lof,
                                  lower_order_final_below=10 if official else None), grid
    if method == "unipc":
        return UniPC(order=order, variant=variant, use_corrector=corrector, lower_order_final=lof), grid
    if method == "deis":
        return DEISMultistep(order=order, lower_order_final=lof), grid
    if method == "singlestep_fixed":
        if not official:
            grid = dict(steps=steps // order, skip_type=skip_type)
        return DPMSolverSinglestep(order=order, solver_type=solver_type, intermediates=skip_type,
                                   official_grid=official), grid
    fast = DPMSolverFast(order=order, solver_type=solver_type, intermediates=skip_type, official_grid=official,
                         outer="logSNR" if skip_type == "logSNR" else "subset")
    return fast, dict(steps=steps, skip_type=skip_type)  # it rounds the grid it picks itself


def _cases():
    methods = [("multistep", k) for k in (1, 2, 3, 4)] + [("singlestep", k) for k in (1, 2, 3)]
    methods += [("singlestep_fixed", k) for k in (1, 2, 3)] + [("deis", k) for k in (1, 2, 3)]
    methods += [("unipc", k) for k in (1, 2, 3)]
    for (method, order), skip_type, compat in itertools.product(methods, ("time_uniform", "logSNR", "time_quadratic"),
                                                                 (None, "official")):
        if compat and (method in ("unipc", "deis") or order > 3):
            continue
        variants = [("bh1", True), ("bh2", False)] if method == "unipc" else [(None, None)]
        for variant, corrector in variants:
            yield dict(method=method, order=order, skip_type=skip_type, compat=compat, variant=variant,
                       use_corrector=corrector)


@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: "-".join(str(v) for v in c.values() if v is not None))
def test_strings_and_objects_are_bitwise_identical(case, schedule_name):
    schedule = SCHEDULES[schedule_name]
    model = MIXTURE.as_model(schedule)
    for algorithm_type, solver_type, lof, steps in (("dpmsolver++", "dpmsolver", True, 12),
                                                     ("dpmsolver", "taylor", False, 7)):
        if case["method"] in ("multistep", "unipc", "deis", "singlestep_fixed") and steps < case["order"]:
            continue
        options = {k: v for k, v in case.items() if v is not None}
        by_strings = sample(model, schedule, _x(), steps=steps, algorithm_type=algorithm_type, solver_type=solver_type,
                            lower_order_final=lof, **options)
        solver, grid = _equivalent(schedule, case["method"], case["order"], solver_type, case["skip_type"], lof,
                                   case["compat"], steps, case["variant"], case["use_corrector"])
        by_object = sample(model, schedule, _x(), algorithm_type=algorithm_type, solver=solver, **grid)
        assert torch.equal(by_strings.x, by_object.x), (case, algorithm_type)
        assert by_strings.nfe == by_object.nfe and by_strings.orders == by_object.orders
        assert np.array_equal(by_strings.timesteps, by_object.timesteps)


@pytest.mark.parametrize("order", [2, 3])
def test_adaptive_with_a_controller_object_equals_method_adaptive(order):
    schedule = SCHEDULES["linear"]
    model = MIXTURE.as_model(schedule)
    for compat in (None, "official"):
        by_strings = sample(model, schedule, _x(), method="adaptive", order=order, compat=compat, atol=1e-3, rtol=1e-3)
        control = AdaptiveController(1.0, 1e-3, atol=1e-3, rtol=1e-3, official=compat == "official")
        by_object = sample(model, schedule, _x(), solver=DPMSolverSinglestep(order=order), timesteps=control)
        assert torch.equal(by_strings.x, by_object.x)
        assert by_strings.nfe == by_object.nfe and by_strings.n_rejected == by_object.n_rejected


def test_sde_solver_object_equals_the_sde_options():
    schedule = SCHEDULES["linear"]
    model = MIXTURE.as_model(schedule)
    for algorithm_type, order in itertools.product(("sde-dpmsolver++", "sde-dpmsolver"), (1, 2)):
        by_strings = sample(model, schedule, _x(), steps=10, algorithm_type=algorithm_type, order=order,
                            generator=torch.Generator().manual_seed(3))
        solver = SDEDPMSolverMultistep(order=order, noise=GeneratorNoise(torch.Generator().manual_seed(3)))
        by_object = sample(model, schedule, _x(), steps=10, skip_type="time_uniform", algorithm_type=algorithm_type,
                           solver=solver)
        assert torch.equal(by_strings.x, by_object.x)


def test_every_registry_entry_runs_the_rule_its_options_name():
    """``sample(**options)`` and ``sample(solver=entry.make())`` agree bitwise on an explicit grid for every entry;
    the entry's declared order is its object's."""
    schedule = SCHEDULES["linear"]
    model = MIXTURE.as_model(schedule)
    grid = sampling_grid(schedule, "logSNR", 1.0, 1e-3, 9)
    for name, config in REGISTRY.items():
        by_strings = sample(model, schedule, _x(), timesteps=grid, **config.options)
        by_object = sample(model, schedule, _x(), timesteps=grid, solver=config.make())
        assert torch.equal(by_strings.x, by_object.x), name
        assert config.order == config.make().order
    assert REGISTRY["DPM-Solver-3M-official"].order == 2 and REGISTRY["UniPC-3-bh2"].order == 4


def test_registering_options_that_select_no_solver_fails_at_registration():
    with pytest.raises(ValueError, match="method"):
        register(SolverConfig(name="broken", options=dict(method="nope", order=2)))
    assert "broken" not in REGISTRY


def test_a_user_solver_is_measured_as_itself_not_as_dpm_solver_2m():
    """A user's rule through the order verification: its own errors, not those of an option set (the harness
    once measured DPM-Solver++(2M) whatever rule was registered)."""
    vp = VerificationProblem()
    heun = measure_global_order(vp, EXAMPLES.ExponentialHeun(), "dpmsolver++", start="warm-up")
    ralston = measure_global_order(vp, EXAMPLES.ExponentialRalston(), "dpmsolver++", start="warm-up")
    dpm2m = measure_global_order(vp, "DPM-Solver-2M", "dpmsolver++", start="warm-up")
    n = min(len(heun.errors), len(ralston.errors), len(dpm2m.errors))
    assert not np.allclose(heun.errors[:n], ralston.errors[:n], rtol=1e-3)
    assert not np.allclose(heun.errors[:n], dpm2m.errors[:n], rtol=1e-3)
    assert not np.allclose(ralston.errors[:n], dpm2m.errors[:n], rtol=1e-3)
    assert heun.nfe[0] == 2 * 4  # two model calls per step on the 4-step grid


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("name", ["ExponentialHeun", "ExponentialRalston"])
def test_example_solvers_have_local_order_3_and_global_order_2(name, prediction):
    """Through the public harness only (:mod:`expsolver.convergence`): one step from the exact state at lam = 0,
    and whole paths on grids uniform in lam, on the 3-component verification mixture (float64, seed 7)."""
    schedule = SCHEDULES["linear"]
    problem = DiffusionODE(schedule, ModelWrapper(verification_target().as_model(schedule), schedule), prediction)
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    solver = getattr(EXAMPLES, name)()
    local = convergence.local_order(problem, solver, x0, 1.0, [0.8 * 2.0 ** (-k / 2) for k in range(17)],
                                    t_step=schedule.lam_inverse_float(0.0))
    glob = convergence.global_order(problem, solver, x0, 1.0, 1e-3, [4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192],
                                    stop_below=1e-10)
    convergence.assert_order(local, 3.0)
    convergence.assert_order(glob, 2.0)


def test_example_solver_sample_equals_integrate():
    schedule = SCHEDULES["linear"]
    model = MIXTURE.as_model(schedule)
    grid = sampling_grid(schedule, "time_quadratic", 1.0, 1e-3, 8)
    for solver in (EXAMPLES.ExponentialHeun(), EXAMPLES.ExponentialRalston()):
        via_sample = sample(model, schedule, _x(), timesteps=grid, solver=solver)
        problem = DiffusionODE(schedule, ModelWrapper(model, schedule), "data")
        with torch.no_grad():
            via_integrate = integrate(problem, solver, _x(), grid)
        assert torch.equal(via_sample.x, via_integrate.x)
        assert via_sample.nfe == via_integrate.nfe == 16


def test_optimize_timesteps_with_a_user_solver_beats_the_logsnr_grid_on_held_out_states():
    schedule = SCHEDULES["linear"]
    target = verification_target()
    model = target.as_model(schedule)
    x = torch.randn(600, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    grid = expsolver.optimize_timesteps(model, schedule, x, steps=5, t_start=1.0, t_end=1e-3, init="logSNR",
                                        solver=EXAMPLES.ExponentialRalston(), n_train=64, min_per_stratum=8,
                                        n_validation=64, max_iter=20, max_time=None, n_starts=1)
    assert grid.config["solver"] == "exponential Ralston" and "exponential Ralston" in grid.label
    assert grid.errors["holdout"]["rms"] < grid.initial_errors["holdout"]["rms"]
    assert grid.errors["test"]["rms"] < grid.initial_errors["test"]["rms"]
    rerun = sample(model, schedule, x[:8], solver=EXAMPLES.ExponentialRalston(), **grid.sample_kwargs)
    assert rerun.nfe == 10


@pytest.mark.parametrize("option", ["method", "order", "solver_type", "variant", "use_corrector", "compat",
                                    "lower_order_final"])
def test_solver_excludes_the_options_that_choose_a_solver(option):
    schedule = SCHEDULES["linear"]
    value = {"method": "multistep", "order": 2, "solver_type": "taylor", "variant": "bh1", "use_corrector": True,
             "compat": "official", "lower_order_final": False}[option]
    with pytest.raises(ValueError, match=option):
        sample(MIXTURE.as_model(schedule), schedule, _x(), solver=DPMSolverMultistep(order=2), **{option: value})


def test_bad_solver_objects_are_named():
    schedule = SCHEDULES["linear"]
    model = MIXTURE.as_model(schedule)
    with pytest.raises(TypeError, match="solver protocol"):
        sample(model, schedule, _x(), solver="multistep")
    with pytest.raises(TypeError, match="class, not an instance"):
        sample(model, schedule, _x(), solver=DPMSolverMultistep)
    with pytest.raises(ValueError, match="stochastic"):
        sample(model, schedule, _x(), solver=DPMSolverMultistep(), algorithm_type="sde-dpmsolver++")
    with pytest.raises(ValueError, match="noise source"):
        sample(model, schedule, _x(), solver=DPMSolverMultistep(), generator=torch.Generator())
    with pytest.raises(TypeError, match="embedded"):
        sample(model, schedule, _x(), solver=DPMSolverMultistep(), timesteps=AdaptiveController(1.0, 1e-3))
    with pytest.raises(TypeError, match="callback"):
        sample(model, schedule, _x(), solver=DPMSolverMultistep(), callback=3)

    class NoStep(Solver):
        pass

    with pytest.raises(NotImplementedError, match="NoStep must implement step"):
        sample(model, schedule, _x(), solver=NoStep())


def test_integrate_callback_sees_every_step():
    schedule = SCHEDULES["linear"]
    model = MIXTURE.as_model(schedule)
    seen = []
    out = sample(model, schedule, _x(), steps=6, order=3, callback=seen.append, return_intermediates=True)
    assert [info["step"] for info in seen] == list(range(6))
    assert [info["t"] for info in seen] == list(out.timesteps[1:])
    assert all(info["x"] is state for info, state in zip(seen, out.intermediates[1:]))
    assert all(info["prediction"] is not None and info["prediction"].shape == (5, 3) for info in seen)


def test_no_module_is_shadowed_by_a_function_of_the_same_name():
    for name in dir(expsolver):
        if callable(getattr(expsolver, name)) and importlib.util.find_spec(f"expsolver.{name}") is not None:
            pytest.fail(f"expsolver.{name} is both a function and a module")


def test_no_public_function_is_longer_than_80_lines():
    """Code health: a public function (docstring excluded) fits on one screen."""
    long = []
    for path in (ROOT / "expsolver").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                body = node.body
                doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
                start = body[1].lineno if doc and len(body) > 1 else body[0].lineno
                if node.end_lineno - start + 1 > 80:
                    long.append(f"{path.name}:{node.name} ({node.end_lineno - start + 1} lines)")
    assert not long, long


def test_sde_registry_entries_build_their_solvers_from_their_options():
    schedule = SCHEDULES["linear"]
    model = MIXTURE.as_model(schedule)
    for name, config in expsolver.SDE_REGISTRY.items():
        solver = config.make(GeneratorNoise(torch.Generator().manual_seed(4)))
        assert solver.stochastic
        if config.entry == "sample":
            by_strings = sample(model, schedule, _x(), steps=8, generator=torch.Generator().manual_seed(4),
                                **config.options)
            by_object = sample(model, schedule, _x(), steps=8, skip_type="time_uniform", solver=solver,
                               algorithm_type=config.options["algorithm_type"])
            assert torch.equal(by_strings.x, by_object.x), name
