"""Figure 8: strong error of the stochastic samplers on coupled Brownian paths.

The strong error is ``sqrt(E ||X_N - X_fine||^2)`` at t_end = 1e-3, where ``X_fine`` solves the reverse SDE on a
fine grid driven by the *same* Brownian path (a :class:`expsolver.brownian.BrownianPath` generated once at the
finest resolution and aggregated exactly, with exponential weights, for the coarse steps). (a) The exponential
samplers against the largest lambda step on a broad 2-component mixture; (b) Euler-Maruyama against the largest
t step; (c) the sharp standard 2-D mixture, where the RMS is dominated by the few paths that a coarse solver sends
to another mode (slope ~1/2 over the range shown) while the median shows the first order. Dashed: slope 1.
Errors above 5 (the noise-prediction solvers are unstable at the coarsest steps) are off the chart.

``python -m paper_figs.fig8_sde_strong [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis import standard_schedule, target_2d
from analysis.sde_study import strong_error_study, wide_mixture
from analysis.style import log_log_axes, reference_slope, save_figure, style, use_agg
from analysis.tasks import Task

from ._common import config_for, get_study, register_study, run_main

NAME = "fig8_sde_strong"
STUDIES = (NAME,)
#: One colour and marker per stochastic solver, shared by figures 8-10 (noise prediction: dotted, hollow).
SDE_STYLES = {
    "SDE-DPM-Solver++1": dict(color="#000000", marker="o"),
    "DDPM-ancestral": dict(color="#000000", marker="x"),
    "SDE-DPM-Solver++(2M)": dict(color="#009E73", marker="D"),
    "SDE-DPM-Solver++(2M)-taylor": dict(color="#8CD17D", marker="s"),
    "SDE-DPM-Solver-1": dict(color="#0072B2", marker="o"),
    "SDE-DPM-Solver-2M": dict(color="#D55E00", marker="D"),
    "SDE-DPM-Solver-2M-taylor": dict(color="#E69F00", marker="s"),
    "Euler-Maruyama": dict(color="#CC79A7", marker="^"),
}


def sde_style(name: str) -> dict:
    """Plot keywords of a stochastic solver (see :data:`SDE_STYLES`)."""
    st = dict(SDE_STYLES.get(name, style(name)))
    noise = name.startswith("SDE-DPM-Solver-")
    st.update(linestyle=":" if noise else "-", markerfacecolor="white" if noise else st["color"])
    return st
LAM_SOLVERS = ("SDE-DPM-Solver++1", "SDE-DPM-Solver++(2M)", "SDE-DPM-Solver++(2M)-taylor", "SDE-DPM-Solver-1",
               "SDE-DPM-Solver-2M")
SHARP_SOLVERS = ("SDE-DPM-Solver++1", "SDE-DPM-Solver++(2M)")


def _config(quick: bool) -> dict:
    if quick:
        return dict(wide=dict(n_paths=64, steps=(8, 16, 32), fine_steps=128, em_steps=(16, 32, 64), em_fine_steps=256),
                    sharp=dict(n_paths=32, steps=(8, 16, 32), fine_steps=128))
    return dict(wide=dict(n_paths=1000, steps=(8, 16, 32, 64, 128, 256), fine_steps=2048,
                          em_steps=(16, 32, 64, 128, 256, 512), em_fine_steps=4096),
                sharp=dict(n_paths=500, steps=(8, 16, 32, 64, 128, 256), fine_steps=2048))


def _plot(ax, study, name, values, fit, linestyle=None, suffix=""):
    st = sde_style(name)
    slope = f"{fit.slope:.2f}" if fit.reliable else "n/a"
    ax.plot(study.h[name], values, color=st["color"], marker=st["marker"], markersize=4,
            markerfacecolor=st["markerfacecolor"], linestyle=linestyle or st["linestyle"], linewidth=1.1,
            label=f"{name}{suffix}: {slope}")


def _tasks(run_cfg) -> list:
    cfg, seed = _config(run_cfg.quick), run_cfg.seed
    return [Task("fig8_sde_strong/wide", strong_error_study, (wide_mixture(), standard_schedule()),
                 dict(solvers=LAM_SOLVERS + ("Euler-Maruyama",), seed=seed, target="wide_2d", **cfg["wide"])),
            Task("fig8_sde_strong/sharp", strong_error_study, (target_2d(), standard_schedule()),
                 dict(solvers=SHARP_SOLVERS, seed=seed, target="2d", em_steps=(), **cfg["sharp"]))]


register_study(NAME, _tasks, lambda cfg, parts, studies: dict(zip(("wide", "sharp"), parts)))


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    studies = get_study(NAME, out_dir, config_for(quick, seed))
    wide, sharp = studies["wide"], studies["sharp"]

    plt = use_agg()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), constrained_layout=True)
    for name in LAM_SOLVERS:
        _plot(axes[0], wide, name, wide.errors[name], wide.fits[name])
    _plot(axes[1], wide, "Euler-Maruyama", wide.errors["Euler-Maruyama"], wide.fits["Euler-Maruyama"])
    for name in SHARP_SOLVERS:
        _plot(axes[2], sharp, name, sharp.errors[name], sharp.fits[name], suffix=" RMS")
        _plot(axes[2], sharp, name, sharp.medians[name], sharp.median_fits[name], linestyle=":", suffix=" median")
    titles = (f"(a) broad 2-component mixture, {wide.n_paths} paths\nexponential samplers (logSNR grid)",
              f"(b) same paths in t, {wide.n_paths} paths\nEuler-Maruyama (uniform t grid)",
              f"(c) sharp 6-component mixture, {sharp.n_paths} paths\nRMS (solid) vs median (dotted)")
    xlabels = (r"largest step in $\lambda$", "largest step in t", r"largest step in $\lambda$")
    curves = ([(wide.h[n], wide.errors[n]) for n in LAM_SOLVERS],
              [(wide.h["Euler-Maruyama"], wide.errors["Euler-Maruyama"])],
              [(sharp.h[n], v[n]) for n in SHARP_SOLVERS for v in (sharp.errors, sharp.medians)])
    for ax, title, xlabel, pts in zip(axes, titles, xlabels, curves):
        hs = np.concatenate([np.asarray(h, dtype=float) for h, _ in pts])
        es = np.concatenate([np.asarray(e, dtype=float) for _, e in pts])
        h_lo, h_hi = float(hs.min()), float(hs.max())
        e_lo = float(np.min(es[np.isfinite(es)]))
        reference_slope(ax, h_lo, h_lo * 8, 1.0, h_lo, e_lo / 3, label_text="slope 1")
        ylabel = "strong error at t = 1e-3\n" + r"$(E\,\|X_N - X_{fine}\|^2)^{1/2}$, same Brownian path"
        log_log_axes(ax, xlabel, ylabel, title, title_size=10,
                     legend=dict(fontsize=7, loc="upper left", title="fitted strong order (theory 1)",
                                 title_fontsize=7))
        ax.set_xlim(h_lo / 1.5, h_hi * 1.5)
        ax.set_ylim(top=min(ax.get_ylim()[1], 5.0))  # unstable coarse noise-form runs blow up: off the chart
    fig.suptitle("Strong convergence on coupled Brownian paths (additive noise: order 1 for every scheme)")
    files = save_figure(fig, out_dir, NAME, dpi=config_for(quick, seed).dpi)
    orders = {f"wide|{n}": (wide.fits[n].slope if wide.fits[n].reliable else None) for n in wide.solvers}
    orders.update({f"sharp|{n}|rms": (sharp.fits[n].slope if sharp.fits[n].reliable else None) for n in SHARP_SOLVERS})
    orders.update({f"sharp|{n}|median": (sharp.median_fits[n].slope if sharp.median_fits[n].reliable else None)
                   for n in SHARP_SOLVERS})
    return dict(files=files, strong_orders=orders, expected=1.0)


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
