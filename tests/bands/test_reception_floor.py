"""The silent-receiver threshold follows the reception floor the receivers actually show."""

from __future__ import annotations

import numpy as np

from edge.bands.tracker import Tracker, TrackerParams
from edge.sim.scenarios import escape, walking
from protocols.site_config import SiteConfig


def _feed(tracker: Tracker, levels: np.ndarray) -> float:
    """Add samples 10 ms apart; return a tick time just after the last one."""
    for k, level in enumerate(levels.tolist()):
        tracker.add(k % len(tracker.ids), k % len(tracker.rx_ids), float(k) * 0.01, round(level), -59)
    return len(levels) * 0.01 + 0.5


def test_threshold_moves_with_the_measured_floor(demo_site: SiteConfig) -> None:
    rng = np.random.default_rng(3)
    ids = [b.id for b in demo_site.bands]
    default = Tracker(demo_site, ids).locate_params.heard_threshold_dbm
    for sensitivity in (-90.0, -105.0):
        tracker = Tracker(demo_site, ids, TrackerParams(floor_min_samples=1000))
        # Receivers that hear nothing below `sensitivity`: what reaches them is truncated there.
        levels = rng.normal(-80.0, 10.0, 20000)
        tracker.estimate(_feed(tracker, levels[levels >= sensitivity]))
        # A thin tail near the floor reads it a little high: the safe side (weaker silence penalty).
        assert tracker.floor_dbm is not None and sensitivity - 0.5 <= tracker.floor_dbm <= sensitivity + 4.0
        assert tracker.locate_params.heard_threshold_dbm == tracker.floor_dbm + tracker.p.heard_above_floor_db
    # Too few samples: the default stands (a fresh node must not guess from a handful).
    young = Tracker(demo_site, ids)
    young.estimate(_feed(young, rng.normal(-80.0, 10.0, 100)))
    assert young.floor_dbm is None and young.locate_params.heard_threshold_dbm == default


def test_escape_scenario_crosses_the_outer_fence_not_an_inner_edge(demo_site: SiteConfig) -> None:
    """block-a's north edge borders the yard: leaving over it is not an escape."""
    sc = walking(demo_site, 5)
    for band in [b.id for b in demo_site.bands][:12]:
        script = escape(demo_site, band, 5, cross_at=100.0, how="fence", out_m=20.0)
        sc.scripts[band] = script
        x, y = script.mover.position(100.0 + 20.0 / 1.3 + 1.0)
        # 20 m beyond the outer fence of the compound (0..30 × 0..36), in some direction.
        out = max(-x, x - 30.0, -y, y - 36.0)
        assert out >= 19.0, (band, x, y)
