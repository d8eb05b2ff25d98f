"""Alert latency: edge rule decision -> cloud store row and -> live WebSocket message (target p99 <= 250 ms).

Real parts, broker local: Mosquitto, VictoriaMetrics, `qwatch-cloud serve`, and an edge agent
(`python -m devtools.dev_agent run --alert-storm`) whose synthetic alerts take the full production path:
decision (alert.ts) -> outbox commit (fsync) -> MQTT 5 QoS 1 -> ingest -> SQLite store and
WebSocket hub. Store latency = alert_events.received_at - ts; WS latency = receipt time in a
WebSocket client on /api/v1/live - ts. All on one clock (one machine).

Baseline in the same run: plain paho QoS 1 publisher -> paho subscriber over the same broker
at the same rate (the floor any design on this broker pays). Ratios are reported against it.

    .venv/bin/python -m bench.edge_alert_latency [--alerts 400] [--rate 10]
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table
from websockets.sync.client import connect as ws_connect

REPO = Path(__file__).resolve().parents[1]
from devtools.services import ServiceProcess, free_port, start_mosquitto, start_victoria_metrics  # noqa: E402
from tests.faults.edge_harness import cloud_ingest, stop_all, storm_agent, wait_until  # noqa: E402

console = Console()


class WsRecorder(threading.Thread):
    """Collects (receipt time, message) from the cloud's live WebSocket."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        with ws_connect(self.url) as ws:
            self.ready.set()
            while not self.stop.is_set():
                try:
                    text = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                self.got.append((time.time(), json.loads(text)))


def baseline(mq: ServiceProcess, n: int, rate: float) -> list[float]:
    """Latency (s) of plain paho QoS 1 publish -> subscriber receipt, same broker, same pace."""
    lat: list[float] = []
    done = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bl-sub", protocol=mqtt.MQTTv5)

    def on_msg(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        lat.append(time.time() - float(msg.payload))
        if len(lat) >= n:
            done.set()

    sub.on_message = on_msg
    sub.connect(mq.host, mq.port)
    sub.subscribe("bench/lat", qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bl-pub", protocol=mqtt.MQTTv5)
    pub.connect(mq.host, mq.port)
    pub.loop_start()
    time.sleep(0.5)
    for _ in range(n):
        pub.publish("bench/lat", repr(time.time()).encode(), qos=1)
        time.sleep(1.0 / rate)
    done.wait(30)
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return lat


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def run(alerts: int, rate: float, workdir: Path) -> dict[str, Any]:
    mq = start_mosquitto(workdir / "mosquitto")
    vm = start_victoria_metrics(workdir / "vm")
    port, db = free_port(), workdir / "cloud.db"
    cloud = cloud_ingest(db, mq.address, vm.url, workdir, serve_port=port).start()
    agent = storm_agent("lat", mq.address, workdir, total=alerts, rate=rate)
    try:
        wait_until(lambda: _healthy(port), 30, "cloud healthy")
        ws = WsRecorder(f"ws://127.0.0.1:{port}/api/v1/live")
        ws.start()
        ws.ready.wait(10)
        agent.start()
        wait_until(lambda: _stored(db) >= alerts, alerts / rate + 60, "all alerts stored", 0.5)
        time.sleep(1.0)
        ws.stop.set()
        ws.join(5)
        base = baseline(mq, min(alerts, 300), rate)
    finally:
        stop_all([agent, cloud])
        mq.stop()
        vm.stop()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT alert_id, state, ts, received_at FROM alert_events WHERE node='lat' "
                       "AND payload LIKE '%storm_seq%'").fetchall()
    con.close()
    decided = {(a, s): ts for a, s, ts, _r in rows}
    store = [r - ts for _a, _s, ts, r in rows]
    wsl = []
    for t_rx, msg in ws.got:
        d = msg.get("data", {})
        key = (d.get("alert_id"), d.get("state"))
        if msg.get("kind") == "alert" and key in decided:
            wsl.append(t_rx - decided.pop(key))
    return {"n_store": len(store), "n_ws": len(wsl), "n_base": len(base),
            "store_p50": pct(store, 50), "store_p99": pct(store, 99), "store_max": pct(store, 100),
            "ws_p50": pct(wsl, 50), "ws_p99": pct(wsl, 99), "ws_max": pct(wsl, 100),
            "base_p50": pct(base, 50), "base_p99": pct(base, 99)}


def _healthy(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stored(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        sql = "SELECT COUNT(*) FROM alert_events WHERE node='lat' AND payload LIKE '%storm_seq%'"
        n = int(con.execute(sql).fetchone()[0])
        con.close()
        return n
    except sqlite3.Error:
        return 0


def main(
    alerts: Annotated[int, typer.Option(help="alert messages (raise + clear pairs)")] = 400,
    rate: Annotated[float, typer.Option(help="alert messages per second")] = 10.0,
    json_out: Annotated[Path | None, typer.Option(help="also write the result as JSON here")] = None,
) -> None:
    """Run the benchmark and print a table."""
    with tempfile.TemporaryDirectory(prefix="qwatch-bench-lat-") as tmp:
        r = run(alerts, rate, Path(tmp))
    t = Table(title=f"alert latency, decision -> cloud ({r['n_store']} alerts at {rate:g}/s, broker local)")
    for col in ("path", "n", "p50 ms", "p99 ms", "max ms", "p99 / baseline p99"):
        t.add_column(col, justify="right" if col != "path" else "left")
    t.add_row("decision -> store row", str(r["n_store"]), f"{r['store_p50']:.1f}", f"{r['store_p99']:.1f}",
              f"{r['store_max']:.1f}", f"{r['store_p99'] / r['base_p99']:.1f}x")
    t.add_row("decision -> WebSocket", str(r["n_ws"]), f"{r['ws_p50']:.1f}", f"{r['ws_p99']:.1f}",
              f"{r['ws_max']:.1f}", f"{r['ws_p99'] / r['base_p99']:.1f}x")
    t.add_row("baseline paho pub -> sub", str(r["n_base"]), f"{r['base_p50']:.1f}", f"{r['base_p99']:.1f}", "", "1.0x")
    console.print(t)
    ok = r["store_p99"] <= 250 and r["ws_p99"] <= 250
    console.print(f"target p99 <= 250 ms: {'PASS' if ok else 'FAIL'}")
    if json_out:
        json_out.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    typer.run(main)
