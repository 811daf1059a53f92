"""The machine-readable summary of the studies (what ``paper_figs`` writes to ``summary.json``).

Per solver: the measured local and global orders of the order verification (:mod:`analysis.verification`, the
protocol the order tests assert, with its fit windows and agreement flags), the slopes observed on the sharp
figure targets (fit windows included; not order tests: these targets are still pre-asymptotic at the figures'
budgets for the higher-order methods), and the error at given NFE on each figure target.
"""

from __future__ import annotations

from expsolver import REGISTRY

from .verification import ORDER_TOL

__all__ = ["solver_summary", "order_agreement", "classical_summary", "ORDER_TOL"]


def _slope_entry(fit, expected) -> dict:
    return dict(fit.to_dict(), expected=expected)


def order_agreement(verification) -> dict:
    """How many verification measurements agree with the declared orders, and the ones that do not."""
    disagreements = [dict(solver=m.solver, algorithm_type=m.algorithm_type, kind=m.kind, start=m.start,
                          slope=m.fit.slope if m.fit.reliable else None, expected=m.expected, reason=m.fit.reason)
                     for m in verification.measurements if not m.agrees]
    return dict(n_fits=len(verification.measurements), n_agree=verification.n_agree, tolerance=ORDER_TOL,
                disagreements=disagreements)


def solver_summary(verification=None, local=None, global_studies=None, *, nfe_points=(10, 20)) -> dict:
    """Per registry solver and algorithm type: verified orders, figure-target slopes and errors at given NFE.

    Parameters
    ----------
    verification : OrderVerification, optional
        :func:`analysis.verification.verify_orders` result: the orders (``local_order``, ``global_order``,
        ``global_order_warm_up``).
    local : LocalErrorStudy, optional
        Local-error study on a figure target: ``figure_targets["local_slope_by_lam"]``.
    global_studies : dict of str to GlobalErrorStudy, optional
        Keyed by target name; curves labelled ``"name|algorithm_type"`` (:func:`analysis.global_error.registry_runs`):
        ``figure_targets["global_slope"]`` and ``error_at_nfe``.
    nfe_points : sequence of int
        NFE at which to report the error (the run with the largest NFE not above it; its actual NFE is given).

    Returns
    -------
    dict
        ``{name: {"declared_order", "kind", "options", algorithm_type: {"local_order", "global_order",
        "global_order_warm_up", "figure_targets": {"local_slope_by_lam", "global_slope"}, "error_at_nfe"}}}``
        (keys present when measured). Order entries hold ``slope``, ``ci_low``, ``ci_high``, ``window``,
        ``h_range``, ``reliable``, ``reason``, ``expected``, ``agrees`` (reliable and within :data:`ORDER_TOL` of
        the expected order), ``kind``, ``start``, ``h_studied``, ``max_nfe``; figure-target slopes the fit and
        ``expected``.
    """
    global_studies = global_studies or {}
    out = {}
    for name, config in REGISTRY.items():
        entry = {"declared_order": config.order, "kind": config.kind, "options": dict(config.options)}
        for algorithm_type in ("dpmsolver++", "dpmsolver"):
            sub = {}
            if verification is not None:
                for m in verification.measurements:
                    if m.solver == name and m.algorithm_type == algorithm_type:
                        key = f"{m.kind}_order" + ("_warm_up" if m.start == "warm-up" else "")
                        sub[key] = m.to_summary()
            figure = {}
            if local is not None:
                by_lam = {f"{c.lam_s:g}": _slope_entry(c.fit, c.expected) for c in local.curves
                          if c.solver == name and c.algorithm_type == algorithm_type}
                if by_lam:
                    figure["local_slope_by_lam"] = by_lam
            for target, study in global_studies.items():
                try:
                    curve = study.curve(f"{name}|{algorithm_type}")
                except KeyError:
                    continue
                figure.setdefault("global_slope", {})[target] = _slope_entry(curve.fit, curve.expected_order)
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
            if figure:
                sub["figure_targets"] = figure
            if sub:
                entry[algorithm_type] = sub
        if any(a in entry for a in ("dpmsolver++", "dpmsolver")):
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
