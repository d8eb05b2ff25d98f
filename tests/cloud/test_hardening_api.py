"""Issue 9 on the API side: strict serialisation, bounded bodies, tenancy in the store, small leaks.

Each test names the numbered item of the issue it proves; each failed before the fix.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from cloud.alert_store import AlertStore
from cloud.api import CloudContext, create_app
from cloud.api_errors import MAX_BODY_BYTES
from cloud.ingest import Ingest, IngestConfig
from cloud.live import LiveHub, live_json
from devtools.services import free_port
from protocols.payloads import Alert, new_alert
from protocols.topics import NodeTopics


@pytest.fixture
def ctx(tmp_path: Path) -> CloudContext:
    return CloudContext(store=AlertStore(tmp_path / "api.db"), hub=LiveHub())


@pytest.fixture
def client(ctx: CloudContext) -> TestClient:
    return TestClient(create_app(ctx))


def _alert(site: str = "site-a", node: str = "edge-01") -> Alert:
    return new_alert(site=site, node=node, type="sos", subject={"band": 1001}, ts=1000.0, detail={"x": 1.0})


# ------------------------------------------------------------------ item 7: tenancy in the store
def test_item7_other_site_cannot_clear_by_alert_id(ctx: CloudContext) -> None:
    a = _alert("site-a", "edge-01")
    ctx.store.upsert(a, now=1.0)
    forged = a.model_copy(update={"site": "site-b", "node": "edge-09"}).cleared(1001.0)
    assert ctx.store.upsert(forged, now=2.0).outcome == "conflict"
    other_node = a.model_copy(update={"node": "edge-02"}).cleared(1001.0)
    assert ctx.store.upsert(other_node, now=3.0).outcome == "conflict"
    row = ctx.store.get(a.alert_id)
    assert row is not None and row["state"] == "raised" and row["site"] == "site-a"
    assert ctx.store.upsert(a.cleared(1002.0), now=4.0).outcome == "updated"  # the owner still can


def test_item7_ingest_counts_conflict_as_security_event(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "i.db")
    ing = Ingest(IngestConfig("127.0.0.1", 1), store, None)
    a = _alert("site-a", "edge-01")
    assert ing.handle(NodeTopics("site-a", "edge-01").alert, a.to_json().encode()) == "inserted"
    forged = a.model_copy(update={"site": "site-b", "node": "edge-09"}).cleared(1001.0)
    assert ing.handle(NodeTopics("site-b", "edge-09").alert, forged.to_json().encode()) == "conflict"
    assert ing.stats()["security"] == {"alert_id_conflict": 1}
    assert store.get(a.alert_id)["state"] == "raised"  # type: ignore[index]


# ------------------------------------------------------------------ items 4-6: non-finite and huge values
@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", '"' + "x" * 70_000 + '"'])
def test_item4_6_ingest_refuses_nonfinite_and_huge_detail(tmp_path: Path, bad: str) -> None:
    ing = Ingest(IngestConfig("127.0.0.1", 1), AlertStore(tmp_path / "i.db"), None)
    good = json.loads(_alert().to_json())
    text = json.dumps({k: v for k, v in good.items() if k != "detail"})[:-1] + f', "detail": {{"v": {bad}}}}}'
    assert ing.handle(NodeTopics("site-a", "edge-01").alert, text.encode()) == "malformed"
    assert ing.store.counts() == {"unacknowledged": 0}  # nothing stored


def test_item4_band_telemetry_nan_and_far_positions_refused(tmp_path: Path) -> None:
    ing = Ingest(IngestConfig("127.0.0.1", 1), AlertStore(tmp_path / "i.db"), None)
    topic = NodeTopics("site-a", "edge-01").telemetry_bands
    for x in ("NaN", "1e12", "Infinity"):
        payload = ('{"schema":"qwatch.bands/1","ts":1000.0,"bands":[{"band":1,"ts":1000.0,"x":' + x + ',"y":1.0,'
                   '"err_m":1.0,"zone":null,"rssi":-70.0,"rx_count":3,"flags":0}]}')
        assert ing.handle(topic, payload.encode()) == "malformed"
    assert not ing.hub.positions


def test_item4_live_feed_never_sends_bare_nan() -> None:
    assert live_json({"kind": "alert", "data": {"v": float("nan")}}) is None
    hub = LiveHub()
    hub.publish("alert", {"site": "s", "v": float("inf")})
    assert hub.counts["unserialisable_alert"] == 1
    assert live_json({"kind": "alert", "data": {"v": 1.5}}) == '{"kind":"alert","data":{"v":1.5}}'


def test_item4_stored_nan_from_before_the_fix_reads_as_null(ctx: CloudContext, client: TestClient) -> None:
    a = _alert()
    ctx.store.upsert(a, now=1.0)
    with ctx.store._tx() as db:  # a row written by an older version, NaN in detail
        db.execute("UPDATE alerts SET detail = ? WHERE alert_id = ?", ('{"v": NaN}', a.alert_id))
    resp = client.get(f"/api/v1/alerts/{a.alert_id}")
    assert resp.status_code == 200 and resp.json()["detail"] == {"v": None}


# ------------------------------------------------------------------ item 6: body limit before parsing and auth
def _raw_post(port: int, headers: str, body_chunks: int, chunk: bytes) -> tuple[int, float, int]:
    """Send a POST head then up to `body_chunks` chunks; returns (status, seconds, bytes sent)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(headers.encode())
    sent = 0
    try:
        for _ in range(body_chunks):
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server closed the connection after refusing: that is the point
    data = b""
    try:
        while b"\r\n" not in data:
            more = s.recv(4096)
            if not more:
                break
            data += more
    except OSError:
        pass
    s.close()
    status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/") else 0
    return status, time.monotonic() - t0, sent


def test_item6_huge_unauthenticated_post_refused_before_reading(tmp_path: Path) -> None:
    ctx = CloudContext(store=AlertStore(tmp_path / "b.db"), hub=LiveHub())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        path = "/api/v1/alerts/01JAAAAAAAAAAAAAAAAAAAAAAA/ack"
        # Declared 300 MB: refused from the header alone, nothing read.
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {300 << 20}\r\n\r\n")
        status, took, _sent = _raw_post(port, head, 1, b"{")
        assert status == 413 and took < 5
        # Chunked, no length: refused once the limit is crossed, not after 300 MB.
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        status, took, sent = _raw_post(port, head, (300 << 20) // len(piece), chunk)
        assert status == 413
        assert sent < 64 * MAX_BODY_BYTES, f"the server read {sent} bytes before refusing"
    finally:
        server.should_exit = True
        th.join(10)


# ------------------------------------------------------------------ item 10: small ones
@pytest.mark.parametrize("body", ['{"person": "a", "note": NaN}', '{"person": "a", "note": "\\ud800"}',
                                  '{"person": "\\udfff"}', '{"person": "a", "note": Infinity}'])
def test_item10_nan_or_lone_surrogate_in_ack_is_422(ctx: CloudContext, client: TestClient, body: str) -> None:
    a = _alert()
    ctx.store.upsert(a, now=1.0)
    resp = client.post(f"/api/v1/alerts/{a.alert_id}/ack", content=body.encode(),
                       headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert set(resp.json()) == {"detail"} and isinstance(resp.json()["detail"], list)
    assert ctx.store.get(a.alert_id)["acked_at"] is None  # type: ignore[index]


def test_item10_healthz_has_no_database_path(client: TestClient, ctx: CloudContext) -> None:
    text = client.get("/healthz").text
    assert ctx.store.path not in text and "api.db" not in text


def test_item10_openapi_declares_error_responses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ops = [(p, m, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert ops
    for path, method, op in ops:
        codes = set(op["responses"])
        missing = {"400", "401", "403", "404", "409", "413", "422"} - codes
        assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"
    ack = spec["paths"]["/api/v1/alerts/{alert_id}/ack"]["post"]["responses"]
    assert ack["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    ref422 = ack["422"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "detail" in spec["components"]["schemas"][ref422]["properties"]


def test_item10_error_bodies_match_the_documented_shapes(ctx: CloudContext, client: TestClient) -> None:
    a = _alert()
    ctx.store.upsert(a, now=1.0)
    assert client.post(f"/api/v1/alerts/{a.alert_id}/ack", json={"person": "p"}).status_code == 200
    again = client.post(f"/api/v1/alerts/{a.alert_id}/ack", json={"person": "p"})
    assert again.status_code == 409 and set(again.json()) == {"error", "detail"}
    missing = client.get("/api/v1/alerts/01JAAAAAAAAAAAAAAAAAAAAAAB")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    no_person = client.post(f"/api/v1/alerts/{a.alert_id}/ack", json={})
    assert no_person.status_code == 422 and isinstance(no_person.json()["detail"], list)


def test_item10_revoked_token_websocket_closes_within_recheck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One live message just before the check is due used to push the check a whole RECHECK_S later
    (8.7 s measured against the documented 5 s); now the socket closes within RECHECK_S."""
    from starlette.websockets import WebSocketDisconnect

    from cloud import api_live
    from cloud.auth import Authenticator, SignInSettings
    from cloud.users import add_user, revoke_user

    recheck = 2.0
    monkeypatch.setattr(api_live, "RECHECK_S", recheck)
    users = tmp_path / "users.yaml"
    token = add_user(users, "lan", "guard", ["site-a"]).token
    ctx = CloudContext(store=AlertStore(tmp_path / "ws.db"), hub=LiveHub(),
                       auth=Authenticator(users, SignInSettings(fail_limit=1000)))
    with TestClient(create_app(ctx)) as client, client.websocket_connect(
            "/api/v1/live", headers={"Authorization": f"Bearer {token}"}) as ws:
        assert ws.receive_json()["kind"] == "hello"
        t0 = time.monotonic()
        revoke_user(users, "lan")
        timer = threading.Timer(recheck - 0.3, lambda: ctx.hub.publish("alert", {"site": "site-a", "n": 1}))
        timer.start()
        with pytest.raises(WebSocketDisconnect) as exc:
            while True:
                ws.receive_json()
        took = time.monotonic() - t0
        timer.cancel()
    assert exc.value.code == 4401
    assert took <= recheck + 0.9, f"closed {took:.1f} s after the revocation (RECHECK_S = {recheck})"
