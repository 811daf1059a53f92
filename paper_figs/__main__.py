"""Make every paper figure and ``summary.json``: ``python -m paper_figs [--quick] [--out DIR] [--seed N]``.

Runs the figure scripts ``fig1_local_error`` ... ``fig10_dsm_model_error`` in order (``fig11_race`` only with
``--only fig11_race``) (the studies they share are computed
once and saved under ``OUT/data/``), writes ``OUT/figN_*.pdf`` and ``.png`` and ``OUT/summary.json``: per solver,
the measured local and global orders with their fit windows and the error at NFE 10 and 20 on each target; per
classical solver the error at given NFE; the run configuration, runtime and library versions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import asdict

import torch

from ._common import DEFAULT_OUT, TIMINGS, code_fingerprint, compute_studies, config_for, get_study

FIGURES = ("fig1_local_error", "fig2_global_error", "fig3_work_precision", "fig4_official_3m", "fig5_time_grids",
           "fig6_2d_picture", "fig7_schedules", "fig8_sde_strong", "fig9_sde_weak", "fig10_dsm_model_error")
#: Figures made only on request (``--only fig11_race``): the accuracy-per-NFE race optimises one time grid per
#: solver, NFE and target, which takes several minutes and would break the default run's 2-minute budget.
EXTRA_FIGURES = ("fig11_race",)


def build_summary(out_dir: str, quick: bool, seed: int, figure_info: dict, runtime_s: float) -> dict:
    from analysis.results import atomic_write_json, provenance, to_jsonable
    from analysis.summary import classical_summary, solver_summary

    cfg = config_for(quick, seed)
    local = get_study("local_2d", out_dir, cfg)
    orders = {t: get_study(f"order_{t}", out_dir, cfg) for t in ("2d", "16d")}
    wps = {t: get_study(f"wp_{t}", out_dir, cfg) for t in ("2d", "16d")}
    solvers = solver_summary(local, orders, nfe_points=(10, 20))
    n_fits = n_agree = 0
    disagreements = []
    for name, entry in solvers.items():
        for algorithm_type in ("dpmsolver++", "dpmsolver"):
            sub = entry.get(algorithm_type, {})
            fits = [("local", "2d", sub.get("local_order"))] + [
                ("global", t, f) for t, f in sub.get("global_order", {}).items()]
            for kind, target, fit in fits:
                if fit is None:
                    continue
                n_fits += 1
                n_agree += fit["agrees"]
                if not fit["agrees"]:
                    disagreements.append(dict(solver=name, algorithm_type=algorithm_type, kind=kind, target=target,
                                              slope=fit["slope"], expected=fit["expected"], reason=fit["reason"]))
    summary = {
        "description": "Measured orders (slope of log median per-sample L2 error vs log lambda step over an "
                       "automatically chosen window; local: one step from the exact state, expected order+1; "
                       "global: whole path t = 1 -> 1e-3 on a logSNR grid, expected order) and errors at NFE 10 "
                       "and 20 (largest run with NFE <= the value; its actual NFE is given) against SciPy DOP853 "
                       "rtol 1e-12.",
        "mode": "quick" if quick else "full",
        "seed": seed,
        "runtime_s": round(runtime_s, 1),
        "study_seconds": dict(TIMINGS),
        "config": to_jsonable(asdict(cfg)),
        "targets": {"2d": "analysis.targets.target_2d", "16d": "analysis.targets.target_16d",
                    "schedule": "VPLinear(beta_0=0.1, beta_1=20)"},
        "reference": dict(local.reference),
        "order_agreement": dict(n_fits=n_fits, n_agree=n_agree, tolerance=0.15, disagreements=disagreements),
        "solvers": solvers,
        "classical": classical_summary(wps, nfe_points=(10, 20, 50, 100)),
        "figures": to_jsonable({k: {kk: vv for kk, vv in v.items() if kk != "files"} for k, v in figure_info.items()}),
        "files": sorted(f for v in figure_info.values() for f in (os.path.basename(p) for p in v.get("files", []))),
        "provenance": provenance(),
    }
    atomic_write_json(os.path.join(out_dir, "summary.json"), to_jsonable(summary))
    return summary


helper_pool = None


def _start_helper(out_dir: str, quick: bool, seed: int):
    global helper_pool
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    helper_pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return helper_pool.submit(compute_studies, ("order_16d", "wp_16d"), out_dir, quick, seed, code_fingerprint())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m paper_figs", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small studies (CI smoke run, < 30 s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder for PDF, PNG, data and summary.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample generators (>= 0)")
    parser.add_argument("--only", nargs="*", choices=FIGURES + EXTRA_FIGURES, default=None,
                        help="make only these figures (the extra figures " + ", ".join(EXTRA_FIGURES)
                        + " only this way)")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2,
                        help="processes: 2 computes the 16-D studies in a second process meanwhile")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    from tqdm import tqdm

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    figures = FIGURES if args.only is None else tuple(args.only)
    info = {}
    helper = _start_helper(args.out, args.quick, args.seed) if args.jobs == 2 else None
    if helper is not None:
        # The 2-D studies run here while the helper computes the 16-D ones; the figures below need the 16-D ones
        # only from figure 2 on, so wait for them first.
        for name in ("local_2d", "order_2d", "grids_2d"):
            get_study(name, args.out, config_for(args.quick, args.seed))
        TIMINGS.update({f"{k} (helper process)": v for k, v in helper.result().items()})
        helper_pool.shutdown()
    bar = tqdm(figures, desc="paper figures", unit="fig", file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        module = importlib.import_module(f"paper_figs.{name}")
        wall, cpu = time.perf_counter(), time.process_time()
        info[name] = module.make(args.out, args.quick, args.seed)
        info[name]["seconds"] = dict(wall_s=round(time.perf_counter() - wall, 2),
                                     cpu_s=round(time.process_time() - cpu, 2))
    runtime = time.perf_counter() - t0
    summary = build_summary(args.out, args.quick, args.seed, info, runtime)
    runtime = time.perf_counter() - t0
    agree = summary["order_agreement"]
    print(f"wrote {len(summary['files'])} files and summary.json to {args.out} in {runtime:.1f} s "
          f"({agree['n_agree']}/{agree['n_fits']} measured orders within 0.15 of the expected order)")
    return summary


if __name__ == "__main__":
    main()
