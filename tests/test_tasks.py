"""Studies as tasks on executors (analysis/tasks.py, paper_figs/_common.py, analysis/race.py): the same bits in
this process, on local worker processes and on a real Dask ``LocalCluster`` with two worker processes; a worker
killed mid-run (by its own task, once); worker processes that end with a parent killed by SIGKILL; an interrupted
run that resumes. Results are compared with :func:`analysis.results.content_digest` (every number and array,
bitwise; timings and provenance left out). Runtime ~40 s on an idle 2-core machine (process and cluster starts).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from analysis import tasks as tasks_module
from analysis.race import RaceConfig, race_studies
from analysis.results import ResultFolder, content_digest
from analysis.tasks import LocalProcesses, Task, WorkerLostWarning, code_fingerprint, one_torch_thread, run_tasks
from paper_figs._common import STUDIES, config_for, run_studies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A reduced figure study set: a local-error study, a global one and the work-precision study built on it.
FIGURE_STUDIES = ("local_2d", "order_16d", "wp_16d")
#: A race small enough for a test that still runs every round (references, curves, official search, grid
#: optimisations with and without model times, switch analysis, population estimate).
SMALL_RACE = RaceConfig(target="2d", n_pool=300, n_test=60, n_holdout=80, nfes=(10,), optimise_nfes=(10,),
                        official_nfes=(10,), lineup=("DDIM",), optimised=("UniPC-2-bh1",), shifted=("UniPC-2-bh1",),
                        n_train=64, strata=(0.5,), max_iter_nfe=100, n_validation=64, n_starts=1, n_bootstrap=50,
                        official_methods=("multistep",), n_population=100, boundary_perturbations=4)


def crash_once(marker: str, value):
    """Kill the worker process running it the first time (leaving ``marker``); afterwards return ``value``."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def threads_in_task(*_) -> int:
    return torch.get_num_threads()


def digests(studies: dict) -> dict:
    return {name: content_digest(study) for name, study in studies.items()}


@pytest.fixture(scope="module", autouse=True)
def reference_cache(tmp_path_factory):
    """A reference cache of this module's own, for this process and every worker it starts."""
    old = os.environ.get("EXPSOLVER_CACHE_DIR")
    os.environ["EXPSOLVER_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["EXPSOLVER_CACHE_DIR"]
    else:
        os.environ["EXPSOLVER_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The reduced figure studies and the small race, computed in this process: what every executor must give."""
    out = tmp_path_factory.mktemp("local")
    cfg = config_for(True, 0)
    return digests(run_studies(FIGURE_STUDIES, str(out), cfg)), content_digest(race_studies([SMALL_RACE])[0])


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_local_cluster_gives_the_same_bits(in_process, dask_client, tmp_path):
    studies, race = in_process
    cfg = config_for(True, 0)
    assert digests(run_studies(FIGURE_STUDIES, str(tmp_path), cfg, dask_client)) == studies
    assert content_digest(race_studies([SMALL_RACE], executor=dask_client)[0]) == race
    # One torch thread in every task, on every worker.
    assert run_tasks([Task(f"threads{i}", threads_in_task, (i,)) for i in range(4)], dask_client) == [1] * 4


def test_dask_workers_with_other_code_are_refused(dask_client, monkeypatch):
    monkeypatch.setitem(tasks_module._CODE_FINGERPRINTS, None, "0" * 16)  # as if this process ran other code
    with pytest.raises(RuntimeError, match="run other expsolver/analysis source code"):
        run_tasks([Task("t", threads_in_task)], dask_client)


def test_dask_worker_killed_mid_run(in_process, dask_client, tmp_path):
    """A task kills its Dask worker once: the cluster reruns it elsewhere, the results are unchanged."""
    cfg = config_for(True, 0)
    tasks = STUDIES["order_16d"].tasks(cfg)
    crash = Task("crash", crash_once, (str(tmp_path / "marker"), 7), cost=0.0)
    values = run_tasks(tasks + [crash], dask_client, store=ResultFolder(str(tmp_path / "tasks")))
    assert values[-1] == 7 and (tmp_path / "marker").exists()
    study = STUDIES["order_16d"].merge(cfg, values[:-1], {})
    assert content_digest(study) == in_process[0]["order_16d"]


def test_local_workers_killed_mid_run_and_resumed(in_process, tmp_path):
    """Two local worker processes with one torch thread each; one task kills its worker once: the pool is
    restarted, the unfinished tasks resubmitted, and the results are those of this process. A second run finds
    every result in the store. This process keeps its own number of threads."""
    cfg = config_for(True, 0)
    tasks = STUDIES["order_16d"].tasks(cfg)
    crash = Task("crash", crash_once, (str(tmp_path / "marker"), 7), cost=0.0)  # submitted last: mid-run
    store = ResultFolder(str(tmp_path / "tasks"))
    before = torch.get_num_threads()
    with LocalProcesses(2) as pool:
        assert run_tasks([Task(f"t{i}", threads_in_task, (i,)) for i in range(3)], pool) == [1, 1, 1]
        with pytest.warns(WorkerLostWarning, match="worker process died"):
            values = run_tasks(tasks + [crash], pool, store=store)
        assert values[-1] == 7
        assert content_digest(STUDIES["order_16d"].merge(cfg, values[:-1], {})) == in_process[0]["order_16d"]
        timings = {}
        again = run_tasks(tasks, pool, store=store, timings=timings)
    assert timings == {}  # nothing computed: resumed entirely from the store
    assert [content_digest(v) for v in again] == [content_digest(v) for v in values[:-1]]
    assert run_tasks([Task("here", threads_in_task)]) == [1]
    assert torch.get_num_threads() == before
    with one_torch_thread():
        assert torch.get_num_threads() == 1


def test_task_keys_follow_function_arguments_and_code():
    a = Task("x", crash_once, ("m", 1))
    assert a.key == Task("x", crash_once, ("m", 1)).key != Task("x", crash_once, ("m", 2)).key
    assert a.key.startswith("x#") and len(code_fingerprint(__name__)) == 16
    with pytest.raises(TypeError, match="label"):
        Task("", crash_once)
    with pytest.raises(TypeError, match="executor"):
        run_tasks([a], executor=1.5)
    with pytest.raises(ValueError, match=">= 1"):
        run_tasks([a], executor=0)


def test_a_failing_task_names_itself(tmp_path):
    with pytest.raises(ZeroDivisionError) as info:
        run_tasks([Task("divide", divmod, (1, 0))])
    assert any("in task divide" in note for note in getattr(info.value, "__notes__", []))


def announce_and_sleep(path: str, seconds: float) -> None:
    """Leave ``path`` (the task has started: the worker is up), then sleep."""
    open(path, "w").close()
    time.sleep(seconds)


ORPHAN_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{root!r}, os.path.join({root!r}, "tests")]
    from analysis.tasks import Task, run_tasks
    from test_tasks import announce_and_sleep

    if __name__ == "__main__":
        run_tasks([Task(f"sleep{{i}}", announce_and_sleep, (os.path.join(sys.argv[1], f"started{{i}}"), 300))
                   for i in range(2)], 2)
""")


def test_workers_end_with_a_parent_killed_by_sigkill(tmp_path):
    """The parent is killed while both workers run a task: they exit too (not orphaned)."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT.format(root=ROOT))
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while not all((tmp_path / f"started{i}").exists() for i in range(2)) and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [p for p in psutil.Process(parent.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
