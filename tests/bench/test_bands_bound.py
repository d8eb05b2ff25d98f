"""The breach bound's ideal observer (bench/ideal_model.py, bench/bands_bound.py) on small data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.bands_bound import (
    EVAL_S,
    THRESHOLDS,
    IdealGLR,
    Job,
    JobResult,
    World,
    pick_threshold,
    raise_counts,
    render,
    simulate_world,
)
from bench.bands_breach import Channel, previous_ideal
from bench.ideal_model import AltModel, DefaultModel, V, Window
from edge.sim.mobility import Still
from edge.sim.radio import RadioChannel, RadioParams
from edge.sim.radio_alt import AltRadioChannel, AltRadioParams
from edge.sim.scenarios import BandScript
from edge.sim.sites import layout_site


def _marginal(model: DefaultModel | AltModel, m: float, k: int, rx: int = 0) -> tuple[float, float]:
    """(P(heard), mean heard RSSI) of one advert at link mean m, from the model's own one-advert table."""
    xs = np.arange(-130, -20)
    lik = []
    for x in xs:
        w = Window(np.ones((1, 1, 1), bool), np.full((1, 1, 1), float(x)), np.zeros((1, 1)), np.ones((1, 1), bool))
        lik.append(_table_at(model, w, m, k, rx))
    w = Window(np.zeros((1, 1, 1), bool), np.zeros((1, 1, 1)), np.zeros((1, 1)), np.ones((1, 1), bool))
    p_miss = math.exp(_table_at(model, w, m, k, rx))
    p = np.exp(np.array(lik))
    # The heard terms drop the position-free factor P(heard | RSSI = x): put it back to normalise.
    ok = p * _hear_curve(model, xs, rx)
    scale = (1.0 - p_miss) / ok.sum()
    return 1.0 - p_miss, float((ok * scale * xs).sum() / (1.0 - p_miss))


def _hear_curve(model: DefaultModel | AltModel, xs: np.ndarray, rx: int) -> np.ndarray:
    if isinstance(model, AltModel):
        floor, a = model.floor[rx], model.alt
        return np.where(xs >= floor, 1.0 / (1.0 + np.exp(-(xs - floor - 2.0) / a.floor_width_db)), 0.0)
    return np.where(xs >= model.floor[rx], 1.0 / (1.0 + np.exp(-(xs - model.knee[rx]) / model.width)), 0.0)


def _table_at(model: DefaultModel | AltModel, w: Window, m: float, k: int, rx: int) -> float:
    tab = model.tables(w, (2.0,))  # (1, R, 1, V, K)
    return float(np.interp(m, V, tab[0, rx, 0, :, k]))


@pytest.mark.parametrize("radio", ["default", "alt"])
def test_model_is_the_channel(radio: str) -> None:
    """Heard share and mean heard RSSI of the model's per-advert distribution = the channel's own samples."""
    rng = np.random.default_rng(5)
    n_tx, dists = 4, np.array([4.0, 9.0, 16.0, 26.0])

    def channel(seed: int) -> RadioChannel | AltRadioChannel:
        # The same hidden gains, exponent and floor in every draw; a fresh shadow field, heading and burst state.
        r = np.random.default_rng(seed)
        if radio == "alt":
            alt = AltRadioChannel(AltRadioParams.like(6.0, 0.15), np.zeros((1, 2)), np.zeros(1), n_tx, r)
            fix_alt = AltRadioChannel(AltRadioParams.like(6.0, 0.15), np.zeros((1, 2)), np.zeros(1), n_tx,
                                      np.random.default_rng(0))
            alt.exponent, alt.rx_floor = fix_alt.exponent, fix_alt.rx_floor
            alt.rx_gain, alt.tx_power_err = fix_alt.rx_gain, fix_alt.tx_power_err
            return alt
        c = RadioChannel(RadioParams(shadowing_db=6.0, base_loss=0.15), np.zeros((1, 2)), np.zeros(1), n_tx, r)
        fix = RadioChannel(RadioParams(shadowing_db=6.0, base_loss=0.15), np.zeros((1, 2)), np.zeros(1), n_tx,
                           np.random.default_rng(0))
        c.rx_gain, c.tx_power_err = fix.rx_gain, fix.tx_power_err
        return c

    ch = channel(0)
    model: DefaultModel | AltModel = AltModel(ch) if isinstance(ch, AltRadioChannel) else DefaultModel(ch)
    heard = np.zeros(n_tx)
    total = np.zeros(n_tx)
    n = 2500
    for j in range(n):  # one advert per fresh draw of the place's shadow (and heading): the model's marginal
        ang = rng.uniform(0, 2 * math.pi, n_tx)
        pos = dists[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        rssi, ok = channel(j + 1).transmit(np.arange(n_tx), np.full(n_tx, 1.0), np.full(n_tx, -59.0), pos)
        heard += ok[:, 0]
        total += np.where(ok[:, 0], np.round(rssi[:, 0]), 0.0)
    exponent = getattr(ch, "exponent", ch.p.path_loss_exponent)
    for i, d in enumerate(dists):
        m = -59.0 + ch.tx_power_err[i] + ch.rx_gain[0] - 10.0 * exponent * math.log10(d)
        p, mean = _marginal(model, m, int(model.k_index(np.array([d]))[0]))
        assert abs(p - heard[i] / n) < 0.03, (d, p, heard[i] / n)
        if heard[i] > 200:
            assert abs(mean - total[i] / heard[i]) < 1.0, (d, mean, total[i] / heard[i])


@pytest.mark.parametrize("radio", ["default", "alt"])
def test_glr_outside_vs_inside(radio: str) -> None:
    """A band standing 30 m beyond the fence scores far above one standing in the middle of the compound."""
    site = layout_site("compound", 2, shadowing_db=4.0)
    scripts = {1001: BandScript(mover=Still(27.0, 17.0)), 1002: BandScript(mover=Still(27.0, -30.0))}
    world: World = simulate_world(site, Channel(radio, 4.0, 0.1, 2.0), 3, scripts, 90.0)
    obs = IdealGLR(world, 20.0, 3, 2.0)
    d = obs.series(np.arange(2), 50.0, 90.0)
    for v in ("true", "pm1", "unknown"):
        assert d[v].shape == (2, round(40.0 / EVAL_S))
        assert d[v][0].max() < 0.0
        assert d[v][1].min() > 5.0


def test_raise_counting_and_threshold() -> None:
    d = np.full((2, 12), -5.0)
    d[0, [2, 3]] = 9.0  # one episode
    d[0, 8] = 9.0  # a second: two evaluations below in between
    d[1, 5] = 20.0
    counts = raise_counts(d)
    assert counts[THRESHOLDS.searchsorted(9.0)] == 3
    assert counts[THRESHOLDS.searchsorted(10.0)] == 1
    # 200 band-hours at 0.5 per 100 allow one raise: the lowest threshold with at most one.
    thr, n = pick_threshold(counts, 200.0, 0.5)
    assert thr == 9.25 and n == 1
    assert pick_threshold(counts, 100.0, 0.5) == (20.25, 0)


def test_bands_breach_reads_the_bound_table(tmp_path: Path) -> None:
    """`bench.bands_breach --ideal-from FILE` sets the bound's recall cells beside the software's rows."""
    null = JobResult(Job("null", "demo", "alt", 6.0, 1, 10, 600.0), band_hours=400.0,
                     counts={v: np.where(THRESHOLDS < 7.0, 5.0, 0.0) for v in ("true", "pm1", "unknown")})
    esc = JobResult(Job("escape", "demo", "alt", 6.0, 2, 48, 660.0))
    for k, peak in enumerate((3.0, 12.0, 40.0)):
        esc.escapes.append({"kind": "stand", "how": "fence", "out_m": 25.0, "cross_at": 100.0 + k,
                            "t": np.array([10.0, 20.0]), **{v: np.array([peak - 1, peak])
                                                            for v in ("true", "pm1", "unknown")}})
    md: list[str] = []
    render([null, esc], 0.5, md)
    path = tmp_path / "bound.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    cells = previous_ideal(path)[("demo", "alt", "6")]
    assert cells == {"escapes": "3", "ideal true": "2/3", "ideal pm1": "2/3", "ideal unknown": "2/3"}
