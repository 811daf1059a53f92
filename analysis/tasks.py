"""Studies as independent tasks on a standard executor: in this process, local worker processes, or Dask.

A study is split into :class:`Task` s, each one configuration's deterministic computation: a module-level
function and its arguments, identified by :attr:`Task.key`, a hash of the function, its arguments and the source
code it runs (:func:`code_fingerprint`). :func:`run_tasks` loads the results already in a store
(:class:`analysis.results.ResultFolder`), submits the others to a :class:`concurrent.futures.Executor` and writes
each result to the store *in the calling process* as it arrives. Workers never write results, so a task that runs
twice, a worker that dies or two runs on one store never corrupt or lose one, and an interrupted run resumes with
the tasks still missing.

Executors (``executor`` argument of :func:`run_tasks` and :func:`open_executor`):

* ``None`` or ``1``: this process, one task after the other;
* an int ``n > 1``: :class:`LocalProcesses`, ``n`` spawned worker processes that end with their parent; when a
  worker dies the pool is restarted and its unfinished tasks are submitted again;
* a ``distributed.Client`` or a scheduler address such as ``"tcp://host:8786"``: Dask distributed (the optional
  extra ``distributed``), which itself reschedules the tasks of a worker that dies; workers whose source code
  differs from this process's are refused (:func:`code_fingerprint`);
* any other :class:`concurrent.futures.Executor`, used as it is.

Every task runs with one torch intra-op thread (:func:`one_torch_thread`), in this process as in a worker, so
``n`` workers do not oversubscribe ``n`` cores and a result does not depend on the number or kind of workers: the
same task gives the same bits everywhere.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import multiprocessing
import os
import pickle
import sys
import threading
import time
import warnings
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import torch

from .results import fingerprint

__all__ = ["Task", "run_tasks", "open_executor", "LocalProcesses", "available_cpus", "one_torch_thread",
           "code_fingerprint", "check_picklable", "WorkerLostWarning"]

#: Modules of ``analysis`` that do not determine any result (plot styles, summaries, the benchmark, the task
#: machinery) and the race, whose tasks add its source themselves: left out of :func:`code_fingerprint`.
_NOT_RESULT_CODE = ("style.py", "summary.py", "benchmark.py", "tasks.py", "race.py")
_CODE_FINGERPRINTS: dict = {}


class WorkerLostWarning(UserWarning):
    """A local worker process died; the pool was restarted and the tasks it had not finished resubmitted."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def code_fingerprint(module: str | None = None) -> str:
    """Hash of the source that determines a task's result: every module of ``expsolver``, the study modules of
    ``analysis`` and, if given, the module ``module`` (the task function's own, e.g. a figure script's).

    Computed once per process and module, so that a source edit during a run cannot split it.
    """
    if module not in _CODE_FINGERPRINTS:
        import analysis
        import expsolver

        parts = []
        for pkg, skip in ((expsolver, ()), (analysis, _NOT_RESULT_CODE)):
            root = os.path.dirname(pkg.__file__)
            for folder, _, files in sorted(os.walk(root)):
                for name in sorted(files):
                    if name.endswith(".py") and not (folder == root and name in skip):
                        parts.append(_source(os.path.join(folder, name), name))
        extra = sys.modules.get(module) if module is not None else None
        if extra is not None and getattr(extra, "__file__", None):
            parts.append(_source(extra.__file__, module))
        _CODE_FINGERPRINTS[module] = fingerprint(*parts)[:16]
    return _CODE_FINGERPRINTS[module]


def check_picklable(value, name: str):
    """``value`` if it survives a pickle round trip, as a task's arguments must to reach a worker process; else a
    ``TypeError`` naming ``name``. Objects pickle by reference to their class: an instance of a class defined at
    the top level of an importable module does (``examples/custom_solver.py``'s solvers, imported as
    ``examples.custom_solver``); one of a class defined inside a function, or loaded from a file under a module
    name that cannot be imported, does not."""
    try:
        pickle.loads(pickle.dumps(value))
    except Exception as exc:  # PicklingError, AttributeError, TypeError, ImportError: the cause is in the message
        raise TypeError(f"{name} must be picklable to run in worker processes (an instance of a class defined at "
                        f"the top level of an importable module); {value!r} of type {type(value).__qualname__} "
                        f"is not ({type(exc).__name__}: {exc})") from None
    return value


def _source(path: str, name: str) -> str:
    with open(path, "rb") as fh:
        return name + fh.read().decode("utf-8", "replace")


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One deterministic computation: ``fn(*args, **kwargs)``.

    Parameters
    ----------
    label : str
        Readable name, e.g. ``"order_2d/DPM-Solver-2M|dpmsolver++"`` (the progress bar and errors show it).
    fn : callable
        A module-level function (workers import it by name).
    args : tuple
    kwargs : dict
        Picklable arguments; with ``fn`` they determine the result.
    cost : float
        Relative cost estimate: the most expensive tasks are submitted first (shorter tail).
    keep : bool
        Whether the result goes into the store (``False`` for tasks run for their side effect, such as filling
        the reference cache).
    """

    label: str
    fn: Callable
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    cost: float = 1.0
    keep: bool = True

    def __post_init__(self):
        if not isinstance(self.label, str) or not self.label:
            raise TypeError(f"label must be a non-empty str, got {self.label!r}")
        if not callable(self.fn):
            raise TypeError(f"fn must be callable, got {type(self.fn).__name__}")
        if not isinstance(self.args, tuple) or not isinstance(self.kwargs, dict):
            raise TypeError("args must be a tuple and kwargs a dict")

    @functools.cached_property
    def key(self) -> str:
        """``label#hash``: the hash covers the function's import path, the arguments (by content) and
        :func:`code_fingerprint` of the function's module."""
        digest = fingerprint(self.fn, self.args, self.kwargs, code_fingerprint(self.fn.__module__))
        return f"{self.label}#{digest[:20]}"


@contextlib.contextmanager
def one_torch_thread():
    """Run the block with one torch intra-op thread, restoring the previous number afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed(fn, args, kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    return value, dict(wall_s=round(time.perf_counter() - wall, 3), cpu_s=round(time.process_time() - cpu, 3))


def _run_in_worker(fn, args, kwargs):
    """A task in a worker process (local or Dask): one torch thread, kept (the process only runs tasks)."""
    torch.set_num_threads(1)
    return _timed(fn, args, kwargs)


# -- local worker processes --------------------------------------------------------------------------------------
def _init_worker(parent_pid: int) -> None:
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True, name="exit-with-parent").start()


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when its parent is gone (killed with no chance to shut the pool down): it then has
    another parent process."""
    while os.getppid() == parent_pid:
        time.sleep(0.2)
    os._exit(1)


class LocalProcesses(cf.Executor):
    """``n_workers`` local worker processes (a spawned :class:`concurrent.futures.ProcessPoolExecutor`).

    Each worker uses one torch thread and exits within a fraction of a second when its parent process is gone,
    even after a ``SIGKILL`` of the parent (a worker still starting up, importing torch, exits as soon as it is
    up). :meth:`restart` replaces a pool broken by a dead worker;
    :meth:`terminate` kills the workers at once (an interrupted run).
    """

    def __init__(self, n_workers: int):
        if isinstance(n_workers, bool) or not isinstance(n_workers, int):
            raise TypeError(f"n_workers must be an int, got {type(n_workers).__name__}")
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.n_workers = n_workers
        self._pool = self._new_pool()

    def _new_pool(self):
        return cf.ProcessPoolExecutor(max_workers=self.n_workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(os.getpid(),))

    def submit(self, fn, /, *args, **kwargs):
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        """Kill the workers now and drop the queued tasks."""
        # ProcessPoolExecutor has no public way to stop running tasks (before Python 3.14).
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        for process in processes:
            process.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=5)

    def restart(self) -> None:
        """Replace the pool (after a worker died)."""
        self.terminate()
        self._pool = self._new_pool()


def _is_dask_client(obj) -> bool:
    return type(obj).__module__.startswith("distributed") and hasattr(obj, "get_executor")


def _check_same_code(client) -> None:
    """Refuse Dask workers whose ``expsolver`` / ``analysis`` source differs from this process's: their results
    would be stored under keys that name this process's code."""
    here = code_fingerprint()
    stale = sorted(worker for worker, theirs in client.run(code_fingerprint).items() if theirs != here)
    if stale:
        raise RuntimeError(f"Dask workers {', '.join(stale)} run other expsolver/analysis source code than this "
                           f"process (code fingerprint {here}); install the same version on every worker")


@contextlib.contextmanager
def open_executor(executor=None):
    """Context manager turning an ``executor`` specification (module docstring) into an executor, or ``None``
    for this process; it shuts down what it opened (local workers are killed if the block fails), never what it
    was given."""
    if executor is None or (isinstance(executor, int) and not isinstance(executor, bool) and executor == 1):
        yield None
    elif isinstance(executor, int) and not isinstance(executor, bool):
        if executor < 1:
            raise ValueError(f"executor: the number of local worker processes must be >= 1, got {executor}")
        pool = LocalProcesses(executor)
        try:
            yield pool
        except BaseException:
            pool.terminate()
            raise
        pool.shutdown()
    elif isinstance(executor, str):
        try:
            from distributed import Client
        except ImportError:
            raise ImportError(f"executor={executor!r} (a Dask scheduler address) needs Dask distributed: pip "
                              f"install 'expsolver[distributed]'") from None
        with Client(executor) as client:
            _check_same_code(client)
            yield client.get_executor(pure=False)
    elif _is_dask_client(executor):
        _check_same_code(executor)
        yield executor.get_executor(pure=False)
    elif isinstance(executor, cf.Executor):
        yield executor
    else:
        raise TypeError(f"executor must be None, a number of local worker processes, a Dask scheduler address, a "
                        f"distributed.Client or a concurrent.futures.Executor, got {type(executor).__name__}")


# -- the runner ------------------------------------------------------------------------------------------------------
_MISSING = object()


def run_tasks(tasks, executor=None, *, store=None, bar=None, on_result=None, timings: dict | None = None,
              max_restarts: int = 3) -> list:
    """Run ``tasks`` (module docstring) and return their results, in the order of ``tasks``.

    Parameters
    ----------
    tasks : sequence of Task
        Tasks with equal keys run once.
    executor
        Where to run them: see :func:`open_executor` (an executor opened there is used for this call only).
    store : analysis.results.ResultFolder, optional
        Results are read from it (a damaged file is reported and computed again) and written to it, by this
        process, as soon as each arrives.
    bar : tqdm progress bar, optional
        Its total grows by the number of tasks; it advances as results arrive (from the store at once).
    on_result : callable, optional
        ``on_result(index, result)`` in this process after each task's result is stored.
    timings : dict, optional
        Filled with ``label -> {"wall_s", "cpu_s"}`` of every task computed (not of those from the store).
    max_restarts : int
        How often a pool of :class:`LocalProcesses` is restarted after a worker died before giving up.

    Raises
    ------
    RuntimeError
        Local worker processes died more than ``max_restarts`` times.
    Exception
        The first exception a task raised (with a note naming the task); the tasks not yet finished are
        cancelled, and local workers killed.
    """
    tasks = list(tasks)
    for task in tasks:
        if not isinstance(task, Task):
            raise TypeError(f"tasks must be analysis.tasks.Task objects, got {type(task).__name__}")
    results = [_MISSING] * len(tasks)
    indices: dict = {}
    for i, task in enumerate(tasks):
        indices.setdefault(task.key, []).append(i)
    if bar is not None:
        bar.total = (bar.total or 0) + len(tasks)
        bar.refresh()

    def deliver(key, value, seconds=None):
        first = tasks[indices[key][0]]
        if seconds is not None:
            if store is not None and first.keep:
                store.put(key, value)
            if timings is not None:
                timings[first.label] = seconds
        for i in indices[key]:
            results[i] = value
            if on_result is not None:
                on_result(i, value)
        if bar is not None:
            bar.set_postfix_str(first.label[:40], refresh=False)
            bar.update(len(indices[key]))

    todo = []
    for key, idx in indices.items():
        task = tasks[idx[0]]
        value = store.get(key, _MISSING) if store is not None and task.keep else _MISSING
        if value is _MISSING:
            todo.append(key)
        else:
            deliver(key, value)
    todo.sort(key=lambda k: -tasks[indices[k][0]].cost)
    with open_executor(executor) as ex:
        if ex is None:
            for key in todo:
                task = tasks[indices[key][0]]
                with one_torch_thread():
                    try:
                        value, seconds = _timed(task.fn, task.args, task.kwargs)
                    except Exception as exc:
                        exc.add_note(f"in task {task.label}")
                        raise
                deliver(key, value, seconds)
        else:
            _run_on(ex, [tasks[indices[k][0]] for k in todo], deliver, max_restarts)
    return results


def _run_on(ex, tasks, deliver, max_restarts: int) -> None:
    """Submit ``tasks`` to the executor ``ex`` and deliver their results as they arrive (restarting a broken
    :class:`LocalProcesses` pool)."""
    pending: dict = {}

    def submit(task):
        pending[ex.submit(_run_in_worker, task.fn, task.args, task.kwargs)] = task

    restarts = 0
    try:
        for task in tasks:
            submit(task)
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            lost = []
            for future in done:
                task = pending.pop(future)
                exc = future.exception()
                if exc is None:
                    deliver(task.key, *future.result())
                elif isinstance(exc, BrokenProcessPool) and isinstance(ex, LocalProcesses):
                    lost.append(task)
                else:
                    exc.add_note(f"in task {task.label}")
                    raise exc
            if not lost:
                continue
            # A worker died: the whole pool is broken. Keep what finished, resubmit the rest on a new pool.
            for future, task in list(pending.items()):
                del pending[future]
                if future.done() and future.exception() is None:
                    deliver(task.key, *future.result())
                else:
                    lost.append(task)
            restarts += 1
            if restarts > max_restarts:
                raise RuntimeError(f"local worker processes died {restarts} times; tasks left: "
                                   f"{', '.join(t.label for t in lost[:5])}{' ...' if len(lost) > 5 else ''}")
            warnings.warn(f"a worker process died; restarting the pool and resubmitting {len(lost)} tasks",
                          WorkerLostWarning, stacklevel=3)
            ex.restart()
            for task in lost:
                submit(task)
    except BaseException:
        for future in pending:
            future.cancel()
        if isinstance(ex, LocalProcesses):
            ex.terminate()
        raise
