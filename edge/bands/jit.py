"""The compiled tick kernels' back end: an ahead-of-time built extension module, else numba at run time.

AOT (`kernel_aot` builds it at install time): the kernels compiled by numba's pycc into a plain
extension module that imports neither numba nor llvmlite. Those two cost the agent ~120 MB of RSS
(docs/benchmarks.md, "Kernels compiled ahead of time"), more than half of the node. The module is
named after a hash of the kernel sources (`source_hash`), so a module built from other sources (an
upgrade) is never loaded: it is stale, and the kernels then run through the JIT until it is rebuilt.

JIT (the fallback, or `QWATCH_KERNELS=jit`): `numba.njit`, compiled on first use (about a second
each here) and cached on disk, so a fresh process pays only the cache load. Numba's own default
caches next to the source or under ~/.cache; a read-only install with a read-only home (a
locked-down service account) would then fail to cache and compile on every start.
`NUMBA_CACHE_DIR` wins when it is set (the agent's unit points it under its data dir) if it is
writable; otherwise the first writable of $XDG_CACHE_HOME/qwatch/numba, ~/.cache/qwatch/numba and
<tmp>/qwatch-numba-<uid> is used. The AOT module lives in that directory's `aot/`.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("qwatch.edge.bands")
# The kernels the tick calls from Python (module: names); their callees are compiled into them.
EXPORTS = {"fit_kernels": ("window_filter", "prepare_links", "fit_positions", "breach_evidence"),
           "geometry": ("_classify",), "window_kernels": ("window_lr",)}
# Every module with `@kernel` functions, this one and the build recipe: the AOT module's key hashes them all.
KERNEL_MODULES = ("fit_kernels", "geometry", "window_kernels", "jit", "kernel_aot")
AOT_PREFIX = "qwatch_kernels_"
MODE_ENV = "QWATCH_KERNELS"  # "jit" forces the numba path (the AOT build itself needs it); anything else: auto


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


def cache_dir() -> str:
    """The on-disk kernel cache directory (chosen once, exported as NUMBA_CACHE_DIR)."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen and _writable(Path(chosen)):
        return chosen
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates = [Path(xdg) / "qwatch" / "numba"] if xdg else []
    candidates.append(Path.home() / ".cache" / "qwatch" / "numba")
    candidates.append(Path(tempfile.gettempdir()) / f"qwatch-numba-{os.getuid()}")
    for c in candidates:
        if _writable(c):
            if chosen:
                log.warning("event=kernel_cache_unwritable dir=%s using=%s", chosen, c)
            os.environ["NUMBA_CACHE_DIR"] = str(c)
            return str(c)
    log.warning("event=kernel_cache_off reason=no_writable_dir")  # kernels then compile in every process
    return ""


def source_hash() -> str:
    """sha256 (first 16 hex digits) of the kernel sources: the AOT module built from them carries it in its name."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in KERNEL_MODULES:
        h.update(name.encode() + b"\0" + (here / f"{name}.py").read_bytes() + b"\0")
    return h.hexdigest()[:16]


def aot_path(cache: str) -> Path:
    """Where the AOT module of the current kernel sources is (or would be) in `cache`."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # the running interpreter's ABI: another Python is stale too
    return Path(cache) / "aot" / f"{AOT_PREFIX}{source_hash()}{suffix}"


def load_aot(cache: str) -> ModuleType | None:
    """The AOT module of the current sources in `cache`, or None (missing, stale or unloadable: a warning)."""
    path = aot_path(cache) if cache else None
    if path is None or not path.is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
        if spec is None or spec.loader is None:
            return None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except (ImportError, OSError) as e:  # a broken or foreign build: the JIT still works
        log.warning("event=kernel_aot_unloadable path=%s error=%s", path, e)
        return None
    return mod


_CACHE_DIR = cache_dir()
_AOT = None if os.environ.get(MODE_ENV, "").lower() == "jit" else load_aot(_CACHE_DIR)
_numba: Any = None
if _AOT is None:
    import numba as _numba  # here: NUMBA_CACHE_DIR must be set before numba reads its config

    if _CACHE_DIR:
        _numba.config.CACHE_DIR = _CACHE_DIR  # numba may have been imported (and configured) before us
    if os.environ.get(MODE_ENV, "").lower() != "jit":
        log.info("event=kernels_jit reason=%s", "no_cache_dir" if not _CACHE_DIR else "no_aot_module")


def backend() -> str:
    """'aot <path>' when the kernels run from the AOT module, else 'jit'."""
    return f"aot {_AOT.__file__}" if _AOT is not None else "jit"


def aot_name(fn: Callable[..., Any]) -> str:
    """The name a kernel is exported under in the AOT module (module-qualified: helpers may share names)."""
    return f"{fn.__module__.rsplit('.', 1)[-1]}__{fn.__name__}"


def kernel(fn: F) -> F:
    """The AOT build of `fn` when loaded, else `numba.njit` with the on-disk cache; the signature is kept for mypy.

    Helpers only called from other kernels are not exported: with the AOT module they stay plain Python
    here and are never called (their compiled copies are inside the exported kernels).
    """
    if _AOT is not None:
        if fn.__name__ not in EXPORTS.get(fn.__module__.rsplit(".", 1)[-1], ()):
            return fn
        return cast(F, getattr(_AOT, aot_name(fn)))  # built from these very sources (its name says so)
    return cast(F, _numba.njit(cache=bool(_CACHE_DIR), nogil=True)(fn))
