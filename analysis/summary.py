"""The machine-readable summary of the studies: per solver, measured local and global orders with their windows
and the error at given NFE on each target (what ``paper_figs`` writes to ``summary.json``)."""

from __future__ import annotations

from expsolver import REGISTRY

__all__ = ["solver_summary", "classical_summary", "ORDER_TOL"]

#: Tolerance of the agreement flags (the project's default for order tests).
ORDER_TOL = 0.15


def _fit_entry(fit, expected) -> dict:
    entry = fit.to_dict()
    entry["expected"] = expected
    entry["agrees"] = bool(fit.reliable and expected is not None and abs(fit.slope - expected) <= ORDER_TOL)
    return entry


def solver_summary(local=None, global_studies=None, *, nfe_points=(10, 20), local_lam=None) -> dict:
    """Per studied registry solver and algorithm type: orders and errors at the given NFE.

    Parameters
    ----------
    local : LocalErrorStudy, optional
    global_studies : dict of str to GlobalErrorStudy, optional
        Keyed by target name; curves labelled ``"name|algorithm_type"`` (:func:`analysis.global_error.registry_runs`).
    nfe_points : sequence of int
        NFE at which to report the error (the run with the largest NFE not above it; its actual NFE is given).
    local_lam : float, optional
        The ``lam_s`` whose local fit is *the* local order (default: the study's middle starting point).

    Returns
    -------
    dict
        ``{name: {"declared_order": k, algorithm_type: {"local_order": {...}, "local_orders_by_lam": {...},
        "global_order": {target: {...}}, "error_at_nfe": {target: {str(nfe): {...}}}}}}``. Every fit entry holds
        ``slope``, ``ci_low``, ``ci_high``, ``window``, ``h_range``, ``reliable``, ``reason``, ``expected``
        and ``agrees`` (reliable and within :data:`ORDER_TOL` of the expected order).
    """
    global_studies = global_studies or {}
    out = {}
    algorithm_types = set()
    if local is not None:
        algorithm_types |= {c.algorithm_type for c in local.curves}
    for study in global_studies.values():
        algorithm_types |= {c.algorithm_type for c in study.curves}
    studied = set()
    if local is not None:
        studied |= {c.solver for c in local.curves}
    for study in global_studies.values():
        studied |= {c.name for c in study.curves}
    for name, config in REGISTRY.items():
        if name not in studied:
            continue
        entry = {"declared_order": config.order, "kind": config.kind, "options": dict(config.options)}
        for algorithm_type in sorted(algorithm_types):
            sub = {}
            if local is not None:
                lam_main = local.lam_starts[len(local.lam_starts) // 2] if local_lam is None else local_lam
                by_lam = {}
                for curve in local.curves:
                    if curve.solver == name and curve.algorithm_type == algorithm_type:
                        by_lam[f"{curve.lam_s:g}"] = _fit_entry(curve.fit, curve.expected)
                        if abs(curve.lam_s - lam_main) < 1e-12:
                            sub["local_order"] = dict(_fit_entry(curve.fit, curve.expected), lam_s=curve.lam_s)
                if by_lam:
                    sub["local_orders_by_lam"] = by_lam
            for target, study in global_studies.items():
                label = f"{name}|{algorithm_type}"
                try:
                    curve = study.curve(label)
                except KeyError:
                    continue
                sub.setdefault("global_order", {})[target] = _fit_entry(curve.fit, curve.expected_order)
                errs = {}
                for n in nfe_points:
                    nfe, median = curve.at_nfe(n, "median")
                    _, rms = curve.at_nfe(n, "rms")
                    i = None if nfe is None else int(list(curve.nfe).index(nfe))
                    errs[str(n)] = dict(nfe=nfe, median=None if nfe is None else median,
                                        rms=None if nfe is None else rms,
                                        mode_switches=None if i is None else int(curve.mode_switches[i]),
                                        n_samples=study.n_samples)
                sub.setdefault("error_at_nfe", {})[target] = errs
            if sub:
                entry[algorithm_type] = sub
        out[name] = entry
    return out


def classical_summary(work_precision_studies: dict, *, nfe_points=(10, 20, 50, 100)) -> dict:
    """Per classical solver and target: the error at the given NFE (largest successful run not above it)."""
    out = {}
    for target, study in work_precision_studies.items():
        for curve in study.classical:
            errs = {}
            for n in nfe_points:
                nfe, median = curve.at_nfe(n)
                errs[str(n)] = dict(nfe=nfe, median=None if nfe is None else median)
            out.setdefault(curve.name, {})[target] = errs
    return out
