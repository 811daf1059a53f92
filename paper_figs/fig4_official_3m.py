"""Figure 4: the third-order multistep finding. The official DPM-Solver(++) third-order multistep update
(``compat="official"``, registry ``DPM-Solver-3M-official``) weights its second difference D2 by half of what
the Taylor expansion needs, so its local error is O(h^3) and it is only second order globally; the corrected
update (``DPM-Solver-3M``: the exact integral of the quadratic through the last three values, exponential
Adams-Bashforth) has local error O(h^4) and global order 3. DPM-Solver-2M is shown for comparison.

Left: local error of one step (exact history) at the middle lambda_s; middle and right: global error vs NFE on
the two targets (logSNR grid, lower_order_final off). Legends: fitted slopes (local: vs h; global: vs the largest
lambda step, i.e. -slope vs NFE).

``python -m paper_figs.fig4_official_3m [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis.style import log_log_axes, reference_slope, save_figure, style, use_agg

from ._common import TARGET_LABELS, config_for, error_label, get_study, run_main
from .fig1_local_error import local_error_label
from .fig2_global_error import nfe_reference_fan

NAME = "fig4_official_3m"
STUDIES = ("local_2d", "order_2d", "order_16d")
SHOWN = ("DPM-Solver-3M-official", "DPM-Solver-3M", "DPM-Solver-2M")
PRED = {"dpmsolver++": "data", "dpmsolver": "noise"}


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    cfg = config_for(quick, seed)
    local = get_study("local_2d", out_dir, cfg)
    globals_ = {t: get_study(f"order_{t}", out_dir, cfg) for t in ("2d", "16d")}
    plt = use_agg()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.8), constrained_layout=True)
    lam_mid = local.lam_starts[len(local.lam_starts) // 2]
    result = {"local": {}, "global": {}}
    ax = axes[0]
    for name in SHOWN:
        for algorithm_type in ("dpmsolver++", "dpmsolver"):
            c = local.curve(name, algorithm_type, lam_mid)
            st = style(name, algorithm_type)
            slope = f"{c.fit.slope:.2f}" if c.fit.reliable else "n/a"
            ax.plot(c.hs, c.median, color=st["color"], marker=st["marker"], linestyle=st["linestyle"],
                    markerfacecolor=st["markerfacecolor"], markersize=5, linewidth=1.3,
                    label=f"{name} ({PRED[algorithm_type]}): slope {slope}")
            result["local"][f"{name}|{algorithm_type}"] = c.fit.to_dict()
    hs = local.curves[0].hs
    e_min = min(float(np.min(c.median)) for c in local.curves if c.solver in SHOWN and abs(c.lam_s - lam_mid) < 1e-12)
    e_max_h = min(float(local.curve(n, a, lam_mid).median[-1]) for n in SHOWN for a in PRED)
    for k in (3, 4):
        reference_slope(ax, hs[-1] / 10**0.7, hs[-1], float(k), hs[-1], e_max_h / 30, label_text=f"$h^{k}$")
    log_log_axes(ax, "step size h in $\\lambda$", local_error_label(local),
                 f"local error, {TARGET_LABELS['2d']}, $\\lambda_s$ = {lam_mid:g}\n"
                 "official 3M: $h^3$ (second order); corrected 3M: $h^4$", legend=dict(loc="upper left"))
    ax.set_ylim(bottom=e_min / 3)
    for ax, (target, study) in zip(axes[1:], globals_.items()):
        shown = []
        for name in SHOWN:
            for algorithm_type in ("dpmsolver++", "dpmsolver"):
                try:
                    c = study.curve(f"{name}|{algorithm_type}")
                except KeyError:
                    continue
                shown.append(c)
                st = style(name, algorithm_type)
                slope = f"{c.fit.slope:.2f}" if c.fit.reliable else "n/a"
                ax.plot(c.nfe, c.median, color=st["color"], marker=st["marker"], linestyle=st["linestyle"],
                        markerfacecolor=st["markerfacecolor"], markersize=5, linewidth=1.3,
                        label=f"{name} ({PRED[algorithm_type]}): order {slope}")
                result["global"][f"{target}|{name}|{algorithm_type}"] = c.fit.to_dict()
        nfe_reference_fan(ax, shown, (2, 3))
        log_log_axes(ax, "NFE", error_label(study.reference, study.t_end),
                     f"global error, {TARGET_LABELS[target]}\nlogSNR grid, lower_order_final off", legend={})
    fig.suptitle("Finding: the official third-order multistep DPM-Solver is only second order; "
                 "the corrected update is third order", fontsize=13)
    files = save_figure(fig, out_dir, NAME, dpi=cfg.dpi)
    return dict(files=files, **result)


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
