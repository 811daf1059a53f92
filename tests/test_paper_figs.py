"""Smoke test of the figure driver: ``python -m paper_figs --quick`` twice at the same time into one temporary
folder (Agg backend), one run in its own process (``--jobs 1``) and one with two local worker processes
(``--jobs 2``): both exit cleanly and leave valid, complete files, and every stored task result reads back without
a warning. Runtime ~30 s on an idle 2-core machine (two quick runs side by side)."""

import json
import os
import subprocess
import sys
import warnings

import matplotlib
import pytest

matplotlib.use("Agg")

from analysis.global_error import dpm_solver_names  # noqa: E402
from analysis.results import DamagedResultWarning, load_result  # noqa: E402
from paper_figs.__main__ import FIGURES  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    env = dict(os.environ, EXPSOLVER_CACHE_DIR=str(tmp_path_factory.mktemp("cache")), MPLBACKEND="Agg",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = [subprocess.Popen([sys.executable, "-m", "paper_figs", "--quick", "--out", str(out), "--seed", "0",
                              "--jobs", jobs], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for jobs in ("1", "2")]
    outputs = [run.communicate(timeout=900) for run in runs]
    with open(out / "summary.json") as fh:
        summary = json.load(fh)
    return out, summary, [(run.returncode, stdout, stderr) for run, (stdout, stderr) in zip(runs, outputs)]


def test_two_runs_on_one_folder_both_succeed(quick_run):
    out, _, runs = quick_run
    for returncode, stdout, stderr in runs:
        assert returncode == 0, stderr
        assert "wrote 20 files and summary.json" in stdout
        assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    tasks = out / "data" / "tasks"
    files = sorted(f for f in os.listdir(tasks) if f.endswith(".json"))
    assert len(files) > 40
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedResultWarning)
        for name in files:
            with open(tasks / name) as fh:
                key = json.load(fh)["key"]
            load_result(str(tasks / name), key=key)  # complete, intact, written for its own key


def test_every_figure_written_as_pdf_and_png(quick_run):
    out, summary, _ = quick_run
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
    out, summary, _ = quick_run
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
    seconds = summary["study_seconds"]
    assert set(seconds) >= {"orders", "local_2d", "order_2d", "order_16d", "wp_2d", "wp_16d", "grids_2d"}
    assert seconds["order_2d"]["tasks"] == 2 * len(dpm_solver_names())


def test_single_figure_script_entry_point(tmp_path, monkeypatch):
    from paper_figs import fig7_schedules

    monkeypatch.setenv("EXPSOLVER_CACHE_DIR", str(tmp_path / "cache"))
    info = fig7_schedules.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "fig7_schedules.pdf").exists() and (tmp_path / "fig7_schedules.png").exists()
    assert set(info["schedules"]) and all(v["lam_1e_3"] > 4 for v in info["schedules"].values())
    for bad in (["--seed", "-1"], ["--jobs", "0"]):
        with pytest.raises(SystemExit):
            fig7_schedules.main(bad)
