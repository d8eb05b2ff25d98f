"""The live feed at province scale: ``?watch=`` and ``{"op": "watch"}`` choose whose band positions a client
gets; the hello carries per-site summaries; alerts always come, watched or not; a guard's own sites stay live;
bad choices are refused (query: close 4422; message: ignored and counted). Real app, real store, no broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cloud.alert_store import AlertStore
from cloud.api import create_app
from cloud.api_context import CloudContext
from cloud.auth import Authenticator
from cloud.live import LiveHub
from cloud.users import add_user
from protocols.payloads import new_alert

SITES = {"site-a": 30, "site-b": 20, "site-c": 10}  # bands per site


def _positions(site: str, node: str, n: int, first: int = 1000) -> dict[str, Any]:
    return {"site": site, "node": node, "ts": 1.0,
            "bands": [{"band": first + k, "ts": 1.0, "x": float(k), "y": 1.0, "err_m": 2.0} for k in range(n)]}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[TestClient, CloudContext, dict[str, str]]]:
    users = tmp_path / "users.yaml"
    tokens = {"guard": add_user(users, "lan", "guard", ["site-a"]).token,
              "command": add_user(users, "cc", "command", []).token}
    ctx = CloudContext(store=AlertStore(tmp_path / "api.db"), hub=LiveHub(), auth=Authenticator(users),
                       live_all_bands=40)
    for site, n in SITES.items():
        ctx.hub.publish_positions(site, "edge-01", _positions(site, "edge-01", n))
    # A band heard by two nodes counts once; the second node's report is old: its only own band is stale.
    ctx.hub.publish_positions("site-a", "edge-02", _positions("site-a", "edge-02", 2, first=1029))
    ctx.hub.received[("site-a", "edge-02")] -= 120
    for site in SITES:
        ctx.store.upsert(new_alert(site=site, node="edge-01", type="sos", subject={"band": 1000}, ts=5.0))
    with TestClient(create_app(ctx)) as client:
        yield client, ctx, {k: f"Bearer {v}" for k, v in tokens.items()}


def test_without_watch_the_hello_is_as_before(world: tuple[TestClient, CloudContext, dict[str, str]]) -> None:
    client, _ctx, h = world
    with client.websocket_connect("/api/v1/live", headers={"Authorization": h["command"]}) as ws:
        hello = ws.receive_json()["data"]
    assert set(hello) == {"alerts", "positions"} and len(hello["positions"]) == 4 and len(hello["alerts"]) == 3


def test_province_gets_summaries_then_one_site_and_every_alert(
        world: tuple[TestClient, CloudContext, dict[str, str]]) -> None:
    client, ctx, h = world
    with client.websocket_connect("/api/v1/live?watch=auto", headers={"Authorization": h["command"]}) as ws:
        hello = ws.receive_json()["data"]
        assert hello["watching"] == [] and hello["positions"] == []  # 61 bands > live_all_bands 40
        assert len(hello["alerts"]) == 3  # every site's alerts, watched or not
        brief = {s["site"]: s for s in hello["summary"]}
        assert {k: (v["bands"], v["bands_stale"]) for k, v in brief.items()} == {
            "site-a": (31, 1), "site-b": (20, 0), "site-c": (10, 0)}
        assert brief["site-b"]["unacknowledged"] == 1 and brief["site-b"]["open"] == 1
        assert "geometry" not in brief["site-a"] and brief["site-a"]["nodes_total"] == 0  # counts only
        ws.send_json({"op": "watch", "sites": ["site-b"]})
        msg = ws.receive_json()
        assert msg["kind"] == "positions" and msg["data"]["watching"] == ["site-b"]
        assert [(p["site"], len(p["bands"])) for p in msg["data"]["positions"]] == [("site-b", 20)]
        ctx.hub.publish_positions("site-c", "edge-01", _positions("site-c", "edge-01", 3))  # not watched: not sent
        ctx.hub.publish("alert", {"site": "site-c", "alert_id": "C-LIVE"})  # an alert always is
        ctx.hub.publish_positions("site-b", "edge-01", _positions("site-b", "edge-01", 4))
        first, second = ws.receive_json(), ws.receive_json()
        assert (first["kind"], first["data"]["alert_id"]) == ("alert", "C-LIVE")
        assert (second["kind"], second["data"]["site"], len(second["data"]["bands"])) == ("bands", "site-b", 4)
        # Junk is refused and counted; the feed goes on.
        for junk in ("not json", '{"op": "watch", "sites": ["../x"]}', '{"op": "drop"}', "x" * 5000):
            ws.send_text(junk)
        ws.send_json({"op": "watch", "sites": "*"})
        msg = ws.receive_json()
        assert msg["data"]["watching"] == "*" and {p["site"] for p in msg["data"]["positions"]} == set(SITES)
    assert ctx.hub.counts["live_op_refused:bad"] == 3 and ctx.hub.counts["live_op_refused:oversized"] == 1
    assert ctx.hub.counts["unwatched_bands"] == 1


def test_small_province_and_guards_stay_live(world: tuple[TestClient, CloudContext, dict[str, str]]) -> None:
    client, ctx, h = world
    ctx.live_all_bands = 1000
    with client.websocket_connect("/api/v1/live?watch=auto", headers={"Authorization": h["command"]}) as ws:
        hello = ws.receive_json()["data"]
        assert hello["watching"] == "*" and len(hello["positions"]) == 4
    ctx.live_all_bands = 0
    with client.websocket_connect("/api/v1/live?watch=auto", headers={"Authorization": h["guard"]}) as ws:
        hello = ws.receive_json()["data"]
        assert hello["watching"] == "*" and {p["site"] for p in hello["positions"]} == {"site-a"}
        assert [s["site"] for s in hello["summary"]] == ["site-a"]
        ws.send_json({"op": "watch", "sites": ["site-b"]})  # outside the guard's scope: nothing
        assert ws.receive_json()["data"] == {"watching": [], "positions": []}


def test_bad_watch_parameter_is_refused(world: tuple[TestClient, CloudContext, dict[str, str]]) -> None:
    client, _ctx, h = world
    for bad in ("a,b/c", ",".join(f"s{i}" for i in range(65))):
        with client.websocket_connect(f"/api/v1/live?watch={bad}", headers={"Authorization": h["command"]}) as ws:
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_json()
            assert exc.value.code == 4422


def test_a_hello_too_large_for_one_message_keeps_its_alerts(
        world: tuple[TestClient, CloudContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the live feed's message limit the positions follow the hello as ``bands`` messages (before, the
    whole hello, alerts included, was replaced by an empty one: 10,000 bands are ~1.9 MB)."""
    client, ctx, h = world
    monkeypatch.setattr("cloud.live.MAX_MESSAGE_CHARS", 4000)  # the site-a report alone is ~2.3 KB
    with client.websocket_connect("/api/v1/live", headers={"Authorization": h["command"]}) as ws:
        hello = ws.receive_json()
        assert len(hello["data"]["alerts"]) == 3 and hello["data"]["positions"] == []
        follow = [ws.receive_json() for _ in range(4)]
    assert {(m["kind"], m["data"]["site"], m["data"]["node"]) for m in follow} == {
        ("bands", s, "edge-01") for s in SITES} | {("bands", "site-a", "edge-02")}
    assert ctx.hub.counts["hello_positions_split"] == 1


def test_auto_follows_the_province_size_while_connected(
        world: tuple[TestClient, CloudContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` is re-resolved every RECHECK_S: past the budget the client is told to show summaries (an
    empty watch), back under it it gets every position again; an explicit site choice is left alone."""
    client, ctx, h = world
    monkeypatch.setattr("cloud.api_live.RECHECK_S", 0.2)
    ctx.live_all_bands = 1000
    with client.websocket_connect("/api/v1/live?watch=auto", headers={"Authorization": h["command"]}) as ws:
        assert ws.receive_json()["data"]["watching"] == "*"
        # An alert after a few rechecks ends each step: without the re-resolution it would come first
        # (a failure, not a test waiting forever on a message that never comes).
        ctx.live_all_bands = 10   # the province "grew" past the budget
        time.sleep(0.6)
        ctx.hub.publish("alert", {"site": "site-c", "alert_id": "C-1"})
        msg = ws.receive_json()
        assert (msg["kind"], msg["data"]) == ("positions", {"watching": [], "positions": []})
        assert ws.receive_json()["data"]["alert_id"] == "C-1"
        ctx.live_all_bands = 1000
        time.sleep(0.6)
        ctx.hub.publish("alert", {"site": "site-c", "alert_id": "C-2"})
        msg = ws.receive_json()
        assert msg["data"]["watching"] == "*" and len(msg["data"]["positions"]) == 4
        assert ws.receive_json()["data"]["alert_id"] == "C-2"
        ws.send_json({"op": "watch", "sites": ["site-c"]})
        assert ws.receive_json()["data"]["watching"] == ["site-c"]
        ctx.live_all_bands = 0
        time.sleep(0.6)   # three rechecks
        ctx.hub.publish("alert", {"site": "site-c", "alert_id": "C-LIVE"})
        assert ws.receive_json()["kind"] == "alert"   # no positions message came first: the choice stays
