"""Build the tick kernels ahead of time into an extension module that needs neither numba nor llvmlite.

Run at install (`make venv`, `qwatch-edge install`, `qwatch-edge doctor --warm-kernels`) through
`prepare()`, never by the agent: the build imports numba and takes ~10-30 s here. The sources are
the `@kernel` functions themselves (one source of truth); numba's pycc compiles each exported kernel
(`jit.EXPORTS`) with the exact signature the tick asks for, which `warm_up` has just made the JIT
compile (all arrays C-contiguous, as the callers make them), into `<cache>/aot/` under a name keyed
by the sources' hash (`jit.aot_path`). The code is built for the generic CPU of the platform (no
host-specific instructions), so a cloned SD card on another Pi model still loads it. Without
fastmath neither back end reorders floating-point operations, so both give the same bits
(`tests/bands/test_kernel_aot.py`). Needs a C compiler and the Python headers (gcc, python3-dev);
if the build fails the agent runs the kernels through the JIT, as before, and `doctor` says so.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from edge.bands import jit
from edge.bands.kernel_warmup import warm_up

log = logging.getLogger("qwatch.edge.bands")
KEEP_STALE = 4  # ~1 MB each


def _compile(target: Path) -> None:
    """pycc-compile every exported kernel (the JIT must be this process's back end) into `target`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc is deprecated (pending); it is still the supported AOT path in 0.68
        pycc: Any = importlib.import_module("numba.pycc")  # untyped
    cc = pycc.CC(target.name.split(".")[0])
    for module, names in jit.EXPORTS.items():
        mod = importlib.import_module(f"edge.bands.{module}")
        for name in names:
            dispatcher = getattr(mod, name)
            sigs = dispatcher.nopython_signatures
            if len(sigs) != 1:  # the tick must ask for exactly one specialisation of each kernel
                raise RuntimeError(f"{module}.{name}: {len(sigs)} compiled signatures after warm-up, expected 1")
            cc.export(jit.aot_name(dispatcher.py_func), sigs[0])(dispatcher.py_func)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        cc.output_dir = str(work)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cc.compile()
        built = [p for p in work.iterdir() if p.name.startswith(jit.AOT_PREFIX)]
        if len(built) != 1:
            raise RuntimeError(f"pycc left {len(built)} modules in {work}")
        built[0].replace(target)  # atomic: a starting agent sees the old state or the whole module
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(cache: str | None = None) -> Path | None:
    """The AOT module of the current sources in `cache` (built if missing); None if it cannot be built."""
    cache = jit.cache_dir() if cache is None else cache
    if not cache:
        log.warning("event=kernel_aot_build_failed reason=no_writable_cache_dir")
        return None
    target = jit.aot_path(cache)
    if target.is_file():
        return target
    if jit.backend() != "jit":
        raise RuntimeError("the AOT build needs the JIT kernels: run it with QWATCH_KERNELS=jit")
    target.parent.mkdir(parents=True, exist_ok=True)
    warm_up()  # the tick's signatures (compiled by the JIT, or loaded from its cache)
    try:
        _compile(target)
    except Exception as e:  # compiler or headers missing, link error...: the JIT still works
        log.warning("event=kernel_aot_build_failed error=%s: %s", type(e).__name__, e)
        return None
    # Stale ones (other sources, another Python) are not loaded; keep a few (checkouts may share a cache dir).
    old = sorted(target.parent.glob(f"{jit.AOT_PREFIX}*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in old[KEEP_STALE + 1:]:
        stale.unlink(missing_ok=True)
    return target


def prepare() -> tuple[bool, str]:
    """Make the kernels ready for the agent: the JIT cache warm and the AOT module built (ok?, a line to print)."""
    spent = warm_up()
    if jit.backend() != "jit":
        return True, f"tick kernels: {jit.backend()} (up to date); warm-up {spent:.1f} s"
    path = build()
    if path is None:
        return False, (f"tick kernels: JIT only, warm in {jit.cache_dir() or '(no cache)'} ({spent:.1f} s); the AOT "
                       "build FAILED (see the warning above; it needs gcc and python3-dev): the agent will run on "
                       "the JIT, with ~120 MB more RSS")
    return True, f"tick kernels: JIT warm in {jit.cache_dir()} ({spent:.1f} s); AOT module {path}"
