"""`qwatch-cloud serve --users` as a real process: it needs tokens, scopes a guard, records the guard as the
acknowledger, and never logs a token (not even a rejected near miss)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from cloud.users import add_user
from devtools.services import ServiceProcess, free_port
from tests.cloud.cloud_harness import Publisher, alert_json, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def serve(tmp_path: Path, mq: ServiceProcess, vm: ServiceProcess, *extra: str) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / f"cloud-{port}.log"
    argv = [sys.executable, "-m", "cloud.cli", "serve", "--db", str(tmp_path / f"{port}.db"), "--mqtt", mq.address,
            "--vm", vm.url, "--port", str(port), "--log-level", "DEBUG", *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, 0.2, "serve /healthz")
        yield url, log
    finally:
        proc.terminate()
        proc.wait(15)


def test_serve_with_users_needs_tokens_and_keeps_them_out_of_logs(
        tmp_path: Path, mosquitto: ServiceProcess, shared_victoria_metrics: ServiceProcess) -> None:
    users = tmp_path / "users.yaml"
    guard = add_user(users, "guard-a", "guard", ["site-a"]).token
    near_miss = guard[:-4] + "AAAA"
    pub = Publisher(mosquitto).connect()
    with serve(tmp_path, mosquitto, shared_victoria_metrics, "--users", str(users)) as (url, log):
        assert httpx.get(f"{url}/healthz").json()["auth"] == "on"
        assert httpx.get(f"{url}/api/v1/alerts").status_code == 401
        assert httpx.get(f"{url}/api/v1/alerts", headers={"Authorization": f"Bearer {near_miss}"}).status_code == 401
        alert_id, raw = alert_json(site="site-a")
        other_id, other = alert_json(site="site-b")
        pub.publish("qwatch/v1/site-b/edge-01/alert", other)
        pub.publish("qwatch/v1/site-a/edge-01/alert", raw)
        h = {"Authorization": f"Bearer {guard}"}

        def mine() -> list[str]:
            return [a["alert_id"] for a in httpx.get(f"{url}/api/v1/alerts", headers=h).json()]

        wait_for(lambda: mine() == [alert_id], 10, 0.1, "the guard's alert, and only it")
        # The browser's WebSocket way: the token in a subprotocol (a header), never in the URL.
        ws_url = url.replace("http", "ws") + "/api/v1/live"
        with ws_connect(ws_url, subprotocols=["qwatch.v1", f"qwatch.bearer.{guard}"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "qwatch.v1"
            hello = json.loads(ws.recv(timeout=5))
            assert [a["alert_id"] for a in hello["data"]["alerts"]] == [alert_id]
        resp = httpx.post(f"{url}/api/v1/alerts/{alert_id}/ack", headers=h, json={"note": "on my way"})
        assert resp.status_code == 200 and resp.json()["ack"]["by"] == "guard-a"
        assert httpx.post(f"{url}/api/v1/alerts/{other_id}/ack", headers=h, json={}).status_code == 403
        wait_for(lambda: "event=alert_acknowledged" in log.read_text(), 5, 0.1, "ack logged")
    pub.close()
    text = log.read_text()
    assert "event=auth mode=on" in text and "event=auth_failed reason=bad_secret user=guard-a" in text
    assert "by=guard-a" in text
    for secret in (guard, guard.split(".")[2], near_miss.split(".")[2]):
        assert secret not in text

