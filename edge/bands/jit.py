"""Numba set-up for the compiled tick kernels: one place that picks a writable on-disk cache.

The kernels are compiled on first use (about a second each here) and cached on disk, so a fresh
process pays only the cache load. Numba's own default caches next to the source or under
~/.cache; a read-only install with a read-only home (a locked-down service account) would then
fail to cache and compile on every start. `NUMBA_CACHE_DIR` wins when it is set (the agent may
point it under its data dir) if it is writable; otherwise the first writable of
$XDG_CACHE_HOME/qwatch/numba, ~/.cache/qwatch/numba and <tmp>/qwatch-numba-<uid> is used.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("qwatch.edge.bands")


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


_CACHE_DIR = cache_dir()

import numba  # noqa: E402  (NUMBA_CACHE_DIR must be set before numba reads its config)

if _CACHE_DIR:
    cast(Any, numba).config.CACHE_DIR = _CACHE_DIR  # numba may have been imported (and configured) before us


def kernel(fn: F) -> F:
    """`numba.njit` with the on-disk cache (when a writable dir exists); the Python signature is kept for mypy."""
    return cast(F, numba.njit(cache=bool(_CACHE_DIR), nogil=True)(fn))
