"""Edge state across a restart (issue 9, items 2-3) at unit level: counter rollover, counters and active
alerts in the real outbox database (SQLite on disk), reopened as after a crash."""

from __future__ import annotations

from pathlib import Path

from edge.outbox import Outbox
from edge.state import CounterSaver, active_key, restore_alerts
from protocols.advert import encode_status
from protocols.payloads import Alert, new_alert
from protocols.verify import ACCEPTED, REPLAY, AdvertVerifier, counter_newer

KEY = bytes(range(16))
CID = 0xFFFF


def _adv(counter: int) -> bytes:
    return encode_status(band_id=1001, counter=counter, key=KEY, company_id=CID)


def test_item3_counter_rollover_is_accepted_and_old_ones_stay_replays() -> None:
    v = AdvertVerifier({1001: KEY}, CID)
    top = 0xFFFFFFFF
    assert v.verify(1.0, CID, _adv(top - 1)).outcome == ACCEPTED
    assert v.verify(2.0, CID, _adv(top)).outcome == ACCEPTED
    assert v.verify(3.0, CID, _adv(0)).outcome == ACCEPTED  # wrapped: before, a replay until a restart
    assert v.verify(4.0, CID, _adv(1)).outcome == ACCEPTED
    assert v.verify(5.0, CID, _adv(top)).outcome == REPLAY  # the adverts from before the wrap
    assert v.verify(6.0, CID, _adv(top - 5)).outcome == REPLAY
    assert counter_newer(5, 3) and not counter_newer(3, 5) and not counter_newer(7, 7)
    assert counter_newer(0, top) and not counter_newer(top, 0)


def test_item3_counters_survive_a_reopen_of_the_outbox(tmp_path: Path) -> None:
    ob = Outbox(tmp_path, reserve_bytes=0)
    v = AdvertVerifier({1001: KEY}, CID)
    for c in range(1, 11):
        assert v.verify(float(c), CID, _adv(c)).outcome == ACCEPTED
    saver = CounterSaver(ob, every_s=5.0)
    saver.maybe_save(v, mono=0.0, wall=100.0)
    assert ob.band_counters() == {1001: 10}
    assert v.verify(11.0, CID, _adv(11)).outcome == ACCEPTED
    saver.maybe_save(v, mono=1.0, wall=101.0)  # not due: the cadence bounds the writes
    assert ob.band_counters() == {1001: 10}
    saver.maybe_save(v, mono=6.0, wall=106.0)
    assert ob.band_counters() == {1001: 11}
    del ob  # no close: as after kill -9 (every save was its own committed transaction)
    again = Outbox(tmp_path, reserve_bytes=0)
    v2 = AdvertVerifier({1001: KEY}, CID)
    assert v2.restore_counters(again.band_counters()) == 1
    assert v2.verify(200.0, CID, _adv(5)).outcome == REPLAY  # counter 5 again after a restart
    assert v2.verify(201.0, CID, _adv(11)).outcome == REPLAY  # even the last one, the next second
    assert v2.verify(202.0, CID, _adv(12)).outcome == ACCEPTED


def test_item2_active_alerts_survive_a_reopen_and_are_cleared_if_unowned(tmp_path: Path) -> None:
    ob = Outbox(tmp_path, reserve_bytes=0)
    a = new_alert(site="s", node="n", type="geofence_breach", subject={"band": 1001}, ts=10.0)
    b = new_alert(site="s", node="n", type="camera_offline", subject={"camera": "cam-1", "zone": None}, ts=11.0)
    c = new_alert(site="s", node="n", type="sos", subject={"band": 1002}, ts=12.0)
    for alert in (a, b, c):
        ob.put("alert", "t", alert.to_json().encode(), alert.alert_id, active_key=active_key(alert), active=True)
    ob.put("alert", "t", c.cleared(13.0).to_json().encode(), c.alert_id, active_key=active_key(c), active=False)
    del ob
    saved = Outbox(tmp_path, reserve_bytes=0).active_alerts()
    assert set(saved) == {"band:1001|geofence_breach", "camera:cam-1|camera_offline"}

    class Owner:
        def __init__(self) -> None:
            self.adopted: list[str] = []

        def adopt_alert(self, alert: Alert, now: float) -> Alert | None:
            self.adopted.append(alert.alert_id)
            return None

    owner = Owner()
    clears = restore_alerts(saved, owner, now=50.0)
    assert owner.adopted == [a.alert_id]  # the band alert is taken over, same alert_id
    assert [(x.alert_id, x.state, x.detail.get("reason")) for x in clears] == [
        (b.alert_id, "cleared", "node_restart")]
