"""Figure 6: the 2-D picture. The density of the 2-D mixture at t_end (grey, log scale), reference probability-flow
ODE trajectories from t = 1 to t_end (thin lines, SciPy DOP853 at rtol 1e-12 in lambda), and where 10-NFE samples
of DDIM, DPM-Solver-3 (singlestep "DPM-Solver-fast" orders 3,3,3,1, noise prediction) and DPM-Solver++(2M) land,
all on the same logSNR grid and the same starting noise. Samples that end in a different mixture component than
their exact ODE solution (mode switches) are circled in red and joined to where they should have landed.

``python -m paper_figs.fig6_2d_picture [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np
import torch

from analysis import T_END, T_START, standard_schedule, target_2d
from analysis.global_error import error_statistics
from analysis.results import cached_reference
from analysis.style import save_figure, style, use_agg
from analysis.tasks import Task
from expsolver import sample, time_grid

from ._common import config_for, get_study, register_study, run_main

NAME = "fig6_2d_picture"
STUDIES = (NAME,)
NFE = 10
SAMPLERS = (
    ("DDIM (= DPM-Solver-1)", "DPM-Solver-1", dict(method="multistep", order=1, algorithm_type="dpmsolver")),
    ("DPM-Solver-3 (singlestep)", "DPM-Solver-3S", dict(method="singlestep", order=3, algorithm_type="dpmsolver")),
    ("DPM-Solver++(2M)", "DPM-Solver-2M", dict(method="multistep", order=2, algorithm_type="dpmsolver++")),
)


def picture(n_samples: int, n_trajectories: int, seed: int) -> dict:
    """The figure's data: starting states ``x``, their reference end states ``ref`` and trajectories ``traj``
    (60 logSNR points), and per sampler of :data:`SAMPLERS` its end states, NFE and error statistics."""
    target, schedule = target_2d(), standard_schedule()
    x = target.sample(n_samples, generator=torch.Generator().manual_seed(seed + 6), t=T_START, schedule=schedule)
    ref = cached_reference(target, schedule, x, T_START, T_END)["x"]
    ts = time_grid(schedule, "logSNR", T_START, T_END, 60)
    traj = cached_reference(target, schedule, x[:n_trajectories], T_START, T_END, ts=ts)["xs"]
    model = target.as_model(schedule)
    samplers = {}
    for title, _, options in SAMPLERS:
        res = sample(model, schedule, x, steps=NFE, skip_type="logSNR", t_start=T_START, t_end=T_END, **options)
        samplers[title] = dict(x=res.x.numpy(), nfe=int(res.nfe),
                               stats=error_statistics(res.x, ref, target, schedule, T_END))
    return dict(x=x.numpy(), ref=ref.numpy(), traj=traj.numpy(), samplers=samplers)


register_study(NAME,
               lambda cfg: [Task(NAME, picture, (cfg.fig6_samples, cfg.fig6_trajectories, cfg.seed))],
               lambda cfg, parts, studies: parts[0])


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    cfg = config_for(quick, seed)
    data = get_study(NAME, out_dir, cfg)
    target, schedule = target_2d(), standard_schedule()
    x, x_ref, traj = data["x"], data["ref"], data["traj"]
    # Density of q_{t_end} on a grid.
    lim = 3.0
    g = np.linspace(-lim, lim, 240)
    gx, gy = np.meshgrid(g, g)
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1))
    logp = target.log_prob(pts, T_END, schedule).numpy().reshape(gx.shape)
    comp_ref = target.component(torch.from_numpy(x_ref), T_END, schedule).numpy()

    plt = use_agg()
    fig, axes = plt.subplots(1, 3, figsize=(16.5, 6.0), constrained_layout=True, sharex=True, sharey=True)
    info = {}
    for ax, (title, style_name, options) in zip(axes, SAMPLERS):
        run = data["samplers"][title]
        xs, stats = run["x"], run["stats"]
        switched = target.component(torch.from_numpy(xs), T_END, schedule).numpy() != comp_ref
        ax.contourf(gx, gy, np.maximum(logp, -12.0), levels=20, cmap="Greys", alpha=0.55, zorder=0)
        for k in range(traj.shape[1]):
            ax.plot(traj[:, k, 0], traj[:, k, 1], color="#4C72B0", linewidth=0.6, alpha=0.55, zorder=1)
        ax.scatter(x_ref[:, 0], x_ref[:, 1], s=9, facecolors="white", edgecolors="0.25", linewidths=0.6, zorder=2,
                   label="exact ODE endpoints (reference)")
        st = style(style_name, options["algorithm_type"])
        ax.scatter(xs[:, 0], xs[:, 1], s=14, marker=st["marker"], color=st["color"], alpha=0.8, zorder=3,
                   edgecolors="none", label=f"{title}, {run['nfe']} NFE")
        for i in np.nonzero(switched)[0]:
            ax.plot([xs[i, 0], x_ref[i, 0]], [xs[i, 1], x_ref[i, 1]], color="#D62728", linewidth=0.8, zorder=2)
        ax.scatter(xs[switched, 0], xs[switched, 1], s=60, facecolors="none", edgecolors="#D62728",
                   linewidths=1.2, zorder=4, label="mode switch (ends in another component)")
        ax.set_title(f"{title}, {run['nfe']} NFE, logSNR grid\nmedian L2 error {stats['median']:.3f}, "
                     f"mode switches {int(switched.sum())}/{x.shape[0]}")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.legend(loc="lower left", fontsize=7.5, framealpha=0.9)
        info[title] = dict(stats, nfe=int(run["nfe"]))
    axes[0].set_ylabel("$x_2$")
    axes[0].plot([], [], color="#4C72B0", linewidth=0.8, label="reference ODE trajectories from t = 1")
    axes[0].legend(loc="lower left", fontsize=7.5, framealpha=0.9)
    fig.suptitle(f"Where 10-NFE samples land on the 2-D mixture (grey: log density at t = {T_END:g}; "
                 f"{x.shape[0]} samples, same starting noise)", fontsize=13)
    files = save_figure(fig, out_dir, NAME, dpi=cfg.dpi)
    return dict(files=files, samplers=info)


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
