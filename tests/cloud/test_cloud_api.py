"""The HTTP API and the live WebSocket over a real SQLite store (no broker needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.alert_store import AlertStore
from cloud.api import CloudContext, create_app
from cloud.live import LiveHub
from protocols.payloads import Alert, new_alert


@pytest.fixture
def ctx(tmp_path: Path) -> CloudContext:
    return CloudContext(store=AlertStore(tmp_path / "api.db"), hub=LiveHub())


@pytest.fixture
def client(ctx: CloudContext) -> TestClient:
    return TestClient(create_app(ctx))


def _alert(site: str = "site-a", type: str = "geofence_breach", band: int = 1001) -> Alert:
    return new_alert(site=site, node="edge-01", type=type, subject={"band": band}, ts=1000.0,
                     detail={"x": 44.1, "y": 9.8, "zone": None})


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["store"]["ok"] is True


def test_list_shape_and_filters(ctx: CloudContext, client: TestClient) -> None:
    a = _alert()
    ctx.store.upsert(a, now=10.0)
    ctx.store.upsert(_alert(site="site-b", type="fever"), now=20.0)
    [item] = client.get("/api/v1/alerts", params={"site": "site-a"}).json()
    # The §4 payload, unchanged, plus the lifecycle.
    assert {k: item[k] for k in ("schema", "alert_id", "site", "node", "type", "severity", "state", "subject",
                                 "ts", "detail")} == a.model_dump(by_alias=True)
    assert item["acknowledged"] is False and item["ack"] is None
    assert [i["type"] for i in client.get("/api/v1/alerts", params={"type": "fever"}).json()] == ["fever"]
    assert client.get("/api/v1/alerts", params={"state": "cleared"}).json() == []
    assert len(client.get("/api/v1/alerts", params={"since": 15}).json()) == 1


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 100000}, {"limit": "x"}, {"state": "open"}, {"type": "escape"},
    {"since": "yesterday"}, {"since": -1}, {"site": "a/b"}, {"site": "x" * 65},
])
def test_bad_filters_are_422(client: TestClient, params: dict[str, object]) -> None:
    assert client.get("/api/v1/alerts", params=params).status_code == 422


def test_ack_flow_and_errors(ctx: CloudContext, client: TestClient) -> None:
    a = _alert()
    ctx.store.upsert(a, now=10.0)
    url = f"/api/v1/alerts/{a.alert_id}/ack"
    assert client.post(url, json={"person": ""}).status_code == 422
    assert client.post(url, json={"person": "Lan", "extra": 1}).status_code == 422
    assert client.post("/api/v1/alerts/not-a-ulid/ack", json={"person": "Lan"}).status_code == 422
    assert client.post("/api/v1/alerts/01ARZ3NDEKTSV4RRFFQ69G5FAV/ack", json={"person": "Lan"}).status_code == 404
    resp = client.post(url, json={"person": "Lan", "note": "guard sent"})
    assert resp.status_code == 200
    assert resp.json()["state"] == "acknowledged"
    assert resp.json()["ack"]["by"] == "Lan"
    assert client.post(url, json={"person": "Lan"}).status_code == 409
    ctx.store.upsert(a.cleared(1100.0), now=30.0)
    assert client.get(f"/api/v1/alerts/{a.alert_id}").json()["state"] == "cleared"


def test_live_socket_sends_hello_and_alerts(ctx: CloudContext, client: TestClient) -> None:
    first = _alert()
    ctx.store.upsert(first, now=10.0)
    with client.websocket_connect("/api/v1/live") as ws:
        hello = ws.receive_json()
        assert hello["kind"] == "hello"
        assert [a["alert_id"] for a in hello["data"]["alerts"]] == [first.alert_id]
        resp = client.post(f"/api/v1/alerts/{first.alert_id}/ack", json={"person": "Lan"})
        assert resp.status_code == 200
        msg = ws.receive_json()
        assert msg["kind"] == "alert" and msg["data"]["state"] == "acknowledged"
    assert ctx.hub.subscribers == 0


def test_track_without_vm_is_503(client: TestClient) -> None:
    assert client.get("/api/v1/bands/1001/track").status_code == 503
    assert client.get("/api/v1/bands/0/track").status_code == 422


def test_dashboard_is_served_without_external_urls(client: TestClient) -> None:
    html = client.get("/").text
    assert "/api/v1/live" in client.get("/static/dashboard.js").text
    from cloud.api import STATIC_DIR

    names = sorted(p.name for p in STATIC_DIR.iterdir() if p.suffix in (".js", ".css", ".svg", ".html"))
    assert {"dashboard.js", "signin.js", "i18n.js", "dashboard.css", "favicon.svg"} <= set(names)
    assets = [client.get(f"/static/{name}") for name in names]
    assert all(a.status_code == 200 for a in assets)
    for text in (html, *(a.text for a in assets)):
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")   # an XML namespace name, never fetched
        assert "http://" not in text and "https://" not in text
    # Every script the page loads is bundled here.
    assert set(re.findall(r'<script src="/static/([\w.]+)"', html)) <= set(names)
    assert client.get("/favicon.ico").status_code == 200


def test_sites_carry_configured_geometry_and_nothing_secret(ctx: CloudContext, client: TestClient) -> None:
    from cloud.site_geometry import SiteGeometry
    from protocols.site_config import parse_site_config

    cfg = parse_site_config("""
site: {id: site-g, name: G}
zones:
  - {id: block-a, kind: permitted, polygon: [[0, 0], [30, 0], [30, 16]]}
  - {id: gate, kind: restricted, polygon: [[13, -3], [17, -3], [17, 0]]}
receivers: [{id: rx-a, position: [15, 8], source: "serial:/dev/ttyACM0"}]
bands: [{id: 1001, person: P-0001, allowed_zones: [block-a]}]
beacons: [{id: 9001, position: [4, 4]}]
cameras: [{id: cam-1, url: "rtsp://admin:secret@10.0.0.9/s"}]
""")
    ctx.sites = {"site-g": SiteGeometry.from_config(cfg)}
    ctx.store.upsert(_alert(site="site-b"), now=10.0)
    by_site = {s["site"]: s for s in client.get("/api/v1/sites").json()}
    assert by_site["site-b"]["geometry"] is None  # heard of, but not configured
    geom = by_site["site-g"]["geometry"]
    assert [(z["id"], z["kind"], len(z["polygon"])) for z in geom["zones"]] == [
        ("block-a", "permitted", 3), ("gate", "restricted", 3)]
    assert geom["receivers"] == [{"id": "rx-a", "position": [15.0, 8.0]}]
    assert geom["beacons"] == [{"id": "9001", "position": [4.0, 4.0]}]
    body = client.get("/api/v1/sites").text
    for secret in ("secret", "rtsp", "ttyACM0", "P-0001", "cam-1"):
        assert secret not in body


def test_without_users_the_api_is_open_and_says_so(client: TestClient, ctx: CloudContext,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from cloud.users_cli import log_auth_mode

    assert client.get("/healthz").json()["auth"] == "off"
    assert client.get("/api/v1/me").json() == {"auth": "off", "name": None, "role": "open", "sites": None}
    a = _alert()
    ctx.store.upsert(a, now=10.0)
    # With nobody signed in, the typed name is the only one there is: it stays required.
    assert client.post(f"/api/v1/alerts/{a.alert_id}/ack", json={"note": "x"}).status_code == 422
    with caplog.at_level("WARNING", logger="qwatch.cloud"):
        log_auth_mode(None, "0.0.0.0", 8080)
    [rec] = [r for r in caplog.records if "event=auth mode=off" in r.getMessage()]
    assert rec.levelname == "WARNING" and "OPEN" in rec.getMessage() and "--users" in rec.getMessage()
