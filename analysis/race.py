"""The accuracy-per-NFE race: official DPM-Solver, DPM-Solver++, UniPC on standard and optimised time grids.

At 5-25 model evaluations the error per NFE is what matters. For one target (:mod:`analysis.targets`) the study
draws three independent sets of states from the exact marginal ``q_{t_start}`` with fixed seeds,

* ``pool`` (training states for :func:`expsolver.optimize_timesteps`, which stratifies and weights them),
* ``test`` (1,000 states) and ``holdout`` (5,000 states), never seen by any optimisation,

integrates them with high accuracy (SciPy DOP853 in lambda, ``rtol = atol = 1e-10``: about 1e-8 worst-case error on
these targets, checked against ``rtol = 1e-12`` and torchdiffeq dopri8) and measures, on ``test`` and ``holdout``,
the per-state error ``|x - x_ref|_2`` at ``t_end``: its RMS (what users quote, dominated by the few states whose
trajectories pass near the saddle between two modes) and its median.

* **Lineup** (:data:`LINEUP`): DDIM, DPM-Solver-3 (singlestep, DPM-Solver-fast orders), DPM-Solver++(2M) and
  (3M) as the official implementation has them (``compat="official"``) and corrected (3M: exact exponential Adams),
  UniPC-2/3 (``bh1``/``bh2``, predictor order p with the corrector) and UniPC-4-bh1; each on the four standard grids
  (the best one per NFE is drawn, chosen on the test states, which favours the baselines) and, for
  :data:`OPTIMISED` solvers, on a grid optimised for that solver and NFE on the pool; for :data:`SHIFTED` solvers
  also on a grid optimised together with its model times (``shift_model_times=True`` of
  :func:`expsolver.optimize_timesteps`; curve name suffix :data:`MODEL_TIMES_SUFFIX`).
* **Best official**: for each acceptance NFE, the smallest RMS over every official configuration
  (:func:`official_configs`: methods, orders, skip types, prediction types, solver types, ``lower_order_final``)
  run with ``compat="official"`` and NFE <= the budget, selected separately on the test and the holdout states.
* **Acceptance** (issue 8): the optimised configuration with the smallest validation RMS (pool states outside its
  training subset; never selected on test or holdout) must reach at most 1/3 of the best official RMS on both test
  and holdout at NFE 10 and 20. Bootstrap 95 % intervals of every RMS (resampling states) are recorded, because a
  handful of states carry most of it.
* **Switch analysis** (:func:`switch_analysis`): for each acceptance NFE and evaluation set, the states that end
  in another mode than the reference under our sampler and under the best official configuration, the fraction of
  random perturbations of size 1e-2 at ``t_start`` that change each one's exact end mode
  (:func:`boundary_sensitivity`: non-zero means it lies within 1e-2 of a basin boundary), and the number of
  switches the 1/3 criterion leaves room for given our error on all other states.
* **Population estimate**: since 1,000 or 5,000 states hold only a few of the mode-switching states that carry the
  RMS, the acceptance grids and the best official configuration (the full sweep again) are also measured on
  ``n_population`` (30,000) further independent states.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import SKIP_TYPES, optimize_timesteps, reference_solve, sample

from .results import cached_reference, provenance, result_type
from .targets import T_END, T_START, get_target, standard_schedule

__all__ = ["LINEUP", "OPTIMISED", "SHIFTED", "MODEL_TIMES_SUFFIX", "RaceConfig", "RaceCurve", "RaceResult",
           "official_configs", "best_official", "rms_interval", "race_study", "race_config", "ACCEPTANCE_NFES", "boundary_sensitivity", "switch_analysis"]

#: name -> sample() options of the solvers in the race.
LINEUP = {
    "DDIM": dict(method="multistep", order=1),
    "DPM-Solver-3": dict(method="singlestep", order=3, algorithm_type="dpmsolver", compat="official"),
    "DPM-Solver++(2M) official": dict(method="multistep", order=2, compat="official"),
    "DPM-Solver++(2M)": dict(method="multistep", order=2),
    "DPM-Solver++(3M) official": dict(method="multistep", order=3, compat="official"),
    "DPM-Solver++(3M) corrected": dict(method="multistep", order=3, solver_type="taylor"),
    "UniPC-2-bh1": dict(method="unipc", order=2, variant="bh1"),
    "UniPC-2-bh2": dict(method="unipc", order=2, variant="bh2"),
    "UniPC-3-bh1": dict(method="unipc", order=3, variant="bh1"),
    "UniPC-3-bh2": dict(method="unipc", order=3, variant="bh2"),
    "UniPC-4-bh1": dict(method="unipc", order=4, variant="bh1"),
}
#: Solvers whose grids are optimised (one grid per NFE of ``RaceConfig.optimise_nfes``).
OPTIMISED = ("DDIM", "DPM-Solver++(2M)", "DPM-Solver++(3M) corrected", "UniPC-2-bh1", "UniPC-2-bh2", "UniPC-3-bh1",
             "UniPC-3-bh2", "UniPC-4-bh1")
#: Solvers whose grids are also optimised with decoupled model times (learned per grid point).
SHIFTED = ("UniPC-2-bh2", "UniPC-3-bh2")
MODEL_TIMES_SUFFIX = " + model times"
ACCEPTANCE_NFES = (10, 20)


@dataclass(frozen=True)
class RaceConfig:
    """Sizes, seeds and optimiser settings of one race study."""

    target: str
    n_pool: int = 20000
    n_test: int = 1000
    n_holdout: int = 5000
    seeds: tuple = (21, 12, 13)  # pool, test, holdout
    n_population: int = 30000
    population_seed: int = 99
    nfes: tuple = tuple(range(5, 26))
    optimise_nfes: tuple = (5, 10, 15, 20, 25)
    official_nfes: tuple = (5, 10, 15, 20, 25)
    lineup: tuple = tuple(LINEUP)
    optimised: tuple = OPTIMISED
    shifted: tuple = SHIFTED
    reference_rtol: float = 1e-10
    n_train: int = 1024
    strata: tuple = (0.5, 0.9, 0.99, 0.998)
    error_cap: float | None = 0.3
    # Objective evaluations per L-BFGS descent: max_iter_nfe // NFE (200 at NFE 10, 80 at NFE 25); no wall-time
    # limit (max_time=None), so the grids do not depend on the machine's speed or load.
    max_iter_nfe: int = 2000
    max_time: float | None = None
    n_validation: int = 8192
    n_starts: int = 3
    official_methods: tuple = ("singlestep", "singlestep_fixed", "multistep")
    n_bootstrap: int = 2000
    boundary_radius: float = 1e-2
    boundary_perturbations: int = 20


def race_config(target: str, quick: bool = False) -> RaceConfig:
    """The full study, or a small one for smoke runs (``quick``)."""
    if quick:
        return RaceConfig(target=target, n_pool=500, n_test=100, n_holdout=150, nfes=(6, 10), optimise_nfes=(10,),
                          official_nfes=(10,), lineup=("DDIM", "UniPC-3-bh1"), optimised=("UniPC-3-bh1",),
                          shifted=("UniPC-3-bh1",),
                          n_train=96, strata=(0.5, 0.9), max_iter_nfe=50, n_validation=128, n_starts=1,
                          n_bootstrap=100, official_methods=("multistep",), n_population=0,
                          boundary_perturbations=4)
    return RaceConfig(target=target)


@result_type
@dataclass
class RaceCurve:
    """Errors of one solver against NFE on one kind of grid (``grid`` = ``"standard"`` or ``"optimised"``).

    ``skip_types[i]`` is the grid used at ``nfe[i]`` (the best standard one on the test states, or
    ``"optimised"``); ``test`` / ``holdout`` hold arrays ``rms``, ``median``, ``rms_low``, ``rms_high`` (95 %
    bootstrap interval), ``mode_switches``.
    """

    name: str
    options: dict
    grid: str
    nfe: np.ndarray
    skip_types: list
    test: dict
    holdout: dict


@result_type
@dataclass
class RaceResult:
    """Everything the race figure and the README numbers are made of (see the module docstring)."""

    target: str
    config: dict
    reference: dict
    curves: list
    official_best: dict
    grids: list
    acceptance: dict
    timings: dict
    provenance: dict = field(default_factory=provenance)

    def curve(self, name: str, grid: str) -> RaceCurve:
        for c in self.curves:
            if c.name == name and c.grid == grid:
                return c
        raise KeyError(f"no curve {name!r} on {grid!r} grids")


def official_configs(methods=("singlestep", "singlestep_fixed", "multistep")) -> list:
    """Every configuration of the official DPM-Solver (``compat="official"``) at a given NFE: methods
    singlestep (DPM-Solver-fast), singlestep_fixed and multistep; orders 1-3; skip types logSNR, time_uniform,
    time_quadratic (the official ones); noise and data prediction; solver types dpmsolver and taylor; and, for
    multistep, ``lower_order_final`` on and off. Duplicates (order 1 ignores the solver type) are dropped."""
    out, seen = [], set()
    for method, order, skip, alg, solver_type, lof in itertools.product(
            methods, (1, 2, 3), ("logSNR", "time_uniform", "time_quadratic"),
            ("dpmsolver++", "dpmsolver"), ("dpmsolver", "taylor"), (True, False)):
        if order == 1:
            solver_type, method = "dpmsolver", "multistep" if method != "singlestep_fixed" else method
        if method != "multistep":
            lof = True
        options = dict(method=method, order=order, skip_type=skip, algorithm_type=alg, solver_type=solver_type,
                       lower_order_final=lof, compat="official")
        key = tuple(sorted(options.items()))
        if key not in seen:
            seen.add(key)
            out.append(options)
    return out


def _errors(x, ref) -> np.ndarray:
    return (x - ref).reshape(x.shape[0], -1).norm(dim=1).detach().cpu().numpy().astype(np.float64)


def rms_interval(errors, n_bootstrap: int = 2000, seed: int = 0) -> tuple:
    """95 % bootstrap interval (percentile) of the RMS of ``errors`` (resampling states)."""
    rng = np.random.default_rng(seed)
    sq = np.asarray(errors, dtype=np.float64) ** 2
    idx = rng.integers(0, len(sq), size=(n_bootstrap, len(sq)))
    values = np.sqrt(sq[idx].mean(axis=1))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def best_official(model, schedule, x, ref, nfe: int, *, t_start: float = T_START, t_end: float = T_END,
                  methods=("singlestep", "singlestep_fixed", "multistep")) -> dict:
    """The official configuration (:func:`official_configs`, NFE <= ``nfe``) with the smallest RMS on ``x``.

    Returns ``dict(rms, median, nfe, options)``.
    """
    best = None
    for options in official_configs(methods):
        try:
            result = sample(model, schedule, x, steps=nfe, t_start=t_start, t_end=t_end, **options)
        except ValueError:
            continue  # e.g. steps < order for singlestep_fixed
        if result.nfe > nfe:
            continue
        err = _errors(result.x, ref)
        rms = float(np.sqrt(np.mean(err**2)))
        if best is None or rms < best["rms"]:
            best = dict(rms=rms, median=float(np.median(err)), nfe=int(result.nfe), options=options)
    return best


def _stats(errors, target, x, ref, schedule, n_bootstrap, seed):
    lo, hi = rms_interval(errors, n_bootstrap, seed)
    switches = int((target.component(x, T_END, schedule) != target.component(ref, T_END, schedule)).sum())
    return dict(rms=float(np.sqrt(np.mean(errors**2))), median=float(np.median(errors)), rms_low=lo, rms_high=hi,
                mode_switches=switches)


def race_study(cfg: RaceConfig, progress=None) -> RaceResult:
    """Run the race for ``cfg.target`` (module docstring). ``progress(message)`` is called as it goes."""
    say = progress or (lambda message: None)
    schedule, target = standard_schedule(), get_target(cfg.target)
    model = target.as_model(schedule)
    timings = {}
    t0 = time.perf_counter()
    states, refs = {}, {}
    for name, n, seed in (("pool", cfg.n_pool, cfg.seeds[0]), ("test", cfg.n_test, cfg.seeds[1]),
                          ("holdout", cfg.n_holdout, cfg.seeds[2])):
        states[name] = target.sample(n, generator=torch.Generator().manual_seed(seed), t=T_START, schedule=schedule)
        refs[name] = cached_reference(target, schedule, states[name], T_START, T_END, rtol=cfg.reference_rtol,
                                      atol=cfg.reference_rtol)["x"]
    timings["references_s"] = time.perf_counter() - t0
    say(f"{cfg.target}: references of {sum(len(v) for v in states.values())} states")

    def run(options, n, split, timesteps=None, model_timesteps=None):
        kw = (dict(timesteps=timesteps, model_timesteps=model_timesteps) if timesteps is not None
              else dict(steps=n, t_start=T_START, t_end=T_END))
        result = sample(model, schedule, states[split], **kw, **options)
        return result, _errors(result.x, refs[split])

    def run_grid(entry, split):
        return run(LINEUP[entry["solver"]], entry["config"]["steps"], split, entry["timesteps"],
                   entry["model_timesteps"])

    # Standard grids: every skip type, the best on the test states drawn (favours the baselines).
    t0 = time.perf_counter()
    curves = []
    for name in cfg.lineup:
        options = LINEUP[name]
        skips = SKIP_TYPES if options.get("compat") != "official" else ("logSNR", "time_uniform", "time_quadratic")
        rows = []
        for n in cfg.nfes:
            best = None
            for skip in skips:
                result, err = run(dict(options, skip_type=skip), n, "test")
                if result.nfe != n:
                    continue
                rms = float(np.sqrt(np.mean(err**2)))
                if best is None or rms < best[0]:
                    best = (rms, skip, result, err)
            if best is None:
                continue
            _, skip, result, err = best
            hold_result, hold_err = run(dict(options, skip_type=skip), n, "holdout")
            rows.append((n, skip, _stats(err, target, result.x, refs["test"], schedule, cfg.n_bootstrap, n),
                         _stats(hold_err, target, hold_result.x, refs["holdout"], schedule, cfg.n_bootstrap, n)))
        curves.append(_curve(name, options, "standard", rows))
        say(f"{cfg.target}: {name} on standard grids")
    timings["standard_s"] = time.perf_counter() - t0

    # Best official configuration per acceptance NFE, on each evaluation set.
    t0 = time.perf_counter()
    official = {}
    for n in cfg.official_nfes:
        official[str(n)] = {split: best_official(model, schedule, states[split], refs[split], n,
                                                 methods=cfg.official_methods)
                            for split in ("test", "holdout")}
        say(f"{cfg.target}: best official at NFE {n}: test {official[str(n)]['test']['rms']:.4g}, "
            f"holdout {official[str(n)]['holdout']['rms']:.4g}")
    timings["official_s"] = time.perf_counter() - t0

    # Optimised grids (with learned model times for the SHIFTED solvers).
    t0 = time.perf_counter()
    grids = []
    jobs = [(name, name, False) for name in cfg.optimised] + [(name + MODEL_TIMES_SUFFIX, name, True)
                                                              for name in cfg.shifted]
    for name, solver, shift in jobs:
        options = LINEUP[solver]
        rows = []
        for n in cfg.optimise_nfes:
            grid = optimize_timesteps(model, schedule, states["pool"], steps=n, t_start=T_START, t_end=T_END,
                                      ref_train=refs["pool"], x_test=states["test"], ref_test=refs["test"],
                                      x_holdout=states["holdout"], ref_holdout=refs["holdout"], n_train=cfg.n_train,
                                      strata=cfg.strata, error_cap=cfg.error_cap,
                                      max_iter=max(1, cfg.max_iter_nfe // n),
                                      max_time=cfg.max_time, n_validation=cfg.n_validation, n_starts=cfg.n_starts,
                                      shift_model_times=shift, **options)
            entry = grid.to_dict()
            entry.update(name=name, solver=solver)
            grids.append(entry)
            stats = []
            for split in ("test", "holdout"):
                result, err = run_grid(entry, split)
                stats.append(_stats(err, target, result.x, refs[split], schedule, cfg.n_bootstrap, n))
            rows.append((n, "optimised", stats[0], stats[1]))
            say(f"{cfg.target}: {name} optimised for NFE {n} in {grid.optimization_time_s:.1f} s: "
                f"test {stats[0]['rms']:.4g}, holdout {stats[1]['rms']:.4g}")
        curves.append(_curve(name, options, "optimised", rows))
    timings["optimisation_s"] = time.perf_counter() - t0

    acceptance = _acceptance(grids, official, curves)
    t0 = time.perf_counter()
    chosen_grids = {n: next(g for g in grids if g["name"] == entry["solver"] and g["config"]["steps"] == int(n))
                    for n, entry in acceptance.items()}
    for n, entry in acceptance.items():
        grid = chosen_grids[n]
        for split in ("test", "holdout"):
            ours, _ = run_grid(grid, split)
            best, _ = run(official[n][split]["options"], int(n), split)
            entry[split]["switches"] = switch_analysis(target, schedule, states[split], refs[split], ours.x, best.x,
                                                       allowed_rms=official[n][split]["rms"] / 3.0, cfg=cfg)
        say(f"{cfg.target}: switch analysis at NFE {n}: " + "; ".join(
            f"{split}: {len(entry[split]['switches']['ours'])} switched (allowed "
            f"{entry[split]['switches']['allowed_switches']})" for split in ("test", "holdout")))
    timings["switch_analysis_s"] = time.perf_counter() - t0
    if cfg.n_population:
        t0 = time.perf_counter()
        x_pop = target.sample(cfg.n_population, generator=torch.Generator().manual_seed(cfg.population_seed),
                              t=T_START, schedule=schedule)
        ref_pop = cached_reference(target, schedule, x_pop, T_START, T_END, rtol=cfg.reference_rtol,
                                   atol=cfg.reference_rtol)["x"]
        for n, entry in acceptance.items():
            grid = chosen_grids[n]
            result = sample(model, schedule, x_pop, timesteps=grid["timesteps"],
                            model_timesteps=grid["model_timesteps"], **LINEUP[grid["solver"]])
            ours = _stats(_errors(result.x, ref_pop), target, result.x, ref_pop, schedule, cfg.n_bootstrap, int(n))
            best = best_official(model, schedule, x_pop, ref_pop, int(n), methods=cfg.official_methods)
            entry["population"] = dict(ours, n=cfg.n_population, official_rms=best["rms"],
                                       official_median=best["median"], official_options=best["options"],
                                       ratio=float(ours["rms"] / best["rms"]))
            say(f"{cfg.target}: population ({cfg.n_population} states) at NFE {n}: {ours['rms']:.4g} vs best "
                f"official {best['rms']:.4g}")
        timings["population_s"] = time.perf_counter() - t0
    reference = dict(backend="scipy", method="DOP853", rtol=cfg.reference_rtol, atol=cfg.reference_rtol,
                     t_start=T_START, t_end=T_END)
    from dataclasses import asdict

    return RaceResult(target=cfg.target, config=asdict(cfg), reference=reference, curves=curves,
                      official_best=official, grids=grids, acceptance=acceptance, timings=timings)


def boundary_sensitivity(target, schedule, x, ref_components, *, radius: float = 1e-2, n_perturbations: int = 20,
                         seed: int = 0, rtol: float = 1e-10) -> np.ndarray:
    """How close each state lies to a boundary between the basins of two modes of the exact flow.

    For each state ``x_i`` at ``T_START``: the fraction of ``n_perturbations`` perturbed states ``x_i + radius u``
    (``u`` uniform on the unit sphere, seeded) whose exact flow (SciPy DOP853 in lambda at ``rtol``) ends at
    ``T_END`` in another mixture component than ``ref_components[i]``, the component of ``x_i``'s own reference
    end state. A non-zero fraction means ``x_i`` is within ``radius`` of a basin boundary: a sampler whose error,
    carried back to ``T_START``, exceeds that distance can send it to the other mode, where its error is about the
    distance between two modes.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if len(x) == 0:
        return np.zeros(0)
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn((len(x), n_perturbations) + tuple(x.shape[1:]), generator=gen, dtype=torch.float64)
    u = u / u.reshape(len(x), n_perturbations, -1).norm(dim=2).reshape((len(x), n_perturbations) + (1,) * (x.ndim - 1))
    xs = (x.unsqueeze(1) + radius * u).reshape((-1,) + tuple(x.shape[1:]))
    result = reference_solve(target.as_model(schedule), schedule, xs, T_START, T_END, rtol=rtol, atol=rtol)
    if not result.success:
        raise RuntimeError(f"reference solve of the perturbed states failed: {result.message}")
    ends = target.component(result.x, T_END, schedule).reshape(len(x), n_perturbations)
    return (ends != torch.as_tensor(ref_components).reshape(-1, 1)).double().mean(dim=1).numpy()


def switch_analysis(target, schedule, x, ref, ours, official, *, allowed_rms: float, cfg: RaceConfig) -> dict:
    """Which states end in another mode than the reference under our sampler (``ours``, end states) and under
    the best official configuration (``official``), how close they lie to a basin boundary
    (:func:`boundary_sensitivity`), and how many switches the acceptance (RMS <= ``allowed_rms``) leaves room for.

    ``allowed_switches`` = ``floor((n allowed_rms^2 - sum of our squared errors over the states we do not switch)
    / mean squared error of a switched state)`` (the switch error of the official configuration when we switch
    none): the number of mode switches our sampler may make on these states and still pass.
    """
    comp_ref = target.component(ref, T_END, schedule)
    switched = {name: torch.nonzero(target.component(xe, T_END, schedule) != comp_ref).flatten().tolist()
                for name, xe in (("ours", ours), ("official", official))}
    hard = sorted(set(switched["ours"]) | set(switched["official"]))
    flips = boundary_sensitivity(target, schedule, x[hard], comp_ref[hard], radius=cfg.boundary_radius,
                                 n_perturbations=cfg.boundary_perturbations, rtol=cfg.reference_rtol)
    err = _errors(ours, ref)
    mask = np.zeros(len(err), dtype=bool)
    mask[switched["ours"]] = True
    if mask.any():
        per_switch = float(np.mean(err[mask] ** 2))
    else:
        official_err = _errors(official, ref)[switched["official"]]
        per_switch = float(np.mean(official_err**2)) if len(official_err) else math.inf
    room = len(err) * allowed_rms**2 - float(np.sum(err[~mask] ** 2))
    allowed = int(max(0.0, math.floor(room / per_switch))) if math.isfinite(per_switch) else None
    return dict(ours=switched["ours"], official=switched["official"],
                flip_fraction={str(i): float(f) for i, f in zip(hard, flips)}, radius=cfg.boundary_radius,
                n_perturbations=cfg.boundary_perturbations, allowed_switches=allowed,
                switch_error=math.sqrt(per_switch) if math.isfinite(per_switch) else None)


def _curve(name, options, grid, rows) -> RaceCurve:
    keys = ("rms", "median", "rms_low", "rms_high", "mode_switches")
    return RaceCurve(name=name, options=dict(options), grid=grid, nfe=np.array([r[0] for r in rows]),
                     skip_types=[r[1] for r in rows],
                     test={k: np.array([r[2][k] for r in rows]) for k in keys},
                     holdout={k: np.array([r[3][k] for r in rows]) for k in keys})


def _acceptance(grids, official, curves) -> dict:
    """Per acceptance NFE: the optimised configuration with the smallest validation RMS, its test and holdout
    RMS against the best official on the same states, and whether both ratios are <= 1/3."""
    out = {}
    for n in ACCEPTANCE_NFES:
        if str(n) not in official:
            continue
        candidates = [g for g in grids if g["config"]["steps"] == n]
        if not candidates:
            continue
        chosen = min(candidates, key=lambda g: g["errors"].get("validation", g["errors"]["train"])["rms"])
        curve = next(c for c in curves if c.name == chosen["name"] and c.grid == "optimised")
        i = int(np.flatnonzero(curve.nfe == n)[0])
        entry = dict(solver=chosen["name"], label=chosen["label"], optimisation_time_s=chosen["optimization_time_s"],
                     selected_by="smallest validation RMS (pool states outside the training subset)")
        ok = True
        for split in ("test", "holdout"):
            ours = getattr(curve, split)
            best = official[str(n)][split]
            ratio = float(ours["rms"][i] / best["rms"])
            ok = ok and ratio <= 1.0 / 3.0
            entry[split] = dict(rms=float(ours["rms"][i]), rms_interval=[float(ours["rms_low"][i]),
                                                                          float(ours["rms_high"][i])],
                                median=float(ours["median"][i]), mode_switches=int(ours["mode_switches"][i]),
                                official_rms=best["rms"], official_median=best["median"],
                                official_options=best["options"], ratio=ratio)
        entry["meets_one_third"] = ok
        out[str(n)] = entry
    return out
