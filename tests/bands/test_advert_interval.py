"""Each band's advert interval is learned from its counters, so a window counts the adverts it really sent.

A band programmed for 1.3 s (or drifting there) read at 1 s would show 23 % of its adverts missed at every
receiver, and in the window test misses are evidence of distance (docs/bands.md, "Advert interval").
"""

from __future__ import annotations

import numpy as np

from edge.bands.advert_bins import AdvertBins
from edge.bands.pipeline import BandPipeline
from edge.sim import RadioParams, Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import walking
from protocols.site_config import SiteConfig


def _run(site: SiteConfig, interval_s: float, batch: bool) -> BandPipeline:
    keys = site_demo_keys(site)
    sim = Simulator(site, keys, seed=5, start_ts=1000.0, scenario=walking(site, 5), interval_s=interval_s,
                    radio=RadioParams(shadowing_db=4.0, base_loss=0.15))
    pipe = BandPipeline(site, keys, node="t")
    for s in range(1, 181):
        now = sim.start_ts + s
        obs = sim.advance(now)
        if batch:  # replay's path
            pipe.observe_batch([o.ts for o in obs], [o.rx for o in obs], [o.rssi for o in obs],
                               [o.company_id for o in obs], [o.data.hex() for o in obs])
        else:  # the live agent's
            for o in obs:
                pipe.observe_raw(o)
        pipe.tick(now)
    return pipe


def test_each_band_interval_is_learned_from_its_counters_on_both_paths(demo_site: SiteConfig) -> None:
    site = demo_site.model_copy(update={"bands": demo_site.bands[:6]})
    for batch in (False, True):
        slow = _run(site, 1.3, batch)
        idx = np.array([slow.tracker.index[b.id] for b in site.bands])
        assert np.allclose(slow.tracker.bins.interval[idx], 1.3, atol=0.05), slow.tracker.bins.interval[idx]
        _, _, sent = slow.tracker.bins.window(idx, 1180.0, 26.0)
        assert np.allclose(sent, 25.0 / 1.3, rtol=0.05), sent  # adverts sent in 25 s at 1.3 s, not 25
    nominal = _run(site, 1.0, batch=False)
    idx = np.array([nominal.tracker.index[b.id] for b in site.bands])
    assert np.allclose(nominal.tracker.bins.interval[idx], 1.0, atol=0.02)


def test_interval_is_right_from_the_second_advert_and_follows_a_drift() -> None:
    """A band at 1.3 s is read at 1.3 s from its first pair, through BLE's 0-10 ms delay and a 12-advert gap,
    and a band whose clock drifts to 1.1 s is followed within ~60 adverts."""
    rng = np.random.default_rng(3)
    bins = AdvertBins(2, 1)
    ts, counter = 100.0, 7
    bins.note_counter(0, ts, counter)
    for i in range(4):
        step = 12 if i == 2 else 1  # a gap: eleven adverts nobody heard
        ts += step * 1.3 + rng.uniform(0, 0.01)
        counter += step
        bins.note_counter(0, ts, counter)
        assert abs(bins.interval[0] - 1.305) < 0.01, (i, bins.interval[0])
    ts = 100.0
    for i in range(200):
        ts += (1.0 if i < 100 else 1.1) + rng.uniform(0, 0.01)
        bins.note_counter(1, ts, i + 1)
        if i == 99:
            assert abs(bins.interval[1] - 1.005) < 0.005
    assert abs(bins.interval[1] - 1.105) < 0.01
