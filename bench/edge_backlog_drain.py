"""Backlog drain after a broker outage of a 500-band node (issue 5 target: backlog gone in <= 30 s).

Real parts: Mosquitto, VictoriaMetrics, `qwatch-cloud serve`, and `qwatch-edge run` on a
simulated 500-band site (demo geometry, 6 receivers, 1 advert/s per band) with a synthetic
alert storm on top of the real pipeline, so the backlog has a known size. The broker is
stopped for --outage-s (default 600 = 10 min) while the node keeps deciding; then it comes
back and we time until (a) the node reports an empty outbox and (b) the cloud stores every
storm alert. Telemetry loss is read from the node's own counters.

Baseline in the same run: plain paho QoS 1 publishing of the same number of alert-sized
messages with the same in-flight window, no outbox (the drain's ratio to it is reported).

    .venv/bin/python -m bench.edge_backlog_drain [--outage-s 600] [--bands 500] [--alerts 1000]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
from bench.edge_site_gen import big_site  # noqa: E402
from devtools.services import ServiceProcess, free_port, start_mosquitto, start_victoria_metrics  # noqa: E402
from tests.faults.edge_harness import (  # noqa: E402
    DEV_AGENT,
    Child,
    TopicRecorder,
    cloud_events,
    cloud_ingest,
    last_node_telemetry,
    stop_all,
    wait_until,
)

console = Console()
NODE = "bench-500"


def baseline_publish(mq: ServiceProcess, n: int, size: int, inflight: int) -> float:
    """Seconds for paho alone to get PUBACKs for `n` QoS 1 messages of `size` bytes."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.connect(mq.host, mq.port)
    c.loop_start()
    payload = b"x" * size
    t0 = time.perf_counter()
    infos = [c.publish("bench/baseline", payload, qos=1) for _ in range(n)]
    for info in infos:
        info.wait_for_publish(30)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return dt


def storm_count(db: Path) -> int:
    return sum(1 for e in cloud_events(db) if e["node"] == NODE and '"storm_seq"' in e["payload"])


def run(outage_s: float, bands: int, alerts: int, workdir: Path) -> dict[str, Any]:
    mq = start_mosquitto(workdir / "mosquitto")
    vm = start_victoria_metrics(workdir / "vm")
    port, db = free_port(), workdir / "cloud.db"
    cloud = cloud_ingest(db, mq.address, vm.url, workdir, serve_port=port).start()
    site, keys = big_site(workdir / "site", bands)
    rec = TopicRecorder(mq.address, client_id="bench-recorder")
    # The storm spans the outage, so alerts keep being decided while the broker is away.
    rate = alerts / max(outage_s, 1.0)
    agent = Child("edge", [*DEV_AGENT, "run", "--config", str(site), "--keys", str(keys),
                           "--node", NODE, "--broker", mq.address, "--data-dir", str(workdir / "edge"),
                           "--alert-storm", str(alerts), "--storm-rate", f"{rate:.4f}", "--keepalive", "5",
                           "--reconnect-max", "2", "--node-telemetry-s", "1", "--log-level", "WARNING"],
                  workdir / "edge.log")
    children = [agent, cloud]
    try:
        time.sleep(3)  # cloud start-up; the agent's first messages need its subscription in place
        agent.start()
        wait_until(lambda: last_node_telemetry(rec, NODE) is not None, 30, "first node telemetry")
        before = last_node_telemetry(rec, NODE) or {}
        mq.stop()
        t_down = time.monotonic()
        console.print(f"broker stopped for {outage_s:.0f} s; node keeps deciding ({bands} bands)…")
        time.sleep(outage_s)
        mq.restart()
        t_up, wall_up = time.monotonic(), time.time()

        def drained() -> bool:
            # A node telemetry message decided after the restart that reports an empty outbox.
            return any(json.loads(p)["ts"] > wall_up and json.loads(p)["outbox_depth"] == 0
                       for _t, topic, p in rec.of("/telemetry/node")[-5:] if f"/{NODE}/" in topic)

        outbox_empty_s = wait_until(drained, 300, "node reports an empty outbox", 0.1)
        all_stored_s = wait_until(lambda: storm_count(db) >= alerts, 300, "all storm alerts stored", 0.25)
        backlog = max((json.loads(p)["outbox_depth"] for t, topic, p in rec.of("/telemetry/node")
                       if f"/{NODE}/" in topic and json.loads(p)["ts"] <= wall_up), default=0)
        tel = last_node_telemetry(rec, NODE) or {}
        base_s = baseline_publish(mq, alerts, 420, 50)
    finally:
        stop_all(children)
        rec.close()
        mq.stop()
        vm.stop()
    m = tel.get("watchdogs", {}).get("mqtt", {})
    return {
        "outage_s": round(t_up - t_down, 1), "bands": bands, "storm_alerts": alerts,
        "backlog_at_restart": backlog, "outbox_at_outage_start": int(before.get("outbox_depth", 0)),
        "outbox_empty_after_s": round(outbox_empty_s, 2), "cloud_has_all_after_s": round(all_stored_s, 2),
        "baseline_publish_s": round(base_s, 3),
        "ratio_to_baseline": round(outbox_empty_s / base_s, 1) if base_s > 0 else None,
        "telemetry_queued": m.get("telemetry_queued", 0), "telemetry_sent": m.get("telemetry_sent", 0),
        "telemetry_dropped": m.get("telemetry_dropped", 0), "cpu_pct": tel.get("cpu_pct"),
        "rss_mb": tel.get("mem_rss_mb"),
    }


def main(
    outage_s: Annotated[float, typer.Option(help="broker outage, s")] = 600.0,
    bands: Annotated[int, typer.Option(help="simulated bands")] = 500,
    alerts: Annotated[int, typer.Option(help="storm alert messages decided during the outage")] = 1000,
    json_out: Annotated[Path | None, typer.Option(help="also write the result as JSON here")] = None,
) -> None:
    """Run the benchmark and print a table."""
    with tempfile.TemporaryDirectory(prefix="qwatch-bench-drain-") as tmp:
        res = run(outage_s, bands, alerts, Path(tmp))
    table = Table(title="edge backlog drain after a broker outage")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.items():
        if v is not None:
            table.add_row(k, str(v))
    table.add_row("target: backlog gone <= 30 s", "PASS" if res["outbox_empty_after_s"] <= 30 else "FAIL")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    typer.run(main)
