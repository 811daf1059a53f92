"""Figure 11: the accuracy-per-NFE race at 5-25 NFE on the 2-D and 16-D targets (:mod:`analysis.race`).

Rows: the 2-D and the 16-D mixture. Left: RMS over 1,000 test states of the per-state L2 error at t_end against
NFE, every solver of the lineup on its best standard grid (thin lines, hollow markers; the skip type chosen per NFE
on the test states) and on grids optimised for it on a separate pool of training states (thick lines, filled
markers; dashed: optimised together with the times at which the model is queried, "+ model times"); black
crosses: the best official DPM-Solver configuration at that NFE (over methods, orders, skip types, prediction and
solver types), grey: a third of it (the acceptance line). Middle: the same for the median.
Right: the optimised grids of the configuration selected (on validation states) at NFE 10, drawn in lambda (one
row per NFE; grey ticks: the uniform-in-lambda grid with the same NFE; crosses: the learned model times, if any).

The study's tasks (:func:`analysis.race.race_studies`: every standard-grid curve, best-official search, grid
optimisation, switch analysis and population estimate, both targets together) run on the driver's executor, their
results kept under ``OUT/data/tasks/`` (an interrupted race resumes). ``python -m paper_figs.fig11_race [--quick]
[--out DIR] [--jobs N] [--scheduler ADDRESS]`` (``--seed`` is not used: the study's seeds are fixed in
:class:`analysis.race.RaceConfig`).
"""

from __future__ import annotations

import numpy as np

from analysis import race
from analysis.style import save_figure, style, use_agg

from ._common import TARGET_LABELS, config_for, get_study, register_study, run_main

NAME = "fig11_race"
TARGETS = ("2d", "16d")
STUDIES = (NAME,)


def _run_race(cfg, out_dir, executor, store, bar, timings) -> dict:
    cfgs = [race.race_config(t, "quick" if cfg.quick else "full") for t in TARGETS]
    return dict(zip(TARGETS, race.race_studies(cfgs, executor=executor, store=store, bar=bar, timings=timings)))


register_study(NAME, run=_run_race)


def _plot_curves(ax, study, statistic: str):
    for c in study.curves:
        st = style(c.name.removesuffix(race.MODEL_TIMES_SUFFIX))
        optimised = c.grid == "optimised"
        values = c.test[statistic]
        ax.plot(c.nfe, values, color=st["color"], marker=st["marker"], linewidth=2.0 if optimised else 0.9,
                linestyle="--" if c.name.endswith(race.MODEL_TIMES_SUFFIX) else "-",
                markersize=5 if optimised else 3.5, markerfacecolor=st["color"] if optimised else "white",
                alpha=1.0 if optimised else 0.75, label=f"{c.name}, {'optimised' if optimised else 'standard'} grid")
    nfes = sorted(int(n) for n in study.official_best)
    best = [study.official_best[str(n)]["test"][statistic] for n in nfes]
    ax.plot(nfes, best, color="black", marker="x", linestyle="none", markersize=8, markeredgewidth=2,
            label="best official DPM-Solver config (test states)")
    if statistic == "rms":
        ax.plot(nfes, np.array(best) / 3.0, color="0.5", marker="_", linestyle="-.", linewidth=1.0,
                label="1/3 of the best official")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"{statistic.upper() if statistic == 'rms' else statistic} over {study.config['n_test']} test "
                  f"states of |x - x_ref|_2\nat t = {study.reference['t_end']:g} vs DOP853 rtol "
                  f"{study.reference['rtol']:g}")
    ax.grid(alpha=0.3, which="both")


def _plot_grids(ax, study):
    from expsolver import time_grid

    from analysis.targets import standard_schedule

    if study.acceptance:
        nfe = min(study.acceptance, key=int)
        name, why = study.acceptance[nfe]["solver"], f"selected at NFE {nfe}"
    else:
        name, why = study.grids[0]["name"], "first optimised solver"
    schedule = standard_schedule()
    st = style(name.removesuffix(race.MODEL_TIMES_SUFFIX))
    for entry in study.grids:
        if entry["name"] != name:
            continue
        n = entry["config"]["steps"]
        lams = np.asarray(entry["lams"])
        uniform = schedule.lams_of(time_grid(schedule, "logSNR", entry["config"]["t_start"],
                                             entry["config"]["t_end"], n))
        ax.plot(uniform, np.full_like(uniform, n) - 0.3, linestyle="none", marker="|", color="0.6", markersize=6)
        ax.plot(lams, np.full_like(lams, n), linestyle="-", linewidth=0.6, marker="o", markersize=4,
                color=st["color"])
        if entry.get("model_timesteps") is not None:
            model_lams = schedule.lams_of(np.asarray(entry["model_timesteps"]))
            ax.plot(model_lams, np.full_like(model_lams, n) + 0.3, linestyle="none", marker="x", markersize=5,
                    color="black")
    ax.set_xlabel("$\\lambda$ = log($\\alpha$/$\\sigma$) of the grid points")
    ax.set_ylabel("steps of the optimised grid")
    ax.set_title(f"optimised grids of {name} ({why})\n(grey: uniform in $\\lambda$; x: model times)", fontsize=10)
    ax.grid(alpha=0.3)


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    studies = get_study(NAME, out_dir, config_for(quick, seed))
    plt = use_agg()
    fig, axes = plt.subplots(len(TARGETS), 3, figsize=(19, 6.2 * len(TARGETS)), constrained_layout=True,
                             gridspec_kw=dict(width_ratios=(1.2, 1.2, 0.8)))
    summary = {}
    for row, target in zip(np.atleast_2d(axes), TARGETS):
        study = studies[target]
        _plot_curves(row[0], study, "rms")
        _plot_curves(row[1], study, "median")
        _plot_grids(row[2], study)
        row[0].set_title(f"{TARGET_LABELS[target]}: RMS error (what users quote)", fontsize=11)
        row[1].set_title(f"{TARGET_LABELS[target]}: median error", fontsize=11)
        summary[target] = dict(acceptance=study.acceptance, timings=study.timings)
    handles, labels = np.atleast_2d(axes)[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, framealpha=0.9)
    fig.suptitle("Accuracy per NFE: official DPM-Solver vs UniPC and corrected DPM-Solver++, "
                 "on standard and optimised time grids", fontsize=13)
    files = save_figure(fig, out_dir, NAME, dpi=72 if quick else 150)
    return dict(files=files, **summary)


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
