"""Smoke test of the figure driver: ``python -m paper_figs --quick`` into a temporary folder (Agg backend).
Runtime ~20-25 s on an idle 2-core machine (the whole quick run)."""

import json
import os

import matplotlib
import pytest

matplotlib.use("Agg")

from analysis.global_error import dpm_solver_names  # noqa: E402
from paper_figs.__main__ import FIGURES, main  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("EXPSOLVER_CACHE_DIR")
    os.environ["EXPSOLVER_CACHE_DIR"] = str(cache)
    try:
        summary = main(["--quick", "--out", str(out), "--seed", "0", "--jobs", "1"])
    finally:
        if old is None:
            del os.environ["EXPSOLVER_CACHE_DIR"]
        else:
            os.environ["EXPSOLVER_CACHE_DIR"] = old
    return out, summary


def test_every_figure_written_as_pdf_and_png(quick_run):
    out, summary = quick_run
    for name in FIGURES:
        for ext in ("pdf", "png"):
            path = out / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 10_000, path
        with open(out / f"{name}.png", "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        with open(out / f"{name}.pdf", "rb") as fh:
            assert fh.read(5) == b"%PDF-"
    assert sorted(summary["files"]) == sorted(f"{n}.{e}" for n in FIGURES for e in ("pdf", "png"))
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary files left


def test_summary_json_keys(quick_run):
    out, _ = quick_run
    with open(out / "summary.json") as fh:
        summary = json.load(fh)
    assert summary["mode"] == "quick" and summary["seed"] == 0 and summary["runtime_s"] > 0
    assert set(summary["provenance"]["versions"]) >= {"numpy", "torch", "scipy", "torchdiffeq", "matplotlib"}
    for name in dpm_solver_names():
        entry = summary["solvers"][name]
        data = entry["dpmsolver++"]
        for key in ("slope", "ci_low", "ci_high", "window", "h_range", "reliable", "reason", "expected"):
            assert key in data["figure_targets"]["global_slope"]["2d"]
            assert key in data["figure_targets"]["global_slope"]["16d"]
        for target in ("2d", "16d"):
            for nfe in ("10", "20"):
                e = data["error_at_nfe"][target][nfe]
                assert e["nfe"] is not None and e["nfe"] <= int(nfe) and e["median"] > 0
        assert "figure_targets" in entry["dpmsolver"]  # noise prediction is studied too
    # --quick verifies the orders of one solver (the full run: every registered solver, both predictions).
    verified = summary["solvers"]["DPM-Solver-2M"]["dpmsolver++"]
    for key, expected in (("local_order", 3), ("global_order", 2)):
        fit = verified[key]
        assert fit["expected"] == expected and fit["start"] == "exact" and fit["agrees"], fit
        assert {"slope", "ci_low", "ci_high", "window", "h_range", "reliable", "reason"} <= set(fit)
    assert summary["order_verification"]["global_steps"][-1] == 1024
    assert set(summary["classical"]) == {"rk4", "dopri5", "RK45", "DOP853"}
    agreement = summary["order_agreement"]
    assert agreement["n_fits"] == 2 and agreement["n_agree"] == 2 and agreement["disagreements"] == []


def test_single_figure_script_entry_point(tmp_path):
    from paper_figs import fig7_schedules

    info = fig7_schedules.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "fig7_schedules.pdf").exists() and (tmp_path / "fig7_schedules.png").exists()
    assert set(info["schedules"]) and all(v["lam_1e_3"] > 4 for v in info["schedules"].values())
    with pytest.raises(SystemExit):
        fig7_schedules.main(["--seed", "-1"])


def test_two_process_run(tmp_path, monkeypatch):
    """``--jobs 2``: the helper process computes the 16-D studies and the order verification and makes figure 8;
    the summary gathers both processes' work."""
    monkeypatch.setenv("EXPSOLVER_CACHE_DIR", str(tmp_path / "cache"))
    summary = main(["--quick", "--out", str(tmp_path / "figs"), "--only", "fig7_schedules", "fig8_sde_strong"])
    assert summary["files"] == sorted(f"{n}.{e}" for n in ("fig7_schedules", "fig8_sde_strong") for e in ("pdf", "png"))
    assert all((tmp_path / "figs" / f).stat().st_size > 10_000 for f in summary["files"])
    assert summary["figures"]["fig8_sde_strong"]["seconds"]["wall_s"] > 0
    assert {"order_16d (helper process)", "orders (helper process)"} <= set(summary["study_seconds"])
    assert summary["order_agreement"]["n_agree"] == summary["order_agreement"]["n_fits"] == 2
