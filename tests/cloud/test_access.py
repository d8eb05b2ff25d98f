"""Access control of the API and the live WebSocket: tokens, roles, site scope, revocation (real app, real
SQLite store, real users file; no broker needed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from cloud import api_live
from cloud.alert_store import AlertStore
from cloud.api import CloudContext, create_app
from cloud.auth import Authenticator, SignInSettings
from cloud.cli import app as cli_app
from cloud.live import LiveHub
from cloud.users import add_user, load_users, revoke_user, rotate_user
from devtools.services import ServiceProcess, flush_victoria_metrics
from protocols.errors import ConfigError
from protocols.payloads import Alert, new_alert
from tests.helpers import wait_for


@dataclass
class Tokens:
    path: Path
    guard_a: str
    guard_b: str
    command: str
    revoked: str


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    path = tmp_path_factory.mktemp("users") / "users.yaml"
    t = Tokens(path, add_user(path, "guard-a", "guard", ["site-a"]).token,
               add_user(path, "guard-b", "guard", ["site-b"]).token,
               add_user(path, "cc-duty", "command", []).token, add_user(path, "old-guard", "guard", ["site-a"]).token)
    revoke_user(path, "old-guard")
    return t


@pytest.fixture(scope="module")
def authenticator(users_file: Tokens) -> Authenticator:
    # Module-wide: each token's scrypt check is paid once. These tests present many bad tokens from one
    # client on purpose; the failure limit (429) has its own test (test_ops_signin).
    return Authenticator(users_file.path, SignInSettings(fail_limit=100000))


@pytest.fixture
def ctx(tmp_path: Path, authenticator: Authenticator) -> CloudContext:
    return CloudContext(store=AlertStore(tmp_path / "api.db"), hub=LiveHub(), auth=authenticator)


@pytest.fixture
def client(ctx: CloudContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def _alert(site: str, band: int = 1001) -> Alert:
    return new_alert(site=site, node="edge-01", type="geofence_breach", subject={"band": band}, ts=1000.0,
                     detail={"x": 44.1, "y": 9.8, "zone": None})


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _two_sites(ctx: CloudContext) -> tuple[Alert, Alert]:
    a, b = _alert("site-a"), _alert("site-b", band=2001)
    ctx.store.upsert(a, now=10.0)
    ctx.store.upsert(b, now=20.0)
    ctx.hub.publish_positions("site-a", "edge-01", {"site": "site-a", "node": "edge-01", "ts": 1.0, "bands": []})
    ctx.hub.publish_positions("site-b", "edge-01", {"site": "site-b", "node": "edge-01", "ts": 1.0, "bands": []})
    return a, b


def test_every_api_route_needs_a_valid_token(ctx: CloudContext, client: TestClient, users_file: Tokens) -> None:
    a, _ = _two_sites(ctx)
    # Every HTTP route the app documents (routers included), so a route added later is covered too.
    routes = [(path, method.upper()) for path, ops in client.get("/openapi.json").json()["paths"].items()
              if path.startswith("/api/v1") and path != "/api/v1/auth/exchange" for method in ops]  # the sign-in
    assert len(routes) >= 8
    flipped = users_file.guard_a[:-1] + ("A" if users_file.guard_a[-1] != "A" else "B")
    for template, method in routes:
        path = template.replace("{alert_id}", a.alert_id).replace("{band}", "1001")
        for headers in ({}, _h("nonsense"), _h(flipped), _h(users_file.revoked), {"Authorization": "Basic eDp5"}):
            resp = client.request(method, path, headers=headers, json={"note": "x"})
            assert resp.status_code == 401, (path, headers, resp.text)
            assert resp.json()["error"] == "unauthorized"
            assert resp.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/v1/me", headers=_h(users_file.revoked)).json()["detail"] == "token revoked"
    assert (ctx.store.get(a.alert_id) or {})["acked_at"] is None


def test_healthz_stays_open_without_personal_data(ctx: CloudContext, client: TestClient) -> None:
    _two_sites(ctx)
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json()["auth"] == "on"
    for private in ("guard-a", "cc-duty", "edge-01", "1001", "44.1", "site-a"):
        assert private not in resp.text
    assert client.get("/").status_code == 200  # the page itself holds nothing; its data needs a token


def test_guard_sees_and_acks_only_their_sites(ctx: CloudContext, client: TestClient, users_file: Tokens) -> None:
    a, b = _two_sites(ctx)
    g = _h(users_file.guard_a)
    assert client.get("/api/v1/me", headers=g).json() == {"auth": "on", "name": "guard-a", "role": "guard",
                                                          "sites": ["site-a"]}
    assert [x["alert_id"] for x in client.get("/api/v1/alerts", headers=g).json()] == [a.alert_id]
    for path in (f"/api/v1/alerts/{b.alert_id}", f"/api/v1/alerts/{b.alert_id}/snapshot"):
        resp = client.get(path, headers=g)
        assert resp.status_code == 403 and resp.json()["error"] == "forbidden", resp.text
    assert client.get("/api/v1/alerts", headers=g, params={"site": "site-b"}).status_code == 403
    resp = client.post(f"/api/v1/alerts/{b.alert_id}/ack", headers=g, json={"note": "not mine"})
    assert resp.status_code == 403 and "site-b" in resp.json()["detail"]
    assert (ctx.store.get(b.alert_id) or {})["acked_at"] is None
    assert [p["site"] for p in client.get("/api/v1/positions", headers=g).json()] == ["site-a"]
    assert [s["site"] for s in client.get("/api/v1/sites", headers=g).json()] == ["site-a"]
    # The command centre sees both sites.
    c = _h(users_file.command)
    assert {x["site"] for x in client.get("/api/v1/alerts", headers=c).json()} == {"site-a", "site-b"}
    assert {s["site"] for s in client.get("/api/v1/sites", headers=c).json()} == {"site-a", "site-b"}
    assert client.get(f"/api/v1/alerts/{b.alert_id}", headers=c).status_code == 200


def test_ack_records_the_authenticated_user(ctx: CloudContext, client: TestClient, users_file: Tokens) -> None:
    a, b = _two_sites(ctx)
    g = _h(users_file.guard_a)
    url = f"/api/v1/alerts/{a.alert_id}/ack"
    # A client may no longer claim a name: another one is refused, and nothing is stored.
    assert client.post(url, headers=g, json={"person": "Someone Else", "note": "x"}).status_code == 422
    resp = client.post(url, headers=g, json={"note": "sent to the gate"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["ack"]["by"] == "guard-a" and resp.json()["ack"]["note"] == "sent to the gate"
    row = ctx.store.get(a.alert_id) or {}
    assert (row["acked_by"], row["ack_note"]) == ("guard-a", "sent to the gate")
    resp = client.post(f"/api/v1/alerts/{b.alert_id}/ack", headers=_h(users_file.command), json={"person": "cc-duty"})
    assert resp.status_code == 200 and resp.json()["ack"]["by"] == "cc-duty"


def test_live_socket_needs_a_token_and_filters_by_site(ctx: CloudContext, client: TestClient,
                                                       users_file: Tokens) -> None:
    a, _ = _two_sites(ctx)
    for kwargs in ({}, {"subprotocols": ["qwatch.v1", "qwatch.bearer.qw.0000000000000000.wrongwrongwrongwrongwrong"]},
                   {"headers": _h(users_file.revoked)}):
        with client.websocket_connect("/api/v1/live", **kwargs) as ws:
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_json()
            assert exc.value.code == 4401
    # A browser's way (subprotocol), as the guard of site A: hello and live messages of site A only.
    with client.websocket_connect("/api/v1/live", subprotocols=["qwatch.v1", f"qwatch.bearer.{users_file.guard_a}"]
                                  ) as ws:
        assert ws.accepted_subprotocol == "qwatch.v1"  # the token is never echoed
        hello = ws.receive_json()
        assert [x["alert_id"] for x in hello["data"]["alerts"]] == [a.alert_id]
        assert [p["site"] for p in hello["data"]["positions"]] == ["site-a"]
        ctx.hub.publish("alert", {"site": "site-b", "alert_id": "B-LIVE"})
        ctx.hub.publish_positions("site-b", "edge-01", {"site": "site-b", "node": "edge-01", "ts": 2.0, "bands": []})
        ctx.hub.publish("alert", {"site": "site-a", "alert_id": "A-LIVE"})
        msg = ws.receive_json()
        assert (msg["kind"], msg["data"]["alert_id"]) == ("alert", "A-LIVE")  # site B's two never came
    # The command centre (header token) gets everything.
    with client.websocket_connect("/api/v1/live", headers=_h(users_file.command)) as ws:
        hello = ws.receive_json()
        assert {x["site"] for x in hello["data"]["alerts"]} == {"site-a", "site-b"}
        ctx.hub.publish("alert", {"site": "site-b", "alert_id": "B-LIVE"})
        assert ws.receive_json()["data"]["alert_id"] == "B-LIVE"


def test_revoke_and_rotate_apply_to_a_running_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users.yaml"
    token = add_user(path, "lan", "guard", ["site-a"]).token
    ctx = CloudContext(store=AlertStore(tmp_path / "api.db"), hub=LiveHub(), auth=Authenticator(path))
    monkeypatch.setattr(api_live, "RECHECK_S", 0.2)
    with TestClient(create_app(ctx)) as client:
        assert client.get("/api/v1/alerts", headers=_h(token)).status_code == 200
        new = rotate_user(path, "lan").token
        assert client.get("/api/v1/alerts", headers=_h(token)).status_code == 401
        assert client.get("/api/v1/alerts", headers=_h(new)).status_code == 200
        with client.websocket_connect("/api/v1/live", headers=_h(new)) as ws:
            assert ws.receive_json()["kind"] == "hello"
            revoke_user(path, "lan")
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_json()  # closed by the server within RECHECK_S
            assert exc.value.code == 4401
        assert client.get("/api/v1/alerts", headers=_h(new)).json()["detail"] == "token revoked"
        # A broken edit keeps the last good users in force (revoked stays revoked) and is reported.
        path.write_text("users: [{name: lan, role: pilot}]\n")
        assert client.get("/api/v1/alerts", headers=_h(new)).status_code == 401
        health = client.get("/healthz").json()
        assert health["auth"] == "on" and health["auth_file_error"] is True


@pytest.mark.parametrize(("text", "key", "words"), [
    ("users: [{name: lan, role: pilot, token_id: 0123456789abcdef, token_hash: x, created_at: 1}]",
     "users[0].role", ["'pilot'", "guard", "command", "admin"]),
    ("users: [{name: lan, role: guard, token_id: 0123456789abcdef, created_at: 1,\n"
     "          token_hash: 'scrypt$16384$8$1$AAAA$AAAA'}]", "users[0].sites", ["required", "guard"]),
    ("users: [{name: lan, role: command, sites: [a], token_id: 0123456789abcdef, created_at: 1,\n"
     "          token_hash: 'scrypt$16384$8$1$AAAA$AAAA'}]", "users[0].sites", ["only guards"]),
    ("users: [{name: lan, role: guard, sites: [a], token: qw.secret}]", "users[0].token", ["unknown key"]),
    ("version: 1\nuser: []", "user", ["unknown key"]),
])
def test_bad_users_file_names_file_key_and_allowed(tmp_path: Path, text: str, key: str, words: list[str]) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_users(path)
    assert exc.value.file == str(path) and exc.value.key == key, str(exc.value)
    for w in words:
        assert w in exc.value.detail, str(exc.value)
    # `serve --users` refuses it before starting anything (usage error, exit 2), naming file and key.
    res = CliRunner().invoke(cli_app, ["serve", "--users", str(path), "--db", str(tmp_path / "x.db")])
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.replace("│", " ").split())
    assert path.name in flat and key.split(".")[-1] in flat


def test_user_cli_shows_the_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "var" / "users.yaml"
    runner = CliRunner()
    res = runner.invoke(cli_app, ["user", "add", "lan", "--role", "guard", "--site", "site-a", "--users", str(path)])
    assert res.exit_code == 0, res.output
    token = res.stdout.strip()
    assert token.startswith("qw.") and len(token) > 50
    stored = path.read_text()
    assert token not in stored and token.split(".")[2] not in stored and "scrypt$" in stored
    assert path.stat().st_mode & 0o777 == 0o600
    res = runner.invoke(cli_app, ["user", "add", "x", "--role", "guard", "--users", str(path)])
    assert res.exit_code == 2 and "--site" in res.output
    res = runner.invoke(cli_app, ["user", "add", "boss", "--role", "command", "--users", str(path)])
    assert res.exit_code == 0
    listing = runner.invoke(cli_app, ["user", "list", "--users", str(path)], env={"COLUMNS": "200"}).stdout
    assert "lan" in listing and "boss" in listing and "site-a" in listing
    assert token not in listing and "scrypt" not in listing
    assert runner.invoke(cli_app, ["user", "revoke", "lan", "--users", str(path)]).exit_code == 0
    assert "revoked" in runner.invoke(cli_app, ["user", "list", "--users", str(path)], env={"COLUMNS": "200"}).stdout
    res = runner.invoke(cli_app, ["user", "rotate", "lan", "--users", str(path)])
    new = res.stdout.strip()
    assert res.exit_code == 0 and new.startswith("qw.") and new != token
    auth = Authenticator(path)
    assert auth.authenticate(new).name == "lan"
    assert runner.invoke(cli_app, ["user", "revoke", "nobody", "--users", str(path)]).exit_code == 2


def test_guard_track_holds_only_their_sites_points(tmp_path: Path, shared_victoria_metrics: ServiceProcess,
                                                   users_file: Tokens, authenticator: Authenticator) -> None:
    band = 700000 + int(time.time()) % 100000  # unique in the session-wide VictoriaMetrics
    now_ns = time.time_ns()
    lines = "\n".join(f"band,site={s},node=edge-01,band={band} x={x},y=2,err_m=3 {now_ns - (i + 1) * 10**9}"
                      for i, (s, x) in enumerate((("site-a", 1.0), ("site-b", 9.0))))
    httpx.post(f"{shared_victoria_metrics.url}/write", content=lines, timeout=5).raise_for_status()
    flush_victoria_metrics(shared_victoria_metrics.url)
    ctx = CloudContext(store=AlertStore(tmp_path / "api.db"), hub=LiveHub(), auth=authenticator,
                       vm_url=shared_victoria_metrics.url)
    with TestClient(create_app(ctx)) as client:
        def sites_seen(token: str) -> set[str]:
            resp = client.get(f"/api/v1/bands/{band}/track", headers=_h(token), params={"since": time.time() - 60})
            assert resp.status_code == 200, resp.text
            return {p["site"] for p in resp.json()["points"]}

        wait_for(lambda: sites_seen(users_file.command) == {"site-a", "site-b"}, 15, 0.3, "both points in VM")
        assert sites_seen(users_file.guard_a) == {"site-a"}
        assert sites_seen(users_file.guard_b) == {"site-b"}
