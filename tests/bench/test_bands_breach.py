"""The breach benchmark's ideal observer and scoring helpers (bench/bands_ideal.py, bench/bands_breach.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bands_breach import (
    Channel,
    RunResult,
    check_channel,
    gain_errors,
    gain_rows,
    max_in_window,
    poisson_upper,
    radio_params,
)
from bench.bands_ideal import VARIANTS, IdealObserver, calibrate_threshold, count_raises, model_check
from edge.bands.pipeline import BandPipeline
from edge.sim import RadioParams, Scenario, Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.mobility import Still
from edge.sim.radio_alt import AltRadioParams
from edge.sim.scenarios import BandScript
from edge.sim.simulator import BAND_POWER_DBM
from edge.sim.sites import layout_site


def test_ideal_observer_catches_an_easy_escape_and_not_an_inside_band() -> None:
    site = layout_site("compound", 2, shadowing_db=4.0)
    keys = site_demo_keys(site)
    out_band, in_band = site.bands[0].id, site.bands[1].id
    sc = Scenario(scripts={out_band: BandScript(mover=Still(27.0, -30.0)),  # 30 m beyond the south fence
                           in_band: BandScript(mover=Still(27.0, 17.0))})  # the middle of the yard
    sim = Simulator(site, keys, seed=1, start_ts=0.0, scenario=sc,
                    radio=RadioParams(shadowing_db=4.0, base_loss=0.15, rx_gain_uniform_db=2.0,
                                      band_power_uniform_db=2.0))
    obs = IdealObserver(site, sim, BAND_POWER_DBM, dwell_s=site.rules.breach_dwell_s, seed=1)
    for s in range(1, 81):
        for o in sim.advance(float(s)):
            obs.observe(o.ts, o.rx, o.rssi, o.data)
        obs.tick(float(s))
    for v in VARIANTS:
        _, d_out = obs.series(v, obs.index[out_band])
        _, d_in = obs.series(v, obs.index[in_band])
        assert len(d_out) >= 8
        assert d_out.min() > 30.0, v  # every window: far beyond any threshold
        assert d_in.max() < 0.0, v  # inside fits better in every window


def test_threshold_from_budget() -> None:
    rng = np.random.default_rng(0)
    # 200 null series of 100 evaluations 4 s apart: D ~ χ²(1) - 1 has an exponential tail.
    series = [[(4.0 * i, float(x)) for i, x in enumerate(rng.chisquare(1, 100) - 1.0)] for _ in range(200)]
    hours = 200 * 400 / 3600.0
    thr, how = calibrate_threshold(series, hours, budget=100.0 * 20 / hours)  # allow 20 raises
    counts = count_raises(series, np.array([thr]))
    assert how.startswith("measured") and counts[0] <= 20
    assert count_raises(series, np.array([thr - 0.5]))[0] > 20
    thr2, how2 = calibrate_threshold(series, hours, budget=0.05)  # far below one raise: extrapolated
    assert how2.startswith("extrapolated") and thr2 > thr


def test_poisson_bound_and_bursts() -> None:
    assert poisson_upper(0) == pytest.approx(2.996, abs=0.01)
    assert poisson_upper(2) == pytest.approx(6.296, abs=0.01)
    assert max_in_window([0.0, 100.0, 590.0, 700.0, 1500.0]) == 3
    assert max_in_window([]) == 0


def test_gain_errors_are_learned_minus_true_corrections() -> None:
    """A pipeline that has learned nothing (gain_dev_db 0) is off by exactly the hardware's deviation from its
    configured offset, with the sign of a correction: a receiver that reads 3 dB high needs -3 dB and was given
    0, error +3."""
    site = layout_site("demo", 4)
    keys = site_demo_keys(site)
    sim = Simulator(site, keys, seed=3, start_ts=0.0, radio=RadioParams(rx_gain_uniform_db=2.0))
    off = np.array([r.rssi_offset for r in site.receivers])
    sim.channel.rx_gain[0] = 3.0 - off[0]  # reads 3 dB higher than its configured offset says
    pipe = BandPipeline(site, keys, node="t")
    err = gain_errors(pipe, sim)
    assert err == pytest.approx((np.asarray(sim.channel.rx_gain) + off).tolist())
    assert err[0] == pytest.approx(3.0)
    res = RunResult("demo", Channel("default", 6.0, 0.15, 2.0), 1, 60.0, rx_gain_err=[1.0, 2.0, 6.0],
                    rx_ids=["a", "b", "c"])
    cols, rows = gain_rows([res, RunResult("demo", Channel("alt", 6.0, 0.15, 2.0), 2, 60.0)])
    assert len(rows) == 1  # a run without the errors has no row
    row = dict(zip(cols, rows[0], strict=True))
    assert row["shared dB"] == "+2.0" and row["max |err| dB"] == "4.0" and row["RMS dB"] == "2.38"
    assert row["per receiver (err − shared)"] == "a-1.0 b+0.0 c+4.0"


def test_default_channel_is_the_ideal_observers_model() -> None:
    channel = check_channel(RadioParams(shadowing_db=6.0, base_loss=0.15, rx_gain_uniform_db=2.0), seed=2)
    for _d, heard, heard_model, mean, mean_model in model_check(channel, float(channel.rx_gain[0]),
                                                                float(BAND_POWER_DBM), n=1500):
        assert abs(heard - heard_model) < 0.035
        if heard > 0.05:
            assert abs(mean - mean_model) < 0.8


def test_band_powers_can_spread_apart_from_the_receivers() -> None:
    site = layout_site("demo", 1)
    both = radio_params(site, Channel("default", 6.0, 0.15, 2.0))
    apart = radio_params(site, Channel("default", 6.0, 0.15, 2.0, band_gains_db=6.0))
    assert isinstance(both, RadioParams) and isinstance(apart, RadioParams)
    assert (both.rx_gain_uniform_db, both.band_power_uniform_db) == (2.0, 2.0)
    assert (apart.rx_gain_uniform_db, apart.band_power_uniform_db) == (2.0, 6.0)
    alt = radio_params(site, Channel("alt", 6.0, 0.15, 2.0, band_gains_db=6.0))
    assert isinstance(alt, AltRadioParams)
    assert (alt.rx_gain_error_db, alt.power_error_db) == (2.0, 6.0)
