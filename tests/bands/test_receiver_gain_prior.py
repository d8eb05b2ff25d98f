"""The receivers' gain prior is the site's (`radio.receiver_gain_sd_db`), not a fixed 6 dB.

A receiver no beacon pair pins keeps its prior's variance in the window test (added to its links' held
sd), so the prior decides how much an outside receiver's evidence counts on a site with few beacons
(docs/bands.md, "The receivers' gain prior").
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from edge.bands.pipeline import BandPipeline
from edge.bands.window_detector import WindowDetector
from edge.sim import RadioParams, Simulator
from edge.sim.escapes import make_escape
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import walking
from protocols.site_config import Radio, SiteConfig


def test_the_prior_is_bounded_and_defaults_to_3_db() -> None:
    assert Radio().receiver_gain_sd_db == 3.0
    assert Radio.model_validate({"path_loss_exponent": 2.7}).receiver_gain_sd_db == 3.0  # older YAML loads
    for bad in (0.0, -1.0, 10.5, math.nan, math.inf):
        with pytest.raises(ValidationError):
            Radio(receiver_gain_sd_db=bad)


def _site(demo_site: SiteConfig, sd_db: float) -> SiteConfig:
    radio = demo_site.radio.model_copy(update={"receiver_gain_sd_db": sd_db})
    # No beacons: every receiver keeps the prior, the case the prior decides.
    return demo_site.model_copy(update={"bands": demo_site.bands[:6], "beacons": [], "radio": radio})


def test_unpinned_receivers_keep_the_sites_prior(demo_site: SiteConfig) -> None:
    pipe = BandPipeline(_site(demo_site, 4.0), site_demo_keys(demo_site), node="t")
    assert np.allclose(pipe.tracker.calibration.link_var_db2(), 16.0)
    det = pipe.detector
    assert isinstance(det, WindowDetector)
    assert np.allclose(det._gain[1], 16.0)


def test_a_tighter_prior_lets_the_outside_receivers_evidence_count(demo_site: SiteConfig) -> None:
    sites = {sd: _site(demo_site, sd) for sd in (3.0, 6.0)}
    keys = site_demo_keys(demo_site)
    sc = walking(sites[3.0], 11)
    cross = 60.0
    sc.scripts[1001] = make_escape(sites[3.0], 1001, 11, kind="stand", how="gate", cross_at=cross).script
    sim = Simulator(sites[3.0], keys, seed=11, start_ts=1000.0, scenario=sc,
                    radio=RadioParams(shadowing_db=6.0, base_loss=0.15))
    pipes = {sd: BandPipeline(s, keys, node="t") for sd, s in sites.items()}
    best = dict.fromkeys(pipes, -math.inf)
    for s in range(1, int(cross) + 50):
        now = sim.start_ts + s
        obs = sim.advance(now)
        for sd, pipe in pipes.items():
            for o in obs:
                pipe.observe_raw(o)
            pipe.tick(now)
            det = pipe.detector
            assert isinstance(det, WindowDetector)
            lr = det.last_lr[pipe.tracker.index[1001]]
            if s > cross and np.isfinite(lr):
                best[sd] = max(best[sd], float(lr))
    # The same adverts: with every receiver's gain taken as known to 3 dB, not 6, the standing escapee's
    # statistic is clearly higher (the receivers outside the gate are the ones that see them).
    assert best[3.0] > best[6.0] + 2.0, best
