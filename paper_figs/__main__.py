"""Make every paper figure and ``summary.json``: ``python -m paper_figs [--quick] [--out DIR] [--seed N]
[--only FIG ...] [--jobs N | --scheduler ADDRESS]``.

Runs the figure scripts ``fig1_local_error`` ... ``fig10_dsm_model_error`` (``fig11_race`` only with
``--only fig11_race``), writes ``OUT/figN_*.pdf`` and ``.png`` and ``OUT/summary.json``: per solver, the local and
global orders measured by the order verification (:mod:`analysis.verification`, the protocol of the order tests)
with their fit windows, the slopes observed on the figure targets and the error at NFE 10 and 20 on each target;
per classical solver the error at given NFE; the run configuration, runtime and library versions.

The studies the figures and the summary need are independent tasks (:mod:`paper_figs._common`), all submitted at
once to local worker processes (``--jobs``, default: the CPUs this process may use; ``1`` computes in this
process) or to a Dask cluster (``--scheduler``); this process stores each task's result under ``OUT/data/tasks/``
as it arrives and makes each figure as soon as its studies are complete. One progress bar counts tasks and figures.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from dataclasses import asdict

import torch
from tqdm import tqdm

from ._common import (SUMMARY_STUDIES, TIMINGS, build_parser, config_for, executor_from_args, get_study,
                      make_figure, run_studies)

FIGURES = ("fig1_local_error", "fig2_global_error", "fig3_work_precision", "fig4_official_3m", "fig5_time_grids",
           "fig6_2d_picture", "fig7_schedules", "fig8_sde_strong", "fig9_sde_weak", "fig10_dsm_model_error")
#: Figures made only on request (``--only fig11_race``): the accuracy-per-NFE race optimises one time grid per
#: solver, NFE and target, which takes far longer than every other figure together.
EXTRA_FIGURES = ("fig11_race",)


def build_summary(out_dir: str, quick: bool, seed: int, figure_info: dict, runtime_s: float) -> dict:
    from analysis.results import atomic_write_json, provenance, to_jsonable
    from analysis.summary import classical_summary, order_agreement, solver_summary

    cfg = config_for(quick, seed)
    verification = get_study("orders", out_dir, cfg)
    local = get_study("local_2d", out_dir, cfg)
    orders = {t: get_study(f"order_{t}", out_dir, cfg) for t in ("2d", "16d")}
    wps = {t: get_study(f"wp_{t}", out_dir, cfg) for t in ("2d", "16d")}
    summary = {
        "description": "Per solver: measured orders from the order verification (analysis.verification, the "
                       "protocol of tests/test_orders.py: slope of log median per-sample L2 error vs log lambda "
                       "step over an automatically chosen window on a 3-component 2-D mixture; local: one step "
                       "from the exact state at lambda_s = 0, expected order+1; global: t = 1 -> 1e-3 on logSNR "
                       "grids of 4-1024 steps, expected order), the slopes observed on the sharp figure targets "
                       "('figure_targets': pre-asymptotic for the higher-order methods at the figures' budgets, "
                       "not order tests) and errors at NFE 10 and 20 on the figure targets (largest run with NFE "
                       "<= the value; its actual NFE is given); references SciPy DOP853 rtol 1e-12.",
        "mode": "quick" if quick else "full",
        "seed": seed,
        "runtime_s": round(runtime_s, 1),
        "study_seconds": {name: TIMINGS[name] for name in sorted(TIMINGS)},
        "config": to_jsonable(asdict(cfg)),
        "targets": {"2d": "analysis.targets.target_2d", "16d": "analysis.targets.target_16d",
                    "schedule": "VPLinear(beta_0=0.1, beta_1=20)"},
        "reference": dict(local.reference),
        "order_verification": to_jsonable(verification.config),
        "order_agreement": order_agreement(verification),
        "solvers": solver_summary(verification, local, orders, nfe_points=(10, 20)),
        "classical": classical_summary(wps, nfe_points=(10, 20, 50, 100)),
        "figures": to_jsonable({k: {kk: vv for kk, vv in v.items() if kk != "files"} for k, v in figure_info.items()}),
        "files": sorted(f for v in figure_info.values() for f in (os.path.basename(p) for p in v.get("files", []))),
        "provenance": provenance(),
    }
    atomic_write_json(os.path.join(out_dir, "summary.json"), to_jsonable(summary))
    return summary


def main(argv=None, *, executor=None) -> dict:
    """Run the driver (module docstring) with the command-line arguments ``argv``; ``executor`` (a Dask
    ``Client``, a ``concurrent.futures.Executor``, ...: see :func:`analysis.tasks.open_executor`) replaces what
    ``--jobs`` / ``--scheduler`` select. Returns the summary."""
    parser = build_parser(__doc__.splitlines()[0])
    parser.prog = "python -m paper_figs"
    parser.add_argument("--only", nargs="*", choices=FIGURES + EXTRA_FIGURES, default=None,
                        help="make only these figures (the extra figures " + ", ".join(EXTRA_FIGURES)
                        + " only this way)")
    args = parser.parse_args(argv)
    spec = executor_from_args(parser, args) if executor is None else executor
    torch.set_num_threads(1)
    TIMINGS.clear()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    figures = FIGURES if args.only is None else tuple(dict.fromkeys(args.only))
    needs = {name: importlib.import_module(f"paper_figs.{name}").STUDIES for name in figures}
    studies = list(dict.fromkeys([s for name in figures for s in needs[name]] + list(SUMMARY_STUDIES)))
    cfg = config_for(args.quick, args.seed)
    info, ready = {}, set()
    with tqdm(total=len(figures), desc="paper figures", unit="task", file=sys.stderr) as bar:
        def figures_now_possible(study=None):
            if study is not None:
                ready.add(study)
            for name in figures:
                if name not in info and all(s in ready for s in needs[name]):
                    bar.set_postfix_str(name, refresh=False)
                    info[name] = make_figure(name, args.out, args.quick, args.seed)
                    bar.update()

        run_studies(studies, args.out, cfg, spec, bar=bar, on_study=figures_now_possible)
        figures_now_possible()
    info = {name: info[name] for name in figures}
    runtime = time.perf_counter() - t0
    summary = build_summary(args.out, args.quick, args.seed, info, runtime)
    runtime = time.perf_counter() - t0
    agree = summary["order_agreement"]
    print(f"wrote {len(summary['files'])} files and summary.json to {args.out} in {runtime:.1f} s "
          f"({agree['n_agree']}/{agree['n_fits']} verified orders within {agree['tolerance']} of the declared order)")
    return summary


if __name__ == "__main__":
    main()
