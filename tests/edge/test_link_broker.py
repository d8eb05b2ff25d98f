"""The agent's outbox + MQTT link against a real Mosquitto: broker restart and agent kill -9.

No cloud here: a persistent-session subscriber stands in for the ingest, so these tests pin
down the edge half of the delivery guarantee on their own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devtools.services import ServiceProcess
from tests.faults.edge_harness import (
    TopicRecorder,
    expected_storm,
    last_node_telemetry,
    storm_agent,
    wait_until,
)

pytestmark = pytest.mark.integration


def _first_arrivals(rec: TopicRecorder, node: str) -> list[tuple[str, str]]:
    import json

    seen: dict[tuple[str, str], None] = {}
    for _ts, topic, payload in rec.of("/alert"):
        if topic.split("/")[3] == node:
            a = json.loads(payload)
            seen.setdefault((a["alert_id"], a["state"]), None)
    return list(seen)


def test_broker_restart_mid_stream_loses_nothing_and_keeps_order(
    mosquitto: ServiceProcess, tmp_path: Path
) -> None:
    rec = TopicRecorder(mosquitto.address, client_id="rec-restart")
    agent = storm_agent("n1", mosquitto.address, tmp_path, total=300, rate=100).start()
    try:
        wait_until(lambda: len(rec.of("/alert")) >= 60, 20, "first alerts")
        mosquitto.stop()
        time.sleep(3)
        mosquitto.restart()
        want = expected_storm("storm", "n1", 300)
        wait_until(lambda: len(_first_arrivals(rec, "n1")) >= 300, 40, "all 300 alert messages")
        assert _first_arrivals(rec, "n1") == want
        wait_until(lambda: (last_node_telemetry(rec, "n1") or {}).get("outbox_depth") == 0, 10, "empty outbox")
        tel = last_node_telemetry(rec, "n1")
        assert tel is not None and tel["watchdogs"]["mqtt"]["connects"] >= 2
    finally:
        agent.stop()
        rec.close()
    assert agent.proc is not None and agent.proc.returncode == 0, agent.log_tail()


def test_agent_kill9_mid_publish_then_restart_delivers_every_committed_alert(
    mosquitto: ServiceProcess, tmp_path: Path
) -> None:
    rec = TopicRecorder(mosquitto.address, client_id="rec-kill")
    agent = storm_agent("n2", mosquitto.address, tmp_path, total=400, rate=150).start()
    try:
        wait_until(lambda: len(rec.of("/alert")) >= 100, 20, "first alerts")
        # Hold the broker's PUBACKs so the SIGKILL lands with committed, published, unacked rows.
        mosquitto.pause()
        time.sleep(0.5)
        agent.kill9()
        mosquitto.resume()
        got_before = len(_first_arrivals(rec, "n2"))
        assert got_before < 400
        agent = storm_agent("n2", mosquitto.address, tmp_path, total=400, rate=150).start()
        wait_until(lambda: len(_first_arrivals(rec, "n2")) >= 400, 40, "all 400 alert messages")
        assert _first_arrivals(rec, "n2") == expected_storm("storm", "n2", 400)
        wait_until(lambda: (last_node_telemetry(rec, "n2") or {}).get("boot_id") is not None, 10, "telemetry")
        tel = last_node_telemetry(rec, "n2")
        assert tel is not None and tel["watchdogs"]["outbox"]["recovered_rows"] > 0
    finally:
        agent.stop()
        rec.close()


def _statuses(rec: TopicRecorder, node: str) -> list[dict[str, object]]:
    import json

    return [json.loads(p) for _t, topic, p in rec.of("/status") if topic.split("/")[3] == node]


def test_birth_will_and_clean_offline_carry_boot_id(mosquitto: ServiceProcess, tmp_path: Path) -> None:
    rec = TopicRecorder(mosquitto.address, client_id="rec-status")
    agent = storm_agent("n4", mosquitto.address, tmp_path, total=2, rate=10).start()
    try:
        wait_until(lambda: any(s["state"] == "online" for s in _statuses(rec, "n4")), 20, "birth")
        boot1 = _statuses(rec, "n4")[-1]["boot_id"]
        agent.kill9()  # no DISCONNECT: the broker publishes the Will after ~1.5 keepalives
        wait_until(lambda: any(s["state"] == "offline" and s["boot_id"] == boot1 for s in _statuses(rec, "n4")),
                   15, "Last Will with the dead session's boot_id")
        agent = storm_agent("n4", mosquitto.address, tmp_path, total=2, rate=10).start()
        wait_until(lambda: _statuses(rec, "n4")[-1]["state"] == "online", 20, "second birth")
        boot2 = _statuses(rec, "n4")[-1]["boot_id"]
        assert boot2 != boot1
    finally:
        code = agent.stop()
    assert code == 0
    wait_until(lambda: _statuses(rec, "n4")[-1] == {**_statuses(rec, "n4")[-1], "state": "offline",
                                                    "boot_id": boot2}, 10, "clean offline status")
    rec.close()
    # The offline status is retained: a newcomer learns the node is down without waiting.
    late = TopicRecorder(mosquitto.address, topic="qwatch/v1/+/n4/status", client_id="rec-late")
    try:
        wait_until(lambda: bool(_statuses(late, "n4")), 10, "retained status")
        assert _statuses(late, "n4")[-1]["state"] == "offline" and _statuses(late, "n4")[-1]["boot_id"] == boot2
    finally:
        late.close()


def test_commands_are_answered_on_cmd_result(mosquitto: ServiceProcess, tmp_path: Path) -> None:
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from devtools.storm import storm_alert_id

    rec = TopicRecorder(mosquitto.address, client_id="rec-cmd")
    agent = storm_agent("n5", mosquitto.address, tmp_path, total=2, rate=10).start()
    cloud = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-cloud", protocol=mqtt.MQTTv5)
    cloud.connect(mosquitto.host, mosquitto.port)
    cloud.loop_start()
    try:
        wait_until(lambda: bool(_statuses(rec, "n5")), 20, "birth")
        prefix = "qwatch/v1/fault-site/n5"
        ack = {"cmd_id": "c-1", "alert_id": storm_alert_id("storm", "n5", 0), "by": "guard-1"}
        cloud.publish(f"{prefix}/cmd/ack", json.dumps(ack), qos=1)
        cloud.publish(f"{prefix}/cmd/ack", b"{broken", qos=1)
        cloud.publish(f"{prefix}/cmd/selfdestruct", b"{}", qos=1)

        def results() -> list[dict[str, object]]:
            return [json.loads(p) for _t, _tp, p in rec.of(f"{prefix}/cmd_result")]

        wait_until(lambda: len(results()) >= 3, 15, "three cmd_result replies")
        got = results()
        assert {"cmd_id": "c-1", "ok": True, "error": None, "config_version": None} in got
        assert sum(1 for r in got if not r["ok"]) == 2
        assert agent.alive()
    finally:
        cloud.disconnect()
        cloud.loop_stop()
        agent.stop()
        rec.close()
