"""Ingest backlog drain: how fast a restarted cloud catches up on alerts queued in its MQTT session.

Everything real and local: Mosquitto and VictoriaMetrics as child processes, the cloud as a separate
``qwatch-cloud serve`` process with a fixed client ID (persistent MQTT 5 session). The cloud is started
once so the broker knows its session, then stopped; ``--alerts`` alerts are published at QoS 1 and
queue at the broker for it; the cloud restarts and we time until every row is stored.

This is the cloud side only. The edge side of an outage (outbox → broker after the broker comes back,
whole agent) is ``bench/edge_backlog_drain.py``; alert latency is ``bench/edge_alert_latency.py``.

``--backend both`` runs it on the SQLite store and then on a PostgreSQL store (a local Debian PostgreSQL
started for the run, fsync on), in the same run, for a ratio between the two.

Run: ``.venv/bin/python -m bench.ingest_drain [--alerts 2000] [--backend sqlite|postgresql|both]``.
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

from devtools.services import (  # noqa: E402
    ServiceProcess,
    free_port,
    pg_url,
    start_mosquitto,
    start_postgresql,
    start_victoria_metrics,
)
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


def start_cloud(work: Path, mq: ServiceProcess, vm: ServiceProcess, port: int, db: str) -> subprocess.Popen[bytes]:
    """``qwatch-cloud serve`` as its own process; returns once /healthz is ok."""
    argv = [sys.executable, "-m", "cloud.cli", "serve", "--db", db, "--mqtt", mq.address,
            "--vm", vm.url, "--port", str(port), "--log-level", "WARNING", "--client-id", "bench-ingest",
            "--spool", str(work / "spool"), "--registry-db", str(work / "registry.db")]
    log = open(work / "cloud.log", "ab")  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(healthy, 30, "cloud healthy")
    return proc


def _one(db: str, sql: str) -> tuple[Any, ...]:
    """One row of ``sql`` (``?`` = SITE) from the SQLite file or PostgreSQL URL ``db``."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as pg:
            row = pg.execute(sql.replace("?", "%s"), (SITE,)).fetchone()
    else:
        con = sqlite3.connect(db)
        try:
            row = con.execute(sql, (SITE,)).fetchone()
        finally:
            con.close()
    assert row is not None
    return tuple(row)


def _stored(db: str) -> int:
    try:
        return int(_one(db, "SELECT COUNT(*) FROM alerts WHERE site = ?")[0])
    except Exception:  # the table does not exist yet
        return 0


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


def drain(work: Path, mq: ServiceProcess, vm: ServiceProcess, n: int, db: str) -> tuple[float, float, int]:
    """(restart → all stored s, first → last row s, rows stored)."""
    port = free_port()
    cloud = start_cloud(work, mq, vm, port, db)  # creates the persistent session at the broker
    cloud.terminate()
    cloud.wait(15)
    queue_alerts(mq, n)
    t0 = time.monotonic()
    cloud = start_cloud(work, mq, vm, port, db)
    try:
        _wait(lambda: _stored(db) >= n, 120, "backlog drained")
        elapsed = time.monotonic() - t0
    finally:
        cloud.terminate()
        cloud.wait(15)
    first, last = _one(db, "SELECT MIN(first_received), MAX(first_received) FROM alerts WHERE site = ?")
    return elapsed, last - first, _stored(db)


def main() -> None:
    """Run the drain and print the table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--alerts", type=int, default=2000, help="backlog size")
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="sqlite", help="alert store")
    args = ap.parse_args()
    console = Console()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    rows: list[tuple[str, float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="qwatch-bench-drain-") as tmp:
        root = Path(tmp)
        pg = start_postgresql(root / "postgresql") if "postgresql" in backends else None
        try:
            for backend in backends:
                work = root / backend
                mq = start_mosquitto(work / "mosquitto")  # a fresh broker per backend: same starting point
                vm = start_victoria_metrics(work / "vm")
                db = pg_url(pg) if backend == "postgresql" and pg is not None else str(work / "cloud.db")
                try:
                    rows.append((backend, *drain(work, mq, vm, args.alerts, db)))
                finally:
                    mq.stop()
                    vm.stop()
        finally:
            if pg is not None:
                pg.stop()
    t = Table(title="Ingest backlog drain (alerts queued in the persistent session)")
    for col in ("store", "alerts", "stored", "restart→all stored s", "first→last row s", "rows/s"):
        t.add_column(col, justify="right")
    for backend, secs, span, got in rows:
        t.add_row(backend, str(args.alerts), str(got), f"{secs:.2f}", f"{span:.2f}", f"{got / max(span, 1e-3):.0f}")
    console.print(t)
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or '?'}, "
                  f"Python {platform.python_version()}, {platform.platform()}, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
