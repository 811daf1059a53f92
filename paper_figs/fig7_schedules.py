"""Figure 7: the noise schedules. ``alpha_t``, ``sigma_t`` and the half log-SNR ``lambda_t`` over ``t`` for the
linear VP schedule (``beta_0 = 0.1``, ``beta_1 = 20``), the cosine schedule (``s = 0.008``) and a discrete DDPM
schedule (1000 linear betas from 1e-4 to 0.02, piecewise-linear ``log alpha`` between ``t_n = (n + 1)/1000``).

``python -m paper_figs.fig7_schedules [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis.style import save_figure, use_agg
from expsolver import VPCosine, VPDiscrete, VPLinear

from ._common import config_for, run_main

NAME = "fig7_schedules"
STUDIES = ()
SCHEDULE_STYLES = {"linear (VPLinear)": dict(color="#0072B2", linestyle="-"),
                   "cosine (VPCosine)": dict(color="#D55E00", linestyle="-."),
                   "discrete DDPM, N = 1000 (VPDiscrete)": dict(color="#009E73", linestyle="none", marker="o",
                                                                markersize=3.5, markevery=25)}


def schedules() -> dict:
    return {"linear (VPLinear)": VPLinear(), "cosine (VPCosine)": VPCosine(),
            "discrete DDPM, N = 1000 (VPDiscrete)": VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000))}


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    cfg = config_for(quick, seed)
    plt = use_agg()
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.8), constrained_layout=True)
    info = {}
    for label, sched in schedules().items():
        t_lo = max(sched.t_min, 1e-3)
        ts = np.linspace(t_lo, sched.T, 600)
        alpha = np.array([sched.alpha(float(t)) for t in ts])
        sigma = np.array([sched.sigma(float(t)) for t in ts])
        lam = sched.lams_of(ts)
        for ax, values in zip(axes, (alpha, sigma, lam)):
            ax.plot(ts, values, label=label, linewidth=1.8, **SCHEDULE_STYLES[label])
        info[label] = dict(T=float(sched.T), lam_T=float(lam[-1]), lam_1e_3=float(sched.lam(1e-3)))
    for ax, title, ylabel in zip(axes, (r"signal scale $\alpha_t$", r"noise scale $\sigma_t$",
                                        r"half log-SNR $\lambda_t$"),
                                 (r"$\alpha_t$", r"$\sigma_t = \sqrt{1-\alpha_t^2}$",
                                  r"$\lambda_t = \log(\alpha_t/\sigma_t)$")):
        ax.set_title(title)
        ax.set_xlabel("time t")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[2].axhline(0.0, color="0.6", linewidth=0.8)
    axes[1].legend(loc="lower right", fontsize=8, title="discrete: markers (matches linear)", title_fontsize=7)
    fig.suptitle(r"VP noise schedules: $x_t = \alpha_t x_0 + \sigma_t \epsilon$, t from 1e-3 to T "
                 r"(linear T = 1, cosine T = 0.9946)")
    files = save_figure(fig, out_dir, NAME, dpi=cfg.dpi)
    return dict(files=files, schedules=info)


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
