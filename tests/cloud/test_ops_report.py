"""The daily report against a hand-computed fixture: through `serve` (JSON and CSV, with a guard's scope)
and through `qwatch-cloud report daily` (the same bytes)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from cloud.alert_store import AlertStore
from cloud.report import day_window, p95
from cloud.users import add_user
from devtools.services import ServiceProcess
from protocols.payloads import Alert, new_alert
from tests.cloud.ops_harness import REPO, serve

pytestmark = pytest.mark.integration
DAY = dt.date(2026, 11, 20)
T0, _ = day_window(DAY, ZoneInfo("Asia/Ho_Chi_Minh"))  # 2026-11-19 17:00 UTC
SITE_R = """
site: {id: site-r, name: "Khu cách ly Rạch Giá"}
zones: [{id: yard, kind: permitted, polygon: [[0, 0], [30, 0], [30, 16], [0, 16]]}]
receivers: [{id: rx-1, position: [15, 8], source: sim}]
bands:
  - {id: 1001, person: "Nguyễn Văn Lan", allowed_zones: [yard]}
  - {id: 1002, person: "Phòng 12", allowed_zones: [yard]}
  - {id: 1003, allowed_zones: [yard]}
"""


def _fixture(db: Path) -> None:
    """One day of two sites, written in time order (times relative to the local midnight T0)."""
    store = AlertStore(db)

    def raise_(site: str, node: str, typ: str, at: float, subject: dict[str, Any]) -> Alert:
        a = new_alert(site=site, node=node, type=typ, subject=subject, ts=T0 + at)
        store.upsert(a, now=T0 + at + 1)
        return a

    def clear(a: Alert, at: float) -> None:
        store.upsert(a.cleared(T0 + at), now=T0 + at + 1)

    def ack(a: Alert, after: float) -> None:
        store.acknowledge(a.alert_id, by="Nguyễn Văn Lan", note="", now=a.ts + after)

    def escalate(at: float) -> None:
        store.escalate_due(T0 + at, default_after_s=300.0)

    band = {"band": 1001}
    off1 = raise_("site-r", "edge-01", "node_offline", -3600, {"node": "edge-01"})  # yesterday: uptime only
    e = raise_("site-r", "edge-01", "geofence_breach", -600, band)  # yesterday: escalates today
    escalate(60)  # E, and edge-01's node_offline (raised yesterday, nobody acknowledged it)
    clear(off1, 600)  # edge-01 offline 10 min into today
    a = raise_("site-r", "edge-01", "geofence_breach", 3600, band)
    ack(a, 40)
    ack(e, 4000)
    f = raise_("site-r", "edge-01", "fever", 5000, band)
    clear(f, 5500)
    b = raise_("site-r", "edge-01", "geofence_breach", 7200, band)
    ack(b, 100)
    c = raise_("site-r", "edge-01", "geofence_breach", 10000, band)
    ack(c, 30)
    raise_("site-r", "edge-01", "geofence_breach", 20000, band)  # D: never acknowledged
    escalate(20300)  # D
    n1 = raise_("site-r", "edge-02", "node_offline", 30000, {"node": "edge-02"})
    n2 = raise_("site-r", "edge-02", "node_offline", 31500, {"node": "edge-02"})  # overlaps: merged
    clear(n1, 31800)
    clear(n2, 33000)  # edge-02 offline 30000..33000: 50 min
    raise_("site-r", "edge-01", "camera_offline", 40000, {"camera": "cam-gate", "zone": None})  # to midnight
    g = raise_("site-s", "edge-09", "geofence_breach", 50000, {"band": 7})
    ack(g, 200)
    raise_("site-s", "edge-09", "sos", 60000, {"band": 8})
    escalate(60500)  # H and the camera
    raise_("site-r", "edge-01", "geofence_breach", 86400 + 100, band)  # tomorrow: not in the report
    for site, node in (("site-r", "edge-01"), ("site-r", "edge-02"), ("site-s", "edge-09")):
        store.save_node({"site": site, "node": node, "boot_id": "b", "online": 1, "status_ts": time.time(),
                         "last_seen": time.time(), "version": "t", "offline_alert_id": None, "offline_cause": None})
    store.close()


def _no_gen(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "generated_at"}


ZERO_SEV = {"critical": 0, "major": 0, "minor": 0}
SITE_R_EXPECTED = {
    "site": "site-r", "name": "Khu cách ly Rạch Giá", "people_under_watch": 3,
    "alerts": {"total": 8, "by_type": {"camera_offline": 1, "fever": 1, "geofence_breach": 4, "node_offline": 2},
               "by_severity": {"critical": 4, "major": 4, "minor": 0}},
    "breaches": {"count": 4, "acknowledged": 3, "unacknowledged": 1, "ack_mean_s": 56.7, "ack_p95_s": 100.0},
    "escalations": 4,
    "nodes": [{"node": "edge-01", "offline_min": 10.0, "uptime_pct": 99.31},
              {"node": "edge-02", "offline_min": 50.0, "uptime_pct": 96.53}],
    "node_uptime_pct": 97.92,
    "cameras": [{"node": "edge-01", "camera": "cam-gate", "offline_min": 773.3}],
    "camera_offline_min": 773.3,
}
SITE_S_EXPECTED = {
    "site": "site-s", "name": None, "people_under_watch": None,
    "alerts": {"total": 2, "by_type": {"geofence_breach": 1, "sos": 1}, "by_severity": {**ZERO_SEV, "critical": 2}},
    "breaches": {"count": 1, "acknowledged": 1, "unacknowledged": 0, "ack_mean_s": 200.0, "ack_p95_s": 200.0},
    "escalations": 1,
    "nodes": [{"node": "edge-09", "offline_min": 0.0, "uptime_pct": 100.0}],
    "node_uptime_pct": 100.0, "cameras": [], "camera_offline_min": 0.0,
}
PROVINCE_EXPECTED = {
    "sites": 2, "people_under_watch": 3,
    "alerts": {"total": 10, "by_type": {"camera_offline": 1, "fever": 1, "geofence_breach": 5, "node_offline": 2,
                                        "sos": 1},
               "by_severity": {"critical": 6, "major": 4, "minor": 0}},
    "breaches": {"count": 5, "acknowledged": 4, "unacknowledged": 1, "ack_mean_s": 92.5, "ack_p95_s": 200.0},
    "escalations": 5, "nodes": 3, "node_uptime_pct": 98.61, "camera_offline_min": 773.3,
}
HEAD = ("date,scope,site,name,people_under_watch,alerts_total,critical,major,minor,geofence_breach,band_missing,"
        "band_tamper,sos,fever,advert_forgery,advert_replay,camera_motion,camera_offline,camera_tamper,node_offline,"
        "low_battery,no_motion,breaches,breaches_acknowledged,ack_mean_s,ack_p95_s,escalations,nodes,"
        "node_uptime_pct,camera_offline_min")
CSV_EXPECTED = "\ufeff" + "\r\n".join([
    HEAD,
    "2026-11-20,site,site-r,Khu cách ly Rạch Giá,3,8,4,4,0,4,0,0,0,1,0,0,0,1,0,2,0,0,4,3,56.7,100.0,4,2,97.92,773.3",
    "2026-11-20,site,site-s,,,2,2,0,0,1,0,0,1,0,0,0,0,0,0,0,0,0,1,1,200.0,200.0,1,1,100.0,0.0",
    "2026-11-20,province,,,3,10,6,4,0,5,0,0,1,1,0,0,0,1,0,2,0,0,5,4,92.5,200.0,5,3,98.61,773.3",
]) + "\r\n"


def test_p95_is_nearest_rank() -> None:
    assert p95([]) is None and p95([5.0]) == 5.0
    assert p95([float(i) for i in range(1, 21)]) == 19.0 and p95([float(i) for i in range(1, 101)]) == 95.0


def test_daily_report_matches_the_hand_computed_fixture(
        tmp_path: Path, mosquitto: ServiceProcess, shared_victoria_metrics: ServiceProcess) -> None:
    db = tmp_path / "report.db"
    _fixture(db)
    site_cfg = tmp_path / "site-r.yaml"
    site_cfg.write_text(SITE_R, encoding="utf-8")
    users = tmp_path / "users.yaml"
    cc = add_user(users, "Trực ban tỉnh", "command", []).token
    guard = add_user(users, "Nguyễn Văn Lan", "guard", ["site-s"]).token
    with serve(tmp_path, mosquitto, shared_victoria_metrics, "--site-config", str(site_cfg), "--users", str(users),
               "--silence-s", "86400", db=db) as s:
        s.headers = {"Authorization": f"Bearer {cc}"}
        resp = s.get("/api/v1/reports/daily", date="2026-11-20")
        assert resp.status_code == 200, resp.text
        report = resp.json()
        assert _no_gen(report) == {
            "schema": "qwatch.daily_report/1", "date": "2026-11-20", "tz": "Asia/Ho_Chi_Minh", "from": T0,
            "until": T0 + 86400, "sites": [SITE_R_EXPECTED, SITE_S_EXPECTED], "province": PROVINCE_EXPECTED}
        csv_resp = s.get("/api/v1/reports/daily", date="2026-11-20", format="csv")
        assert csv_resp.headers["content-type"].startswith("text/csv")
        assert csv_resp.content.decode("utf-8") == CSV_EXPECTED
        one = s.get("/api/v1/reports/daily", date="2026-11-20", site="site-r").json()
        assert one["sites"] == [SITE_R_EXPECTED] and one["province"]["escalations"] == 4
        assert s.get("/api/v1/reports/daily", date="2026-02-30").status_code == 422
        assert s.get("/api/v1/reports/daily", date="2026-11-20", format="xml").status_code == 422

        # A guard: their site only, and a province block that sums only it; another site is 403.
        g = {"Authorization": f"Bearer {guard}"}
        mine = httpx.get(f"{s.url}/api/v1/reports/daily", params={"date": "2026-11-20"}, headers=g).json()
        assert mine["sites"] == [SITE_S_EXPECTED] and mine["province"]["alerts"]["total"] == 2
        other = httpx.get(f"{s.url}/api/v1/reports/daily", params={"date": "2026-11-20", "site": "site-r"}, headers=g)
        assert other.status_code == 403
        assert httpx.get(f"{s.url}/api/v1/reports/daily", params={"date": "2026-11-20"}).status_code == 401

    # The CLI writes the same report from the store.
    out = tmp_path / "daily.csv"
    cli = [sys.executable, "-m", "cloud.cli", "report", "daily", "--db", str(db), "--date", "2026-11-20",
           "--site-config", str(site_cfg)]
    res = subprocess.run([*cli, "--format", "csv", "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes().decode("utf-8") == CSV_EXPECTED
    res = subprocess.run([*cli, "--site", "site-s"], cwd=REPO, capture_output=True, text=True)
    import json

    assert json.loads(res.stdout)["sites"] == [SITE_S_EXPECTED]
    bad = subprocess.run([*cli[:-4], "--date", "2026-13-01"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "2026-13-01" in bad.stderr
