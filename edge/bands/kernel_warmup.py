"""Make the compiled tick kernels ready before the first tick (compile, or load from the disk cache).

Numba compiles a kernel on its first call. Left to the first tick, a fresh install's first tick
would take tens of seconds (every kernel compiles) and a cached one's a second or two; here that
happens when the pipeline is built, through the same wrappers the tick uses, so the argument
types (and hence the compiled specialisation) are exactly the ones the tick will ask for.

The window breach test's kernel (`window_kernels`) is reached the same way: a two-band pipeline of
the generated blocks site hears one advert per receiver and its detector tests both bands over
every window, through `WindowDetector.tick` itself (measured here before: a cold cache made the
agent's first tick 14 s late, after the 28 s of the other kernels; docs/benchmarks.md, cold start).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from edge.bands.geometry import ZoneMap, ZoneShape
from edge.bands.locate import LocateParams, locate
from edge.bands.rssi_filter import RssiWindows

log = logging.getLogger("qwatch.edge.bands")
_ready = False


def warm_up() -> float:
    """Run every kernel once on a tiny problem (first call per process only); returns the seconds spent."""
    global _ready
    if _ready:
        return 0.0
    t = time.perf_counter()
    win = RssiWindows(2, 4, 8)
    for i, level in enumerate((-60.0, -70.0, -75.0, -80.0)):
        for k in range(5):
            win.add(0, i, 1.0 + k, level + k)
            win.add(1, i, 1.0 + k, level - 5.0)
    bands = np.arange(2, dtype=np.int64)
    med, n, spread = win.filtered(bands, 6.0, 8.0)
    rx_pos = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    start = np.array([[4.0, 4.0], [np.nan, np.nan]])
    xy, _, model = locate(med, n, spread, np.full(2, -59.0), rx_pos, LocateParams(), 2.7, np.ones(4, dtype=bool),
                          start, extra_var_db2=np.zeros(4))
    pts = np.array([[1.0, 1.0], [2.0, 3.0]])
    model.delta_chi2(bands, xy, pts, model.half_log_d2(pts), np.array([0, 2], dtype=np.int64), np.zeros(2, np.int64))
    zones = ZoneMap([ZoneShape("z", "permitted", np.array([[0.0, 0.0], [5.0, 0.0], [5.0, 5.0]]))])
    zones.classify(xy, np.ones((2, 1), dtype=bool), np.zeros(1, dtype=bool), np.ones(2, dtype=bool))
    _ready = True  # before the small pipeline below, whose constructor calls warm_up again
    _warm_window()
    spent = time.perf_counter() - t
    log.info("event=kernels_ready seconds=%.2f", spent)
    return spent


def _warm_window() -> None:
    """Run the window test kernel once, through a tiny pipeline's detector (same types as a real tick)."""
    from edge.bands.pipeline import BandPipeline  # here: the pipeline imports this module
    from edge.sim.sites import blocks_site

    site = blocks_site(2, site_id="warm-up")
    keys = {b.id: bytes(16) for b in site.bands}
    pipe = BandPipeline(site, keys, node="warm-up")
    det = pipe.detector
    if det is None:
        return
    now = 100.0
    for rx in range(len(site.receivers)):
        for band in range(len(site.bands)):
            pipe.tracker.add(band, rx, now - 1.0 + 0.1 * rx, -70.0 - rx, -59)
    rows = np.arange(len(site.bands), dtype=np.int64)
    det.tick(now, rows, rows, {})
