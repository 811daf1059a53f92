"""Results I/O: JSON + NPZ round trips, atomic writes, resumable stores, the reference cache. Runtime ~2 s."""

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from analysis import standard_schedule, target_2d
from analysis.global_error import global_error_study, registry_runs
from analysis.order import fit_order
from analysis.results import (DamagedResultWarning, ResultStore, atomic_write_json, cached_reference, load_result,
                              provenance, result_type, save_result)


@result_type
@dataclass
class _Inner:
    values: np.ndarray
    note: str = ""


@result_type
@dataclass
class _Outer:
    name: str
    window: tuple
    scalars: dict
    inners: list = field(default_factory=list)
    missing: float = math.nan


def test_round_trip_with_arrays_nan_tuples_and_nested_dataclasses(tmp_path):
    obj = _Outer(name="x", window=(1, 4), scalars={"a": 1.5, "inf": math.inf, "flag": True},
                 inners=[_Inner(np.arange(5.0), "first"), _Inner(np.array([[1, 2], [3, 4]], dtype=np.int64))])
    path = save_result(obj, str(tmp_path / "res"))
    assert path.endswith("res.json") and os.path.exists(tmp_path / "res.npz")
    back = load_result(path)
    assert isinstance(back, _Outer) and back.window == (1, 4) and math.isnan(back.missing)
    assert back.scalars == {"a": 1.5, "inf": math.inf, "flag": True}
    np.testing.assert_array_equal(back.inners[0].values, np.arange(5.0))
    assert back.inners[1].values.dtype == np.int64
    # Plain JSON (no NaN tokens), NPZ readable without pickle.
    with open(path) as fh:
        text = fh.read()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)
    with np.load(tmp_path / "res.npz", allow_pickle=False) as npz:
        assert len(npz.files) == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_order_fit_round_trip(tmp_path):
    fit = fit_order([0.1, 0.2, 0.4, 0.8], [1e-3, 4e-3, 1.6e-2, 6.4e-2], expected=2)
    back = load_result(save_result(fit, str(tmp_path / "fit.json")))
    assert back == fit


def test_provenance_has_versions():
    p = provenance()
    for name in ("python", "numpy", "torch", "scipy", "torchdiffeq", "matplotlib", "expsolver"):
        assert name in p["versions"]
    assert p["torch_default_dtype"].startswith("torch.")


def test_atomic_write_replaces_whole_file(tmp_path):
    path = str(tmp_path / "a.json")
    atomic_write_json(path, {"k": list(range(1000))})
    atomic_write_json(path, {"k": 1})
    with open(path) as fh:
        assert json.load(fh) == {"k": 1}
    with pytest.raises(ValueError):
        atomic_write_json(path, {"bad": float("nan")})  # refused before anything is written
    with open(path) as fh:
        assert json.load(fh) == {"k": 1}


def test_store_resumes_and_discards_other_configuration(tmp_path):
    path = str(tmp_path / "store.json")
    store = ResultStore(path, config={"n": 1})
    store.put("a", {"x": 1.0})
    assert "a" in ResultStore(path, config={"n": 1})
    with pytest.warns(DamagedResultWarning, match="written for another configuration"):
        assert len(ResultStore(path, config={"n": 2})) == 0


def test_interrupted_global_study_resumes_from_completed_points(tmp_path, monkeypatch):
    import analysis.global_error as ge

    target, schedule = target_2d(), standard_schedule()
    runs = registry_runs(["DPM-Solver-2M"], ("dpmsolver++",))
    cache = str(tmp_path / "cache")
    store_path = str(tmp_path / "store.json")
    calls = []
    real_sample = ge.sample

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(kwargs["steps"])
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(ge, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        global_error_study(target, schedule, runs, nfes=(6, 8, 10, 12), n_samples=8, cache_dir=cache,
                           store=ResultStore(store_path, config={"c": 1}))
    assert calls == [6, 8]
    calls.clear()
    monkeypatch.setattr(ge, "sample", lambda *a, **k: (calls.append(k["steps"]), real_sample(*a, **k))[1])
    study = global_error_study(target, schedule, runs, nfes=(6, 8, 10, 12), n_samples=8, cache_dir=cache,
                               store=ResultStore(store_path, config={"c": 1}))
    assert calls == [10, 12]  # only the missing points were computed
    fresh = global_error_study(target, schedule, runs, nfes=(6, 8, 10, 12), n_samples=8, cache_dir=cache)
    np.testing.assert_allclose(study.curves[0].median, fresh.curves[0].median, rtol=1e-12)


def test_reference_cache_hit_and_key(tmp_path):
    target, schedule = target_2d(), standard_schedule()
    x = target.sample(4, generator=torch.Generator().manual_seed(0), t=1.0, schedule=schedule)
    a = cached_reference(target, schedule, x, 1.0, 1e-3, rtol=1e-8, atol=1e-8, cache_dir=str(tmp_path))
    b = cached_reference(target, schedule, x, 1.0, 1e-3, rtol=1e-8, atol=1e-8, cache_dir=str(tmp_path))
    assert not a["cached"] and b["cached"] and a["key"] == b["key"] and b["nfe"] == a["nfe"]
    assert torch.equal(a["x"], b["x"])
    c = cached_reference(target, schedule, x, 1.0, 1e-3, rtol=1e-9, atol=1e-9, cache_dir=str(tmp_path))
    assert c["key"] != a["key"] and not c["cached"]
    d = cached_reference(target, schedule, x + 1e-3, 1.0, 1e-3, rtol=1e-8, atol=1e-8, cache_dir=str(tmp_path))
    assert d["key"] != a["key"]
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".npz")]) == 3
    with pytest.raises(TypeError, match="unexpected keyword"):
        cached_reference(target, schedule, x, 1.0, 1e-3, tol=1e-3)
