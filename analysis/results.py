"""Results as data: dataclasses saved to JSON (+ NPZ for arrays) that carry what detects damage, atomic writes,
file locks, resumable stores, a reference cache.

* :func:`save_result` / :func:`load_result`: any dataclass registered with :func:`result_type` (nested dataclasses,
  lists, dicts, tuples, floats including NaN/inf, NumPy arrays, torch tensors) to ``path.json`` plus, when it
  holds arrays, ``path.npz`` (loaded with ``allow_pickle=False``). The JSON file records, for every array, its
  shape, dtype and a SHA-256 of its content, the key the result was computed for, and a SHA-256 of all of it; a
  truncated, altered or mismatched file (JSON or NPZ) raises :class:`ResultFileError`, which names the file.
  :func:`try_load_result` turns that into a :class:`DamagedResultWarning` and "compute it again".
* Every file is written atomically (a uniquely named temporary file in the same folder, then :func:`os.replace`),
  so an interrupted run, or two runs writing the same file, never leave a half-written or mixed file;
  :func:`file_lock` serialises what must not run twice at once (the read-merge-write of a store, the computation
  of one reference).
* :func:`provenance`: what every saved result records besides its configuration: library versions, Python,
  platform, torch's default dtype.
* :class:`ResultFolder`: results keyed by string, one file pair per key (the store of the task runner,
  :mod:`analysis.tasks`). :class:`ResultStore`: small JSON entries keyed by string in one file, each with its
  checksum, merged under a lock on every :meth:`ResultStore.put`; a study that is interrupted and run again skips
  the keys already there.
* :func:`solver_record` and :func:`solver_id`: what a saved result records of a solver object (a user's own need
  not be serialisable) and how cache keys name it; :func:`fingerprint` hashes a solver object by its class, its
  repr, its parameters and the source of its classes, so two different solvers never share a key.
* :func:`cached_reference`: :func:`expsolver.reference_solve` with its result cached on disk under a key hashed
  from everything that determines it (target parameters, schedule, initial state, times, backend, method,
  tolerances, output times, and the source of the reference code); the cached file holds that key, the shapes and
  a checksum of its arrays, so a damaged or foreign file is reported and recomputed. The default folder is
  ``analysis/cache/`` (git-ignored; ``EXPSOLVER_CACHE_DIR`` overrides it); ``cache_dir=False`` disables caching,
  and a folder that cannot be written is used read-only (with a warning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import io
import json
import math
import os
import platform
import re
import reprlib
import sys
import tempfile
import warnings
from importlib import metadata

import numpy as np
import torch

__all__ = ["result_type", "save_result", "load_result", "try_load_result", "provenance", "library_versions",
           "atomic_write_bytes", "atomic_write_json", "atomic_output", "file_lock", "ResultFileError",
           "DamagedResultWarning", "ResultFolder", "ResultStore", "cached_reference", "DEFAULT_CACHE_DIR",
           "to_jsonable", "from_jsonable", "fingerprint", "content_digest", "solver_record", "solver_id",
           "MACHINE_FIELDS", "RESULT_FORMAT", "STORE_FORMAT", "REFERENCE_FORMAT"]

#: Format tags written into every file (a file of another format is not trusted).
RESULT_FORMAT = "expsolver-result/2"
STORE_FORMAT = "expsolver-store/2"
REFERENCE_FORMAT = "expsolver-reference/2"
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


# -- damage, atomic writes, locks ----------------------------------------------------------------------------------
class ResultFileError(ValueError):
    """A results or cache file that cannot be trusted: unreadable, truncated, altered (a checksum differs), of
    another format, or computed for another key. ``path`` is the file, ``reason`` what is wrong with it."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class DamagedResultWarning(UserWarning):
    """A damaged or mismatched results or cache file was found; it is ignored and its content recomputed."""


def _warn_damaged(path: str, reason: str, action: str = "it will be recomputed") -> None:
    warnings.warn(f"{path}: {reason}; {action}", DamagedResultWarning, stacklevel=3)


@contextlib.contextmanager
def atomic_output(path: str):
    """Context manager yielding a temporary path in ``path``'s folder (a unique name, so concurrent writers never
    share one); when the block completes, the temporary file replaces ``path`` atomically (:func:`os.replace`),
    otherwise it is removed and ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_output`), flushed to disk before the rename."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_json(path: str, obj) -> None:
    """``json.dump`` (indented, NaN-free: see :func:`to_jsonable`) written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8"))


@contextlib.contextmanager
def file_lock(path: str):
    """Hold an exclusive advisory lock (POSIX ``flock``) on the file ``path``, created if needed, for the block.

    Yields ``True`` when locked. Where the lock cannot be taken (the folder is read-only, or the platform has no
    ``flock``) it yields ``False`` and the block runs unlocked: callers only lock to avoid duplicate work or to
    merge, and every write is atomic anyway.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _json_digest(obj) -> str:
    """SHA-256 of the canonical JSON text of ``obj`` (sorted keys, no spaces): the same after a JSON round trip."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _array_digest(*arrays) -> str:
    """SHA-256 of the dtypes, shapes and bytes of ``arrays``."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


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
    from . import global_error, local_error, order, race, sde_study, verification, work_precision  # noqa: F401


def _paths(path: str) -> tuple[str, str]:
    base = path[:-5] if path.endswith(".json") else path
    return base + ".json", base + ".npz"


def save_result(obj, path: str, *, key: str | None = None) -> str:
    """Save a registered dataclass (or any encodable value) to ``path`` (``.json``, plus ``.npz`` for arrays).

    The JSON file holds ``format``, ``key`` (what the result was computed for, checked by :func:`load_result`),
    ``data``, per array its NPZ member, shape, dtype and content SHA-256, and ``sha256``, a checksum of all that.
    The NPZ file is written first, so a JSON file never refers to arrays that are not there yet. Returns the JSON
    path. An existing ``.npz`` next to it is removed when the new result holds no arrays.
    """
    json_path, npz_path = _paths(path)
    arrays: dict = {}
    payload = {"format": RESULT_FORMAT, "key": key, "data": to_jsonable(obj, arrays)}
    if arrays:
        members = {}
        for i, (name, value) in enumerate(arrays.items()):
            arrays[name] = value = np.ascontiguousarray(value)
            members[name] = {"member": f"a{i}", "shape": list(value.shape), "dtype": value.dtype.str,
                             "sha256": _array_digest(value)}
        payload["arrays"] = members
        buf = io.BytesIO()
        np.savez(buf, **{members[name]["member"]: value for name, value in arrays.items()})
        atomic_write_bytes(npz_path, buf.getvalue())
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(npz_path)
    payload["sha256"] = _json_digest(payload)
    atomic_write_json(json_path, payload)
    return json_path


def load_result(path: str, *, key: str | None = None):
    """Load what :func:`save_result` wrote (NPZ with ``allow_pickle=False``), after checking it.

    Raises
    ------
    FileNotFoundError
        There is no JSON file at ``path``.
    ResultFileError
        The JSON or NPZ file is not valid (truncated, emptied, flipped bytes), of another format, altered (a
        checksum, shape or dtype differs from what was recorded when it was written), or was written for a key
        other than ``key`` (when given). The message names the file.
    """
    json_path, npz_path = _paths(path)
    with open(json_path, "rb") as fh:
        raw = fh.read()
    try:
        payload = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ResultFileError(json_path, f"not valid JSON, truncated or damaged ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != RESULT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ResultFileError(json_path, f"format {found!r}, expected {RESULT_FORMAT!r}")
    recorded = payload.pop("sha256", None)
    if recorded != _json_digest(payload):
        raise ResultFileError(json_path, "checksum mismatch: the file was altered or damaged")
    if key is not None and payload.get("key") != key:
        raise ResultFileError(json_path, f"computed for key {payload.get('key')!r}, not {key!r}")
    arrays = None
    if "arrays" in payload:
        arrays = {}
        try:
            npz = np.load(npz_path, allow_pickle=False)
        except FileNotFoundError:
            raise ResultFileError(npz_path, "missing (the JSON file next to it refers to its arrays)") from None
        except Exception as exc:  # a damaged file fails in many ways (zip, NPY header, pickle refused, ...)
            raise ResultFileError(npz_path, f"unreadable ({type(exc).__name__}: {exc})") from None
        with npz:
            for name, record in payload["arrays"].items():
                try:
                    value = npz[record["member"]]
                except Exception as exc:
                    raise ResultFileError(npz_path, f"array {name!r} unreadable ({type(exc).__name__}: {exc})") \
                        from None
                if list(value.shape) != record["shape"] or value.dtype.str != record["dtype"]:
                    raise ResultFileError(npz_path, f"array {name!r} has shape {value.shape} and dtype "
                                                    f"{value.dtype.str}, expected {tuple(record['shape'])} and "
                                                    f"{record['dtype']}")
                if _array_digest(value) != record["sha256"]:
                    raise ResultFileError(npz_path, f"array {name!r}: content hash mismatch (altered or damaged)")
                arrays[name] = value
    return from_jsonable(payload["data"], arrays)


def try_load_result(path: str, key: str | None = None, default=None):
    """:func:`load_result`, or ``default`` when the file is missing or cannot be trusted (then a
    :class:`DamagedResultWarning` names the file and says why: the caller computes the result again)."""
    try:
        return load_result(path, key=key)
    except FileNotFoundError:
        return default
    except ResultFileError as exc:
        _warn_damaged(exc.path, exc.reason)
        return default


class ResultFolder:
    """Results keyed by string in a folder: one :func:`save_result` file pair per key, named by a readable prefix
    of the key and a hash of it, and holding the key itself (a file found under another key's name is not used).

    A damaged or mismatched file reads as missing (with a :class:`DamagedResultWarning`) and is overwritten by the
    next :meth:`put` of its key. Writes are atomic, so two processes putting the same key (the same deterministic
    result) leave one valid file.
    """

    def __init__(self, folder: str):
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path, got {type(folder).__name__}")
        self.folder = os.fspath(folder)

    def path(self, key: str) -> str:
        """The JSON path of ``key``."""
        prefix = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", key.split("#")[0])[:60].strip("_.")
        return os.path.join(self.folder, f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json")

    def get(self, key: str, default=None):
        """The result stored under ``key``, or ``default`` if there is none (or it is damaged)."""
        return try_load_result(self.path(key), key=key, default=default)

    def put(self, key: str, value) -> str:
        """Store ``value`` under ``key``; returns the JSON path."""
        return save_result(value, self.path(key), key=key)


# -- resumable stores ---------------------------------------------------------------------------------------------
class ResultStore:
    """Completed entries of a study, keyed by string, persisted after every :meth:`put`.

    ``ResultStore(None)`` keeps entries in memory only. Values are anything :func:`to_jsonable` accepts; arrays
    are stored as lists (entries are small). ``config`` identifies the study: a store on disk written with a
    different configuration is discarded rather than mixed with the new one. Every entry carries a checksum: a
    file that cannot be read (truncated, damaged) or another configuration's file is reported with a
    :class:`DamagedResultWarning` and its entries are computed again; a damaged entry alone is dropped alone.
    :meth:`put` re-reads the file under a lock (:func:`file_lock` on ``path + ".lock"``) and merges, so processes
    sharing one store never lose each other's entries.
    """

    def __init__(self, path: str | None, config: dict | None = None):
        self.path = path
        self.config = to_jsonable(config or {})
        self._entries: dict = {} if path is None else self._read(report=True)

    def _read(self, report: bool) -> dict:
        """The valid entries of the file for this configuration (reporting what is not trusted if ``report``)."""
        def bad(reason):
            if report:
                _warn_damaged(self.path, reason, "its entries will be computed again")
            return {}

        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        try:
            payload = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            return bad(f"not valid JSON, truncated or damaged ({exc})")
        if (not isinstance(payload, dict) or payload.get("format") != STORE_FORMAT
                or not isinstance(payload.get("entries"), dict) or not isinstance(payload.get("sha256"), dict)):
            return bad(f"not a results store of format {STORE_FORMAT!r}")
        if payload.get("config") != self.config:
            return bad("written for another configuration")
        entries, damaged = {}, []
        for key, value in payload["entries"].items():
            if payload["sha256"].get(key) == _json_digest([key, value]):
                entries[key] = value
            else:
                damaged.append(key)
        if damaged and report:
            _warn_damaged(self.path, f"{len(damaged)} entries fail their checksum (first: {damaged[0]!r})",
                          "they will be computed again")
        return entries

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
        if self.path is None:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with file_lock(self.path + ".lock"):
            merged = self._read(report=False)
            merged.update(self._entries)
            self._entries = merged
            atomic_write_json(self.path, {"format": STORE_FORMAT, "config": self.config, "entries": merged,
                                          "sha256": {k: _json_digest([k, v]) for k, v in merged.items()}})


# -- reference cache ----------------------------------------------------------------------------------------------
def fingerprint(*parts) -> str:
    """SHA-256 hex digest of a sequence of numbers, strings, arrays, tensors, mixtures, schedules, and of lists,
    tuples, dicts and dataclasses of them (by content); functions and classes count by their import path, objects of
    the solver protocol by their class's import path, repr, parameters and the source of their classes."""
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
    elif isinstance(part, dict):
        # By content, in key order: a repr would abbreviate large arrays ("...") and depend on insertion order.
        yield f"dict{len(part)}".encode()
        for key in sorted(part, key=repr):
            yield from _fingerprint_chunks(key)
            yield from _fingerprint_chunks(part[key])
    elif _is_solver(part):
        # Not by repr alone: the protocol's repr is the solver's name, which two differently parametrised rules
        # (or two versions of one rule) may share.
        yield f"solver {_type_path(type(part))}".encode()
        yield repr(part).encode()
        yield from _fingerprint_chunks(_class_sources(type(part)))
        yield from _fingerprint_chunks(_solver_parameters(part, private=True))
    elif dataclasses.is_dataclass(part) and not isinstance(part, type):
        yield f"dataclass {type(part).__module__}.{type(part).__qualname__}".encode()
        for f in dataclasses.fields(part):
            yield f.name.encode()
            yield from _fingerprint_chunks(getattr(part, f.name))
    elif callable(part) and hasattr(part, "__qualname__"):
        # A function or class by its import path (its repr holds a memory address).
        yield f"callable {part.__module__}.{part.__qualname__}".encode()
    else:
        yield repr(part).encode()


# -- solver objects -------------------------------------------------------------------------------------------------
def _is_solver(value) -> bool:
    """Whether ``value`` is an object of the solver protocol (:func:`expsolver.driver.check_solver`)."""
    from expsolver.driver import check_solver

    if isinstance(value, type) or not (hasattr(value, "step") and hasattr(value, "plan")):
        return False  # the common case, without building check_solver's message
    try:
        check_solver(value)
    except TypeError:
        return False
    return True


def _type_path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.lru_cache(maxsize=256)
def _class_sources(cls) -> tuple:
    """The source of ``cls`` and of its base classes (``object`` aside), where Python can find it (a class typed
    into an interactive session has none: its import path stands in)."""
    sources = []
    for base in cls.__mro__[:-1]:
        try:
            sources.append(inspect.getsource(base))
        except (OSError, TypeError):
            sources.append(_type_path(base))
    return tuple(sources)


def _solver_parameters(solver, private: bool = False) -> dict:
    """The data attributes of a solver object: those set on its classes (e.g. a Runge-Kutta rule's ``c2``) and on
    the instance (its ``__dict__`` or slots), the instance's last. Methods and descriptors are not parameters;
    names starting with ``_`` are left out unless ``private``."""
    def wanted(key):
        return not key.startswith("__") and (private or not key.startswith("_"))

    params, slots = {}, []
    for cls in reversed(type(solver).__mro__[:-1]):
        for key, value in vars(cls).items():
            if wanted(key) and not (callable(value) or inspect.isdatadescriptor(value)
                                    or inspect.ismethoddescriptor(value)):
                params[key] = value
        slots += [cls.__slots__] if isinstance(cls.__dict__.get("__slots__"), str) else list(
            cls.__dict__.get("__slots__", ()))
    for key in slots:
        if wanted(key) and hasattr(solver, key):
            params[key] = getattr(solver, key)
    params.update((key, value) for key, value in getattr(solver, "__dict__", {}).items() if wanted(key))
    return params


def solver_record(solver) -> dict:
    """What a saved result records of a solver object, which is not saved itself (a user's solver need not be
    JSON-serialisable): ``type`` (its class's import path), ``repr``, the declared ``order`` and ``parameters``, the
    (abbreviated) reprs of its data attributes, class-level ones included."""
    params = _solver_parameters(solver)
    return dict(type=_type_path(type(solver)), repr=repr(solver), order=int(solver.order),
                parameters={key: reprlib.repr(params[key]) for key in sorted(params) if key not in ("order", "name")})


def solver_id(solver) -> str:
    """The name of a solver object in cache keys: ``"module.Class(repr)#digest"``, the digest a
    :func:`fingerprint` of the object (its class, repr, parameters and the source of its classes). Two solvers
    that differ in any of these get different ids, so a cached result is never reused for another solver."""
    return f"{_type_path(type(solver))}({solver!r})#{fingerprint(solver)[:24]}"


#: Fields that record where and how fast a result was computed, not what it is (:func:`content_digest`).
MACHINE_FIELDS = ("provenance", "timings", "seconds", "runtime_s", "study_seconds", "optimization_time_s",
                  "optimisation_time_s", "reference_time_s", "training_seconds")


def content_digest(obj, ignore=MACHINE_FIELDS) -> str:
    """SHA-256 of everything :func:`save_result` would save of ``obj`` (arrays by content, floats exactly),
    leaving out, at any depth, the dict entries and dataclass fields named in ``ignore`` (by default
    :data:`MACHINE_FIELDS`: provenance and timings). Equal digests mean bitwise equal results: how to check that a
    result does not depend on where it was computed."""
    arrays: dict = {}
    data = to_jsonable(obj, arrays)

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ignore}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    kept = strip(data)
    referenced = sorted(k for k in arrays if not set(_path_names(k)) & set(ignore))
    return fingerprint(_json_digest(kept), [(k, arrays[k]) for k in referenced])


def _path_names(path: str) -> list:
    """The field and key names along an array's path (``root.curves[0].median`` -> root, curves, median)."""
    return re.split(r"[.\[\]]+", path)


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

    The cache file ``ref-<key>.npz`` holds the states, the NFE, the full key and a SHA-256 of the arrays; one that
    is unreadable, altered, of another shape or written for another key is reported
    (:class:`DamagedResultWarning`, naming the file) and replaced by a fresh solve. Concurrent processes that need
    the same reference solve it once: the first holds a lock (:func:`file_lock`) while the others wait and then
    read its file. A folder that cannot be written is used without storing anything (with a warning).

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
    shapes = (tuple(x.shape), None if ts_arr is None else (len(ts_arr),) + tuple(x.shape))

    def hit(found):
        xs = None if found["xs"] is None else torch.from_numpy(found["xs"]).to(x)
        return dict(x=torch.from_numpy(found["x"]).to(x), xs=xs, nfe=found["nfe"], status="success", key=key,
                    cached=True)

    path = None
    if cache_dir is not False:
        folder = os.environ.get("EXPSOLVER_CACHE_DIR", DEFAULT_CACHE_DIR) if cache_dir is None else cache_dir
        path = os.path.join(folder, f"ref-{key[:32]}.npz")
        found = _read_reference(path, key, shapes)
        if found is not None:
            return hit(found)
    if path is not None and not _usable_folder(os.path.dirname(path)):
        path = None
    with contextlib.ExitStack() as stack:
        if path is not None:
            lock = path[:-4] + ".lock"
            if stack.enter_context(file_lock(lock)):
                # Removed while still held (callbacks run in reverse): a process that waited on it finds the file.
                stack.callback(_remove, lock)
                # Whoever held the lock before may have just written the file.
                found = _read_reference(path, key, shapes, report=False)
                if found is not None:
                    return hit(found)
        result = reference_solve(target.as_model(schedule), schedule, x, t_start, t_end, backend=backend,
                                 method=method, rtol=rtol, atol=atol, ts=ts_arr)
        if not result.success:
            raise RuntimeError(f"reference solve failed ({backend} {method}, rtol={rtol}): {result.message}")
        if path is not None:
            _write_reference(path, key, result)
    return dict(x=result.x, xs=result.xs, nfe=result.nfe, status=result.status, key=key, cached=False)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _usable_folder(folder: str) -> bool:
    """Create the cache folder if needed; ``False`` (with a warning) when that is not possible."""
    try:
        os.makedirs(folder, exist_ok=True)
        return True
    except OSError as exc:
        warnings.warn(f"reference cache folder {folder} cannot be created ({exc}); running without the cache",
                      DamagedResultWarning, stacklevel=3)
        return False


def _read_reference(path: str, key: str, shapes: tuple, report: bool = True) -> dict | None:
    """The cached arrays at ``path`` if present and trustworthy for ``key`` and ``shapes`` (``x`` and ``xs``);
    ``None`` otherwise (reported as damaged when the file exists, if ``report``)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            members = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged file fails in many ways (zip, NPY header, pickle refused, ...)
        reason = f"unreadable ({type(exc).__name__}: {exc})"
    else:
        xs = members.get("xs")
        if str(members.get("format", "")) != REFERENCE_FORMAT or not {"x", "nfe", "key", "sha256"} <= set(members):
            reason = f"not a reference of format {REFERENCE_FORMAT!r}"
        elif str(members["key"]) != key:
            reason = f"computed for key {str(members['key'])[:16]}..., not {key[:16]}..."
        elif members["x"].shape != shapes[0] or (None if xs is None else xs.shape) != shapes[1]:
            reason = (f"wrong shapes: x {members['x'].shape}, xs {None if xs is None else xs.shape}; expected "
                      f"{shapes[0]} and {shapes[1]}")
        elif str(members["sha256"]) != _reference_digest(members["x"], xs, members["nfe"]):
            reason = "content hash mismatch (altered or damaged)"
        else:
            return dict(x=members["x"], xs=xs, nfe=int(members["nfe"]))
    if report:
        _warn_damaged(path, reason, "the reference will be solved again")
    return None


def _reference_digest(x, xs, nfe) -> str:
    return _array_digest(*(a for a in (x, xs, np.asarray(nfe, dtype=np.int64)) if a is not None))


def _write_reference(path: str, key: str, result) -> None:
    arrays = dict(x=result.x.detach().cpu().numpy(), nfe=np.array(result.nfe, dtype=np.int64))
    if result.xs is not None:
        arrays["xs"] = result.xs.detach().cpu().numpy()
    arrays.update(format=np.array(REFERENCE_FORMAT), key=np.array(key),
                  sha256=np.array(_reference_digest(arrays["x"], arrays.get("xs"), arrays["nfe"])))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        warnings.warn(f"reference cache folder {os.path.dirname(path)} is not writable ({exc}); running without "
                      f"storing references", DamagedResultWarning, stacklevel=3)
