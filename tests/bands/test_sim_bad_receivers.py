"""Bad-receiver and gain-spread options of the simulated radios change exactly what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from edge.sim import AltRadioParams, RadioParams, Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.sites import layout_site


def _sim(radio: RadioParams | AltRadioParams) -> Simulator:
    site = layout_site("compound", 6)
    return Simulator(site, site_demo_keys(site), seed=4, start_ts=0.0, radio=radio)


@pytest.mark.parametrize("make", [lambda **kw: RadioParams(**kw), lambda **kw: AltRadioParams.like(6.0, 0.15, **kw)])
def test_bad_gain_and_deaf_receiver(make: object) -> None:
    plain = _sim(make())  # type: ignore[operator]
    bad = _sim(make(bad_rx=((2, -6.0),)))  # type: ignore[operator]
    deaf = _sim(make(deaf_rx=((3, -85.0),)))  # type: ignore[operator]
    d_gain = bad.channel.rx_gain - plain.channel.rx_gain
    assert d_gain[2] == pytest.approx(-6.0)
    assert np.all(np.delete(d_gain, 2) == 0.0)
    assert np.array_equal(bad.channel.tx_power_err, plain.channel.tx_power_err)
    assert np.array_equal(deaf.channel.rx_gain, plain.channel.rx_gain)
    assert deaf.channel.rx_floor[3] == -85.0
    assert np.array_equal(np.delete(deaf.channel.rx_floor, 3), np.delete(plain.channel.rx_floor, 3))
    obs = deaf.advance(120.0)
    rx3 = deaf.rx_ids[3]
    assert all(o.rssi >= -85.5 for o in obs if o.rx == rx3)
    assert any(o.rx == rx3 for o in obs) and any(o.rssi < -86 for o in obs if o.rx != rx3)
    with pytest.raises(ValueError, match="bad_rx"):
        _sim(make(bad_rx=((99, -6.0),)))  # type: ignore[operator]


def test_uniform_gain_spread() -> None:
    sim = _sim(RadioParams(rx_gain_uniform_db=2.0, band_power_uniform_db=2.0))
    assert np.all(np.abs(sim.channel.rx_gain) <= 2.0)  # the compound's offsets are 0
    assert np.all(np.abs(sim.channel.tx_power_err) <= 2.0)
    wide = _sim(RadioParams())
    assert np.abs(wide.channel.tx_power_err).max() > 0.0
