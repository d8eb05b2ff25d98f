"""Alert latency: edge rule decision → cloud store row → live WebSocket message (issue 5 benchmark).

Everything is real and local: Mosquitto and VictoriaMetrics as child processes, the cloud as a
separate ``qwatch-cloud serve`` process, the edge side as the real durable ``Outbox`` (SQLite,
``synchronous=FULL``) and ``MqttLink`` (MQTT 5, QoS 1). An alert is "decided" when its ``ts`` is
stamped, just before the outbox commit. We report:

- ``broker hop`` (baseline): plain paho QoS 1 publish → subscriber, in the same run;
- ``store row``: decision → the ingest stamping the row it then commits (``first_received``);
- ``websocket``: decision → the alert arriving on ``/api/v1/live`` (after the commit).

Then, optionally, the ingest's backlog drain: the cloud is stopped, ``--drain`` alerts queue at
the broker in the ingest's persistent session, the cloud restarts, and we time until all rows
are stored.

Run: ``.venv/bin/python bench/alert_latency.py [--alerts 300] [--rate 20] [--drain 2000]``.
Target (issue 5): websocket p99 ≤ 250 ms with the broker local.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
from rich.console import Console
from rich.table import Table
from websockets.sync.client import connect as ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud.services import ServiceProcess, free_port, start_mosquitto, start_victoria_metrics
from edge.mqtt_link import LinkConfig, MqttLink
from edge.outbox import Outbox
from protocols.payloads import new_alert
from protocols.topics import NodeTopics

SITE, NODE = "bench-site", "edge-bench"


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def start_cloud(work: Path, mq: ServiceProcess, vm: ServiceProcess, port: int) -> subprocess.Popen[bytes]:
    """``qwatch-cloud serve`` as its own process; returns once /healthz is ok."""
    argv = [sys.executable, "-m", "cloud.cli", "serve", "--db", str(work / "cloud.db"), "--mqtt", mq.address,
            "--vm", vm.url, "--port", str(port), "--log-level", "WARNING", "--client-id", "bench-ingest"]
    log = open(work / "cloud.log", "ab")  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=log)

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(healthy, 20, "cloud healthy")
    return proc


def baseline_broker_hop(mq: ServiceProcess, n: int, rate: float) -> list[float]:
    """Plain paho QoS 1 publish → subscribe latency through the same broker."""
    lat: list[float] = []
    done = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_msg(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        lat.append(time.time() - float(m.payload))
        if len(lat) >= n:
            done.set()

    sub.on_message = on_msg
    sub.connect(mq.host, mq.port)
    sub.loop_start()
    sub.subscribe("bench/hop", qos=1)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(mq.host, mq.port)
    pub.loop_start()
    time.sleep(0.5)
    for _ in range(n):
        pub.publish("bench/hop", repr(time.time()).encode(), qos=1)
        time.sleep(1.0 / rate)
    done.wait(10)
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return lat


def end_to_end(work: Path, mq: ServiceProcess, port: int, n: int, rate: float) -> tuple[list[float], list[float]]:
    """Alerts through the real edge outbox + link into the cloud; (store latencies, websocket latencies)."""
    decided: dict[str, float] = {}
    ws_lat: dict[str, float] = {}
    ready = threading.Event()

    def listen() -> None:
        with ws_connect(f"ws://127.0.0.1:{port}/api/v1/live", open_timeout=10) as ws:
            ready.set()
            while len(ws_lat) < n:
                try:
                    msg = json.loads(ws.recv(timeout=15))
                except TimeoutError:
                    return
                if msg["kind"] == "alert" and msg["data"]["state"] == "raised":
                    aid = msg["data"]["alert_id"]
                    ws_lat.setdefault(aid, time.time() - msg["data"]["raised_ts"])

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    ready.wait(10)
    outbox = Outbox(work / "edge")
    topics = NodeTopics(SITE, NODE)
    link = MqttLink(LinkConfig(mq.host, mq.port), topics, outbox, boot_id="bench-boot", version="bench")
    link.start()
    _wait(lambda: link.connected, 10, "edge link connected")
    time.sleep(0.5)
    for i in range(n):
        alert = new_alert(site=SITE, node=NODE, type="geofence_breach", subject={"band": 1000 + i % 500},
                          ts=time.time(), detail={"x": 44.0, "y": 9.8, "zone": None})
        decided[alert.alert_id] = alert.ts
        outbox.put("alert", topics.alert, alert.to_json().encode(), alert.alert_id)
        link.notify()
        time.sleep(1.0 / rate)
    listener.join(20)
    link.stop()
    outbox.close()
    db = sqlite3.connect(work / "cloud.db")
    rows = db.execute("SELECT alert_id, first_received, raised_ts FROM alerts WHERE site = ?", (SITE,)).fetchall()
    db.close()
    store_lat = [fr - ts for aid, fr, ts in rows if aid in decided]
    if len(store_lat) != n or len(ws_lat) != n:
        print(f"WARNING: stored {len(store_lat)}/{n}, websocket {len(ws_lat)}/{n}")
    return store_lat, list(ws_lat.values())


def drain(work: Path, mq: ServiceProcess, vm: ServiceProcess, port: int, cloud: subprocess.Popen[bytes],
          n: int) -> tuple[float, float, int]:
    """Stop the cloud, queue n alerts in its session at the broker, restart, time the catch-up."""
    cloud.terminate()
    cloud.wait(15)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(200)
    pub.connect(mq.host, mq.port)
    pub.loop_start()
    infos = []
    for i in range(n):
        a = new_alert(site="drain-site", node=NODE, type="band_missing", subject={"band": 1 + i % 500}, ts=time.time())
        infos.append(pub.publish(f"qwatch/v1/drain-site/{NODE}/alert", a.to_json(), qos=1))
    for info in infos:
        info.wait_for_publish(30)
    pub.loop_stop()
    pub.disconnect()
    t0 = time.monotonic()
    proc = start_cloud(work, mq, vm, port)

    def stored() -> int:
        db = sqlite3.connect(work / "cloud.db")
        try:
            return int(db.execute("SELECT COUNT(*) FROM alerts WHERE site = 'drain-site'").fetchone()[0])
        finally:
            db.close()

    _wait(lambda: stored() >= n, 120, "backlog drained")
    elapsed = time.monotonic() - t0
    proc.terminate()
    proc.wait(15)
    db = sqlite3.connect(work / "cloud.db")
    first, last = db.execute(
        "SELECT MIN(first_received), MAX(first_received) FROM alerts WHERE site = 'drain-site'").fetchone()
    db.close()
    return elapsed, last - first, stored()


def row(table: Table, name: str, lat: list[float], base_p50: float | None) -> None:
    """One latency row in milliseconds."""
    a = np.array(lat) * 1000.0
    p50, p90, p99 = (float(np.percentile(a, q)) for q in (50, 90, 99))
    ratio = f"{p50 / base_p50:.1f}x" if base_p50 else "1.0x"
    table.add_row(name, str(len(a)), f"{p50:.1f}", f"{p90:.1f}", f"{p99:.1f}", f"{a.max():.1f}", ratio)


def main() -> None:
    """Run the benchmark and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0, help="alerts per second")
    ap.add_argument("--drain", type=int, default=2000, help="backlog size for the drain test (0: skip)")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="qwatch-bench-") as tmp:
        work = Path(tmp)
        mq = start_mosquitto(work / "mosquitto")
        vm = start_victoria_metrics(work / "vm")
        port = free_port()
        cloud = start_cloud(work, mq, vm, port)
        try:
            hop = baseline_broker_hop(mq, args.alerts, args.rate)
            store_lat, ws_lat = end_to_end(work, mq, port, args.alerts, args.rate)
            t = Table(title=f"Alert latency, {args.alerts} alerts at {args.rate:g}/s (ms)")
            for col in ("path", "n", "p50", "p90", "p99", "max", "p50 vs hop"):
                t.add_column(col, justify="right" if col != "path" else "left")
            base = float(np.percentile(np.array(hop) * 1000.0, 50))
            row(t, "broker hop (baseline)", hop, None)
            row(t, "decision → store row", store_lat, base)
            row(t, "decision → websocket", ws_lat, base)
            console.print(t)
            if args.drain:
                secs, span, got = drain(work, mq, vm, port, cloud, args.drain)
                d = Table(title="Ingest backlog drain (alerts queued in the persistent session)")
                for col in ("alerts", "stored", "restart→all stored s", "first→last row s", "alerts/s (rows)"):
                    d.add_column(col, justify="right")
                d.add_row(str(args.drain), str(got), f"{secs:.2f}", f"{span:.2f}", f"{got / max(span, 1e-3):.0f}")
                console.print(d)
        finally:
            if cloud.poll() is None:
                cloud.terminate()
                cloud.wait(15)
            mq.stop()
            vm.stop()
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or '?'}, "
                  f"Python {platform.python_version()}, {platform.platform()}")


if __name__ == "__main__":
    main()
