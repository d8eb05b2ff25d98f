"""The tick kernels built ahead of time (`edge.bands.kernel_aot`) give the JIT's results bit for bit, without numba.

Each back end runs in its own process (the choice is made once, at import): a 20-band compound site
with four bands escaping, 4 minutes of simulated adverts through `BandPipeline` (every fix, its
Δχ² evidence, zone facts and every alert), plus the window test on the inside/fence/outside cases of
`test_window_kernels`. Floats are compared through `repr`, which round-trips exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.bands import jit

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r'''
import hashlib, json, sys
import numpy as np
import pytest

from edge.bands import jit
from edge.bands.pipeline import BandPipeline
from edge.bands.window_test import Candidates, WindowParams, run_test
from edge.sim import Simulator
from edge.sim.escapes import make_escape
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import Scenario
from edge.sim.sites import layout_site
from tests.bands.test_window_kernels import FIELDS, _cases
from tests.bands.test_window_test import _site

site = layout_site("compound", 20)
keys = site_demo_keys(site)
scripts = {}
for i, b in enumerate(site.bands[:4]):
    e = make_escape(site, b.id, i, kind=("stand", "walk")[i % 2], how="fence", cross_at=40.0 + 15 * i,
                    duration_s=300.0)
    scripts[e.band] = e.script
sim = Simulator(site, keys, seed=5, start_ts=0.0, scenario=Scenario(scripts=scripts))
pipe = BandPipeline(site, keys, node="aot-test")
h = hashlib.sha256()
n_alerts = n_evidence = n_fixes = 0
for s in range(1, 241):
    for o in sim.advance(float(s)):
        for a in pipe.observe_raw(o):
            h.update(repr(a).encode())
            n_alerts += 1
    for a in pipe.tick(float(s)):
        h.update(repr(a).encode())
        n_alerts += 1
    for band, fix in sorted(pipe._fixes.items()):
        h.update(f"{band} {fix!r}".encode())
        n_fixes += 1
        n_evidence += fix.evidence > 0
w = hashlib.sha256()
wsite = _site()
rx = np.array([r.position for r in wsite.receivers], dtype=float)
cand = Candidates(wsite, rx, WindowParams(outside_spacing_m=6.0, outside_pad_m=40.0))
n_lr = 0
for seed in (1, 2, 3):
    res = run_test(cand, _cases(wsite, cand, seed))
    for f in FIELDS:
        w.update(repr(np.asarray(getattr(res, f)).tolist()).encode())
    n_lr += int(np.isfinite(res.lr).sum())
print(json.dumps({"backend": jit.backend(), "numba": "numba" in sys.modules, "pipeline": h.hexdigest(),
                  "window": w.hexdigest(), "alerts": n_alerts, "fixes": n_fixes, "evidence": int(n_evidence),
                  "lr": n_lr}))
'''


def _run(code: str, **env: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def _child(mode: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(_run(_CHILD, QWATCH_KERNELS=mode))
    return out


def test_aot_kernels_equal_the_jit_bit_for_bit_without_importing_numba() -> None:
    # As `make venv` / `qwatch-edge install` do (a no-op when the module of these sources is there).
    built = _run("from edge.bands.kernel_aot import build; print(build())", QWATCH_KERNELS="jit")
    assert built == str(jit.aot_path(jit.cache_dir())), "the AOT build failed (needs gcc and python3-dev)"
    ref = _child("jit")
    aot = _child("auto")
    assert ref["backend"] == "jit" and ref["numba"]
    assert aot["backend"] == f"aot {built}" and not aot["numba"]  # numba/llvmlite: ~120 MB of RSS not loaded
    assert ref["alerts"] > 0 and ref["evidence"] > 100 and ref["lr"] > 60  # the inputs exercise every kernel
    for key in ("pipeline", "window", "alerts", "fixes", "evidence", "lr"):
        assert aot[key] == ref[key], key


def test_a_module_built_from_other_sources_is_not_loaded(tmp_path: Path) -> None:
    """Keyed by the sources' hash: an upgrade leaves the old module stale and the kernels run on the JIT."""
    aot_dir = tmp_path / "aot"
    aot_dir.mkdir()
    real = Path(jit.aot_path(jit.cache_dir()))
    stale = aot_dir / real.name.replace(jit.source_hash(), "0" * 16)
    stale.write_bytes(real.read_bytes() if real.is_file() else b"not a module")
    code = "from edge.bands import jit; print(jit.backend())"
    assert _run(code, NUMBA_CACHE_DIR=str(tmp_path)) == "jit"
    broken = jit.aot_path(str(tmp_path))
    broken.write_bytes(b"\x7fELF truncated")  # the current name but unloadable: a warning, then the JIT
    assert _run(code, NUMBA_CACHE_DIR=str(tmp_path)) == "jit"


def test_doctor_reports_the_aot_module_and_then_does_not_ask_for_the_jit_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.doctor_checks import check_kernel_cache

    built = _run("from edge.bands.kernel_aot import build; print(build())", QWATCH_KERNELS="jit")
    assert built != "None", "the AOT build failed (needs gcc and python3-dev)"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    (tmp_path / "aot").mkdir()
    (tmp_path / "aot" / Path(built).name).write_bytes(Path(built).read_bytes())  # as if installed here
    jit_cache, aot = check_kernel_cache(warm=False)
    assert aot.status == "pass" and "without numba" in aot.detail and str(tmp_path) in aot.detail
    assert jit_cache.status == "pass" and "not used while the AOT module loads" in jit_cache.detail
