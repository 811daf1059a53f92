"""Figure 9: weak error of the stochastic samplers on quantities known exactly.

(a) Exact covariance error at t_end = 1e-3 for a single Gaussian (every scheme is affine in its inputs, so the
mean and covariance of X_N follow from basis runs: no Monte-Carlo error). (b), (c) Broad 2-component mixture:
Frobenius error of the covariance at an intermediate time (the lambda midpoint) and at t_end, estimated against
the fine solution on the same coupled paths (a control variate whose standard error, the error bars, scales with
the strong error) -- the fine solution itself matches the exact moments of q_t (reported in the legend title as
the largest z-score). Points below 3 standard errors are hollow and not fitted. (d) Euler-Maruyama in t (mixture,
and the exact single-Gaussian errors in grey).
Dashed: slopes 1 and 2. Theory: weak order 1 for the one-step schemes and Euler-Maruyama, 2 for the 2M schemes.
On Gaussian data SDE-DPM-Solver-1's O(h) covariance error is proportional to sigma^2/alpha^2 at t_end (~1e-4 at
t_end = 1e-3), so panel (a) shows only its O(h^2) term (its first order is visible at t_end = 0.5: tests).

``python -m paper_figs.fig9_sde_weak [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis import standard_schedule
from analysis.sde_study import THEORY, gaussian_weak_errors, weak_error_study, wide_mixture
from analysis.style import log_log_axes, reference_slope, save_figure, use_agg
from analysis.tasks import Task
from expsolver import GaussianMixture

from ._common import config_for, get_study, register_study, run_main
from .fig8_sde_strong import sde_style

NAME = "fig9_sde_weak"
STUDIES = (NAME,)
LAM_SOLVERS = ("SDE-DPM-Solver++1", "SDE-DPM-Solver++(2M)", "SDE-DPM-Solver++(2M)-taylor", "SDE-DPM-Solver-1",
               "SDE-DPM-Solver-2M")


def gaussian_target() -> GaussianMixture:
    """The single anisotropic Gaussian of panel (a)."""
    return GaussianMixture([1.0], [[0.5, -0.3]], [[[0.3, 0.1], [0.1, 0.2]]])


def _config(quick: bool) -> dict:
    if quick:
        return dict(gauss=dict(steps=(8, 16, 32), em_steps=(16, 32, 64)),
                    mc=dict(n_paths=400, steps=(8, 16, 32), fine_steps=128, em_steps=(16, 32, 64), em_fine_steps=256))
    return dict(gauss=dict(steps=(8, 16, 32, 64, 128, 256, 512), em_steps=(16, 32, 64, 128, 256, 512, 1024)),
                mc=dict(n_paths=8000, steps=(8, 16, 32, 64, 128), fine_steps=1024,
                        em_steps=(32, 64, 128, 256), em_fine_steps=4096))


def _label(name, fit, suffix=""):
    slope = f"{fit.slope:.2f}" if fit.reliable else "n/a"
    return f"{name}{suffix}: {slope} (theory {THEORY[name][1]:g})"


def _plot_mc(ax, study, name, q, suffix="", marker=None):
    st = dict(sde_style(name))
    if marker is not None:
        st["marker"] = marker
    h = np.asarray(study.h[name])
    e, se = np.asarray(study.coupled[name][q]), np.asarray(study.coupled_se[name][q])
    ok = e > 3 * se
    ax.errorbar(h, e, yerr=se, color=st["color"], linestyle=st["linestyle"], linewidth=1.0, capsize=2,
                label=_label(name, study.fits[name][q], suffix))
    ax.plot(h[ok], e[ok], linestyle="none", marker=st["marker"], color=st["color"], markersize=4,
            markerfacecolor=st["markerfacecolor"])
    ax.plot(h[~ok], e[~ok], linestyle="none", marker=st["marker"], color=st["color"], markersize=4,
            markerfacecolor="white")


def _tasks(run_cfg) -> list:
    cfg, solvers = _config(run_cfg.quick), LAM_SOLVERS + ("Euler-Maruyama",)
    return [Task("fig9_sde_weak/gaussian", gaussian_weak_errors, (gaussian_target(), standard_schedule()),
                 dict(solvers=solvers, **cfg["gauss"])),
            Task("fig9_sde_weak/mixture", weak_error_study, (wide_mixture(), standard_schedule()),
                 dict(solvers=solvers, seed=run_cfg.seed, target="wide_2d", **cfg["mc"]))]


register_study(NAME, _tasks, lambda cfg, parts, studies: dict(zip(("gaussian", "mixture"), parts)))


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    studies = get_study(NAME, out_dir, config_for(quick, seed))
    gauss, mc = studies["gaussian"], studies["mixture"]

    plt = use_agg()
    fig, axes = plt.subplots(1, 4, figsize=(21, 5.2), constrained_layout=True)
    ax = axes[0]
    for name in LAM_SOLVERS:
        st = sde_style(name)
        ax.plot(gauss.h[name], gauss.cov[name], color=st["color"], marker=st["marker"], markersize=4,
                markerfacecolor=st["markerfacecolor"], linestyle=st["linestyle"], linewidth=1.1,
                label=_label(name, gauss.fits[name]["cov"]))
    for name, q, ax in (("lam", "cov_mid", axes[1]), ("lam", "cov_end", axes[2])):
        for solver in LAM_SOLVERS:
            _plot_mc(ax, mc, solver, q)
    _plot_mc(axes[3], mc, "Euler-Maruyama", "cov_mid", suffix=", t = 0.5", marker="^")
    _plot_mc(axes[3], mc, "Euler-Maruyama", "cov_end", suffix=", t = 1e-3", marker="v")
    st = sde_style("Euler-Maruyama")
    axes[3].plot(gauss.h["Euler-Maruyama"], gauss.cov["Euler-Maruyama"], color="0.35", marker="s", markersize=4,
                 linewidth=1.0, label=_label("Euler-Maruyama", gauss.fits["Euler-Maruyama"]["cov"],
                                             ", single Gaussian (exact), t = 1e-3"))
    z = mc.reference_max_z
    t_mid_lam = mc.times[LAM_SOLVERS[0]][0]
    titles = ("(a) single Gaussian, exact moments (no Monte Carlo), covariance error at t = 1e-3\n"
              "(SDE-DPM-Solver-1: O(h) term ~ sigma^2/alpha^2 at t_end = 1e-4, invisible here)",
              f"(b) 2-component mixture, {mc.n_paths} paths\ncovariance at t = {t_mid_lam:.3g} (lambda midpoint)",
              f"(c) 2-component mixture, {mc.n_paths} paths\ncovariance at t = 1e-3",
              f"(d) Euler-Maruyama, {mc.n_paths} paths\ncovariance at t = 0.5 and t = 1e-3")
    legend_titles = ("fitted weak order", f"fine solution vs exact q_t: max |z| = {z['lam']['cov_mid']:.1f}",
                     f"fine solution vs exact q_t: max |z| = {z['lam']['cov_end']:.1f}",
                     f"fine EM vs exact: max |z| = {max(z['t'].values()):.1f}")
    xlabels = (r"largest step in $\lambda$",) * 3 + ("largest step in t",)
    for ax, title, xlabel, ltitle in zip(axes, titles, xlabels, legend_titles):
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
        hs = np.concatenate([np.asarray(ln.get_xdata(), dtype=float) for ln in lines])
        es = np.concatenate([np.asarray(ln.get_ydata(), dtype=float) for ln in lines])
        good = np.isfinite(es) & (es > 0)
        h_lo, e_lo = float(hs.min()), float(es[good].min())
        reference_slope(ax, h_lo, h_lo * 6, 1.0, h_lo, e_lo * 2, label_text="slope 1")
        reference_slope(ax, h_lo, h_lo * 6, 2.0, h_lo, e_lo / 2, label_text="slope 2")
        log_log_axes(ax, xlabel, r"$\|\mathrm{Cov}\,X_N - \mathrm{Cov}_{\rm ref}\|_F$" + "\n(ref: exact in (a), fine "
                     "solution on the same paths in (b)-(d))", title, title_size=10,
                     legend=dict(fontsize=6.5, loc="lower right", title=ltitle, title_fontsize=7))
        ax.yaxis.label.set_fontsize(8)
        ax.set_ylim(top=min(ax.get_ylim()[1], 5.0))
    fig.suptitle("Weak convergence of the mean-square moments (theory: order 1 for one-step schemes and "
                 "Euler-Maruyama, 2 for the 2M schemes)")
    files = save_figure(fig, out_dir, NAME, dpi=config_for(quick, seed).dpi)
    orders = {f"gaussian|{n}": (gauss.fits[n]["cov"].slope if gauss.fits[n]["cov"].reliable else None)
              for n in gauss.solvers}
    for n in mc.solvers:
        for q in ("cov_mid", "cov_end"):
            f = mc.fits[n][q]
            orders[f"mixture|{n}|{q}"] = f.slope if f.reliable else None
    return dict(files=files, weak_orders=orders, reference_max_z=mc.reference_max_z,
                theory={n: THEORY[n][1] for n in mc.solvers})


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
