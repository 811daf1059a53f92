"""Figure 2: global error at t_end vs NFE for the DPM-Solver family on two targets (a sharp 2-D mixture and a
16-D mixture with full covariances), data and noise prediction, with dashed reference slopes NFE^-k and the
fitted global order in the legend.

Grid uniform in lambda (logSNR), ``lower_order_final`` off, so that every step has the solver's order (the
multistep warm-up steps excepted). The fitted order is the slope of log median error vs log of the largest
lambda step of the grid, over the automatically chosen window (drawn thicker).

``python -m paper_figs.fig2_global_error [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis.style import label, log_log_axes, reference_slope, save_figure, style, use_agg

from ._common import TARGET_LABELS, config_for, error_label, get_study, run_main

NAME = "fig2_global_error"
STUDIES = ("order_2d", "order_16d")
PREDICTION_TITLES = {"dpmsolver++": "data prediction (DPM-Solver++)", "dpmsolver": "noise prediction (DPM-Solver)"}


def plot_nfe_curve(ax, curve, *, with_order=True, highlight_window=True):
    st = style(curve.name, curve.algorithm_type)
    fit = curve.fit
    order = f"{fit.slope:.2f}" if fit.reliable else "n/a"
    text = f"{label(curve.name)}: {order} (exp. {curve.expected_order})" if with_order else label(curve.name)
    ax.plot(curve.nfe, curve.median, color=st["color"], marker=st["marker"], linestyle=st["linestyle"],
            markerfacecolor=st["markerfacecolor"], markersize=4.0, linewidth=1.0, label=text)
    if highlight_window and fit.reliable:
        a, b = fit.window  # indices into the points sorted by h_max, i.e. by decreasing NFE
        order_idx = np.argsort(curve.h_max)[a:b]
        ax.plot(curve.nfe[order_idx], curve.median[order_idx], color=st["color"], linewidth=3.0, alpha=0.35)


def nfe_reference_fan(ax, curves, orders):
    """Dashed lines ``C NFE^-k`` in the empty upper-right corner (errors fall to the right, the legend takes the
    lower left): from the largest error, fanning out towards the largest NFE."""
    nfe_hi = float(max(np.max(c.nfe) for c in curves)) / 10**0.05
    nfe_anchor = nfe_hi / 10**0.6
    e_anchor = float(max(np.nanmax(c.median) for c in curves))
    for k in orders:
        reference_slope(ax, nfe_anchor, nfe_hi, -float(k), nfe_anchor, e_anchor, label_text=f"NFE$^{{-{k}}}$")


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    cfg = config_for(quick, seed)
    studies = {t: get_study(f"order_{t}", out_dir, cfg) for t in ("2d", "16d")}
    plt = use_agg()
    fig, axes = plt.subplots(2, 2, figsize=(14, 11), constrained_layout=True)
    orders = {}
    for j, (target, study) in enumerate(studies.items()):
        for i, algorithm_type in enumerate(("dpmsolver++", "dpmsolver")):
            ax = axes[i, j]
            curves = [c for c in study.curves if c.algorithm_type == algorithm_type]
            if not curves:
                ax.text(0.5, 0.5, "not run in this mode (--quick)", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            for c in curves:
                plot_nfe_curve(ax, c)
                orders[f"{target}|{c.label}"] = c.fit.slope if c.fit.reliable else None
            nfe_reference_fan(ax, curves, sorted({c.expected_order for c in curves}))
            log_log_axes(ax, "NFE (model evaluations)", error_label(study.reference, study.t_end),
                         f"{TARGET_LABELS[target]}\n{PREDICTION_TITLES[algorithm_type]}, logSNR grid, "
                         f"{study.n_samples} samples",
                         legend=dict(title="fitted global order (expected)", title_fontsize=8))
    fig.suptitle("Global error vs NFE: k-th order solvers converge like NFE$^{-k}$ (dashed)", fontsize=13)
    files = save_figure(fig, out_dir, NAME, dpi=cfg.dpi)
    return dict(files=files, global_orders=orders)


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
