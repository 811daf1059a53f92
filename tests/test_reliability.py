"""Reliability guarantees: precision, devices, determinism, results on disk.

* Precision: the same run under torch's default dtype float32 and float64 gives bitwise-identical float64
  results (grids and coefficients are float64 whatever the default); float32 states stay within 10x of float64
  until the float32 round-off floor, which is measured (``FLOAT32_FLOOR``).
* Devices: nothing in the sampling loop reads tensors back to the host except the documented finite checks and
  the adaptive error norm (counted with a spy on ``Tensor.item/.cpu/.numpy/.tolist/__bool__/__float__/...``);
  CUDA runs end to end and keeps its tensors on the device (skipped without a GPU).
* Determinism: two runs are bitwise equal; stochastic samplers with one generator per sample give each sample
  a trajectory independent of its batch.
* Results on disk: a study killed midway (SIGKILL) resumes from its completed entries and writes the same result
  file as an uninterrupted run; writes are atomic (temporary file + ``os.replace``); NPZ files are read with
  ``allow_pickle=False``.

Runtime: ~20 s on one core (the interrupted-study test starts three Python processes).
"""

import contextlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import expsolver
from expsolver.solvers import solver_from_options
from expsolver import GaussianMixture, VPCosine, VPDiscrete, VPLinear, reference_solve, sample, time_grid

from conftest import make_mixture_2d

DRIVER_MODULE = importlib.import_module("expsolver.driver")
SAMPLING_MODULE = importlib.import_module("expsolver.sampling")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIXTURE = make_mixture_2d()
LIN = VPLinear()
CUDA = torch.cuda.is_available()

ODE_RUNS = [dict(method="multistep", order=k) for k in (1, 2, 3, 4)] + [
    dict(method="singlestep", order=3, skip_type="logSNR"), dict(method="singlestep_fixed", order=2, skip_type="karras"),
    dict(method="adaptive", order=2), dict(method="adaptive", order=3), dict(method="unipc", order=3),
    dict(method="deis", order=3), dict(method="multistep", order=3, compat="official", skip_type="logSNR")]


def _x(n=16, schedule=LIN, seed=0):
    return MIXTURE.sample(n, torch.Generator().manual_seed(seed), t=schedule.T, schedule=schedule)


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# -- precision --------------------------------------------------------------------------------------------------
def _everything():
    """Outputs of every public computation on float64 inputs."""
    out = {}
    discrete = VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000))
    for schedule in (LIN, VPCosine(), discrete):
        mixture = GaussianMixture([0.6, 0.4], [[1.0, 0.0], [-1.0, 0.5]],
                                  [[[0.05, 0.01], [0.01, 0.07]], [[0.1, 0.0], [0.0, 0.2]]])
        x = mixture.sample(8, torch.Generator().manual_seed(0), t=schedule.T, schedule=schedule)
        model = mixture.as_model(schedule)
        key = repr(schedule)
        out[key, "x"] = x
        for i, run in enumerate(ODE_RUNS):
            for algorithm_type in ("dpmsolver", "dpmsolver++"):
                out[key, i, algorithm_type] = sample(model, schedule, x, steps=12, algorithm_type=algorithm_type,
                                                     **run).x
        out[key, "sde"] = sample(model, schedule, x, steps=12, algorithm_type="sde-dpmsolver++",
                                 generator=torch.Generator().manual_seed(3)).x
        out[key, "scipy"] = reference_solve(model, schedule, x, schedule.T, 1e-3, rtol=1e-8, atol=1e-8).x
        out[key, "torchdiffeq"] = reference_solve(model, schedule, x, schedule.T, 1e-3, backend="torchdiffeq",
                                                  rtol=1e-6, atol=1e-6).x
        out[key, "mixture"] = torch.cat([mixture.log_prob(x, 0.5, schedule)[:, None], mixture.data(x, 0.5, schedule)], 1)
        out[key, "grid"] = torch.from_numpy(time_grid(schedule, "logSNR", schedule.T, 1e-3, 17))
        out[key, "lam"] = schedule.lam(torch.linspace(0.1, 0.9, 9, dtype=torch.float64))
    return out


def test_default_dtype_does_not_change_float64_results():
    """Every computation on float64 inputs is bitwise the same whether torch's default dtype is float32 or
    float64: grids, schedule values and step coefficients are float64 by construction, never
    ``torch.get_default_dtype()``. The one deliberate exception, ``compat="official"``, rounds its grid to the
    default dtype as the official code does; with a logSNR grid that changes the result by ~1e-6 here."""
    with default_dtype(torch.float64):
        a = _everything()
    with default_dtype(torch.float32):
        b = _everything()
    official = len(ODE_RUNS) - 1
    for key in a:
        assert a[key].dtype == b[key].dtype == torch.float64, key
        if len(key) == 3 and key[1] == official:
            assert not torch.equal(a[key], b[key]) and torch.allclose(a[key], b[key], rtol=0, atol=1e-4), key
        else:
            assert torch.equal(a[key], b[key]), key


FLOAT32_FLOOR = 3e-6  # median per-sample L2 error; measured plateau 5e-7 .. 1.4e-6 for |x| ~ 1 (see docs/reliability.md)
PRECISION_NFES = (10, 20, 40, 80, 160, 320, 640)
PRECISION_RUNS = [dict(method="multistep", order=2), dict(method="multistep", order=3),
                  dict(method="singlestep", order=3), dict(method="multistep", order=3, algorithm_type="dpmsolver")]


@pytest.fixture(scope="module")
def precision_table():
    x = MIXTURE.sample(48, torch.Generator().manual_seed(0), t=1.0, schedule=LIN)
    model = MIXTURE.as_model(LIN)
    ref = reference_solve(model, LIN, x, 1.0, 1e-3, rtol=1e-13, atol=1e-13).x
    table = {}
    for i, run in enumerate(PRECISION_RUNS):
        for nfe in PRECISION_NFES:
            e64 = (sample(model, LIN, x, steps=nfe, skip_type="logSNR", **run).x - ref).norm(dim=1).median()
            out32 = sample(model, LIN, x.float(), steps=nfe, skip_type="logSNR", **run).x
            assert out32.dtype == torch.float32
            e32 = (out32.double() - ref).norm(dim=1).median()
            table[i, nfe] = (float(e64), float(e32))
    return table


def test_float32_error_within_10x_of_float64_until_the_round_off_floor(precision_table):
    """Median error at t = 1e-3 vs DOP853 (rtol 1e-13), 48 samples of the 2-D test mixture, logSNR grid.
    float32 tracks float64 (ratio ~1) while the discretisation error dominates; it saturates at the float32
    floor (~1e-6, about 10 float32 ulps of |x| ~ 1) once float64 falls below it (order 3: NFE >= 320)."""
    for (i, nfe), (e64, e32) in precision_table.items():
        assert e32 <= max(10.0 * e64, FLOAT32_FLOOR), (PRECISION_RUNS[i], nfe, e64, e32)
    # The floor is real and stated correctly: at 640 NFE order 3 float64 is far below it and float32 sits on it.
    e64, e32 = precision_table[1, 640]
    assert e64 < 1e-6 < 10 * e32 and e32 <= FLOAT32_FLOOR
    # ... and while the discretisation error dominates, the two agree closely.
    for i in range(len(PRECISION_RUNS)):
        e64, e32 = precision_table[i, 20]
        assert abs(e32 - e64) <= 0.05 * e64


# -- devices ----------------------------------------------------------------------------------------------------
HOST_READS = ("item", "cpu", "numpy", "tolist", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_host_reads(log):
    """Count every method call that copies tensor data to the host (a device sync on CUDA)."""
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def spy(name):
        original = saved[name]

        def call(self, *args, **kwargs):
            log.append((name, tuple(self.shape)))
            return original(self, *args, **kwargs)

        return call

    for name in HOST_READS:
        setattr(torch.Tensor, name, spy(name))
    try:
        yield log
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def sync_free_model(x, t):
    """A model made of device-side tensor arithmetic only (no host reads)."""
    return torch.tanh(x) * (0.5 + t[:, None]) - 0.1 * x


LOOP_RUNS = [dict(method="multistep", order=3), dict(method="singlestep", order=3),
             dict(method="singlestep_fixed", order=2), dict(method="unipc", order=3), dict(method="deis", order=2),
             dict(method="multistep", order=2, algorithm_type="sde-dpmsolver++")]


@pytest.mark.parametrize("check_finite", [False, True])
@pytest.mark.parametrize("run", LOOP_RUNS, ids=lambda r: f"{r['method']}{r['order']}{r.get('algorithm_type', '')}")
def test_the_sampling_loop_reads_nothing_back_to_the_host(run, check_finite, monkeypatch):
    """Inside the fixed-grid loop (:func:`expsolver.integrate`) no tensor is read back to the host with
    ``check_finite=False``; with the default ``check_finite=True`` exactly one scalar per model call (the model
    output check) and one per step (the state check). Each is a single reduction, not a copy of the state."""
    log = []
    original = SAMPLING_MODULE.integrate

    def spied(*args, **kwargs):
        with count_host_reads(log):
            return original(*args, **kwargs)

    monkeypatch.setattr(SAMPLING_MODULE, "integrate", spied)
    options = dict(run)
    if "algorithm_type" in run:
        options["generator"] = torch.Generator().manual_seed(0)
    result = sample(sync_free_model, LIN, _x(5), steps=12, check_finite=check_finite, **options)
    n_steps = len(result.timesteps) - 1
    assert all(shape == () for _, shape in log), log  # only 0-d reductions, never the state itself
    assert len(log) == (result.nfe + n_steps if check_finite else 0), log


def test_adaptive_loop_reads_one_scalar_per_attempt(monkeypatch):
    """The adaptive solver needs its error norm on the host to accept or reject a step: one scalar per attempt,
    plus the finite checks."""
    log = []
    original = DRIVER_MODULE._integrate_adaptive

    def spied(*args, **kwargs):
        with count_host_reads(log):
            return original(*args, **kwargs)

    monkeypatch.setattr(DRIVER_MODULE, "_integrate_adaptive", spied)
    result = sample(sync_free_model, LIN, _x(5), method="adaptive", order=3, check_finite=False)
    attempts = len(result.timesteps) - 1 + result.n_rejected
    assert len(log) == attempts and all(shape == () for _, shape in log)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("run", ODE_RUNS[:-1], ids=lambda r: f"{r['method']}{r['order']}")
def test_cuda_end_to_end(run, dtype):
    """States, model calls and results stay on the GPU, in the state's dtype, and agree with the CPU run."""
    device = torch.device("cuda")
    x_cpu = _x(64).to(dtype)
    model = MIXTURE.as_model(LIN)
    out = sample(model, LIN, x_cpu.to(device), steps=15, return_intermediates=True, **run)
    assert out.x.device.type == "cuda" and out.x.dtype == dtype
    assert all(s.device.type == "cuda" for s in out.intermediates)
    ref = sample(model, LIN, x_cpu, steps=15, **run)
    assert out.nfe == ref.nfe
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    assert torch.allclose(out.x.cpu(), ref.x, rtol=0, atol=tol)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_loop_does_not_synchronise():
    """With a device-only model and ``check_finite=False`` the loop never synchronises with the host
    (``torch.cuda.set_sync_debug_mode("error")`` turns any synchronising call into an error)."""
    x = _x(64).cuda()
    torch.cuda.synchronize()
    for run in LOOP_RUNS[:-1]:
        rule, _ = solver_from_options(run["method"], run["order"], skip_type="time_uniform",
                                      variant="bh1" if run["method"] == "unipc" else None,
                                      use_corrector=True if run["method"] == "unipc" else None)
        problem = expsolver.DiffusionODE(LIN, expsolver.ModelWrapper(sync_free_model, LIN, check_finite=False),
                                         "data")
        n = 12 // run["order"] if run["method"] == "singlestep_fixed" else 12
        plan = rule.plan(expsolver.time_grid(LIN, "time_uniform", 1.0, 1e-3, n), problem)
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.no_grad():
                y = expsolver.integrate(problem, rule, x, plan, check_finite=False).x
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert y.device.type == "cuda"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_stochastic_and_reference():
    device = torch.device("cuda")
    x = _x(32).to(device)
    model = MIXTURE.as_model(LIN)
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(32)]
    out = sample(model, LIN, x, steps=10, algorithm_type="sde-dpmsolver++", generator=gens)
    assert out.x.device.type == "cuda" and bool(torch.isfinite(out.x).all())
    ref = reference_solve(model, LIN, x, 1.0, 1e-3, backend="torchdiffeq", rtol=1e-8, atol=1e-8)
    assert ref.x.device.type == "cuda" and ref.status == "success"


# -- determinism ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ODE_RUNS, ids=lambda r: f"{r['method']}{r['order']}{r.get('compat') or ''}")
def test_same_inputs_give_bitwise_identical_results(run):
    x = _x(16)
    model = MIXTURE.as_model(LIN)
    a = sample(model, LIN, x, steps=10, **run)
    b = sample(model, LIN, x.clone(), steps=10, **run)
    assert torch.equal(a.x, b.x) and np.array_equal(a.timesteps, b.timesteps) and a.nfe == b.nfe


def _per_sample(model):
    def call(x, t):
        return torch.cat([model(x[i:i + 1], t[i:i + 1]) for i in range(x.shape[0])])

    return call


@pytest.mark.parametrize("front", ["sde-dpmsolver++", "sde-dpmsolver", "euler_maruyama", "ddpm_ancestral"])
def test_stochastic_samplers_with_per_sample_generators_are_batch_independent(front):
    """Seed ``i`` for sample ``i`` (EDM's stacked generator): the same seeds give bitwise the same samples
    whatever the batch size and order; one shared generator is deterministic too (same seed, same result)."""
    from expsolver.sde_sampling import reverse_sde_sample

    model = _per_sample(MIXTURE.as_model(LIN))
    x = _x(6)

    def run(idx, seeds=None, shared=None):
        gens = shared if shared is not None else [torch.Generator().manual_seed(100 + int(s)) for s in seeds]
        if front.startswith("sde-"):
            return sample(model, LIN, x[idx], steps=8, order=2, algorithm_type=front, generator=gens).x
        return reverse_sde_sample(model, LIN, x[idx], steps=8, scheme=front, generator=gens).x

    everything = torch.arange(6)
    full = run(everything, everything)
    assert torch.equal(run(everything, everything), full)
    subset = torch.tensor([4, 1])
    assert torch.equal(run(subset, subset), full[subset])
    perm = torch.tensor([5, 2, 0, 3, 1, 4])
    assert torch.equal(run(perm, perm), full[perm])
    shared = [run(everything, shared=torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(shared[0], shared[1])


# -- results on disk --------------------------------------------------------------------------------------------
STUDY_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    import analysis.global_error as ge
    from analysis.results import ResultStore, save_result
    from expsolver import GaussianMixture, VPLinear

    folder, kill_after = sys.argv[1], int(sys.argv[2])
    calls = []
    original = ge.sample
    ge.sample = lambda *a, **k: calls.append(1) or original(*a, **k)
    finished = []

    def progress():
        finished.append(1)
        if len(finished) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill: no cleanup, no exception handlers

    target = GaussianMixture([0.6, 0.4], [[1.0, 0.0], [-1.0, 0.5]], [0.05, 0.1])
    runs = ge.registry_runs(["DPM-Solver-1", "DPM-Solver-2M", "DPM-Solver-3S"], ("dpmsolver++",))
    config = dict(study="global", nfes=[3, 4, 6, 8, 12], n_samples=8)
    store = ResultStore(os.path.join(folder, "store.json"), config)
    study = ge.global_error_study(target, VPLinear(), runs, nfes=(3, 4, 6, 8, 12), n_samples=8,
                                  cache_dir=os.path.join(folder, "cache"), store=store, progress=progress)
    save_result(study, os.path.join(folder, "study.json"))
    print("computed", len(calls))
""")


def _run_study(script, folder, kill_after):
    return subprocess.run([sys.executable, str(script), str(folder), str(kill_after)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_interrupted_study_resumes_and_writes_the_same_file(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(STUDY_SCRIPT.format(root=ROOT))
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir()
    broken.mkdir()
    done = _run_study(script, whole, kill_after=0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["computed", "15"]  # 3 solvers x 5 budgets

    killed = _run_study(script, broken, kill_after=2)
    assert killed.returncode == -signal.SIGKILL
    assert not (broken / "study.json").exists()
    with open(broken / "store.json", encoding="utf-8") as fh:  # atomic writes: valid JSON after a hard kill
        completed = len(json.load(fh)["entries"])
    assert completed == 10  # the two solver runs finished before the kill
    assert not [p for p in os.listdir(broken) if p.startswith(".tmp-")]

    resumed = _run_study(script, broken, kill_after=0)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["computed", str(15 - completed)]  # only the missing entries
    for name in ("study.json", "study.npz", "store.json"):
        assert (whole / name).read_bytes() == (broken / name).read_bytes(), name


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails before ``os.replace`` leaves the previous file intact and no temporary file behind; the
    temporary file lives in the destination's folder (so ``os.replace`` is an atomic rename)."""
    from analysis import results

    path = tmp_path / "r.json"
    results.atomic_write_json(str(path), {"a": 1})
    replaced = []
    real_replace = os.replace

    def failing_replace(src, dst):
        replaced.append((src, dst))
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", failing_replace)
    with pytest.raises(OSError):
        results.atomic_write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["r.json"]
    assert os.path.dirname(replaced[0][0]) == os.path.dirname(replaced[0][1]) == str(tmp_path)
    monkeypatch.setattr(results.os, "replace", real_replace)


def test_result_files_are_json_and_npz_read_without_pickle(tmp_path, monkeypatch):
    from analysis import results
    from analysis.global_error import global_error_study

    loads = []
    real_load = np.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy_load)
    study = global_error_study(MIXTURE, LIN, ["DPM-Solver-1"], nfes=(3, 4, 6), n_samples=4,
                               cache_dir=str(tmp_path / "cache"))
    again = global_error_study(MIXTURE, LIN, ["DPM-Solver-1"], nfes=(3, 4, 6), n_samples=4,
                               cache_dir=str(tmp_path / "cache"))  # the reference now comes from the cache
    path = results.save_result(study, str(tmp_path / "study.json"))
    loaded = results.load_result(path)
    assert len(loads) >= 2 and all(flag is False for flag in loads)
    np.testing.assert_array_equal(loaded.curves[0].median, again.curves[0].median)
    assert sorted(os.listdir(tmp_path)) == ["cache", "study.json", "study.npz"]
    with pytest.raises(TypeError, match="object"):  # an object array would need pickle: refused when saving
        results.save_result({"bad": np.array([{"a": 1}], dtype=object)}, str(tmp_path / "bad.json"))
    assert not (tmp_path / "bad.npz").exists()


def test_store_with_another_configuration_is_not_reused(tmp_path):
    from analysis.results import ResultStore

    path = str(tmp_path / "store.json")
    store = ResultStore(path, {"n_samples": 8})
    store.put("a", {"err": 1.5, "nan": math.nan})
    assert ResultStore(path, {"n_samples": 8}).get("a")["err"] == 1.5
    assert math.isnan(ResultStore(path, {"n_samples": 8}).get("a")["nan"])
    assert "a" not in ResultStore(path, {"n_samples": 16})
