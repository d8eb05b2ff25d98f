"""The load test's simulated nodes (bench/_load_nodes.py) speak MQTT 5 and the protocol's payloads.

A real Mosquitto and a paho subscriber: every message the light-weight client sends must arrive on
its documented topic and parse with the protocol models, or the load test would measure the ingest
refusing garbage instead of storing alerts.
"""

from __future__ import annotations

import argparse
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from bench._load_nodes import Fleet
from devtools.services import ServiceProcess
from protocols import topics as T
from protocols.payloads import Alert, BandTelemetry, CameraEvent, NodeTelemetry, Status, parse_payload

MODELS: dict[str, type[BaseModel]] = {T.STATUS: Status, T.TELEMETRY_BANDS: BandTelemetry,
                                     T.TELEMETRY_NODE: NodeTelemetry, T.ALERT: Alert, T.CAMERA_EVENT: CameraEvent}


def test_simulated_nodes_publish_valid_protocol_messages(mosquitto: ServiceProcess) -> None:
    got: list[tuple[str, bytes, bool]] = []
    lock = threading.Lock()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="load-check", protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with lock:
            got.append((m.topic, bytes(m.payload), m.retain))

    sub.on_message = on_message
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("qwatch/v1/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    args = argparse.Namespace(broker=mosquitto.address, sites=2, bands=20, cameras=4, schedule="2:2.2",
                              alert_every_s=1.0, camera_every_s=1.0, cut_dead=0, cut_sites=1, seed=1, bundles="")
    try:
        Fleet(args).run()
        time.sleep(0.5)
    finally:
        sub.loop_stop()
        sub.disconnect()
    kinds: dict[str, int] = {}
    for topic, payload, _retain in got:
        parsed = T.parse_topic(topic)
        assert parsed.site.startswith("load-") and parsed.node == "edge-01"
        parse_payload(MODELS[parsed.kind], payload)  # raises on anything the ingest would refuse
        kinds[parsed.kind] = kinds.get(parsed.kind, 0) + 1
    assert kinds[T.STATUS] == 2  # one birth per node; the clean DISCONNECT discards the Wills
    assert kinds[T.TELEMETRY_BANDS] >= 4 and kinds[T.TELEMETRY_NODE] >= 2
    assert kinds[T.ALERT] >= 10  # the power cut: band_missing for each of a site's 10 bands
    assert kinds[T.CAMERA_EVENT] >= 2
    bands = [parse_payload(BandTelemetry, p) for t, p, _ in got if t.endswith("/telemetry/bands")]
    assert all(len(b.bands) == 10 for b in bands)
