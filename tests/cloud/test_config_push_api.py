"""`POST /api/v1/sites/{site}/config/push` on a real broker: one retained `cmd/config` per node of
that site, carrying that site's keys only; versions count up; refusals are 4xx with the reason."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.band_registry import BandRegistry
from devtools.services import ServiceProcess
from protocols.payloads import Status
from tests.cloud.cloud_harness import RunningCloud, start_cloud
from tests.helpers import wait_for

SITE = "site: {id: kg-01}\nzones:\n  - {id: ward, kind: permitted, polygon: [[0,0],[10,0],[10,10]]}\n"


@pytest.fixture
def cloud(tmp_path: Path, mosquitto: ServiceProcess,
          shared_victoria_metrics: ServiceProcess) -> Iterator[tuple[RunningCloud, BandRegistry]]:
    reg = BandRegistry(tmp_path / "cloud.db")
    c = start_cloud(tmp_path, mosquitto, shared_victoria_metrics.url, bands=reg)
    yield c, reg
    c.stop()
    reg.close()


def _online(c: RunningCloud, site: str, node: str) -> None:
    st = Status.model_validate({"schema": "qwatch.status/1", "state": "online", "ts": time.time(), "version": "t",
                                "boot_id": f"b-{node}"})
    assert c.ingest.handle(f"qwatch/v1/{site}/{node}/status", st.model_dump_json(by_alias=True).encode()) == "online"


def test_push_reaches_only_the_sites_nodes_with_only_its_keys(cloud: tuple[RunningCloud, BandRegistry],
                                                              mosquitto: ServiceProcess) -> None:
    c, reg = cloud
    reg.enrol(band=1, site="kg-01", person="P-1", allowed_zones=["ward"], key=bytes(16), by="t")
    reg.enrol(band=2, site="kg-02", person="P-2", allowed_zones=["ward"], key=bytes(range(16)), by="t")
    _online(c, "kg-01", "edge-01")
    _online(c, "kg-02", "edge-09")
    got: list[tuple[str, dict[str, object], bool]] = []
    lock = threading.Lock()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="push-watch", protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with lock:
            got.append((m.topic, json.loads(m.payload), bool(m.retain)))

    sub.on_message = on_message
    sub.on_connect = lambda cl, *_a: cl.subscribe("qwatch/v1/+/+/cmd/config", qos=1)
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        url = c.url + "/api/v1/sites/kg-01/config/push"
        assert httpx.post(url, timeout=10).status_code == 409  # nothing pushed before: needs site_yaml
        resp = httpx.post(url, json={"site_yaml": SITE}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"site": "kg-01", "version": 1, "bands": 1, "nodes": ["edge-01"], "notes": []}
        wait_for(lambda: len(got) >= 1, 5, what="the retained config command")
        topic, payload, _ = got[0]
        assert topic == "qwatch/v1/kg-01/edge-01/cmd/config"
        assert payload["keys"] == {"1": "00" * 16} and payload["version"] == 1
        again = httpx.post(url, timeout=10)  # the last pushed YAML again
        assert again.status_code == 200 and again.json()["version"] == 2
        bad = httpx.post(url, json={"site_yaml": SITE.replace("ward", "yard")}, timeout=10)
        assert bad.status_code == 422 and "ward" in bad.text
        time.sleep(0.3)
        assert all(t.startswith("qwatch/v1/kg-01/") for t, _, _ in got)
    finally:
        sub.disconnect()
        sub.loop_stop()
    # A late subscriber (a node that was offline) gets the retained latest push.
    late: list[dict[str, object]] = []
    sub2 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="late-node", protocol=mqtt.MQTTv5)
    sub2.on_message = lambda _c, _u, m: late.append(json.loads(m.payload))
    sub2.on_connect = lambda cl, *_a: cl.subscribe("qwatch/v1/kg-01/edge-01/cmd/#", qos=1)
    sub2.connect(mosquitto.host, mosquitto.port)
    sub2.loop_start()
    try:
        wait_for(lambda: late, 5, what="retained config for a late node")
        assert late[0]["version"] == 2
    finally:
        sub2.disconnect()
        sub2.loop_stop()
