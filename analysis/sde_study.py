"""Strong and weak convergence of the stochastic samplers, and discretisation versus model error.

Orders predicted by theory (additive noise; ``h`` the step in ``lam``, in ``t`` for Euler-Maruyama; derivations in
:mod:`expsolver.solvers.sde` and below):

====================================  ======  ====
scheme                                strong  weak
====================================  ======  ====
Euler-Maruyama (t)                    1       1
DDPM ancestral = SDE-DPM-Solver++1    1       1
SDE-DPM-Solver-1 (noise prediction)   1       1
SDE-DPM-Solver++(2M), -2M (+taylor)   1       2
====================================  ======  ====

*Strong*: the exponential schemes sample the noise integral exactly, so their error is the drift quadrature along
a rough path: ``x_lam - x_s`` contains ``B_lam - B_s``, which leaves a zero-mean local error of size ``h^{3/2}`` that
no interpolation through past points removes (it needs the iterated integral ``int (B_lam - B_s) dlam``): strong
order 1 for all, as for Euler-Maruyama with additive noise (Kloeden & Platen 1992, Sec. 10.2).

*Weak, 2M*: write the step as ``x_t = x_s + b_s h + (h/2) (b_s - b_{s-1}) + c dB`` (exponential weights change
only the constants). Expanding ``E[u(t, x_t)]`` for the solution ``u`` of the backward Kolmogorov equation, the
terms of order ``h^2`` are (i) the drift Taylor term ``h^2/2 E[grad u . L b]``, which the backward difference
reproduces only up to ``+h^2/2 c^2 E[grad^2 u : grad b]``, because ``b_{s-1}`` is conditioned on the *past*
(the time-reversed dynamics, integrate by parts against the marginal), and (ii) the covariance of the Brownian
increment with the iterated integral, ``E[dB int (B - B_s)] = h^2/2``, which the scheme lacks: ``-h^2/2 c^2
E[grad^2 u : grad b]``. The two cancel, so the global weak error is ``O(h^2)``. (This is a derivation sketch,
not a proof; the measurements below confirm it.) The one-step schemes have the ``(ii)`` defect and an ``O(h^2)``
drift defect: weak order 1. On *Gaussian* data SDE-DPM-Solver-1's ``O(h)`` covariance error is proportional to
``sigma^2/alpha^2`` at ``t_end`` (in ``y = x/alpha`` the local variance defects, propagated to ``t_end``, sum to
``h (sigma_end/alpha_end)^2`` to leading order), so at ``t_end = 1e-3`` only its ``O(h^2)`` term is visible;
at ``t_end = 0.5`` it shows first order (tests).

Measurements (all on :class:`~expsolver.brownian.BrownianPath` coupled paths, float64, fixed seeds):

* :func:`strong_error_study`: RMS over paths of ``||X_N - X_fine||`` where ``X_fine`` is a fine-grid solution on
  the *same* Brownian path (SDE-DPM-Solver++(2M) on the fine ``lam`` grid for every ``lam`` scheme, Euler-Maruyama
  on the fine ``t`` grid for Euler-Maruyama). Also the median (robust to the rare paths that end in another
  mode, which dominate the RMS on sharp mixtures before the asymptotic range).
* :func:`weak_error_study`: errors of the mean and covariance of ``X_N`` at ``t_end`` and at an intermediate grid
  time. Against the exact moments of ``q_t`` (``GaussianMixture.mean/covariance``) with Monte-Carlo standard
  errors, and -- to measure the order below the Monte-Carlo error of the moments themselves -- against the fine
  solution on the same paths (a control variate: its standard error scales with the strong error, not with the
  spread of the samples). Slopes are fitted only where the error exceeds 3 standard errors.
* :func:`gaussian_weak_errors`: for a single Gaussian every scheme is affine in ``(x_start, z_1..z_N)``, so the
  exact mean and covariance of ``X_N`` follow from ``1 + d + N d`` runs with basis inputs: weak errors with no
  Monte-Carlo error at all.
* :func:`model_error_study`: a learned noise predictor (:func:`expsolver.dsm.train_noise_predictor`) against the
  exact one: discretisation error (solver vs reference with the same model) and model error (learned vs exact,
  both solved to reference accuracy), for the ODE (DPM-Solver++(2M) vs SciPy DOP853) and the SDE
  (SDE-DPM-Solver++(2M) vs its fine-grid solution on the same path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from expsolver import GaussianMixture, reference_solve, sample, time_grid
from expsolver.brownian import BrownianPath
from expsolver.convergence import sample_errors
from expsolver.dsm import dsm_loss, excess_dsm_loss, irreducible_dsm_loss, train_noise_predictor
from expsolver.sde_sampling import reverse_sde_sample
from expsolver.solvers.sde import SDE_REGISTRY

from .order import OrderFit, fit_order
from .results import provenance, result_type
from .targets import T_END, T_START

__all__ = ["StrongStudy", "WeakStudy", "GaussianWeakStudy", "ModelErrorStudy", "strong_error_study",
           "weak_error_study", "gaussian_weak_errors", "model_error_study", "run_sde", "wide_mixture",
           "LAM_REFERENCE", "DEFAULT_SOLVERS", "THEORY"]

#: Fine-grid solver of the ``lam`` family (weak order 2, so its own weak error is negligible).
LAM_REFERENCE = "SDE-DPM-Solver++(2M)"
DEFAULT_SOLVERS = ("SDE-DPM-Solver++1", "SDE-DPM-Solver++(2M)", "SDE-DPM-Solver++(2M)-taylor", "SDE-DPM-Solver-1",
                   "SDE-DPM-Solver-2M", "DDPM-ancestral", "Euler-Maruyama")
#: name -> (strong order, weak order) predicted by theory (module docstring).
THEORY = {name: (c.strong_order, c.weak_order) for name, c in SDE_REGISTRY.items()}


def wide_mixture() -> GaussianMixture:
    """A 2-D two-component mixture with broad, overlapping components (standard deviations 0.55 and 0.71, means
    1.2 apart). Its reverse SDE has a moderate Lipschitz constant, so the asymptotic range of the strong error is
    reached at a few dozen steps; on sharp mixtures the RMS strong error is dominated far longer by the paths that
    a coarse solver sends to another mode."""
    return GaussianMixture([0.5, 0.5], [[0.6, 0.0], [-0.6, 0.2]], [0.3, 0.5])


def run_sde(name: str, model, schedule, x, timesteps, noise, *, return_intermediates: bool = False):
    """Run the registered SDE solver ``name`` on the grid ``timesteps`` with the noise source ``noise``."""
    config = SDE_REGISTRY[name]
    if config.entry == "sample":
        return sample(model, schedule, x, timesteps=timesteps, noise=noise,
                      return_intermediates=return_intermediates, **config.options)
    return reverse_sde_sample(model, schedule, x, timesteps=timesteps, noise=noise,
                              return_intermediates=return_intermediates, **config.options)


def _fine_grid(schedule, variable, skip_type, t_start, t_end, fine_steps):
    return time_grid(schedule, skip_type if variable == "lam" else "time_uniform", t_start, t_end, fine_steps)


def _h_max(schedule, ts, variable) -> float:
    return float(np.max(np.abs(np.diff(schedule.lams_of(ts) if variable == "lam" else ts))))


def _check_divides(steps, fine_steps, name):
    for n in steps:
        if fine_steps % n:
            raise ValueError(f"{name}: every step count must divide the fine grid's {fine_steps} steps, got {n}")


def _per_sample_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`expsolver.convergence.sample_errors` as a float64 tensor."""
    return torch.from_numpy(sample_errors(a, b))


def _fit(hs, errors, expected, floor=None, floor_factor=3.0) -> OrderFit:
    return fit_order(hs, errors, expected=expected, floor=floor, floor_factor=floor_factor)


# -- strong --------------------------------------------------------------------------------------------------------
@result_type
@dataclass
class StrongStudy:
    """Strong errors on coupled paths. ``errors[name]`` (RMS over paths) and ``medians[name]`` per entry of
    ``steps[name]``; ``h[name]`` the largest step (``lam`` or ``t``); ``fits[name]`` the RMS slope;
    ``reference_spread[family]`` the RMS (``reference_spread_median``: median) difference of two fine solutions on
    the same path (an upper estimate of the reference's own error, used as the floor of the RMS (median) fits)."""

    solvers: list
    steps: dict
    h: dict
    errors: dict
    medians: dict
    fits: dict
    median_fits: dict
    reference_spread: dict
    reference_spread_median: dict
    fine_steps: dict
    n_paths: int
    seed: int
    target: str
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def strong_error_study(mixture: GaussianMixture, schedule, *, solvers=DEFAULT_SOLVERS,
                       steps=(16, 32, 64, 128, 256), fine_steps: int = 2048, em_steps=(32, 64, 128, 256, 512),
                       em_fine_steps: int = 4096, n_paths: int = 500, seed: int = 0, t_start: float = T_START,
                       t_end: float = T_END, skip_type: str = "logSNR", target: str = "mixture") -> StrongStudy:
    """Strong error ``sqrt(E ||X_N - X_fine||^2)`` of each solver against a fine solution on the same path.

    ``x_start ~ q_{t_start}`` (exact marginal), one :class:`BrownianPath` per noise variable (``lam`` with rates
    -1 and +1 on ``time_grid(skip_type, fine_steps)``; ``t`` with rate 0 on a uniform ``t`` grid of
    ``em_fine_steps``), coarse grids = every ``fine/N``-th fine node.
    """
    _check_divides(steps, fine_steps, "steps")
    _check_divides(em_steps, em_fine_steps, "em_steps")
    model = mixture.as_model(schedule)
    g = torch.Generator().manual_seed(seed)
    x = mixture.sample(n_paths, g, t=t_start, schedule=schedule)
    fine = {"lam": (fine_steps, (-1.0, 1.0)), "t": (em_fine_steps, (0.0,))}
    grids, paths, refs, spread, spread_median = {}, {}, {}, {}, {}
    for variable in {SDE_REGISTRY[n].noise_variable for n in solvers}:
        m, rates = fine[variable]
        grids[variable] = _fine_grid(schedule, variable, skip_type, t_start, t_end, m)
        paths[variable] = BrownianPath.from_times(schedule, grids[variable], tuple(x.shape), variable=variable,
                                                  rates=rates, generator=torch.Generator().manual_seed(seed + 1))
        ref_name, other = (LAM_REFERENCE, "SDE-DPM-Solver++1") if variable == "lam" else ("Euler-Maruyama", None)
        refs[variable] = run_sde(ref_name, model, schedule, x, grids[variable], paths[variable]).x
        if other is not None:
            alt = run_sde(other, model, schedule, x, grids[variable], paths[variable]).x
        else:  # Euler-Maruyama on half the fine grid: its error there is about twice the reference's
            alt = run_sde(ref_name, model, schedule, x, grids[variable][::2], paths[variable]).x
        e = _per_sample_error(alt, refs[variable])
        spread[variable], spread_median[variable] = float(e.pow(2).mean().sqrt()), float(e.median())
    out = dict(steps={}, h={}, errors={}, medians={}, fits={}, median_fits={})
    for name in solvers:
        variable = SDE_REGISTRY[name].noise_variable
        m = fine[variable][0]
        ns = list(steps if variable == "lam" else em_steps)
        errs, meds, hs = [], [], []
        for n in ns:
            ts = grids[variable][:: m // n]
            xn = run_sde(name, model, schedule, x, ts, paths[variable]).x
            e = _per_sample_error(xn, refs[variable])
            errs.append(float(e.pow(2).mean().sqrt()) if bool(torch.isfinite(e).all()) else math.inf)
            meds.append(float(e.median()))
            hs.append(_h_max(schedule, ts, variable))
        expected = SDE_REGISTRY[name].strong_order
        out["steps"][name], out["h"][name], out["errors"][name], out["medians"][name] = ns, hs, errs, meds
        out["fits"][name] = _fit(hs, errs, expected, floor=spread[variable])
        out["median_fits"][name] = _fit(hs, meds, expected, floor=spread_median[variable])
    return StrongStudy(solvers=list(solvers), reference_spread=spread, reference_spread_median=spread_median,
                       fine_steps={"lam": fine_steps, "t": em_fine_steps},
                       n_paths=n_paths, seed=seed, target=target,
                       config=dict(t_start=t_start, t_end=t_end, skip_type=skip_type, schedule=repr(schedule),
                                   mixture=repr(mixture), lam_reference=LAM_REFERENCE),
                       provenance=provenance(), **out)


# -- weak ----------------------------------------------------------------------------------------------------------
def _moment_diffs(xn: torch.Tensor, xr: torch.Tensor):
    """Mean and covariance of ``xn`` minus those of ``xr`` (paired samples) with standard errors of each entry.

    Covariance standard errors use the per-sample terms ``(x - m)(x - m)^T - (r - m_r)(r - m_r)^T`` (the centring
    contributes at higher order)."""
    n = xn.shape[0]
    d = xn - xr
    xc, rc = xn - xn.mean(0), xr - xr.mean(0)
    infl = (xc[:, :, None] * xc[:, None, :] - rc[:, :, None] * rc[:, None, :]).reshape(n, -1)
    return d.mean(0), d.std(0) / math.sqrt(n), infl.mean(0) * n / (n - 1), infl.std(0) / math.sqrt(n)


def _moment_errors(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
    """Mean and covariance of ``x`` minus exact values, with per-entry standard errors."""
    n = x.shape[0]
    xc = x - x.mean(0)
    sq = (xc[:, :, None] * xc[:, None, :]).reshape(n, -1)
    return (x.mean(0) - mean, x.std(0) / math.sqrt(n), torch.cov(x.T).reshape(-1) - cov.reshape(-1),
            sq.std(0) / math.sqrt(n))


def _norm_and_se(v: torch.Tensor, se: torch.Tensor):
    """``||v||`` and ``||se||`` (the norm of the per-entry standard errors: what the norm of a vector of pure
    Monte-Carlo noise is of the order of, so ``||v|| > 3 ||se||`` means the effect is resolved)."""
    return float(v.norm()), float(se.norm())


def _max_z(v: torch.Tensor, se: torch.Tensor) -> float:
    """Largest ``|v_i| / se_i``: the Monte-Carlo z-score of the worst entry."""
    return float((v.abs() / se.clamp_min(1e-300)).max())


@result_type
@dataclass
class WeakStudy:
    """Weak errors of the mean and covariance at ``times[name] = (t_mid, t_end)``.

    For each solver and step count: ``coupled[name][q]`` (``q`` in ``mean_mid, cov_mid, mean_end, cov_end``) the
    norm of the moment difference to the fine solution on the same paths, ``coupled_se`` its standard error;
    ``exact[name][q]`` the norm of the difference to the exact moments of ``q_t``, ``exact_se`` its standard error,
    ``exact_max_z`` the largest per-entry z-score. ``reference_exact[family][q]``/``reference_exact_se``/
    ``reference_max_z``: the fine solution against the exact moments (``max_z`` of a few units when the reference
    is right). ``fits[name][q]``: slope of the coupled errors, fitted on points above ``3 * SE``."""

    solvers: list
    steps: dict
    h: dict
    times: dict
    coupled: dict
    coupled_se: dict
    exact: dict
    exact_se: dict
    exact_max_z: dict
    reference_exact: dict
    reference_exact_se: dict
    reference_max_z: dict
    fits: dict
    n_paths: int
    seed: int
    target: str
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


QUANTITIES = ("mean_mid", "cov_mid", "mean_end", "cov_end")


def _fit_above_noise(hs, errs, ses, expected, k: float = 3.0) -> OrderFit:
    usable = [e if (math.isfinite(e) and e > k * s) else math.nan for e, s in zip(errs, ses)]
    return fit_order(hs, usable, expected=expected)


def weak_error_study(mixture: GaussianMixture, schedule, *, solvers=DEFAULT_SOLVERS, steps=(8, 16, 32, 64, 128),
                     fine_steps: int = 1024, em_steps=(32, 64, 128, 256, 512), em_fine_steps: int = 2048,
                     n_paths: int = 20000, seed: int = 0, t_start: float = T_START, t_end: float = T_END,
                     skip_type: str = "logSNR", target: str = "mixture", chunk: int = 2500) -> WeakStudy:
    """Weak errors of the first two moments at an intermediate time and at ``t_end`` (module docstring).

    The intermediate time is the middle node of the fine grid (``lam`` midpoint for ``logSNR``), which every
    coarse grid with an even number of steps contains. ``x_start ~ q_{t_start}`` exactly, so the exact solution
    has law ``q_t`` at every ``t`` and the exact moments are ``mixture.mean(t, schedule)`` and
    ``mixture.covariance(t, schedule)``.
    """
    _check_divides(steps, fine_steps, "steps")
    _check_divides(em_steps, em_fine_steps, "em_steps")
    for n in tuple(steps) + tuple(em_steps):
        if n % 2:
            raise ValueError(f"step counts must be even (the intermediate time is the middle node), got {n}")
    model = mixture.as_model(schedule)
    fine = {"lam": (fine_steps, (-1.0, 1.0), LAM_REFERENCE), "t": (em_fine_steps, (0.0,), "Euler-Maruyama")}
    variables = sorted({SDE_REGISTRY[n].noise_variable for n in solvers})
    grids = {v: _fine_grid(schedule, v, skip_type, t_start, t_end, fine[v][0]) for v in variables}
    # Paths are processed in chunks (memory: a fine path and the fine solution's states scale with the chunk);
    # only the final and intermediate states are kept. Chunk c uses seeds (seed + 1000 c, seed + 1000 c + 1).
    refs = {v: {"mid": [], "end": []} for v in variables}
    states = {(name, n): {"mid": [], "end": []} for name in solvers
              for n in (steps if SDE_REGISTRY[name].noise_variable == "lam" else em_steps)}
    for c, start in enumerate(range(0, n_paths, chunk)):
        size = min(chunk, n_paths - start)
        x = mixture.sample(size, torch.Generator().manual_seed(seed + 1000 * c), t=t_start, schedule=schedule)
        for variable in variables:
            m, rates, ref_name = fine[variable]
            path = BrownianPath.from_times(schedule, grids[variable], tuple(x.shape), variable=variable, rates=rates,
                                           generator=torch.Generator().manual_seed(seed + 1000 * c + 1))
            r = run_sde(ref_name, model, schedule, x, grids[variable], path, return_intermediates=True)
            refs[variable]["mid"].append(r.intermediates[m // 2])
            refs[variable]["end"].append(r.x)
            del r
            for name in solvers:
                if SDE_REGISTRY[name].noise_variable != variable:
                    continue
                for n in (steps if variable == "lam" else em_steps):
                    r = run_sde(name, model, schedule, x, grids[variable][:: m // n], path, return_intermediates=True)
                    states[(name, n)]["mid"].append(r.intermediates[n // 2])
                    states[(name, n)]["end"].append(r.x)
            del path
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
    refs = {v: cat(d) for v, d in refs.items()}
    states = {k: cat(d) for k, d in states.items()}
    exact_moments = {}
    ref_err, ref_se, ref_z = {}, {}, {}
    for variable in variables:
        m = fine[variable][0]
        t_mid = float(grids[variable][m // 2])
        exact_moments[variable] = {"mid": (mixture.mean(t_mid, schedule), mixture.covariance(t_mid, schedule), t_mid),
                                   "end": (mixture.mean(t_end, schedule), mixture.covariance(t_end, schedule), t_end)}
        ref_err[variable], ref_se[variable], ref_z[variable] = {}, {}, {}
        for where in ("mid", "end"):
            mean, cov, _ = exact_moments[variable][where]
            dm, sm, dc, sc = _moment_errors(refs[variable][where], mean, cov)
            for q, (v, se) in ((f"mean_{where}", (dm, sm)), (f"cov_{where}", (dc, sc))):
                ref_err[variable][q], ref_se[variable][q] = _norm_and_se(v, se)
                ref_z[variable][q] = _max_z(v, se)
    out = {k: {} for k in ("steps", "h", "times", "coupled", "coupled_se", "exact", "exact_se", "exact_max_z",
                           "fits")}
    for name in solvers:
        variable = SDE_REGISTRY[name].noise_variable
        m = fine[variable][0]
        ns = list(steps if variable == "lam" else em_steps)
        cp = {q: [] for q in QUANTITIES}
        cps, ex, exs, exz = ({q: [] for q in QUANTITIES} for _ in range(4))
        hs = []
        for n in ns:
            ts = grids[variable][:: m // n]
            run = states[(name, n)]
            for where in ("mid", "end"):
                dm, sm, dc, sc = _moment_diffs(run[where], refs[variable][where])
                for q, (v, s) in ((f"mean_{where}", (dm, sm)), (f"cov_{where}", (dc, sc))):
                    a, b = _norm_and_se(v, s)
                    cp[q].append(a)
                    cps[q].append(b)
                mean, cov, _ = exact_moments[variable][where]
                em_, sm_, ec_, sc_ = _moment_errors(run[where], mean, cov)
                for q, (v, s) in ((f"mean_{where}", (em_, sm_)), (f"cov_{where}", (ec_, sc_))):
                    a, b = _norm_and_se(v, s)
                    ex[q].append(a)
                    exs[q].append(b)
                    exz[q].append(_max_z(v, s))
            hs.append(_h_max(schedule, ts, variable))
        expected = SDE_REGISTRY[name].weak_order
        out["steps"][name], out["h"][name] = ns, hs
        out["times"][name] = [exact_moments[variable]["mid"][2], t_end]
        out["coupled"][name], out["coupled_se"][name], out["exact"][name], out["exact_se"][name] = cp, cps, ex, exs
        out["exact_max_z"][name] = exz
        out["fits"][name] = {q: _fit_above_noise(hs, cp[q], cps[q], expected) for q in QUANTITIES}
    return WeakStudy(solvers=list(solvers), reference_exact=ref_err, reference_exact_se=ref_se,
                     reference_max_z=ref_z, n_paths=n_paths,
                     seed=seed, target=target,
                     config=dict(t_start=t_start, t_end=t_end, skip_type=skip_type, fine_steps=fine_steps, chunk=chunk,
                                 em_fine_steps=em_fine_steps, schedule=repr(schedule), mixture=repr(mixture),
                                 lam_reference=LAM_REFERENCE),
                     provenance=provenance(), **out)


# -- exact weak errors for a single Gaussian ------------------------------------------------------------------------
@result_type
@dataclass
class GaussianWeakStudy:
    """Exact weak errors (no Monte Carlo) for a single Gaussian: ``mean[name]``, ``cov[name]`` (norms of the
    errors at ``t_end``) per entry of ``steps[name]``, with slopes ``fits[name] = {"cov": OrderFit}``."""

    solvers: list
    steps: dict
    h: dict
    mean: dict
    cov: dict
    fits: dict
    config: dict = field(default_factory=dict)


def affine_moments(name: str, mixture: GaussianMixture, schedule, timesteps):
    """Exact mean and covariance at ``timesteps[-1]`` of solver ``name`` started from ``q_{timesteps[0]}``, for a
    single Gaussian (``K = 1``), where the scheme is affine: ``X_N = a + B x_start + sum_n C_n z_n``.

    ``a``, ``B`` and ``C_n`` come from one batched run with basis inputs (row 0: all zero; rows ``1..d``:
    ``x_start = e_i``; then ``z_n = e_i``), so ``E X_N = a + B m`` and ``Cov X_N = B S B^T + sum_n C_n C_n^T``."""
    if mixture.K != 1:
        raise ValueError(f"affine_moments needs a single Gaussian (K = 1), got K={mixture.K}")
    d, n_steps = mixture.d, len(timesteps) - 1
    rows = 1 + d + n_steps * d
    x = torch.zeros(rows, d, dtype=torch.float64)
    z = torch.zeros(n_steps, rows, d, dtype=torch.float64)
    x[1:1 + d] = torch.eye(d, dtype=torch.float64)
    for k in range(n_steps):
        z[k, 1 + d + k * d: 1 + d + (k + 1) * d] = torch.eye(d, dtype=torch.float64)
    xn = run_sde(name, mixture.as_model(schedule), schedule, x, timesteps, z).x
    a = xn[0]
    b = (xn[1:1 + d] - a).T
    c = xn[1 + d:] - a
    t0 = float(timesteps[0])
    mean = a + b @ mixture.mean(t0, schedule)
    cov = b @ mixture.covariance(t0, schedule) @ b.T + c.T @ c
    return mean, cov


def gaussian_weak_errors(mixture: GaussianMixture, schedule, *, solvers=DEFAULT_SOLVERS,
                         steps=(8, 16, 32, 64, 128, 256), em_steps=(32, 64, 128, 256, 512, 1024),
                         t_start: float = T_START, t_end: float = T_END, skip_type: str = "logSNR") -> GaussianWeakStudy:
    """Exact weak errors of every solver on a single Gaussian (:func:`affine_moments`)."""
    mean_ex, cov_ex = mixture.mean(t_end, schedule), mixture.covariance(t_end, schedule)
    out = {k: {} for k in ("steps", "h", "mean", "cov", "fits")}
    for name in solvers:
        variable = SDE_REGISTRY[name].noise_variable
        ns = list(steps if variable == "lam" else em_steps)
        means, covs, hs = [], [], []
        for n in ns:
            ts = _fine_grid(schedule, variable, skip_type, t_start, t_end, n)
            m, c = affine_moments(name, mixture, schedule, ts)
            means.append(float((m - mean_ex).norm()))
            covs.append(float((c - cov_ex).norm()))
            hs.append(_h_max(schedule, ts, variable))
        out["steps"][name], out["h"][name], out["mean"][name], out["cov"][name] = ns, hs, means, covs
        out["fits"][name] = {"cov": fit_order(hs, covs, expected=SDE_REGISTRY[name].weak_order)}
    return GaussianWeakStudy(solvers=list(solvers), config=dict(t_start=t_start, t_end=t_end, skip_type=skip_type,
                                                                  mixture=repr(mixture), schedule=repr(schedule)), **out)


# -- discretisation vs model error ----------------------------------------------------------------------------------
@result_type
@dataclass
class ModelErrorStudy:
    """Discretisation error against model error for a learned noise predictor.

    ``ode``/``sde``: dicts with ``steps``, ``disc_learned``, ``disc_exact`` (RMS per-sample error of the solver
    against the reference solution with the same model), ``model_error`` (RMS difference of the learned-model
    and exact-model references), ``cov_error_learned``/``cov_error_exact`` (Frobenius error of the sample
    covariance at ``t_end`` of the solver's output against the exact covariance of ``q_{t_end}``) with
    ``cov_error_se``, and the references' covariance errors. ``dsm``: the learned model's DSM loss (6), the exact
    model's and the independently computed irreducible value (each ``MCEstimate.to_dict()``), and the excess
    ``E ||eps_theta - eps*||^2``. ``training``: the training summary."""

    ode: dict
    sde: dict
    dsm: dict
    training: dict
    n_samples: int
    seed: int
    target: str
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def _rms(a, b) -> float:
    return float(_per_sample_error(a, b).pow(2).mean().sqrt())


def _cov_error(x, cov):
    _, _, dc, sc = _moment_errors(x, torch.zeros(x.shape[1], dtype=x.dtype), cov)
    return _norm_and_se(dc, sc)


def model_error_study(mixture: GaussianMixture, schedule, *, learned=None, train_options=None,
                      n_samples: int = 2000, seed: int = 0, steps=(5, 10, 20, 40, 80, 160),
                      sde_steps=(16, 32, 64, 128, 256), sde_fine_steps: int = 1024, t_start: float = T_START,
                      t_end: float = T_END, reference_rtol: float = 1e-9, dsm_samples: int = 200000,
                      target: str = "mixture") -> ModelErrorStudy:
    """Separate discretisation error from model error with a learned noise predictor.

    Parameters
    ----------
    learned : callable, optional
        A trained ``model(x, t)``; if omitted one is trained with :func:`train_noise_predictor`
        (``train_options``, seed ``seed``).
    steps : sequence of int
        ODE budgets (DPM-Solver++(2M), logSNR grid, one NFE per step).
    sde_steps, sde_fine_steps : SDE-DPM-Solver++(2M) budgets and its fine grid (must be divisible).
    """
    _check_divides(sde_steps, sde_fine_steps, "sde_steps")
    training = {}
    if learned is None:
        result = train_noise_predictor(mixture, schedule, seed=seed, **(train_options or {}))
        learned, training = result.model, dict(config=result.config, seconds=result.seconds,
                                               final_loss=float(np.mean(result.losses[-100:])))
    exact = mixture.as_model(schedule)
    cov_ex = mixture.covariance(t_end, schedule)
    x = mixture.sample(n_samples, torch.Generator().manual_seed(seed + 10), t=t_start, schedule=schedule)
    models = {"learned": learned, "exact": exact}

    ode = {"steps": list(steps), "solver": "DPM-Solver++(2M)"}
    refs = {k: reference_solve(m, schedule, x, t_start, t_end, rtol=reference_rtol, atol=reference_rtol)
            for k, m in models.items()}
    for k, r in refs.items():
        if not r.success:
            raise RuntimeError(f"reference solve with the {k} model failed: {r.message}")
        ode[f"reference_cov_error_{k}"], ode[f"reference_cov_error_se_{k}"] = _cov_error(r.x, cov_ex)
    ode["model_error"] = _rms(refs["learned"].x, refs["exact"].x)
    for k, m in models.items():
        ode[f"disc_{k}"], ode[f"cov_error_{k}"], ode[f"cov_error_se_{k}"] = [], [], []
        for n in steps:
            xn = sample(m, schedule, x, steps=n, order=2, method="multistep", skip_type="logSNR",
                        algorithm_type="dpmsolver++", t_start=t_start, t_end=t_end).x
            ode[f"disc_{k}"].append(_rms(xn, refs[k].x))
            ce, se = _cov_error(xn, cov_ex)
            ode[f"cov_error_{k}"].append(ce)
            ode[f"cov_error_se_{k}"].append(se)

    sde = {"steps": list(sde_steps), "solver": LAM_REFERENCE, "fine_steps": sde_fine_steps}
    ts = time_grid(schedule, "logSNR", t_start, t_end, sde_fine_steps)
    path = BrownianPath.from_times(schedule, ts, tuple(x.shape), rates=(-1.0,),
                                   generator=torch.Generator().manual_seed(seed + 11))
    fine = {k: run_sde(LAM_REFERENCE, m, schedule, x, ts, path).x for k, m in models.items()}
    sde["model_error"] = _rms(fine["learned"], fine["exact"])
    for k in models:
        sde[f"reference_cov_error_{k}"], sde[f"reference_cov_error_se_{k}"] = _cov_error(fine[k], cov_ex)
    for k, m in models.items():
        sde[f"disc_{k}"], sde[f"cov_error_{k}"], sde[f"cov_error_se_{k}"] = [], [], []
        for n in sde_steps:
            xn = run_sde(LAM_REFERENCE, m, schedule, x, ts[:: sde_fine_steps // n], path).x
            sde[f"disc_{k}"].append(_rms(xn, fine[k]))
            ce, se = _cov_error(xn, cov_ex)
            sde[f"cov_error_{k}"].append(ce)
            sde[f"cov_error_se_{k}"].append(se)

    g = lambda s: torch.Generator().manual_seed(seed + s)  # noqa: E731
    dsm = dict(learned=dsm_loss(learned, schedule, mixture, n=dsm_samples, generator=g(20)).to_dict(),
               exact=dsm_loss(exact, schedule, mixture, n=dsm_samples, generator=g(20)).to_dict(),
               irreducible=irreducible_dsm_loss(mixture, schedule, n=dsm_samples, generator=g(21)).to_dict(),
               excess=excess_dsm_loss(learned, mixture, schedule, n=dsm_samples, generator=g(22)).to_dict())
    return ModelErrorStudy(ode=ode, sde=sde, dsm=dsm, training=training, n_samples=n_samples, seed=seed,
                           target=target, config=dict(t_start=t_start, t_end=t_end, reference_rtol=reference_rtol,
                                                      schedule=repr(schedule), mixture=repr(mixture)),
                           provenance=provenance())

