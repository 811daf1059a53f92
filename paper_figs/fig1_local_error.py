"""Figure 1: local error vs step size h (one step from the exact state), every registered solver, data and noise
prediction, log-log, with dashed reference slopes k + 1 and the fitted slope in the legend.

Target: the 2-D mixture of ``analysis.targets.target_2d``, linear VP schedule. From the reference state at
``lambda_s`` (noisy, middle, near-data) one step of size h in lambda is compared with the reference at
``lambda_s + h``; multistep rules get the exact history. Top row: the middle ``lambda_s`` (legend: fitted slope
over the automatically chosen window, drawn as a thicker segment); bottom row: all three ``lambda_s`` for data
prediction.

``python -m paper_figs.fig1_local_error [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis.style import label, log_log_axes, reference_slope, save_figure, style, use_agg

from ._common import TARGET_LABELS, config_for, get_study, run_main

NAME = "fig1_local_error"
STUDIES = ("local_2d",)
PREDICTION_TITLES = {"dpmsolver++": "data prediction (DPM-Solver++)", "dpmsolver": "noise prediction (DPM-Solver)"}


def local_error_label(study) -> str:
    return (f"median per-sample L2 error after one step\nvs {study.reference['method']} "
            f"rtol {study.reference['rtol']:g} at $\\lambda_s + h$")


def plot_curve(ax, curve, *, with_slope=True, markersize=4.0, window_only=False):
    st = style(curve.solver, curve.algorithm_type)
    fit = curve.fit
    slope = f"{fit.slope:.2f}" if fit.reliable else "n/a"
    text = f"{label(curve.solver)}: {slope} (exp. {curve.expected})" if with_slope else label(curve.solver)
    ax.plot(curve.hs, curve.median, color=st["color"], marker=st["marker"], linestyle=st["linestyle"],
            markerfacecolor=st["markerfacecolor"], markersize=markersize, linewidth=1.0, label=text)
    if fit.reliable:
        a, b = fit.window
        ax.plot(curve.hs[a:b], curve.median[a:b], color=st["color"], linewidth=3.0, alpha=0.35,
                solid_capstyle="round")


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    cfg = config_for(quick, seed)
    study = get_study("local_2d", out_dir, cfg)
    plt = use_agg()
    lam_mid = study.lam_starts[len(study.lam_starts) // 2]
    fig, axes = plt.subplots(2, 2, figsize=(13.5, 10.5), constrained_layout=True)
    slopes = {}
    for ax, algorithm_type in zip(axes[0], ("dpmsolver++", "dpmsolver")):
        curves = [c for c in study.curves if c.algorithm_type == algorithm_type and abs(c.lam_s - lam_mid) < 1e-12]
        for c in curves:
            plot_curve(ax, c)
            slopes[f"{c.solver}|{algorithm_type}"] = c.fit.slope if c.fit.reliable else None
        _reference_fan(ax, curves)
        ax.set_title(f"{PREDICTION_TITLES[algorithm_type]}, $\\lambda_s$ = {lam_mid:g}\n"
                     "legend: fitted slope (thick: fit window) and expected k+1")
        _finish(ax, study)
        ax.legend(loc="lower right", fontsize=7, ncol=1, framealpha=0.9)
    # Bottom: each lam_s for data prediction, all solvers, one panel per ... (two panels: extremes).
    extremes = [study.lam_starts[0], study.lam_starts[-1]] if len(study.lam_starts) > 1 else [lam_mid, lam_mid]
    for ax, lam_s in zip(axes[1], extremes):
        curves = [c for c in study.curves if c.algorithm_type == "dpmsolver++" and abs(c.lam_s - lam_s) < 1e-12]
        for c in curves:
            plot_curve(ax, c)
        _reference_fan(ax, curves)
        where = "noisy end" if lam_s < lam_mid else ("near the data" if lam_s > lam_mid else "middle")
        ax.set_title(f"{PREDICTION_TITLES['dpmsolver++']}, $\\lambda_s$ = {lam_s:g} ({where})")
        _finish(ax, study)
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    fig.suptitle(f"Local error of one step vs step size h in $\\lambda$ ({TARGET_LABELS[study.target]}, "
                 f"{study.n_samples} samples, linear VP schedule); dashed: reference slopes", fontsize=13)
    files = save_figure(fig, out_dir, NAME, dpi=cfg.dpi)
    return dict(files=files, local_slopes_middle=slopes, lam_s=lam_mid)


def _reference_fan(ax, curves):
    """Dashed reference slopes in the empty upper-left corner: through the largest error at the smallest h'
    top, fanning out towards small h (errors grow with h, so nothing is plotted there)."""
    hs = np.concatenate([c.hs for c in curves])
    errs = np.concatenate([c.median for c in curves])
    errs = errs[np.isfinite(errs) & (errs > 0)]
    h_lo = float(np.min(hs))
    h_anchor = h_lo * 10**0.6
    e_anchor = float(np.max(errs))
    for k in sorted({int(c.expected) for c in curves}):
        reference_slope(ax, h_lo, h_anchor, float(k), h_anchor, e_anchor, label_text=f"slope {k}")


def _finish(ax, study):
    log_log_axes(ax, "step size h in $\\lambda$ (half log-SNR)", local_error_label(study))


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
