"""The simulator's two radio models: the default one unchanged, the alt one selectable and different."""

from __future__ import annotations

import numpy as np
import pytest

from edge.sim import Simulator
from edge.sim.radio_alt import AltRadioChannel, AltRadioParams
from protocols.site_config import SiteConfig


def _lines(site: SiteConfig, keys: dict[int, bytes], radio: object, seed: int = 2) -> list[str]:
    sim = Simulator(site, keys, seed=seed, start_ts=100.0, radio=radio)  # type: ignore[arg-type]
    return [o.to_json_line() for o in sim.advance(140.0)]


def test_default_radio_is_the_default_and_alt_is_deterministic_and_different(
        demo_site: SiteConfig, demo_keys: dict[int, bytes]) -> None:
    assert _lines(demo_site, demo_keys, None) == _lines(demo_site, demo_keys, "default")
    alt = _lines(demo_site, demo_keys, "alt")
    assert alt == _lines(demo_site, demo_keys, "alt")
    assert alt != _lines(demo_site, demo_keys, None)
    with pytest.raises(ValueError, match="alt"):
        Simulator(demo_site, demo_keys, radio="nonsense")


def test_alt_channel_properties(demo_site: SiteConfig, demo_keys: dict[int, bytes]) -> None:
    sim = Simulator(demo_site, demo_keys, seed=3, start_ts=0.0, radio=AltRadioParams())
    ch = sim.channel
    assert isinstance(ch, AltRadioChannel)
    assert 2.2 <= ch.exponent <= 3.2
    assert np.all((ch.rx_floor >= -98.0) & (ch.rx_floor <= -88.0))
    obs = sim.advance(120.0)
    floor = dict(zip(sim.rx_ids, ch.rx_floor.tolist(), strict=True))
    # Nothing below a receiver's own floor (RSSI is reported rounded).
    assert all(o.rssi >= floor[o.rx] - 0.5 for o in obs)
    # Shadowing is tied to the place: the same point gives the same shadow, 30 m away another one.
    p = np.array([[5.0, 5.0], [5.0, 5.0], [35.0, 5.0]])
    s = ch.spatial(p)
    assert np.allclose(s[0], s[1]) and not np.allclose(s[0], s[2])
    # Adverts do not all come at exactly 1 Hz.
    assert ch.interval_factor.min() >= 0.9 and ch.interval_factor.max() <= 1.3
    assert np.ptp(ch.interval_factor) > 0.05
