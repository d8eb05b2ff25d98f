"""`serve --shared` shows every node's positions, not only the share of band telemetry it ingests.

Two ingest processes on one real Mosquitto, both on the shared subscription; the first also relays
positions (IngestConfig.all_positions, what `serve --shared` sets). The band telemetry of six nodes must
be written once in all (lines: each message by one of the two) while the relaying one's live map holds
every node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.alert_store import AlertStore
from cloud.ingest import Ingest, IngestConfig
from devtools.services import ServiceProcess
from protocols.payloads import BandTelemetry

NODES = [f"edge-{i}" for i in range(6)]


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_shared_serve_relays_every_nodes_positions(mosquitto: ServiceProcess, tmp_path: Path) -> None:
    stores = [AlertStore(str(tmp_path / f"s{k}.db")) for k in range(2)]
    serve = Ingest(IngestConfig(host=mosquitto.host, port=mosquitto.port, client_id="relay-a", shared=True,
                                all_positions=True), stores[0], None)
    worker = Ingest(IngestConfig(host=mosquitto.host, port=mosquitto.port, client_id="relay-b", shared=True),
                    stores[1], None)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="relay-pub", protocol=mqtt.MQTTv5)
    try:
        serve.start()
        worker.start()
        assert _wait(lambda: serve.connected and worker.connected, 10)
        time.sleep(0.5)  # the SUBACKs
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        n = 0
        for rnd in range(4):
            for node in NODES:
                tel = BandTelemetry.model_validate({"schema": "qwatch.bands/1", "ts": 100.0 + rnd, "bands": [
                    {"band": 1001, "ts": 100.0 + rnd, "x": 1.0, "y": 2.0, "err_m": 1.0, "zone": None, "rssi": -60.0,
                     "rx_count": 2, "flags": 0}]})
                pub.publish(f"qwatch/v1/s1/{node}/telemetry/bands", tel.model_dump_json(by_alias=True), qos=0)
                n += 1
        assert _wait(lambda: serve.counts["positions_relayed"] == n
                     and serve.counts["messages"] + worker.counts["messages"] == n, 10), (
            dict(serve.counts), dict(worker.counts))
        assert {node for (_s, node) in serve.hub.positions} == set(NODES)  # every node on this replica's map
        assert 0 < worker.counts["messages"] < n  # the shared subscription really split the lines
    finally:
        pub.loop_stop()
        pub.disconnect()
        for ing in (serve, worker):
            ing.stop()
        for s in stores:
            s.close()
