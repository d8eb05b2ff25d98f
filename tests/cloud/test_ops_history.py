"""History you can work with: filters (date range, site, type, state, person), CSV export, time to
acknowledge; and the store changes behind them (migration of an older database, one escalation per alert
across processes)."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from pathlib import Path

import pytest

from cloud.alert_store import AlertQuery, AlertStore
from devtools.services import ServiceProcess
from protocols.payloads import new_alert
from tests.cloud.cloud_harness import Publisher, alert_json, cleared_json, wait_for
from tests.cloud.ops_harness import serve


def _alert(site: str = "s1", band: int = 1001, ts: float = 100.0, **detail: object):
    return new_alert(site=site, node="edge-01", type="geofence_breach", subject={"band": band}, ts=ts,
                     detail=dict(detail))


def test_an_older_database_gains_the_person_column_and_keeps_its_alerts(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript("""
CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL, type TEXT NOT NULL,
  severity TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL, state TEXT NOT NULL, raised_ts REAL,
  cleared_ts REAL, first_received REAL NOT NULL, updated_at REAL NOT NULL, acked_at REAL, acked_by TEXT,
  ack_note TEXT, escalated_at REAL);
INSERT INTO alerts VALUES ('01J00000000000000000000000', 's1', 'edge-01', 'sos', 'critical', '{"band": 7}', '{}',
  'raised', 50.0, NULL, 51.0, 51.0, 80.0, 'lan', 'ok', NULL);
""")
    con.close()
    store = AlertStore(db)
    [row] = store.list_alerts(AlertQuery())
    assert row["person"] is None and row["acked_by"] == "lan"
    store.upsert(_alert(person="Phòng 3"), now=120.0, person="Phòng 3")
    assert [r["person"] for r in store.list_alerts(AlertQuery(person="Phòng"))] == ["Phòng 3"]
    store.close()
    AlertStore(db).close()  # opening again is a no-op migration


def test_only_one_of_two_processes_wins_an_escalation(store_db: str) -> None:
    a, b = AlertStore(store_db), AlertStore(store_db)  # two connections, as two processes have
    a.upsert(_alert(ts=100.0), now=100.0)
    got_a = a.escalate_due(500.0, default_after_s=60.0, channels=lambda s: ["email"])
    got_b = b.escalate_due(501.0, default_after_s=60.0, channels=lambda s: ["email"])
    assert len(got_a) == 1 and got_b == []
    assert len(b.claim_deliveries(502.0)) == 1 and a.claim_deliveries(502.0) == []  # leased once
    a.close()
    b.close()


def test_range_and_person_filters_in_the_store(store_db: str) -> None:
    store = AlertStore(store_db)
    old = _alert(ts=1000.0)
    store.upsert(old, now=1000.0, person="Nguyễn Văn Lan")
    store.upsert(old.cleared(1100.0), now=1100.0)
    store.upsert(_alert(ts=5000.0, band=1002), now=5000.0, person="Trần Thị Mai")
    store.upsert(_alert(ts=9000.0, band=1003), now=9000.0)

    def bands(**q: object) -> list[int]:
        return [r["subject"]["band"] for r in store.list_alerts(AlertQuery(**q))]  # type: ignore[arg-type]

    assert bands(since=1050.0, until=6000.0) == [1002, 1001]  # lives overlapping the range
    assert bands(since=1200.0, until=6000.0) == [1002]
    assert bands(until=999.0) == []
    assert bands(person="Văn") == [1001] and bands(person="%") == []  # LIKE wildcards are literal
    store.close()


@pytest.mark.integration
def test_history_filters_csv_and_time_to_ack_through_serve(
        tmp_path: Path, mosquitto: ServiceProcess, shared_victoria_metrics: ServiceProcess) -> None:
    site_cfg = tmp_path / "h.yaml"
    site_cfg.write_text("""
site: {id: site-h, name: "Khu Hà Tiên"}
zones: [{id: yard, kind: permitted, polygon: [[0, 0], [30, 0], [30, 16], [0, 16]]}]
receivers: [{id: rx-1, position: [15, 8], source: sim}]
bands: [{id: 2001, person: "Lê Thị Hồng", allowed_zones: [yard]}, {id: 2002, person: "=HYPERLINK(1)",
        allowed_zones: [yard]}]
""", encoding="utf-8")
    now = time.time()
    with serve(tmp_path, mosquitto, shared_victoria_metrics, "--site-config", str(site_cfg)) as s:
        pub = Publisher(mosquitto).connect()
        old_id, old = alert_json(site="site-h", band=2001, ts=now - 7200)  # raised two hours ago
        new_id, new = alert_json(site="site-h", band=2002, ts=now - 30)
        fever_id, fever = alert_json(site="site-x", band=3001, type="fever", ts=now - 10)
        for site, raw in (("site-h", old), ("site-h", new), ("site-x", fever)):
            pub.publish(f"qwatch/v1/{site}/edge-01/alert", raw)
        pub.publish("qwatch/v1/site-h/edge-01/alert", cleared_json(old, now - 7000))
        wait_for(lambda: len(s.get("/api/v1/alerts").json()) == 3, 10, 0.1, "three alerts stored")
        ack = s.post(f"/api/v1/alerts/{new_id}/ack", {"person": "Nguyễn Văn Lan", "note": "=cmd|' /C calc'!A0"})
        assert ack.status_code == 200
        assert ack.json()["ack"]["by"] == "Nguyễn Văn Lan"
        # Time to acknowledge: from the edge's raise (30 s ago) to the ack.
        assert 29.0 <= ack.json()["ack_s"] <= 60.0

        def ids(**params: object) -> list[str]:
            resp = s.get("/api/v1/alerts", **params)
            assert resp.status_code == 200, resp.text
            return [a["alert_id"] for a in resp.json()]

        assert ids(until=now - 3600) == [old_id]
        assert set(ids(since=now - 60, until=now + 60)) == {old_id, new_id, fever_id}  # all changed just now
        assert ids(type="fever") == [fever_id] and ids(site="site-x") == [fever_id]
        assert ids(state="cleared") == [old_id] and ids(state="acknowledged") == [new_id]
        assert ids(person="Hồng") == [old_id]
        assert ids(person="Ho\u0302\u0300ng") == [old_id]  # the same name typed decomposed (NFD)
        assert s.get("/api/v1/alerts", person="a\x07").status_code == 422
        assert s.get("/api/v1/alerts", since=now, until=now - 1).status_code == 422
        view = s.get(f"/api/v1/alerts/{new_id}").json()
        assert view["person"] == "=HYPERLINK(1)" and [e["event"] for e in view["history"]] == [
            "raised", "acknowledged"]
        assert view["history"][1]["by"] == "Nguyễn Văn Lan"

        resp = s.get("/api/v1/alerts.csv", site="site-h")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
        assert resp.content.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads UTF-8
        rows = list(csv.DictReader(io.StringIO(resp.content.decode("utf-8-sig"))))
        assert [r["alert_id"] for r in rows] == [new_id, old_id]
        by = {r["alert_id"]: r for r in rows}
        assert by[old_id]["person"] == "Lê Thị Hồng" and by[old_id]["state"] == "cleared"
        assert by[new_id]["person"] == "'=HYPERLINK(1)" and by[new_id]["ack_note"].startswith("'=")
        assert by[new_id]["acknowledged_by"] == "Nguyễn Văn Lan" and 29.0 <= float(by[new_id]["ack_s"]) <= 60
        tz_col = "raised_at (Asia/Ho_Chi_Minh)"
        assert time.strftime("%Y-%m-%d", time.gmtime(now - 30 + 7 * 3600)) == by[new_id][tz_col][:10]
        assert s.get("/api/v1/alerts.csv", person="Hồng").content.decode("utf-8-sig").count("\r\n") == 2
