"""Figure 3: work-precision. Error at t_end vs NFE for the DPM-Solver family (data prediction, logSNR grid)
against classical Runge-Kutta solvers: torchdiffeq rk4 (fixed steps) and dopri5, SciPy RK45 and DOP853 (several
tolerances, atol = rtol), all on the same samples, the same reference and the same NFE count (batched model
calls, start-up and rejected steps included). The classical solvers integrate the same ODE in lambda
(dx/dlambda = sigma^2 x - sigma eps), their smoothest form.

``python -m paper_figs.fig3_work_precision [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis.style import label, log_log_axes, save_figure, style, use_agg

from ._common import TARGET_LABELS, config_for, error_label, get_study, run_main

NAME = "fig3_work_precision"
STUDIES = ("wp_2d", "wp_16d")
DPM_SHOWN = ("DPM-Solver-1", "DPM-Solver-2S", "DPM-Solver-3S", "DPM-Solver-2M", "DPM-Solver-3M", "DPM-Solver-4M")
CLASSICAL_LABELS = {"rk4": "rk4 (torchdiffeq, fixed steps)", "dopri5": "dopri5 (torchdiffeq)",
                    "RK45": "RK45 (SciPy)", "DOP853": "DOP853 (SciPy)"}


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    cfg = config_for(quick, seed)
    studies = {t: get_study(f"wp_{t}", out_dir, cfg) for t in ("2d", "16d")}
    plt = use_agg()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2), constrained_layout=True)
    best = {}
    for ax, (target, study) in zip(axes, studies.items()):
        for name in DPM_SHOWN:
            c = study.dpm.curve(f"{name}|dpmsolver++")
            st = style(name, "dpmsolver++")
            ax.plot(c.nfe, c.median, color=st["color"], marker=st["marker"], markersize=4, linewidth=1.2,
                    label=f"{label(name)} (DPM-Solver++)")
        for c in study.classical:
            st = style(c.name)
            ok = np.isfinite(c.median)  # points in sweep order (tolerance tightening / more steps)
            nfe, med, values = c.nfe[ok], c.median[ok], c.values[ok]
            ax.plot(nfe, med, color=st["color"], marker=st["marker"], markersize=6, linewidth=1.6,
                    linestyle=(0, (5, 1.5)) if c.backend == "scipy" else (0, (1, 1)),
                    label=CLASSICAL_LABELS.get(c.name, c.name))
            for j in (0, len(nfe) - 1):
                text = f"n={int(values[j])}" if c.parameter == "n_steps" else f"tol {values[j]:.0e}"
                ax.annotate(text, (nfe[j], med[j]), xytext=(4, 3), textcoords="offset points", fontsize=6.5,
                            color=st["color"])
            best[f"{target}|{c.name}"] = dict(nfe=c.nfe.tolist(), median=c.median.tolist())
        log_log_axes(ax, "NFE (batched model evaluations)", error_label(study.reference, study.t_end),
                     f"{TARGET_LABELS[target]}, {study.n_samples} samples", legend={})
    fig.suptitle("Work-precision: exponential integrators vs classical Runge-Kutta on the same ODE", fontsize=13)
    files = save_figure(fig, out_dir, NAME, dpi=cfg.dpi)
    return dict(files=files, classical=best)


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
