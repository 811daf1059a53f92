"""Results as data: dataclasses saved to JSON (+ NPZ for arrays), atomic writes, resumable stores, a reference cache.

* :func:`save_result` / :func:`load_result`: any dataclass registered with :func:`result_type` (nested dataclasses,
  lists, dicts, tuples, floats including NaN/inf, NumPy arrays, torch tensors) to ``path.json`` plus, when it
  holds arrays, ``path.npz`` (loaded with ``allow_pickle=False``). Both files are written atomically (a temporary
  file in the same folder, then :func:`os.replace`), so an interrupted run never leaves a half-written result.
* :func:`provenance`: what every saved result records besides its configuration: library versions, Python,
  platform, torch's default dtype.
* :class:`ResultStore`: a JSON file of completed entries keyed by a string; a study that is interrupted and run
  again skips the keys already there.
* :func:`cached_reference`: :func:`expsolver.reference_solve` with its result cached on disk under a key hashed
  from everything that determines it (target parameters, schedule, initial state, times, backend, method,
  tolerances, output times, and the source of the reference code). The default folder is ``analysis/cache/``
  (git-ignored; ``EXPSOLVER_CACHE_DIR`` overrides it); ``cache_dir=False`` disables caching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import platform
import sys
import tempfile
from importlib import metadata

import numpy as np
import torch

__all__ = ["result_type", "save_result", "load_result", "provenance", "library_versions", "atomic_write_bytes",
           "atomic_write_json", "ResultStore", "cached_reference", "DEFAULT_CACHE_DIR", "to_jsonable",
           "from_jsonable", "fingerprint"]

DEFAULT_CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cache")
_TYPES: dict[str, type] = {}


def result_type(cls):
    """Class decorator: register a dataclass so that :func:`load_result` can rebuild it by name."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"result_type needs a dataclass, got {cls!r}")
    _TYPES[cls.__name__] = cls
    return cls


# -- provenance ---------------------------------------------------------------------------------------------------
def library_versions() -> dict:
    """Versions of Python and of the libraries a result depends on (``None`` if one is not installed)."""
    out = {"python": sys.version.split()[0]}
    for name in ("expsolver", "numpy", "torch", "scipy", "torchdiffeq", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict:
    """Library versions, platform and torch's default dtype, for every saved result."""
    return {"versions": library_versions(), "platform": platform.platform(),
            "torch_default_dtype": str(torch.get_default_dtype()), "torch_threads": torch.get_num_threads()}


# -- atomic writes ------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj) -> None:
    """``json.dump`` (indented, NaN-free: see :func:`to_jsonable`) written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8"))


# -- encoding -----------------------------------------------------------------------------------------------------
def to_jsonable(value, arrays: dict | None = None, path: str = "root"):
    """Encode ``value`` as JSON-compatible data. Arrays go into ``arrays`` (key = their path) and are referenced
    as ``{"__array__": key}``; without ``arrays`` they are written as nested lists. Non-finite floats become
    ``{"__float__": "nan" | "inf" | "-inf"}``, tuples ``{"__tuple__": [...]}`` and registered dataclasses carry
    ``"__type__"``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            # NPZ would pickle it, and results are read back with allow_pickle=False.
            raise TypeError(f"cannot save an array of dtype object (at {path}); use a numeric array or a list")
        if arrays is None:
            return {"__list_array__": to_jsonable(value.tolist()), "dtype": str(value.dtype)}
        arrays[path] = value
        return {"__array__": path}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isfinite(value):
            return value
        return {"__float__": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if value is None or isinstance(value, str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"__type__": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = to_jsonable(getattr(value, f.name), arrays, f"{path}.{f.name}")
        return out
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be str to be saved, got {key!r} at {path}")
        return {key: to_jsonable(v, arrays, f"{path}.{key}") for key, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [to_jsonable(v, arrays, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [to_jsonable(v, arrays, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"cannot save a value of type {type(value).__name__} (at {path})")


def from_jsonable(value, arrays=None):
    """Inverse of :func:`to_jsonable`."""
    if isinstance(value, list):
        return [from_jsonable(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        if arrays is None:
            raise ValueError(f"array {value['__array__']!r} referenced but no NPZ file was loaded")
        return np.array(arrays[value["__array__"]])
    if "__list_array__" in value:
        return np.array(from_jsonable(value["__list_array__"]), dtype=value["dtype"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(from_jsonable(v, arrays) for v in value["__tuple__"])
    if "__type__" in value:
        name = value["__type__"]
        if name not in _TYPES:
            _import_study_modules()
        if name not in _TYPES:
            raise ValueError(f"unknown result type {name!r}; register it with @analysis.results.result_type")
        cls = _TYPES[name]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: from_jsonable(v, arrays) for k, v in value.items() if k in names})
    return {k: from_jsonable(v, arrays) for k, v in value.items()}


def _import_study_modules() -> None:
    """Import the modules that register this package's result types (so loading works in a fresh process)."""
    from . import global_error, local_error, order, verification, work_precision  # noqa: F401


def _paths(path: str) -> tuple[str, str]:
    base = path[:-5] if path.endswith(".json") else path
    return base + ".json", base + ".npz"


def save_result(obj, path: str) -> str:
    """Save a registered dataclass (or any encodable value) to ``path`` (``.json``, plus ``.npz`` for arrays).

    Returns the JSON path. An existing ``.npz`` next to it is removed when the new result holds no arrays.
    """
    json_path, npz_path = _paths(path)
    arrays: dict = {}
    payload = {"format": "expsolver-result/1", "data": to_jsonable(obj, arrays)}
    if arrays:
        keys = {key: f"a{i}" for i, key in enumerate(arrays)}  # NPZ member names must be plain
        payload["arrays"] = keys
        buf = io.BytesIO()
        np.savez(buf, **{keys[k]: np.asarray(v) for k, v in arrays.items()})
        atomic_write_bytes(npz_path, buf.getvalue())
    elif os.path.exists(npz_path):
        os.unlink(npz_path)
    atomic_write_json(json_path, payload)
    return json_path


def load_result(path: str):
    """Load what :func:`save_result` wrote (NPZ with ``allow_pickle=False``)."""
    json_path, npz_path = _paths(path)
    with open(json_path, encoding="utf-8") as fh:
        payload = json.load(fh)
    arrays = None
    if "arrays" in payload:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {key: npz[member] for key, member in payload["arrays"].items()}
    return from_jsonable(payload["data"], arrays)


# -- resumable stores ---------------------------------------------------------------------------------------------
class ResultStore:
    """Completed entries of a study, keyed by string, persisted after every :meth:`put`.

    ``ResultStore(None)`` keeps entries in memory only. Values are anything :func:`to_jsonable` accepts; arrays
    are stored as lists (entries are small). ``config`` identifies the study: a store on disk written with a
    different configuration is discarded rather than mixed with the new one.
    """

    def __init__(self, path: str | None, config: dict | None = None):
        self.path = path
        self.config = to_jsonable(config or {})
        self._entries: dict = {}
        if path is not None and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                payload = json.load(fh)
            if payload.get("config") == self.config:
                self._entries = payload.get("entries", {})

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self):
        return list(self._entries)

    def get(self, key: str, default=None):
        return from_jsonable(self._entries[key]) if key in self._entries else default

    def put(self, key: str, value) -> None:
        self._entries[key] = to_jsonable(value)
        if self.path is not None:
            atomic_write_json(self.path, {"config": self.config, "entries": self._entries})


# -- reference cache ----------------------------------------------------------------------------------------------
def fingerprint(*parts) -> str:
    """SHA-256 hex digest of a sequence of numbers, strings, arrays, tensors, mixtures and schedules."""
    digest = hashlib.sha256()
    for part in parts:
        for chunk in _fingerprint_chunks(part):
            digest.update(chunk)
            digest.update(b"|")
    return digest.hexdigest()


def _fingerprint_chunks(part):
    from expsolver import GaussianMixture, VPSchedule

    if isinstance(part, torch.Tensor):
        part = part.detach().cpu().numpy()
    if isinstance(part, np.ndarray):
        yield f"array{part.shape}{part.dtype}".encode()
        yield np.ascontiguousarray(part).tobytes()
    elif isinstance(part, GaussianMixture):
        yield b"GaussianMixture"
        for t in (part.weights, part.means, part.covs):
            yield from _fingerprint_chunks(t)
    elif isinstance(part, VPSchedule):
        # The repr names the class and parameters; log alpha on a fixed grid pins down discrete schedules.
        yield repr(part).encode()
        grid = np.linspace(part.t_min, part.T, 257)
        yield from _fingerprint_chunks(np.array([part.log_alpha(float(t)) for t in grid]))
    elif isinstance(part, (list, tuple)):
        yield f"seq{len(part)}".encode()
        for p in part:
            yield from _fingerprint_chunks(p)
    elif isinstance(part, float):
        yield repr(part).encode()
    else:
        yield repr(part).encode()


_REFERENCE_CODE: list = []


def _reference_code() -> str:
    """The source of the modules a reference depends on (a change there invalidates the cache)."""
    if not _REFERENCE_CODE:
        import expsolver

        root = os.path.dirname(expsolver.__file__)
        text = []
        for name in ("reference.py", "gmm.py", "schedules.py", "models.py"):
            with open(os.path.join(root, name), "rb") as fh:
                text.append(fh.read().decode("utf-8", "replace"))
        _REFERENCE_CODE.append(fingerprint(*text))
    return _REFERENCE_CODE[0]


def cached_reference(target, schedule, x: torch.Tensor, t_start: float, t_end: float, *, ts=None,
                     backend: str = "scipy", method: str = "DOP853", rtol: float = 1e-12, atol: float = 1e-12,
                     cache_dir: str | None | bool = None, **kwargs):
    """:func:`expsolver.reference_solve` of ``target.as_model(schedule)``, cached on disk.

    Parameters
    ----------
    target : GaussianMixture
    schedule : VPSchedule
    x : torch.Tensor, shape (batch, d)
    t_start, t_end, ts, backend, method, rtol, atol
        As for :func:`expsolver.reference_solve`.
    cache_dir : str, None or False
        Folder of the cache (``None``: the environment variable ``EXPSOLVER_CACHE_DIR`` if set, else
        :data:`DEFAULT_CACHE_DIR`; ``False``: no cache).

    Returns
    -------
    dict
        ``x`` (tensor at ``t_end``), ``xs`` (tensor at ``ts`` or None), ``nfe``, ``status``, ``key``, ``cached``
        (whether it came from the disk).

    Raises
    ------
    RuntimeError
        The reference integration failed (a failed reference is never cached).
    """
    from expsolver import reference_solve

    if kwargs:
        raise TypeError(f"cached_reference() got unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    ts_arr = None if ts is None else np.asarray(ts, dtype=np.float64)
    key = fingerprint("reference/1", _reference_code(), target, schedule, x, float(t_start), float(t_end), ts_arr,
                      backend, method, float(rtol), float(atol))
    path = None
    if cache_dir is not False:
        folder = os.environ.get("EXPSOLVER_CACHE_DIR", DEFAULT_CACHE_DIR) if cache_dir is None else cache_dir
        path = os.path.join(folder, f"ref-{key[:32]}.npz")
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as npz:
                xs = torch.from_numpy(npz["xs"]).to(x) if "xs" in npz.files else None
                return dict(x=torch.from_numpy(npz["x"]).to(x), xs=xs, nfe=int(npz["nfe"]), status="success",
                            key=key, cached=True)
    result = reference_solve(target.as_model(schedule), schedule, x, t_start, t_end, backend=backend,
                             method=method, rtol=rtol, atol=atol, ts=ts_arr)
    if not result.success:
        raise RuntimeError(f"reference solve failed ({backend} {method}, rtol={rtol}): {result.message}")
    if path is not None:
        arrays = dict(x=result.x.detach().cpu().numpy(), nfe=np.array(result.nfe))
        if result.xs is not None:
            arrays["xs"] = result.xs.detach().cpu().numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
    return dict(x=result.x, xs=result.xs, nfe=result.nfe, status=result.status, key=key, cached=False)
