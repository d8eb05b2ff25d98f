"""Cloud replicas on one PostgreSQL store, as real processes: the live feed crosses replicas, escalation
fires once.

A: ``serve --shared`` (ingest + API), C: ``ingest --shared`` (a second ingest worker), B: ``serve
--no-ingest`` (an API replica). A guard on B's WebSocket must see, live, alerts ingested by A or C and
an acknowledgement made through A's API; an unacknowledged alert escalates once although A and C both
run the escalation loop.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import connect as ws_connect

from devtools.services import ServiceProcess, free_port
from protocols.topics import CLOUD_ESCALATION
from tests.cloud.cloud_harness import Publisher, alert_json
from tests.faults.edge_harness import Child, wait_until

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.integration


def _cloud(name: str, tmp: Path, *args: str) -> Child:
    return Child(name, [str(BIN / "qwatch-cloud"), *args, "--registry-db", str(tmp / f"{name}-registry.db"),
                        "--log-level", "INFO"], tmp / f"{name}.log").start()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class LiveGuard:
    """A WebSocket client of one replica, recording every message in a thread."""

    def __init__(self, url: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "live socket did not open"

    def _run(self, url: str) -> None:
        with ws_connect(url.replace("http", "ws") + "/api/v1/live") as ws:
            self.messages.append(json.loads(ws.recv(timeout=10)))  # hello
            self._ready.set()
            while not self._stop.is_set():
                try:
                    self.messages.append(json.loads(ws.recv(timeout=0.5)))
                except TimeoutError:
                    continue

    def alert(self, alert_id: str, **want: Any) -> dict[str, Any] | None:
        for m in list(self.messages):
            d = m["data"]
            if m["kind"] == "alert" and d["alert_id"] == alert_id and all(d.get(k) == v for k, v in want.items()):
                return dict(d)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def escalations(mosquitto: ServiceProcess) -> Iterator[Counter[str]]:
    """Escalation announcements on the broker, counted per alert."""
    seen: Counter[str] = Counter()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="esc-watch", protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        seen[json.loads(msg.payload)["alert_id"]] += 1

    c.on_message = on_message
    c.connect(mosquitto.host, mosquitto.port)
    c.subscribe(CLOUD_ESCALATION, qos=1)
    c.loop_start()
    try:
        yield seen
    finally:
        c.loop_stop()
        c.disconnect()


def test_live_feed_crosses_replicas_and_escalation_fires_once(
        tmp_path: Path, mosquitto: ServiceProcess, pg_database: str, escalations: Counter[str]) -> None:
    vm = "http://127.0.0.1:9"  # telemetry is not under test: it spools
    common = ["--db", pg_database, "--mqtt", mosquitto.address, "--vm", vm, "--shared", "--escalate-after-s", "3"]
    port_a, port_b = free_port(), free_port()
    a = _cloud("a", tmp_path, "serve", *common, "--client-id", "ingest-a", "--port", str(port_a),
               "--spool", str(tmp_path / "spool-a"))
    c = _cloud("c", tmp_path, "ingest", *common, "--client-id", "ingest-c", "--spool", str(tmp_path / "spool-c"))
    b = _cloud("b", tmp_path, "serve", "--no-ingest", "--db", pg_database, "--port", str(port_b))
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    guard = None
    pub = Publisher(mosquitto).connect()
    try:
        wait_until(lambda: _healthy(url_a) and _healthy(url_b), 60, "both replicas healthy")
        wait_until(lambda: "event=live_listening" in b.log_tail(20000) and "event=connected" in c.log_tail(20000),
                   30, "B listening and C subscribed")
        guard = LiveGuard(url_b)
        acked_id, acked = alert_json(site="site-r", band=2001)
        lone_id, lone = alert_json(site="site-r", band=2002)
        t0 = time.monotonic()
        pub.publish("qwatch/v1/site-r/edge-01/alert", acked)
        wait_until(lambda: guard is not None and guard.alert(acked_id, state="raised") is not None, 15,
                   "B's guard sees the alert another process ingested")
        seen_s = time.monotonic() - t0
        r = httpx.post(f"{url_a}/api/v1/alerts/{acked_id}/ack", json={"person": "Lan", "note": "on it"}, timeout=10)
        assert r.status_code == 200, r.text
        wait_until(lambda: guard is not None and guard.alert(acked_id, acknowledged=True) is not None, 10,
                   "B's guard sees the acknowledgement made on A")
        again = httpx.post(f"{url_b}/api/v1/alerts/{acked_id}/ack", json={"person": "Minh", "note": ""}, timeout=10)
        assert again.status_code == 409, again.text  # the other replica refuses a second acknowledgement

        pub.publish("qwatch/v1/site-r/edge-01/alert", lone)
        wait_until(lambda: guard is not None and guard.alert(lone_id, escalated=True) is not None, 30,
                   "B's guard sees the escalation")
        time.sleep(3.0)  # both escalation loops have run several times since
        assert escalations[lone_id] == 1, escalations
        assert escalations[acked_id] == 0
        row = httpx.get(f"{url_b}/api/v1/alerts/{lone_id}", timeout=10).json()
        assert row["escalated"] is True
        assert a.alive() and b.alive() and c.alive()
        print(f"cross-replica live alert seen after {seen_s:.2f} s")
    finally:
        if guard is not None:
            guard.close()
        pub.close()
        for child in (b, c, a):
            child.stop()
