"""Ingest backlog drain: how fast a restarted cloud catches up on alerts queued in its MQTT session.

Everything real and local: Mosquitto and VictoriaMetrics as child processes, the cloud as a separate
``qwatch-cloud serve`` process with a fixed client ID (persistent MQTT 5 session). The cloud is started
once so the broker knows its session, then stopped; ``--alerts`` alerts are published at QoS 1 and
queue at the broker for it; the cloud restarts and we time until every row is stored.

This is the cloud side only. The edge side of an outage (outbox → broker after the broker comes back,
whole agent) is ``bench/edge_backlog_drain.py``; alert latency is ``bench/edge_alert_latency.py``.

Run: ``.venv/bin/python -m bench.ingest_drain [--alerts 2000]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]

from devtools.services import ServiceProcess, free_port, start_mosquitto, start_victoria_metrics  # noqa: E402
from protocols.payloads import new_alert  # noqa: E402

SITE, NODE = "drain-site", "edge-bench"


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
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(healthy, 30, "cloud healthy")
    return proc


def _stored(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM alerts WHERE site = ?", (SITE,)).fetchone()[0])
    finally:
        con.close()


def queue_alerts(mq: ServiceProcess, n: int) -> None:
    """Publish n raised alerts at QoS 1 while the ingest is away; they wait in its session."""
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(200)
    pub.connect(mq.host, mq.port)
    pub.loop_start()
    infos = []
    for i in range(n):
        a = new_alert(site=SITE, node=NODE, type="band_missing", subject={"band": 1 + i % 500}, ts=time.time())
        infos.append(pub.publish(f"qwatch/v1/{SITE}/{NODE}/alert", a.to_json(), qos=1))
    for info in infos:
        info.wait_for_publish(30)
    pub.loop_stop()
    pub.disconnect()


def drain(work: Path, mq: ServiceProcess, vm: ServiceProcess, n: int) -> tuple[float, float, int]:
    """(restart → all stored s, first → last row s, rows stored)."""
    port = free_port()
    cloud = start_cloud(work, mq, vm, port)  # creates the persistent session at the broker
    cloud.terminate()
    cloud.wait(15)
    queue_alerts(mq, n)
    t0 = time.monotonic()
    cloud = start_cloud(work, mq, vm, port)
    try:
        _wait(lambda: _stored(work / "cloud.db") >= n, 120, "backlog drained")
        elapsed = time.monotonic() - t0
    finally:
        cloud.terminate()
        cloud.wait(15)
    con = sqlite3.connect(work / "cloud.db")
    first, last = con.execute(
        "SELECT MIN(first_received), MAX(first_received) FROM alerts WHERE site = ?", (SITE,)).fetchone()
    con.close()
    return elapsed, last - first, _stored(work / "cloud.db")


def main() -> None:
    """Run the drain and print the table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--alerts", type=int, default=2000, help="backlog size")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="qwatch-bench-drain-") as tmp:
        work = Path(tmp)
        mq = start_mosquitto(work / "mosquitto")
        vm = start_victoria_metrics(work / "vm")
        try:
            secs, span, got = drain(work, mq, vm, args.alerts)
        finally:
            mq.stop()
            vm.stop()
    t = Table(title="Ingest backlog drain (alerts queued in the persistent session)")
    for col in ("alerts", "stored", "restart→all stored s", "first→last row s", "rows/s"):
        t.add_column(col, justify="right")
    t.add_row(str(args.alerts), str(got), f"{secs:.2f}", f"{span:.2f}", f"{got / max(span, 1e-3):.0f}")
    console.print(t)
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or '?'}, "
                  f"Python {platform.python_version()}, {platform.platform()}, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
