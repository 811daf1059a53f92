"""Figure 10: discretisation error versus model error with a noise predictor learned by denoising score matching.

A small MLP (:class:`expsolver.dsm.NoisePredictorMLP`) is trained with the DSM loss (6) on the standard sharp 2-D
mixture. (a) Probability-flow ODE with DPM-Solver++(2M): the discretisation error (RMS over samples of
``||X_N - X_ref||`` with the *same* model, reference = SciPy DOP853 rtol 1e-9) for the learned and for the exact
model, against the model error (RMS of ``X_ref(learned) - X_ref(exact)``, both solved to reference accuracy):
beyond the crossing, more NFE does not bring the samples closer to those of the exact model. (b) The same for the
reverse SDE with SDE-DPM-Solver++(2M), reference = the same solver on a fine grid driven by the same Brownian path.
(c) The training loss (moving average) against the exact model's loss and the independently computed irreducible
value ``d - E ||eps*(x_t, t)||^2``.

``python -m paper_figs.fig10_dsm_model_error [--quick] [--out DIR] [--seed N]``
"""

from __future__ import annotations

import numpy as np

from analysis import standard_schedule, target_2d
from analysis.sde_study import model_error_study
from analysis.style import log_log_axes, save_figure, style, use_agg
from analysis.tasks import Task
from expsolver.dsm import train_noise_predictor

from ._common import config_for, get_study, register_study, run_main
from .fig8_sde_strong import sde_style

NAME = "fig10_dsm_model_error"
STUDIES = (NAME,)


def _config(quick: bool) -> dict:
    if quick:
        return dict(train=dict(steps=150, batch_size=256, hidden=32), n_samples=64, steps=(5, 10, 20),
                    sde_steps=(8, 16, 32), sde_fine_steps=128, reference_rtol=1e-6, dsm_samples=4000)
    return dict(train=dict(steps=2000, batch_size=512, hidden=128, lr=2e-3), n_samples=1000,
                steps=(5, 8, 10, 15, 20, 30, 40, 60, 80, 120, 160), sde_steps=(16, 32, 64, 128, 256),
                sde_fine_steps=1024, reference_rtol=1e-9, dsm_samples=100000)


def train_and_study(cfg: dict, seed: int) -> dict:
    """Train the noise predictor (``cfg["train"]``, seed ``seed``) and run :func:`analysis.sde_study.model_error_study`
    with it; returns the study (its ``training`` summarises the training) and the training losses."""
    schedule, mixture = standard_schedule(), target_2d()
    trained = train_noise_predictor(mixture, schedule, seed=seed, **cfg["train"])
    study = model_error_study(mixture, schedule, learned=trained.model, n_samples=cfg["n_samples"], seed=seed,
                              steps=cfg["steps"], sde_steps=cfg["sde_steps"], sde_fine_steps=cfg["sde_fine_steps"],
                              reference_rtol=cfg["reference_rtol"], dsm_samples=cfg["dsm_samples"], target="2d")
    study.training = dict(config=trained.config, seconds=trained.seconds,
                          final_loss=float(np.mean(trained.losses[-100:])))
    return dict(study=study, losses=np.asarray(trained.losses))


register_study(NAME,
               lambda run_cfg: [Task(NAME, train_and_study, (_config(run_cfg.quick), run_cfg.seed))],
               lambda run_cfg, parts, studies: parts[0])


def make(out_dir: str, quick: bool = False, seed: int = 0) -> dict:
    result = get_study(NAME, out_dir, config_for(quick, seed))
    cfg, study, losses = _config(quick), result["study"], result["losses"]
    training = study.training

    plt = use_agg()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), constrained_layout=True)
    panels = ((axes[0], study.ode, "DPM-Solver-2M", "(a) probability-flow ODE, DPM-Solver++(2M)\nreference: DOP853 "
               f"rtol {cfg['reference_rtol']:g}"),
              (axes[1], study.sde, "SDE-DPM-Solver++(2M)", "(b) reverse SDE, SDE-DPM-Solver++(2M)\nreference: "
               f"{study.sde['fine_steps']} steps on the same Brownian path"))
    for ax, part, name, title in panels:
        st = style(name) if name.startswith("DPM") else sde_style(name)
        ax.plot(part["steps"], part["disc_learned"], color=st["color"], marker=st["marker"], markersize=4,
                linewidth=1.2, label="discretisation error, learned model")
        ax.plot(part["steps"], part["disc_exact"], color=st["color"], marker=st["marker"], markersize=4,
                markerfacecolor="white", linestyle=":", linewidth=1.2, label="discretisation error, exact model")
        ax.axhline(part["model_error"], color="0.3", linestyle="-.", linewidth=1.2,
                   label=f"model error (learned vs exact, both at reference accuracy): {part['model_error']:.3f}")
        log_log_axes(ax, "NFE (model evaluations)", f"RMS per-sample L2 error at t = 1e-3, {study.n_samples} samples",
                     title, title_size=10, legend=dict(fontsize=7))
    ax = axes[2]
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, len(losses) + 1), smooth, color="#0072B2", linewidth=1.2,
            label=f"training loss (6), moving average over {window} steps")
    irr, ex = study.dsm["irreducible"], study.dsm["exact"]
    ax.axhline(irr["value"], color="0.2", linestyle="-.", label=f"irreducible value {irr['value']:.4f} "
               f"+- {irr['stderr']:.4f} (independent)")
    ax.axhline(ex["value"], color="#D55E00", linestyle=":", label=f"exact model's loss {ex['value']:.4f} "
               f"+- {ex['stderr']:.4f}")
    learned = study.dsm["learned"]
    ax.set_title(f"(c) DSM training on the 2-D mixture ({training['config']['steps']} Adam steps, "
                 f"{training['seconds']:.0f} s)\nlearned model: loss {learned['value']:.4f}, excess "
                 f"E||eps_theta - eps*||^2 = {study.dsm['excess']['value']:.4f}", fontsize=10)
    ax.set_xlabel("Adam step")
    ax.set_ylabel(r"$E\,\|\epsilon_\theta(x_t, t) - \epsilon\|^2$, t ~ U[1e-3, 1]")
    ax.set_ylim(irr["value"] * 0.9, max(float(np.max(smooth[len(smooth) // 20:])), irr["value"] * 1.2))
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7)
    fig.suptitle("Discretisation error vs model error: a learned noise predictor limits what more NFE can buy")
    files = save_figure(fig, out_dir, NAME, dpi=config_for(quick, seed).dpi)
    crossing = {}
    for key, part in (("ode", study.ode), ("sde", study.sde)):
        below = [n for n, e in zip(part["steps"], part["disc_learned"]) if e < part["model_error"]]
        crossing[key] = min(below) if below else None
    return dict(files=files, model_error=dict(ode=study.ode["model_error"], sde=study.sde["model_error"]),
                first_nfe_below_model_error=crossing, dsm=study.dsm, training_seconds=training['seconds'])


def main(argv=None) -> dict:
    return run_main(make, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
