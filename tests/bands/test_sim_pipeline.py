"""Simulator and BandPipeline: deterministic adverts, a real escape raises a breach, beacons never alert."""

from __future__ import annotations

import itertools

import numpy as np

from edge.bands.geometry import point_in_polygon, signed_distance
from edge.bands.pipeline import BandPipeline
from edge.bands.rssi_filter import robust_median
from edge.sim import Simulator
from edge.sim.scenarios import demo_scenario
from protocols.advert import decode_status, encode_status
from protocols.payloads import BandTelemetry
from protocols.site_config import SiteConfig


def test_geometry_signed_distance() -> None:
    sq = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float)
    pts = np.array([[5, 5], [5, -3], [12, 5], [9, 5]], dtype=float)
    assert point_in_polygon(pts, sq).tolist() == [True, False, False, True]
    assert np.allclose(signed_distance(pts, sq), [-5, 3, 2, -1])


def test_robust_median_trims_outliers() -> None:
    vals = np.array([[-70, -71, -69, -40, -70, -72, np.nan, np.nan]], dtype=float)
    med, n, _ = robust_median(vals)
    assert med[0] == -70.0 and n[0] == 5


def test_simulator_is_deterministic_ordered_and_physical(demo_site: SiteConfig, demo_keys: dict[int, bytes]) -> None:
    a = Simulator(demo_site, demo_keys, seed=4, start_ts=100.0).advance(130.0)
    b = Simulator(demo_site, demo_keys, seed=4, start_ts=100.0).advance(130.0)
    assert a == b and len(a) > 500
    assert all(x.ts <= y.ts for x, y in itertools.pairwise(a))
    assert min(o.rssi for o in a) >= -100
    ids = {decode_status(o.data).band_id for o in a}
    assert {b.id for b in demo_site.beacons} <= ids  # beacons advertise too
    counters = [decode_status(o.data).counter for o in a if decode_status(o.data).band_id == 1005]
    assert counters == sorted(counters) and 25 <= len(set(counters)) <= 31  # ~1 advert/s


def _run(pipe: BandPipeline, sim: Simulator, seconds: int) -> list:
    alerts = []
    for s in range(1, seconds + 1):
        now = sim.start_ts + s
        for o in sim.advance(now):
            alerts += pipe.observe_raw(o)
        alerts += pipe.tick(now)
    return alerts


def test_demo_escape_raises_one_breach_and_beacons_never_alert(demo_site: SiteConfig,
                                                                demo_keys: dict[int, bytes]) -> None:
    sim = Simulator(demo_site, demo_keys, seed=0, start_ts=1000.0,
                    scenario=demo_scenario(demo_site, escape_band=1001, escape_at_s=40.0))
    pipe = BandPipeline(demo_site, demo_keys, node="edge-01")
    alerts = _run(pipe, sim, 120)
    breaches = [a for a in alerts if a.type == "geofence_breach"]
    assert [(a.subject.band, a.state) for a in breaches] == [(1001, "raised")]
    # The window test raises once a window as long as the dwell says "outside" (not a dwell after the
    # evidence, as the CUSUM rule did): no earlier than the crossing, within breach_dwell_s + 30 s.
    assert 1040 <= breaches[0].ts <= 1040 + demo_site.rules.breach_dwell_s + 30
    beacon_ids = {b.id for b in demo_site.beacons}
    assert not [a for a in alerts if getattr(a.subject, "band", None) in beacon_ids]
    tel = pipe.telemetry(1120.0)
    BandTelemetry.model_validate_json(tel.model_dump_json(by_alias=True))
    assert {s.band for s in tel.bands} == {b.id for b in demo_site.bands}
    assert all(s.err_m is not None and s.err_m > 0 for s in tel.bands)
    counts = pipe.counters()
    assert counts["accepted"] > 30 * 100 and counts["duplicate"] > 0


def test_forgery_and_replay_alarms_raise_and_reuse_alert_id_on_clear(demo_site: SiteConfig,
                                                                      demo_keys: dict[int, bytes]) -> None:
    pipe = BandPipeline(demo_site, demo_keys, node="edge-01")
    cid = demo_site.company_id
    good = encode_status(band_id=1002, counter=50, key=demo_keys[1002], company_id=cid)
    assert pipe.observe(10.0, "rx-a", -70, cid, good) == []
    forged = encode_status(band_id=1002, counter=60, key=b"\x00" * 16, company_id=cid)
    alerts = [a for t in (11.0, 12.0, 13.0) for a in pipe.observe(t, "rx-a", -70, cid, forged)]
    assert [a.type for a in alerts] == ["advert_forgery"]
    alerts = [a for t in (14.0, 15.0, 16.0) for a in pipe.observe(t, "rx-b", -70, cid, good)]  # old counter, late
    assert [a.type for a in alerts] == ["advert_replay"]
    raised = {a.type: a.alert_id for a in pipe.active_alerts()}
    cleared = [a for t in range(17, 400) for a in pipe.tick(float(t)) if a.type.startswith("advert_")]
    assert {(a.type, a.state, a.alert_id) for a in cleared} == {
        ("advert_forgery", "cleared", raised["advert_forgery"]), ("advert_replay", "cleared", raised["advert_replay"])}
    counts = pipe.counters()
    assert counts["bad_tag"] == 3 and counts["replay"] == 3
    assert pipe.observe(20.0, "rx-zz", -70, cid, good) == [] and pipe.counters()["unknown_rx"] == 1
    assert pipe.observe(21.0, "rx-a", -70, cid, b"\x11garbage") == []
