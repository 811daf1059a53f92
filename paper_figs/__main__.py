"""Make every paper figure and ``summary.json``: ``python -m paper_figs [--quick] [--out DIR] [--seed N]``.

Runs the figure scripts ``fig1_local_error`` ... ``fig10_dsm_model_error`` (``fig11_race`` only with
``--only fig11_race``; the studies they share are computed once and saved under ``OUT/data/``), writes
``OUT/figN_*.pdf`` and ``.png`` and ``OUT/summary.json``: per solver, the local and global orders measured by the
order verification (:mod:`analysis.verification`, the protocol of the order tests) with their fit windows, the
slopes observed on the figure targets and the error at NFE 10 and 20 on each target; per classical solver the
error at given NFE; the run configuration, runtime and library versions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict

import torch

from ._common import DEFAULT_OUT, TIMINGS, code_fingerprint, compute_studies, config_for, get_study, make_figure

FIGURES = ("fig1_local_error", "fig2_global_error", "fig3_work_precision", "fig4_official_3m", "fig5_time_grids",
           "fig6_2d_picture", "fig7_schedules", "fig8_sde_strong", "fig9_sde_weak", "fig10_dsm_model_error")
#: Figures made only on request (``--only fig11_race``): the accuracy-per-NFE race optimises one time grid per
#: solver, NFE and target, which takes several minutes and would break the default run's 2-minute budget.
EXTRA_FIGURES = ("fig11_race",)
#: With ``--jobs 2``, what the second process does (batches of studies, then figures), chosen to balance the
#: two processes' work (the order verification alone takes about a minute).
HELPER_STUDIES = (("order_16d", "wp_16d"), ("orders",))
HELPER_FIGURES = ("fig8_sde_strong",)


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
        "study_seconds": dict(TIMINGS),
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


class _Helper:
    """The second process of ``--jobs 2``: computes :data:`HELPER_STUDIES` (in two batches, so that the 16-D
    studies the figures need are ready early) and makes :data:`HELPER_FIGURES`, while this process does the rest."""

    def __init__(self, out_dir: str, quick: bool, seed: int, figures):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        code = code_fingerprint()
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self.studies = [self.pool.submit(compute_studies, batch, out_dir, quick, seed, code)
                        for batch in HELPER_STUDIES]
        self.figures = {name: self.pool.submit(make_figure, name, out_dir, quick, seed, code)
                        for name in figures if name in HELPER_FIGURES}

    def wait_for_studies(self, batch: int) -> None:
        TIMINGS.update({f"{k} (helper process)": v for k, v in self.studies[batch].result().items()})


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
                        help="processes: 2 computes the 16-D studies, the order verification and some figures in a "
                             "second process meanwhile")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    from tqdm import tqdm

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    figures = FIGURES if args.only is None else tuple(args.only)
    cfg = config_for(args.quick, args.seed)
    helper = _Helper(args.out, args.quick, args.seed, figures) if args.jobs == 2 else None
    info = {}
    bar = tqdm(total=len(figures), desc="paper figures", unit="fig", file=sys.stderr)
    if helper is not None:
        # The 2-D studies run here while the helper computes the 16-D ones, which the figures need from figure 2 on.
        for name in ("local_2d", "order_2d", "grids_2d"):
            get_study(name, args.out, cfg)
        helper.wait_for_studies(0)
    for name in figures:
        if helper is not None and name in helper.figures:
            continue
        bar.set_postfix_str(name)
        info[name] = make_figure(name, args.out, args.quick, args.seed)
        bar.update()
    if helper is not None:
        for name, future in helper.figures.items():
            info[name] = future.result()
            bar.update()
        helper.wait_for_studies(1)
        helper.pool.shutdown()
    bar.close()
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
