"""Silence as breach evidence (edge.bands.silence) and the calibration's own uncertainty (pure, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.bands.calibration import Calibration
from edge.bands.silence import SilenceEvidence
from protocols.advert import FLAG_LOW_BATTERY
from protocols.site_config import SiteConfig

# A 20 × 20 m compound with a receiver in each quarter: every inside point is within earshot.
SITE = SiteConfig.model_validate({
    "site": {"id": "t", "name": "t", "origin": {"lat": 0.0, "lon": 0.0}}, "company_id": 65535,
    "zones": [{"id": "yard", "kind": "permitted", "polygon": [[0, 0], [20, 0], [20, 20], [0, 20]]}],
    "receivers": [{"id": f"rx{i}", "position": p, "source": "sim"} for i, p in
                  enumerate([[5, 5], [15, 5], [5, 15], [15, 15]])],
    "bands": [{"id": 7, "allowed_zones": ["yard"]}],
})
RX = np.array([r.position for r in SITE.receivers], dtype=np.float64)


@dataclass
class _St:
    battery: int | None = 80
    flags: int = 0


@dataclass
class _Fx:
    ts: float
    x: float
    y: float
    err_m: float = 2.0


def _evaluate(now: float, *, rx_last: list[float], status: _St, last_sample: float = 100.0,
              where: tuple[float, float] = (19.0, 10.0)) -> dict[int, float]:
    s = SilenceEvidence(SITE, RX)
    return s.evaluate(now, band_ids=[7], last_sample=np.array([last_sample, now]),
                      power=np.array([-59.0, -55.0]), window_s=8.0, rx_last=rx_last,
                      fixes={7: _Fx(last_sample + 8.0, *where)}, status={7: status}, low_battery_pct=15,
                      exponent=2.7, threshold_dbm=-93.0, censor_var_db2=np.full(len(RX), 16.0))


def test_silence_at_listening_receivers_is_strong_evidence() -> None:
    got = _evaluate(112.0, rx_last=[111.5] * 4, status=_St())
    assert got[7] > 5.0  # at the east fence, then nobody hears it: it walked out


def test_silence_does_not_count_before_the_window_empties_or_with_low_battery() -> None:
    assert _evaluate(105.0, rx_last=[104.5] * 4, status=_St()) == {}  # last samples still in the window
    assert _evaluate(112.0, rx_last=[111.5] * 4, status=_St(battery=12)) == {}
    assert _evaluate(112.0, rx_last=[111.5] * 4, status=_St(battery=None, flags=FLAG_LOW_BATTERY)) == {}
    assert _evaluate(200.0, rx_last=[199.5] * 4, status=_St()) == {}  # band_missing's business by now


def test_receivers_that_stopped_listening_give_no_silence_evidence() -> None:
    # The node lost its receivers (nobody heard anything for 10 s): silence of the band means nothing.
    assert _evaluate(112.0, rx_last=[102.0] * 4, status=_St())[7] == 0.0
    # Only the far-west receivers listen: weaker evidence than all four.
    two = _evaluate(112.0, rx_last=[111.5, 102.0, 111.5, 102.0], status=_St())[7]
    assert two < _evaluate(112.0, rx_last=[111.5] * 4, status=_St())[7]


def _cal(beacons: np.ndarray) -> Calibration:
    return Calibration(RX, np.arange(len(beacons), dtype=np.int64), beacons, 2.7, pair_error_db=4.0,
                       bias_prior_db=6.0)


def test_calibration_variance_is_the_prior_until_beacons_pin_a_receiver() -> None:
    beacons = np.array([[4.0, 4.0], [16.0, -6.0]])
    cal = _cal(beacons)
    prior = cal.link_var_db2()
    assert np.allclose(prior, 6.0**2)
    rng = np.random.default_rng(1)
    d = np.linalg.norm(beacons[:, None, :] - RX[None, :, :], axis=2)
    true = -55.0 - 27.0 * np.log10(d)
    for _ in range(10):
        med = true + rng.normal(0, 1.0, true.shape)
        med[:, 3] = np.nan  # the east receiver hears neither beacon
        cal.update(np.arange(2, dtype=np.int64), med, np.full(2, -55.0))
    var = cal.link_var_db2()
    assert var[0] < 0.5 * prior[0] and var[1] < 0.5 * prior[1]
    # Unpinned by any beacon pair: still about the prior (the exponent is better known now).
    assert var[3] > 0.7 * prior[3]


def test_first_solve_waits_for_averages_not_the_first_rounds_fading() -> None:
    """No gain is read before `first_solve_updates` rounds: a receiver 3 dB low whose first rounds happen to
    fade deep stays at its configured offset until the averages hold several rounds, then is read right."""
    beacons = np.array([[4.0, 4.0], [16.0, -6.0], [10.0, 24.0]])
    cal = _cal(beacons)
    assert cal.first_solve_updates == 6
    rng = np.random.default_rng(2)
    d = np.linalg.norm(beacons[:, None, :] - RX[None, :, :], axis=2)
    true = -55.0 - 27.0 * np.log10(d)
    true[:, 1] -= 3.0  # rx1 reads 3 dB low
    for k in range(12):
        med = true + rng.normal(0, 1.0, true.shape)
        if k < 3:
            med[:, 1] -= 6.0  # its first rounds fade deep
        cal.update(np.arange(3, dtype=np.int64), med, np.full(3, -55.0))
        if k < 5:
            assert np.all(cal.rx_bias == 0.0) and cal.exponent == 2.7
    assert 1.5 < cal.rx_bias[1] - np.median(np.delete(cal.rx_bias, 1)) < 4.5
