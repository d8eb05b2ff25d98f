"""Beacon calibration must not be biased by links near the reception floor (simulator, no sockets).

On a site whose beacons are heard only 10-20 dB above the floor (one receiver per 30 × 16 m block,
like bench/bands_speed.py's 500-band site), only the lucky samples of the longer beacon links
arrive. Averaged as they are, they read high, more so the longer the link, and the fitted
path-loss exponent came out 2.20-2.24 for a true 2.7 (five seeds); the inflated distances then put
weakly heard bands tens of metres outside their blocks. The calibration now sees the localiser's
truncation-corrected medians and skips pairs within 5 dB of the measured floor.
"""

from __future__ import annotations

import pytest

from edge.bands.pipeline import BandPipeline
from edge.sim import Simulator
from edge.sim.keys import demo_keys
from edge.sim.sites import blocks_site


@pytest.mark.parametrize("seed", [1, 5])
def test_exponent_not_dragged_down_by_links_near_the_floor(seed: int) -> None:
    site = blocks_site(40)
    assert site.radio.path_loss_exponent == 2.7  # the simulator's true exponent is the configured one
    keys = demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons])
    sim = Simulator(site, keys, seed=seed, start_ts=1_700_000_000.0)
    pipe = BandPipeline(site, keys, node="t")
    t = sim.start_ts
    for _ in range(240):
        for o in sim.advance(t + 1.0):
            pipe.observe_raw(o)
        t += 1.0
        pipe.tick(t)
    exponent = pipe.calibration()["path_loss_exponent"]
    # Before the fix: 2.20-2.24 on these seeds; after: 2.45-2.60.
    assert 2.4 <= exponent <= 3.0, exponent
    assert pipe.tracker.floor_dbm is not None
    assert pipe.tracker.calibration.floor_dbm == pytest.approx(pipe.tracker.floor_dbm + 5.0)
