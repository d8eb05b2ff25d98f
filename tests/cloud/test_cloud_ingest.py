"""Ingest against real Mosquitto and real VictoriaMetrics, with raw MQTT payloads (garbage included)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.alert_store import AlertQuery, AlertStore
from devtools.services import ServiceProcess, flush_victoria_metrics
from protocols.payloads import AckCommand, Status
from tests.cloud.cloud_harness import Publisher, RunningCloud, alert_json, cleared_json, start_cloud, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cloud(tmp_path: Path, mosquitto: ServiceProcess, victoria_metrics: ServiceProcess) -> Iterator[RunningCloud]:
    c = start_cloud(tmp_path, mosquitto, victoria_metrics.url, silence_s=3600, escalate_after_s=3600)
    yield c
    c.stop()


@pytest.fixture
def pub(mosquitto: ServiceProcess) -> Iterator[Publisher]:
    p = Publisher(mosquitto).connect()
    yield p
    p.close()


def _bands_msg(band: int, ts: float, x: float, y: float, zone: str | None = "block-a") -> str:
    return json.dumps({"schema": "qwatch.bands/1", "ts": ts, "bands": [
        {"band": band, "ts": ts, "x": x, "y": y, "err_m": 2.5, "zone": zone, "rssi": -70.0, "rx_count": 2,
         "battery": 90, "temp_c": 36.6, "flags": 0}]})


def _status(state: str, boot: str, ts: float | None = None) -> str:
    return Status.model_validate({"schema": "qwatch.status/1", "state": state, "ts": ts or time.time(),
                                  "version": "test", "boot_id": boot}).model_dump_json(by_alias=True)


def _track(cloud: RunningCloud, band: int, since: float) -> list[dict[str, Any]]:
    flush_victoria_metrics(cloud.writer.vm_url)
    resp = cloud.get(f"/api/v1/bands/{band}/track", since=since)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["points"])


def _wait_track(cloud: RunningCloud, band: int, since: float, n: int) -> list[dict[str, Any]]:
    # VictoriaMetrics caches empty answers (also "no such series" in its index cache), so query
    # only once the writer reports the lines written, then poll sparingly.
    wait_for(lambda: cloud.writer.counts["lines_written"] >= n, 15, what=f"{n} lines written to VM")
    def complete() -> list[dict[str, Any]]:
        pts = _track(cloud, band, since)
        return pts if len(pts) == n else []

    return wait_for(complete, 20, interval=1.0, what=f"{n} track points of band {band} in VictoriaMetrics")


def test_alerts_telemetry_and_garbage(cloud: RunningCloud, pub: Publisher) -> None:
    base = "qwatch/v1/site-a/edge-01"
    a_id, a = alert_json()
    b_id, b = alert_json(band=1002, type="band_tamper")
    pub.publish(f"{base}/alert", a)
    pub.publish(f"{base}/alert", a)                      # duplicate delivery
    pub.publish(f"{base}/alert", cleared_json(b))        # cleared before its raised
    pub.publish(f"{base}/alert", b)
    garbage = [(f"{base}/alert", b"\x00\xff garbage"), (f"{base}/alert", b'{"schema":"qwatch.alert/1"}'),
               (f"{base}/telemetry/bands", b"{not json"), ("qwatch/v1/site-a", b"{}"),
               (f"{base}/nonsense", b"{}"), (f"{base}/status", b'{"state":"sideways"}')]
    for topic, payload in garbage:
        pub.publish(topic, payload)
    t0 = time.time()
    for i in range(3):
        pub.publish(f"{base}/telemetry/bands", _bands_msg(7001, t0 + i, 10.0 + i, 5.0), qos=0)

    wait_for(lambda: sum(cloud.ingest.malformed.values()) >= len(garbage), 10, what="garbage counted")
    wait_for(lambda: len(cloud.store.events()) == 3, 10, what="3 alert events stored")
    alerts = {x["alert_id"]: x for x in cloud.alerts()}
    assert set(alerts) == {a_id, b_id}
    assert alerts[a_id]["state"] == "raised"
    assert alerts[b_id]["state"] == "cleared" and alerts[b_id]["raised_ts"] is not None
    assert cloud.ingest.counts["alert:duplicate"] == 1
    assert cloud.ingest.malformed["topic"] == 2
    assert cloud.ingest.counts["acked"] >= 10  # garbage is acknowledged too: no poison loop

    points = _wait_track(cloud, 7001, t0 - 1, 3)
    assert [p["x"] for p in points] == [10.0, 11.0, 12.0]
    assert all(p["zone"] == "block-a" and p["site"] == "site-a" for p in points)
    assert cloud.hub.positions[("site-a", "edge-01")]["bands"][0]["band"] == 7001
    health = cloud.get("/healthz").json()
    assert health["ok"] and health["ingest"]["malformed"]["topic"] == 2


def test_telemetry_spooled_while_vm_down(
    cloud: RunningCloud, pub: Publisher, victoria_metrics: ServiceProcess
) -> None:
    base = "qwatch/v1/site-s/edge-01"
    victoria_metrics.stop()
    t0 = time.time()
    for i in range(6):
        pub.publish(f"{base}/telemetry/bands", _bands_msg(7100, t0 + i, float(i), 1.0), qos=0)
    wait_for(lambda: cloud.writer.stats()["lines_spooled"] == 6, 15, what="6 lines spooled")
    assert cloud.writer.vm_up is False
    victoria_metrics.start()
    wait_for(lambda: cloud.writer.counts["lines_replayed"] == 6, 20, what="spool replayed")
    wait_for(lambda: cloud.writer.stats()["spool_batches"] == 0, 5, what="spool empty")
    points = _wait_track(cloud, 7100, t0 - 1, 6)
    assert [p["x"] for p in points] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_node_offline_from_real_will_and_stale_will(cloud: RunningCloud, pub: Publisher,
                                                   mosquitto: ServiceProcess) -> None:
    topic = "qwatch/v1/site-n/edge-07/status"
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-07", protocol=mqtt.MQTTv5)
    node.will_set(topic, _status("offline", "boot-1"), qos=1, retain=True)
    node.connect(mosquitto.host, mosquitto.port, keepalive=30)
    node.loop_start()
    wait_for(node.is_connected, 5, what="node connected")
    node.publish(topic, _status("online", "boot-1"), qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: cloud.ingest.liveness.counts["birth"] == 1, 10, what="birth seen")
    node.loop_stop()
    sock = node.socket()
    assert sock is not None
    sock.close()  # the node dies without DISCONNECT: the broker publishes its Will

    def offline() -> list[dict[str, Any]]:
        return cloud.alerts(type="node_offline")

    [raised] = wait_for(offline, 10, what="node_offline raised from the Will")
    assert raised["state"] == "raised" and raised["subject"] == {"node": "edge-07"}
    assert raised["detail"]["cause"] == "will"
    pub.publish(topic, _status("online", "boot-2"), retain=True)
    wait_for(lambda: offline()[0]["state"] == "cleared", 10, what="node_offline cleared by the new birth")
    pub.publish(topic, _status("offline", "boot-1"), retain=True)  # a late Will from the old session
    wait_for(lambda: cloud.ingest.liveness.counts["stale_will"] == 1, 10, what="stale Will counted")
    assert len(offline()) == 1 and offline()[0]["state"] == "cleared"
    assert cloud.ingest.liveness.records[("site-n", "edge-07")].online


def test_store_failure_withholds_ack_until_redelivered(
    cloud: RunningCloud, pub: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cloud.store.upsert
    failures = {"left": 2}

    def flaky(alert: Any, **kw: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real(alert, **kw)

    monkeypatch.setattr(cloud.store, "upsert", flaky)
    a_id, a = alert_json(site="site-f")
    pub.publish("qwatch/v1/site-f/edge-01/alert", a)
    wait_for(lambda: cloud.store.get(a_id) is not None, 20, what="alert stored after redelivery")
    assert cloud.ingest.counts["store_errors"] >= 1
    assert [e["alert_id"] for e in cloud.store.events(site="site-f")] == [a_id]


def test_ingest_kill_9_and_restart_loses_nothing(tmp_path: Path, mosquitto: ServiceProcess,
                                                 victoria_metrics: ServiceProcess, pub: Publisher) -> None:
    db = tmp_path / "ingest.db"
    argv = [sys.executable, "-m", "cloud.cli", "ingest", "--db", str(db), "--mqtt", mosquitto.address,
            "--vm", victoria_metrics.url, "--client-id", "ingest-kill-test", "--log-level", "WARNING"]

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stored() -> list[dict[str, Any]]:
        if not db.exists():
            return []
        s = AlertStore(db)
        try:
            return s.events()
        finally:
            s.close()

    proc = spawn()
    try:
        probe_id, probe = alert_json(site="site-k")
        # Retry the probe until the ingest's session exists (it may still be starting).
        def probe_stored() -> bool:
            pub.publish("qwatch/v1/site-k/edge-01/alert", probe)
            return bool(stored())

        wait_for(probe_stored, 20, interval=0.5, what="ingest up")
        proc.kill()
        proc.wait()
        sent: list[str] = []
        for i in range(60):
            aid, raw = alert_json(site="site-k", band=2000 + i)
            pub.publish("qwatch/v1/site-k/edge-01/alert", raw)
            if i % 2:
                pub.publish("qwatch/v1/site-k/edge-01/alert", cleared_json(raw))
            sent.append(aid)
        proc = spawn()
        wait_for(lambda: len(stored()) >= 1 + 60 + 30, 30, interval=0.5, what="all 90 queued events stored")
    finally:
        proc.kill()
        proc.wait()
    events = stored()
    pairs = Counter((e["alert_id"], e["state"]) for e in events)
    assert max(pairs.values()) == 1
    assert {e["alert_id"] for e in events} == {probe_id, *sent}
    s = AlertStore(db)
    try:
        final = {r["alert_id"]: r["state"] for r in s.list_alerts(AlertQuery(site="site-k", limit=1000))}
    finally:
        s.close()
    assert [final[a] for a in sent] == ["raised" if i % 2 == 0 else "cleared" for i in range(60)]


def test_guard_ack_is_sent_down_to_the_node(cloud: RunningCloud, pub: Publisher,
                                            mosquitto: ServiceProcess) -> None:
    got: list[tuple[str, bytes]] = []
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-ack", protocol=mqtt.MQTTv5)
    node.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload)))
    node.connect(mosquitto.host, mosquitto.port)
    node.loop_start()
    try:
        node.subscribe("qwatch/v1/site-c/edge-02/cmd/#", qos=1)
        a_id, a = alert_json(site="site-c", node="edge-02", type="sos")
        pub.publish("qwatch/v1/site-c/edge-02/alert", a)
        wait_for(lambda: cloud.store.get(a_id), 10, what="alert stored")
        resp = httpx.post(f"{cloud.url}/api/v1/alerts/{a_id}/ack", json={"person": "Lan", "note": "on my way"})
        assert resp.status_code == 200 and resp.json()["cmd_id"]
        [(topic, payload)] = wait_for(lambda: got, 10, what="cmd/ack at the node")
        assert topic == "qwatch/v1/site-c/edge-02/cmd/ack"
        cmd = AckCommand.model_validate_json(payload)
        assert (cmd.alert_id, cmd.by, cmd.note, cmd.cmd_id) == (a_id, "Lan", "on my way", resp.json()["cmd_id"])
    finally:
        node.loop_stop()
        node.disconnect()
    # The cloud sees its own command through qwatch/v1/# and ignores it.
    wait_for(lambda: cloud.ingest.counts["cmd:ignored"] == 1, 5, what="own command ignored")


def test_shared_subscription_workers_split_the_stream(tmp_path: Path, mosquitto: ServiceProcess,
                                                      victoria_metrics: ServiceProcess, pub: Publisher) -> None:
    """Two ingest workers on $share/ingest/qwatch/v1/# and one store: every alert lands exactly once."""
    w1 = start_cloud(tmp_path / "w1", mosquitto, victoria_metrics.url, shared=True, client_id="ingest-w1")
    w2 = start_cloud(tmp_path / "w2", mosquitto, victoria_metrics.url, shared=True, client_id="ingest-w2")
    try:
        assert w1.ingest.subscription == "$share/ingest/qwatch/v1/#"
        ids = []
        for i in range(40):
            aid, raw = alert_json(site="site-sh", band=3000 + i)
            pub.publish("qwatch/v1/site-sh/edge-01/alert", raw)
            ids.append(aid)

        def stored() -> set[str]:
            return {e["alert_id"] for w in (w1, w2) for e in w.store.events(site="site-sh")}

        wait_for(lambda: stored() == set(ids), 15, what="40 alerts across two workers")
        n1, n2 = len(w1.store.events()), len(w2.store.events())
        assert n1 + n2 == 40 and n1 > 0 and n2 > 0
    finally:
        w1.stop()
        w2.stop()


def test_escalation_and_silence_run_on_the_ticker(tmp_path: Path, mosquitto: ServiceProcess,
                                                   victoria_metrics: ServiceProcess, pub: Publisher) -> None:
    """The ticker thread escalates and detects silence while the store thread keeps committing."""
    cloud = start_cloud(tmp_path, mosquitto, victoria_metrics.url, silence_s=1.5, escalate_after_s=0.5,
                        escalate_per_site={"site-slow": 3600.0}, tick_s=0.2)
    try:
        fast_id, fast = alert_json(site="site-e", node="edge-01")
        slow_id, slow = alert_json(site="site-slow", node="edge-01")
        pub.publish("qwatch/v1/site-e/edge-01/status", _status("online", "b1"), retain=True)
        pub.publish("qwatch/v1/site-e/edge-01/alert", fast)
        pub.publish("qwatch/v1/site-slow/edge-01/alert", slow)
        wait_for(lambda: (cloud.store.get(fast_id) or {}).get("escalated"), 10, what="alert escalated")
        assert not (cloud.store.get(slow_id) or {}).get("escalated")  # per-site override
        [offline] = wait_for(lambda: cloud.alerts(type="node_offline", site="site-e"), 10, what="silence")
        assert offline["detail"]["cause"] == "silence"
        pub.publish("qwatch/v1/site-e/edge-01/telemetry/bands", _bands_msg(7200, time.time(), 1.0, 1.0), qos=0)
        wait_for(lambda: cloud.alerts(type="node_offline", site="site-e")[0]["state"] == "cleared", 10,
                 what="traffic clears the silence alert")
    finally:
        cloud.stop()
