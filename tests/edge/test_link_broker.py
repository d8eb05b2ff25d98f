"""The agent's outbox + MQTT link against a real Mosquitto: broker restart and agent kill -9.

No cloud here: a persistent-session subscriber stands in for the ingest, so these tests pin
down the edge half of the delivery guarantee on their own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from cloud.services import ServiceProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from edge_harness import (
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
