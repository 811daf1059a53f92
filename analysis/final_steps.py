"""The final steps of time-uniform grids: why the official third-order multistep update beats the corrected one
there at a few hundred to a thousand steps.

``sample(method="multistep", order=3)`` (the corrected rule: the exact integral of the quadratic through the last
three values, global order 3) is less accurate on ``time_uniform`` grids than ``compat="official"`` (whose
third-order update halves the second difference and is of global order 2) from about 200 to 1,600 steps, while on
logSNR and ``time_quadratic`` grids it behaves as its order says. The measurements here locate the cause:

* :func:`sampler_errors`: errors of the samplers through :func:`expsolver.sample` (the user's path) on the
  time-uniform grid over a range of step counts, with and without ``lower_order_final``, in both predictions, and
  on the other grids;
* :func:`final_lam_steps`: the lambda steps and step ratios at the end of time-uniform grids;
* :func:`step_contributions`: the global error split into the contributions of groups of steps (a telescoping
  sum, below), so the steps that make the error are seen;
* :func:`model_defects`: the one-step defect of both rules on ``N(lam) = e^{c lam}`` over the final steps of a
  grid (``c = -2``: the data prediction near ``t = 0``; ``c = -1``: the noise prediction), on the grid's own nodes
  and on equally spaced nodes with the same step (the step-ratio hypothesis);
* :func:`parasitic_roots`: the roots of the frozen variable-coefficient recurrence of both rules on the
  linearisation of the data form near ``t = 0`` (the zero-stability hypothesis).

**Targets and references.** :func:`analysis.targets.target_2d` (six sharp modes, five on a ring) and
:func:`analysis.targets.target_16d`, :data:`N_SAMPLES` standard-normal states at ``t = 1`` (seed :data:`SEED`),
the linear VP schedule, SciPy DOP853 references in lambda at ``rtol = atol = 1e-12``
(:func:`analysis.results.cached_reference`), median per-sample L2 error at ``t = 1e-3``.

**Telescoping split of the global error.** Let ``X_i`` be the end state of the multistep rule run from the exact
states at the grid points ``i - 2, i - 1, i`` (its history filled from them, as in
:mod:`analysis.verification`), and ``X_N`` the exact end state. The global error (exact start) is
``X_2 - X_N = sum_i (X_i - X_{i+1})``, and ``X_i - X_{i+1}`` is the error that step ``i`` commits from exact
values, carried to the end by the rule itself. Grouping steps between breakpoints ``b_0 < b_1 < ...`` gives
``c_g = X_{b_g} - X_{b_{g+1}}``; reported are the median over samples of ``|c_g|`` and of its share
``<c_g, E> / |E|^2`` of the total error ``E`` (shares of one sample add up to 1; medians need not).

``python -m analysis.final_steps --out docs/results/final_steps.json --page docs/nonuniform-grids.md`` runs it
(a few minutes) and writes the page's tables (:func:`render_sections`) between the markers
``<!-- final-steps:NAME:begin -->`` and ``<!-- final-steps:NAME:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch

from expsolver import REGISTRY, sample, time_grid
from expsolver.models import ModelWrapper
from expsolver.problems import DiffusionODE, SemiLinearProblem, StepCoefficients
from expsolver.sampling import PREDICTION_OF
from expsolver.solvers import Step

from .grid_orders import run_from_exact_values, update_page
from .markdown import markdown_table
from .results import atomic_write_json, cached_reference, provenance
from .targets import T_END, T_START, get_target, standard_schedule

__all__ = ["TARGET_NAMES", "N_SAMPLES", "SEED", "SWEEP_STEPS", "COMPARE_STEPS", "CONTRIBUTION_STEPS", "CONFIGS",
           "RULES", "RATES", "sampler_errors", "final_lam_steps", "step_contributions", "model_defects",
           "parasitic_roots", "final_steps_study", "render_sections", "PAGE_PREFIX", "main"]

TARGET_NAMES = ("2d", "16d")
N_SAMPLES = 64
SEED = 0
SWEEP_STEPS = (100, 200, 400, 800, 1600, 3200, 6400, 12800)
COMPARE_STEPS = (200, 800, 3200)
CONTRIBUTION_STEPS = 800
#: Sampler configurations compared (label -> ``sample()`` options). ``compat="official"`` applies
#: ``lower_order_final`` only below 10 steps, so the official rule runs without it at every step count here.
CONFIGS = {"3M": dict(method="multistep", order=3, lower_order_final=False),
           "3M lower_order_final": dict(method="multistep", order=3, lower_order_final=True),
           "3M-official": dict(method="multistep", order=3, compat="official"),
           "DEIS-tAB2": dict(method="deis", order=3, lower_order_final=False)}
#: The two third-order multistep rules (registry names).
RULES = {"corrected": "DPM-Solver-3M", "official": "DPM-Solver-3M-official"}
#: Decay rate ``c`` of ``N(lam) - N(inf) ~ e^{c lam}`` near ``t = 0`` and the kernel exponent ``z`` of the form.
RATES = {"dpmsolver++": (-2.0, -1.0), "dpmsolver": (-1.0, 1.0)}
_PREDICTION_LABEL = {"dpmsolver++": "data", "dpmsolver": "noise"}


def _states(target) -> torch.Tensor:
    return torch.randn(N_SAMPLES, target.d, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)


def _median_error(x, ref) -> float:
    return float((x - ref).reshape(x.shape[0], -1).norm(dim=1).median())


def sampler_errors(target_name: str, steps, grids, configs, algorithm_types=tuple(RATES), cache_dir=None) -> list:
    """Median errors of ``sample()`` for every grid (``skip_type``), configuration label of :data:`CONFIGS`,
    prediction and step count. Returns rows ``dict(target, grid, config, algorithm_type, steps, error)``."""
    schedule, target = standard_schedule(), get_target(target_name)
    x = _states(target)
    ref = cached_reference(target, schedule, x, T_START, T_END, cache_dir=cache_dir)["x"]
    model = target.as_model(schedule)
    rows = []
    for grid in grids:
        for label in configs:
            for algorithm_type in algorithm_types:
                for n in steps:
                    result = sample(model, schedule, x, steps=n, t_start=T_START, t_end=T_END, skip_type=grid,
                                    algorithm_type=algorithm_type, **CONFIGS[label])
                    rows.append(dict(target=target_name, grid=grid, config=label, algorithm_type=algorithm_type,
                                     steps=n, error=_median_error(result.x, ref)))
    return rows


def final_lam_steps(schedule, steps, grid: str = "time_uniform", last: int = 4) -> list:
    """The ``last`` lambda steps ``h_i`` of the ``n``-step grid for each ``n`` in ``steps``, their ratios
    ``h_i / h_{i-1}``, and the largest step elsewhere on the grid."""
    rows = []
    for n in steps:
        h = np.diff(schedule.lams_of(time_grid(schedule, grid, T_START, T_END, n)))
        rows.append(dict(grid=grid, steps=n, final_h=h[-last:].tolist(),
                         final_ratios=(h[-last:] / h[-last - 1:-1]).tolist(), max_h_before=float(h[:-last].max())))
    return rows


def step_contributions(target_name: str, algorithm_type: str, rule: str, n_steps: int = CONTRIBUTION_STEPS,
                       cache_dir=None) -> dict:
    """The telescoping split (module docstring) of the global error of the third-order multistep ``rule``
    (a key of :data:`RULES`) on the ``n_steps`` time-uniform grid. Returns ``dict(total, groups)``: the median
    total error and, per group of steps ``first..last``, the medians of ``|c_g|`` and of its share."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {tuple(RULES)}, got {rule!r}")
    if n_steps < 64:
        raise ValueError(f"n_steps must be >= 64 (the breakpoints need that many steps), got {n_steps!r}")
    schedule, target = standard_schedule(), get_target(target_name)
    x = _states(target)
    ts = time_grid(schedule, "time_uniform", T_START, T_END, n_steps)
    xs = [x] + list(cached_reference(target, schedule, x, T_START, T_END, ts=ts[1:], cache_dir=cache_dir)["xs"])
    model = target.as_model(schedule)
    config = REGISTRY[RULES[rule]]

    def from_point(i: int) -> torch.Tensor:  # X_i
        if i == n_steps:
            return xs[n_steps]
        problem = DiffusionODE(schedule, ModelWrapper(model, schedule), PREDICTION_OF[algorithm_type])
        plan = config.make().plan(ts[i - 2:])
        return run_from_exact_values(problem, config.make(), plan, xs[i - 2:i + 1], 2)

    n = n_steps
    breaks = [2, n // 2, 3 * n // 4, 7 * n // 8, n - 32, n - 16, n - 8, n - 4, n - 3, n - 2, n - 1, n]
    ends = {i: from_point(i) for i in breaks}
    total = ends[2] - xs[n]
    groups = []
    for a, b in zip(breaks[:-1], breaks[1:]):
        c = ends[a] - ends[b]
        share = (c * total).sum(dim=1) / (total * total).sum(dim=1)
        groups.append(dict(first=a, last=b - 1, norm=float(c.norm(dim=1).median()), share=float(share.median())))
    return dict(target=target_name, algorithm_type=algorithm_type, rule=rule, steps=n_steps,
                total=float(total.norm(dim=1).median()), groups=groups)


class _Quadrature(SemiLinearProblem):
    """The scalar semi-linear form in ``rho = lam`` with kernel ``e^{z (h - u)}``, linear factor ``linear(h)``
    and scale 1: a rule's ``update`` on it returns ``linear(h) x + sum_i w_i N_i``, its weights applied to the
    given history."""

    def __init__(self, z: float, linear=lambda h: 0.0):
        self.z, self.linear = z, linear

    def rho(self, t):
        return t

    def t_of_rho(self, rho):
        return rho

    def nonlinear(self, x, t):
        raise TypeError("the quadrature problem has no nonlinear term: a rule's update is given its history")

    @property
    def nfe(self) -> int:
        return 0

    def coefficients(self, s, t):
        return StepCoefficients(t - s, self.linear(t - s), 1.0, self.z)


def _weights(rule, lams: np.ndarray, i: int, z: float) -> np.ndarray:
    """The weights ``(w_{i-2}, w_{i-1}, w_i)`` of ``rule``'s third-order step ``lams[i] -> lams[i+1]``."""
    problem = _Quadrature(z)
    history = [(float(lams[j]), torch.eye(3, dtype=torch.float64)[k]) for k, j in enumerate((i - 2, i - 1, i))]
    step = Step(i, float(lams[i]), float(lams[i + 1]), 3)
    return rule.update(problem, torch.zeros(3, dtype=torch.float64), step, history).numpy()


def model_defects(lams, rate: float, z: float, last: int = 3) -> list:
    """One-step defects of both rules of :data:`RULES` on ``N(lam) = e^{rate (lam - lam_i)}`` over the ``last``
    final steps ``lams[i] -> lams[i+1]``: ``sum_j w_j N(lam_j) - int_0^h e^{z (h - u)} N(lam_i + u) du``, with
    the history at the grid's nodes and at equally spaced nodes ``lam_i - h, lam_i - 2 h`` (same ``h``)."""
    lams = np.asarray(lams, dtype=np.float64)
    rules = {name: REGISTRY[reg].make() for name, reg in RULES.items()}
    rows = []
    for i in range(len(lams) - 1 - last, len(lams) - 1):
        h = float(lams[i + 1] - lams[i])
        exact = (math.exp(rate * h) - math.exp(z * h)) / (rate - z)
        uniform = np.array([lams[i] - 2 * h, lams[i] - h, lams[i], lams[i] + h])
        row = dict(step=i, h=h, ratio=h / float(lams[i] - lams[i - 1]))
        for name, rule in rules.items():
            for nodes_label, nodes, j in (("grid", lams, i), ("uniform", uniform, 2)):
                values = np.exp(rate * (nodes[j - 2:j + 1] - nodes[j]))
                row[f"{name}_{nodes_label}"] = float(_weights(rule, nodes, j, z) @ values - exact)
        rows.append(row)
    return rows


def parasitic_roots(lams) -> dict:
    """Per rule of :data:`RULES`: the largest modulus of the parasitic roots of the frozen recurrence
    ``y_{i+1} = e^{-h_i} y_i + sum_j w_{ij} y_j`` (the data form ``dy/dlam = -y + N`` with ``N = y``, the
    linearisation near ``t = 0`` where ``alpha d x0 / d x -> 1``; the principal root is 1), over all
    third-order steps and at the last one."""
    lams = np.asarray(lams, dtype=np.float64)
    out = {}
    for name, reg in RULES.items():
        rule = REGISTRY[reg].make()
        largest = []
        for i in range(2, len(lams) - 1):
            w = _weights(rule, lams, i, -1.0)
            companion = np.array([[math.exp(-(lams[i + 1] - lams[i])) + w[2], w[1], w[0]],
                                  [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            roots = np.linalg.eigvals(companion)
            roots = np.delete(roots, np.argmin(np.abs(roots - 1.0)))
            largest.append(float(np.abs(roots).max()))
        out[name] = dict(max=max(largest), last=largest[-1])
    return out


def final_steps_study(cache_dir=None, quick: bool = False) -> dict:
    """Every measurement of the module docstring; ``quick``: the 2-D target and fewer step counts."""
    targets = TARGET_NAMES[:1] if quick else TARGET_NAMES
    sweep = SWEEP_STEPS[1:4] if quick else SWEEP_STEPS
    compare = COMPARE_STEPS[:2] if quick else COMPARE_STEPS
    schedule = standard_schedule()
    errors = []
    for name in targets:
        errors += sampler_errors(name, sweep, ("time_uniform",), tuple(CONFIGS), cache_dir=cache_dir)
        errors += sampler_errors(name, compare, ("time_quadratic", "logSNR"), ("3M", "3M-official"),
                                 cache_dir=cache_dir)
    contributions = [step_contributions(name, a, rule, cache_dir=cache_dir)
                     for name in targets for a in RATES for rule in RULES]
    lams = {n: schedule.lams_of(time_grid(schedule, "time_uniform", T_START, T_END, n)) for n in COMPARE_STEPS}
    defects = [dict(algorithm_type=a, rate=c, z=z, steps=n, rows=model_defects(lams[n], c, z))
               for a, (c, z) in RATES.items() for n in COMPARE_STEPS]
    roots = [dict(steps=n, **parasitic_roots(lams[n])) for n in COMPARE_STEPS]
    config = dict(targets=list(targets), n_samples=N_SAMPLES, seed=SEED, t_start=T_START, t_end=T_END,
                  schedule="VPLinear()", sweep_steps=list(sweep), compare_steps=list(compare),
                  contribution_steps=CONTRIBUTION_STEPS, configs=CONFIGS, rules=RULES,
                  statistic="median per-sample L2 error",
                  reference=dict(backend="scipy", method="DOP853", rtol=1e-12, atol=1e-12))
    return dict(config=config, errors=errors, final_lam_steps=final_lam_steps(schedule, COMPARE_STEPS),
                contributions=contributions, defects=defects, roots=roots, provenance=provenance())


# -- the page's tables --------------------------------------------------------------------------------------------
#: Prefix of the page's markers of this module's sections (:func:`analysis.grid_orders.section_markers`).
PAGE_PREFIX = "final-steps"


def _e(v: float) -> str:
    return f"{v:.1e}"


def _sweep_table(summary: dict) -> str:
    steps = summary["config"]["sweep_steps"]
    rows = [r for r in summary["errors"] if r["grid"] == "time_uniform"]
    table = []
    for target in summary["config"]["targets"]:
        for a in RATES:
            for label in CONFIGS:
                cells = {r["steps"]: r["error"] for r in rows
                         if (r["target"], r["algorithm_type"], r["config"]) == (target, a, label)}
                table.append([target, _PREDICTION_LABEL[a], label] + [_e(cells[n]) for n in steps])
    return markdown_table(["target", "prediction", "sampler"] + [f"N={n}" for n in steps], table)


def _slopes_table(summary: dict) -> str:
    """Successive slopes ``log2(e_N / e_2N)`` of the two 3M rules on time-uniform grids."""
    steps = summary["config"]["sweep_steps"]
    pairs = list(zip(steps[:-1], steps[1:]))
    table = []
    for target in summary["config"]["targets"]:
        for a in RATES:
            for label in ("3M", "3M-official"):
                e = {r["steps"]: r["error"] for r in summary["errors"] if r["grid"] == "time_uniform"
                     and (r["target"], r["algorithm_type"], r["config"]) == (target, a, label)}
                table.append([target, _PREDICTION_LABEL[a], label]
                             + [f"{math.log(e[p] / e[q]) / math.log(q / p):.2f}" for p, q in pairs])
    return markdown_table(["target", "prediction", "sampler"] + [f"{a}->{b}" for a, b in pairs], table)


def _grids_table(summary: dict) -> str:
    steps = summary["config"]["compare_steps"]
    grids = ("time_uniform", "time_quadratic", "logSNR")
    table = []
    for target in summary["config"]["targets"]:
        for a in RATES:
            for label in ("3M", "3M-official"):
                e = {(r["grid"], r["steps"]): r["error"] for r in summary["errors"]
                     if (r["target"], r["algorithm_type"], r["config"]) == (target, a, label)}
                table.append([target, _PREDICTION_LABEL[a], label] + [_e(e[(g, n)]) for n in steps for g in grids])
    return markdown_table(["target", "prediction", "sampler"] + [f"{g} N={n}" for n in steps for g in grids], table)


def _lam_steps_table(summary: dict) -> str:
    return markdown_table(
        ["N", "last lambda steps h", "ratios h_i / h_(i-1)", "largest h before them"],
        [[r["steps"], ", ".join(f"{v:.3f}" for v in r["final_h"]), ", ".join(f"{v:.2f}" for v in r["final_ratios"]),
          f"{r['max_h_before']:.3f}"] for r in summary["final_lam_steps"]])


def _contributions_table(summary: dict) -> str:
    contributions = summary["contributions"]
    header = ["steps"] + [f"{c['target']} {_PREDICTION_LABEL[c['algorithm_type']]} {c['rule']}" for c in contributions]
    table = [["total error"] + [_e(c["total"]) for c in contributions]]
    for g, first in enumerate(contributions[0]["groups"]):
        span = str(first["first"]) if first["first"] == first["last"] else f"{first['first']}-{first['last']}"
        table.append([span] + [f"{_e(c['groups'][g]['norm'])} ({c['groups'][g]['share']:+.2f})"
                               for c in contributions])
    return markdown_table(header, table)


def _defects_table(summary: dict) -> str:
    return markdown_table(
        ["prediction (c, z)", "N", "step", "h", "ratio", "corrected, grid nodes", "official, grid nodes",
         "corrected, equal nodes", "official, equal nodes"],
        [[f"{_PREDICTION_LABEL[d['algorithm_type']]} ({d['rate']:g}, {d['z']:g})", d["steps"], r["step"],
          f"{r['h']:.3f}", f"{r['ratio']:.2f}", f"{r['corrected_grid']:+.2e}", f"{r['official_grid']:+.2e}",
          f"{r['corrected_uniform']:+.2e}", f"{r['official_uniform']:+.2e}"]
         for d in summary["defects"] for r in d["rows"]])


def _roots_table(summary: dict) -> str:
    return markdown_table(
        ["N", "corrected: largest over the path", "corrected: last step", "official: largest over the path",
         "official: last step"],
        [[r["steps"], f"{r['corrected']['max']:.3f}", f"{r['corrected']['last']:.3f}", f"{r['official']['max']:.3f}",
          f"{r['official']['last']:.3f}"] for r in summary["roots"]])


def _findings(summary: dict) -> str:
    """The key numbers of the explanation, as a Markdown list."""
    cfg = summary["config"]
    err = {(r["target"], r["grid"], r["config"], r["algorithm_type"], r["steps"]): r["error"]
           for r in summary["errors"]}
    sweep, (n_mid, n_last) = cfg["sweep_steps"], (CONTRIBUTION_STEPS, cfg["sweep_steps"][-1])
    lines = []
    for target in cfg["targets"]:
        for a in RATES:
            c = {n: err[(target, "time_uniform", "3M", a, n)] for n in sweep}
            o = {n: err[(target, "time_uniform", "3M-official", a, n)] for n in sweep}
            lof = err[(target, "time_uniform", "3M lower_order_final", a, n_mid)]
            wins = [n for n in sweep if o[n] < c[n]]
            span = f"at N = {', '.join(map(str, wins))}" if wins else "at no N of the sweep"
            lines.append(f"* {target}, {_PREDICTION_LABEL[a]} prediction, time-uniform grid: the official 3M is more "
                         f"accurate than the corrected 3M {span}; at N = {n_mid} the errors are {_e(c[n_mid])} "
                         f"(corrected) and {_e(o[n_mid])} (official), at N = {n_last} {_e(c[n_last])} and "
                         f"{_e(o[n_last])}; with lower_order_final the corrected 3M has {_e(lof)} at N = {n_mid}; "
                         f"on time_quadratic at N = {n_mid}: {_e(err[(target, 'time_quadratic', '3M', a, n_mid)])} "
                         f"(corrected), {_e(err[(target, 'time_quadratic', '3M-official', a, n_mid)])} (official).")
    for c in summary["contributions"]:
        last = {g["first"]: g for g in c["groups"] if g["first"] == g["last"]}
        before = [g for g in c["groups"] if g["last"] < c["steps"] - 2 and g["first"] >= c["steps"] - 32]
        lines.append(f"* {c['target']}, {_PREDICTION_LABEL[c['algorithm_type']]}, {c['rule']}, N = {c['steps']}: "
                     f"median shares of the total error: last step {last[c['steps'] - 1]['share']:+.2f}, "
                     f"the one before {last[c['steps'] - 2]['share']:+.2f}, steps {before[0]['first']}-"
                     f"{before[-1]['last']} " + ", ".join(f"{g['share']:+.2f}" for g in before) + ".")
    return "\n".join(lines) + "\n"


_SECTIONS = {"findings": _findings, "sweep": _sweep_table, "slopes": _slopes_table, "grids": _grids_table,
             "lam-steps": _lam_steps_table, "contributions": _contributions_table, "defects": _defects_table,
             "roots": _roots_table}


def render_sections(summary: dict) -> dict:
    """The page's generated tables of a study summary (:func:`final_steps_study`, e.g. read from the results
    JSON): section name -> Markdown."""
    return {name: render(summary) for name, render in _SECTIONS.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="docs/results/final_steps.json", help="results JSON")
    parser.add_argument("--page", default=None, help="Markdown page whose sections to replace (between markers)")
    parser.add_argument("--render-only", action="store_true", help="only render --out into --page")
    parser.add_argument("--quick", action="store_true", help="the 2-D target and fewer step counts")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not args.render_only:
        atomic_write_json(args.out, final_steps_study(quick=args.quick))
    if args.page:
        with open(args.out, encoding="utf-8") as fh:
            update_page(args.page, PAGE_PREFIX, render_sections(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
