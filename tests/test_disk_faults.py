"""Damaged, altered and unwritable files on disk (analysis/results.py, analysis/tasks.py): every fault is detected,
the warning names the file, the result is computed again, and the final numbers are those of a clean run.

The faults: truncated, flipped bytes, emptied, an array of the wrong shape, valid-looking values x1000 (or x1.01)
that only a content hash reveals, a result or reference computed for another key, and a cache folder that cannot
be written. They hit a study's task result (JSON and NPZ, :class:`analysis.results.ResultFolder`), the reference
cache (:func:`analysis.results.cached_reference`) and a :class:`analysis.results.ResultStore`.
Runtime: ~10 s (tiny studies: 8 samples, two budgets).
"""

import io
import json
import multiprocessing
import os
import pathlib
import re

import numpy as np
import pytest
import torch

from analysis import standard_schedule, target_2d
from analysis import results as results_module
from analysis.global_error import global_error_study
from analysis.results import (DamagedResultWarning, ResultFileError, ResultFolder, ResultStore, cached_reference,
                              content_digest, load_result, save_result, try_load_result)
from analysis.tasks import Task, run_tasks


def small_study(cache_dir: str):
    """A global-error study small enough to run a dozen times: its result holds arrays (NPZ) and it reads a
    reference from the cache."""
    return global_error_study(target_2d(), standard_schedule(), ["DPM-Solver-2M"], nfes=(4, 8), n_samples=8,
                              cache_dir=cache_dir)


def _npz_members(path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _rewrite_npz(path, change) -> None:
    """Rewrite a valid NPZ file with ``change(name, array)`` applied to every float array."""
    members = {k: (change(k, v) if v.dtype.kind == "f" else v) for k, v in _npz_members(path).items()}
    buf = io.BytesIO()
    np.savez(buf, **members)
    path.write_bytes(buf.getvalue())


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


NPZ_FAULTS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "flipped bytes": _flip,
    "emptied": lambda p: p.write_bytes(b""),
    "wrong shape": lambda p: _rewrite_npz(p, lambda k, v: v.reshape(-1)[:-1] if v.size > 1 else v),
    "values x1000": lambda p: _rewrite_npz(p, lambda k, v: v * 1000.0),
}


def _json_times_1000(p) -> None:
    text = p.read_text()
    # Every number in the data with a decimal point, x1000: still valid JSON of the same structure.
    p.write_text(re.sub(r"(?<=\": )(-?\d+\.\d+(?:e-?\d+)?)", lambda m: repr(float(m.group(1)) * 1000), text))


JSON_FAULTS = {
    "truncated": lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),
    "flipped bytes": _flip,
    "emptied": lambda p: p.write_text(""),
    "values x1000": _json_times_1000,
}


@pytest.fixture
def clean(tmp_path):
    """The task, its clean result's digest, and a store and cache holding that clean run."""
    cache, store = str(tmp_path / "cache"), ResultFolder(str(tmp_path / "tasks"))
    task = Task("small", small_study, (cache,))
    (study,) = run_tasks([task], store=store)
    return task, content_digest(study), store, cache


def _rerun_expecting_warning(task, store, path) -> object:
    with pytest.warns(DamagedResultWarning, match=re.escape(str(path))):
        (study,) = run_tasks([task], store=store)
    return study


@pytest.mark.parametrize("fault", sorted(NPZ_FAULTS))
def test_damaged_task_npz_is_reported_and_recomputed(clean, fault):
    task, digest, store, _ = clean
    npz = store.path(task.key)[:-5] + ".npz"
    NPZ_FAULTS[fault](pathlib.Path(npz))
    with pytest.raises(ResultFileError, match=re.escape(npz)):
        load_result(store.path(task.key), key=task.key)
    assert content_digest(_rerun_expecting_warning(task, store, npz)) == digest
    assert content_digest(load_result(store.path(task.key), key=task.key)) == digest  # repaired on disk


@pytest.mark.parametrize("fault", sorted(JSON_FAULTS))
def test_damaged_task_json_is_reported_and_recomputed(clean, fault):
    task, digest, store, _ = clean
    path = store.path(task.key)
    JSON_FAULTS[fault](pathlib.Path(path))
    with pytest.raises(ResultFileError, match=re.escape(path)):
        load_result(path, key=task.key)
    assert content_digest(_rerun_expecting_warning(task, store, path)) == digest
    assert content_digest(load_result(path, key=task.key)) == digest


def test_result_of_another_key_is_not_used(clean, tmp_path):
    task, digest, store, cache = clean
    other = Task("small", small_study, (cache + "-other",))  # another argument: another key
    os.replace(store.path(task.key), store.path(other.key))
    os.replace(store.path(task.key)[:-5] + ".npz", store.path(other.key)[:-5] + ".npz")
    with pytest.warns(DamagedResultWarning, match="computed for key"):
        (study,) = run_tasks([other], store=store)
    assert content_digest(study) == digest


@pytest.mark.parametrize("fault", sorted(NPZ_FAULTS) + ["another key"])
def test_damaged_reference_cache_is_reported_and_solved_again(clean, fault):
    task, digest, store, cache = clean
    (path,) = [os.path.join(cache, f) for f in os.listdir(cache) if f.endswith(".npz")]
    if fault == "another key":
        members = _npz_members(path)
        members["key"] = np.array("0" * 64)
        np.savez(path, **members)
    elif fault == "values x1000":
        # x1.01 on the end states: plausible numbers, a different global order; only the content hash shows it.
        _rewrite_npz(pathlib.Path(path), lambda k, v: v * 1.01 if k == "x" else v)
    else:
        NPZ_FAULTS[fault](pathlib.Path(path))
    fresh = ResultFolder(str(store.folder) + "-fresh")  # the task result is not in this store: it recomputes
    with pytest.warns(DamagedResultWarning, match=re.escape(path)):
        (study,) = run_tasks([task], store=fresh)
    assert content_digest(study) == digest
    target = target_2d()
    x = target.sample(8, generator=torch.Generator().manual_seed(0), t=1.0, schedule=standard_schedule())
    again = cached_reference(target, standard_schedule(), x, 1.0, 1e-3, cache_dir=cache)
    assert again["cached"]  # the damaged file was replaced


def test_unwritable_cache_degrades_to_no_cache(tmp_path, monkeypatch):
    """A cache folder that cannot be created, and one whose files cannot be written: a warning, the same numbers."""
    clean = content_digest(small_study(str(tmp_path / "cache")))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(DamagedResultWarning, match=re.escape(str(blocker / "cache"))):
        assert content_digest(small_study(str(blocker / "cache"))) == clean

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_mkstemp, real_open = results_module.tempfile.mkstemp, results_module.os.open

    def refuse(path):
        if str(path).startswith(str(readonly)):
            raise PermissionError(13, "Permission denied", str(path))

    # What a read-only folder does (chmod cannot stop root, who runs CI): creating a file in it fails.
    monkeypatch.setattr(results_module.tempfile, "mkstemp",
                        lambda *a, dir=None, **k: refuse(dir) or real_mkstemp(*a, dir=dir, **k))
    monkeypatch.setattr(results_module.os, "open", lambda path, *a, **k: refuse(path) or real_open(path, *a, **k))
    readonly.chmod(0o555)
    try:
        with pytest.warns(DamagedResultWarning, match=re.escape(str(readonly))):
            assert content_digest(small_study(str(readonly))) == clean
        assert os.listdir(readonly) == []
    finally:
        readonly.chmod(0o755)


def test_saved_result_records_key_shapes_and_hashes(tmp_path):
    path = save_result({"a": np.arange(6.0).reshape(2, 3), "b": 1.5}, str(tmp_path / "r"), key="k#1")
    payload = json.loads(open(path).read())
    assert payload["key"] == "k#1" and payload["format"] == results_module.RESULT_FORMAT
    (record,) = payload["arrays"].values()
    assert record["shape"] == [2, 3] and record["dtype"] == "<f8" and len(record["sha256"]) == 64
    assert len(payload["sha256"]) == 64
    with pytest.raises(ResultFileError, match="computed for key 'k#1', not 'k#2'"):
        load_result(path, key="k#2")
    with pytest.warns(DamagedResultWarning, match=re.escape(path)):
        assert try_load_result(path, key="k#2", default="missing") == "missing"
    assert try_load_result(str(tmp_path / "none.json"), default="missing") == "missing"  # missing: no warning


def test_truncated_or_damaged_store_is_reported_and_its_entries_recomputed(tmp_path):
    path = tmp_path / "store.json"
    store = ResultStore(str(path), config={"n": 1})
    for key in "abc":
        store.put(key, {"err": float(ord(key))})
    text = path.read_text()
    path.write_text(text.replace("98.0", "98000.0"))  # entry "b" altered
    with pytest.warns(DamagedResultWarning, match=re.escape(str(path)) + ".*1 entries fail"):
        kept = ResultStore(str(path), config={"n": 1})
    assert sorted(kept.keys()) == ["a", "c"]
    path.write_text(text[: len(text) // 2])
    with pytest.warns(DamagedResultWarning, match=re.escape(str(path)) + ": not valid JSON"):
        assert len(ResultStore(str(path), config={"n": 1})) == 0
    path.unlink()
    ResultStore(str(path), config={"n": 1}).put("x", 1.0)
    with pytest.warns(DamagedResultWarning, match=re.escape(str(path)) + ": written for another configuration"):
        assert len(ResultStore(str(path), config={"n": 2})) == 0


def _put_many(path: str, prefix: str) -> None:
    store = ResultStore(path, config={"c": 1})
    for i in range(25):
        store.put(f"{prefix}{i}", {"i": i})


def test_concurrent_writers_of_one_store_lose_nothing(tmp_path):
    path = str(tmp_path / "store.json")
    ctx = multiprocessing.get_context("fork")  # the writers need nothing but the store: no re-import
    procs = [ctx.Process(target=_put_many, args=(path, prefix)) for prefix in ("p", "q")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert sorted(ResultStore(path, config={"c": 1}).keys()) == sorted(f"{p}{i}" for p in "pq" for i in range(25))
