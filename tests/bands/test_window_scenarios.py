"""The window breach test end to end on simulated radio (issue 16): a stand-outside escape is caught in time
and clears after the return; a receiver reading 6 dB low does not make a block breach and is reported."""

from __future__ import annotations

from edge.bands.pipeline import BandPipeline
from edge.sim import RadioParams, Simulator
from edge.sim.escapes import make_escape
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import standing_near_fence, walking
from protocols.payloads import Alert, NodeTelemetry
from protocols.site_config import SiteConfig


def _small(site: SiteConfig, n: int) -> SiteConfig:
    return site.model_copy(update={"bands": site.bands[:n]})


def _run(pipe: BandPipeline, sim: Simulator, seconds: int) -> list[Alert]:
    out: list[Alert] = []
    for s in range(1, seconds + 1):
        now = sim.start_ts + s
        for o in sim.advance(now):
            out += pipe.observe_raw(o)
        out += pipe.tick(now)
    return out


def test_stand_outside_escape_is_caught_within_the_deadline_and_clears_after_return(demo_site: SiteConfig) -> None:
    site = _small(demo_site, 8)
    keys = site_demo_keys(site)
    sc = walking(site, 5)
    esc = make_escape(site, 1001, 5, kind="return", how="fence", cross_at=150.0)
    sc.scripts[1001] = esc.script
    assert esc.reentry_at is not None
    sim = Simulator(site, keys, seed=5, start_ts=1000.0, scenario=sc,
                    radio=RadioParams(shadowing_db=4.0, base_loss=0.15))
    pipe = BandPipeline(site, keys, node="t")
    alerts = _run(pipe, sim, int(esc.reentry_at) + 60)
    mine = [(a.state, a.ts - 1000.0, a.detail) for a in alerts if a.type == "geofence_breach"]
    assert [a.subject for a in alerts if a.type == "geofence_breach"] == [alerts[0].subject] * len(mine)
    assert [s for s, _, _ in mine] == ["raised", "cleared"], mine
    raised_at, cleared_at = mine[0][1], mine[1][1]
    assert esc.cross_at <= raised_at <= esc.cross_at + site.rules.breach_dwell_s + 30.0
    assert esc.reentry_at <= cleared_at <= esc.reentry_at + site.rules.clear_dwell_s + 20.0
    detail = mine[0][2]
    assert detail["person"] == "P-0001" and detail["left_zone"] in ("block-a", "yard", "block-b")
    assert detail["outside_m"] >= 5.0 and detail["reason"] == "outside"


def test_a_receiver_reading_6_db_low_makes_no_breach_and_is_reported(demo_site: SiteConfig) -> None:
    site = _small(demo_site, 12)
    keys = site_demo_keys(site)
    sc = walking(site, 2)
    for i, b in enumerate(site.bands):
        if i % 2:  # half of them stand 0.5-3 m inside a fence, all the time
            sc.scripts[b.id] = standing_near_fence(site, b.id, 2, 0.5 + 2.5 * i / len(site.bands))
    rx_a = [r.id for r in site.receivers].index("rx-a")
    radio = RadioParams(shadowing_db=4.0, base_loss=0.15, bad_rx=((rx_a, -6.0),))
    sim = Simulator(site, keys, seed=2, start_ts=1000.0, scenario=sc, radio=radio)
    pipe = BandPipeline(site, keys, node="t")
    alerts = _run(pipe, sim, 420)
    assert [a for a in alerts if a.type == "geofence_breach"] == []
    rep = pipe.receivers(1420.0)
    assert rep["rx-a"]["state"] == "gain_off", rep["rx-a"]
    # Others may be reported too, but only if they really are off (hidden gains here have σ 3 dB).
    true_dev = dict(zip(sim.rx_ids, sim.channel.rx_gain.tolist(), strict=True))
    assert all(abs(true_dev[r]) >= 3.0 for r, v in rep.items() if v["state"] == "gain_off"), (rep, true_dev)
    NodeTelemetry.model_validate({"schema": "qwatch.node/1", "ts": 1420.0, "boot_id": "b", "uptime_s": 1.0,
                                  "cpu_pct": 1.0, "mem_rss_mb": 1.0, "outbox_depth": 0, "receivers": rep})
