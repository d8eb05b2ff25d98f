"""Each band's advert interval is learned from its counters, so a window counts the adverts it really sent.

A band programmed for 1.3 s (or drifting there) read at 1 s would show 23 % of its adverts missed at every
receiver, and in the window test misses are evidence of distance (docs/bands.md, "Advert interval").
"""

from __future__ import annotations

import numpy as np

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
