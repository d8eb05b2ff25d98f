"""Issue 9 against a real Mosquitto: client IDs one-to-one with users, colliding names, the ingest session.

Each test names the numbered item of the issue it proves; each failed before the fix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.alert_store import AlertStore
from cloud.ingest import Ingest, IngestConfig
from cloud.ingest_session import ensure_ingest_session
from cloud.provision import Province, ProvisionError
from devtools.services import ServiceProcess, require_binary
from edge.doctor_broker import probe_broker
from protocols.credentials import apply_credentials, node_username
from protocols.payloads import new_alert
from protocols.topics import NodeTopics
from tests.cloud.provision_harness import SITE, Client, SecureBroker, start_secure_broker
from tests.helpers import wait_for


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    sb = start_secure_broker(tmp_path)
    try:
        yield sb
    finally:
        sb.stop()


def test_item8_names_that_collide_after_sanitising_are_refused(tmp_path: Path) -> None:
    require_binary("mosquitto_passwd")
    prov = Province(tmp_path / "p")
    prov.init("testprov", ["127.0.0.1"])
    prov.provision_node("kg-01", "gate")
    for site, node in (("kg", "01-gate"), ("KG-01", "Gate"), ("kg_01", "gate"), ("kg.01", "gate")):
        with pytest.raises(ProvisionError, match="too close to the provisioned node kg-01/gate"):
            prov.provision_node(site, node)
    prov.provision_node("kg-01", "gate-2")  # differs in a character: fine
    assert node_username("kg-01", "gate") != node_username("kg", "01-gate")


def test_item8_stolen_credentials_cannot_take_over_another_node(secure: SecureBroker) -> None:
    """Node edge-02's credentials, used with edge-01's client ID in a tight loop: edge-01 is untouched and
    every command the cloud sends it arrives (before: 22 of 42 under such a loop)."""
    victim_id = node_username(SITE, "edge-01")
    victim = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=victim_id, protocol=mqtt.MQTTv5)
    apply_credentials(victim, secure.creds("edge-01"))
    got: list[bytes] = []
    drops: list[object] = []
    victim.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    victim.on_disconnect = lambda _c, _u, _f, rc, _p: drops.append(rc)
    victim.on_connect = lambda c, *_a: c.subscribe(f"{NodeTopics(SITE, 'edge-01').cmd_subscription}", qos=1)
    victim.connect(secure.broker.host, secure.broker.port, keepalive=30)
    victim.loop_start()
    cloud = Client(secure.broker, secure.creds("cloud")).start()
    stop = threading.Event()
    takeovers = 0

    def attack() -> None:
        nonlocal takeovers
        while not stop.is_set():
            a = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=victim_id, protocol=mqtt.MQTTv5)
            apply_credentials(a, secure.creds("edge-02"))
            try:
                a.connect(secure.broker.host, secure.broker.port, keepalive=30)
                a.loop(0.05)
                a.disconnect()
                takeovers += 1
            except OSError:
                time.sleep(0.05)

    try:
        wait_for(victim.is_connected, 10, what="victim connected")
        assert cloud.ok()
        time.sleep(0.3)
        attacker = threading.Thread(target=attack, daemon=True)
        attacker.start()
        topic = NodeTopics(SITE, "edge-01").cmd("ack")
        for i in range(42):
            cloud.c.publish(topic, f'{{"n": {i}}}'.encode(), qos=1).wait_for_publish(5)
            time.sleep(0.05)
        wait_for(lambda: len(got) >= 42, 10, what="all 42 commands at the victim")
        stop.set()
        attacker.join(5)
        assert takeovers >= 5, "the attack loop did not run"
        assert drops == [], f"the victim was disconnected: {drops}"
        assert len(got) == 42
    finally:
        stop.set()
        victim.disconnect()
        victim.loop_stop()
        cloud.close()


def test_item1_ensure_session_then_doctor_check_passes(mosquitto: ServiceProcess, tmp_path: Path) -> None:
    """Before the session exists the doctor hook says so (PUBACK 0x10); `ensure-session` creates it, and an
    alert published while the cloud is still down is stored once it starts."""
    host, port = mosquitto.host, mosquitto.port
    def session_check() -> tuple[str, str]:
        checks = probe_broker(host, port, NodeTopics("site-a", "edge-01"), None)
        c = next(c for c in checks if c.name == "ingest session")
        return c.status, c.fix

    status, fix = session_check()
    assert status == "fail" and "ensure-session" in fix
    cfg = IngestConfig(host=host, port=port, client_id="ingest-h9")
    assert ensure_ingest_session(cfg) is False
    assert ensure_ingest_session(cfg) is True  # idempotent: the second run finds it
    assert session_check()[0] == "pass"
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="site-a/edge-01", protocol=mqtt.MQTTv5)
    acks: list[int] = []
    node.on_publish = lambda _c, _u, _m, rc, _p: acks.append(rc.value)
    node.connect(host, port)
    node.loop_start()
    a = new_alert(site="site-a", node="edge-01", type="sos", subject={"band": 7}, ts=time.time())
    node.publish(NodeTopics("site-a", "edge-01").alert, a.to_json(), qos=1).wait_for_publish(5)
    wait_for(lambda: acks, 5, what="PUBACK")
    node.disconnect()
    node.loop_stop()
    assert acks == [0]  # delivered to the session, not "no matching subscribers"
    store = AlertStore(tmp_path / "c.db")
    ing = Ingest(cfg, store, None)
    ing.start()
    try:
        wait_for(lambda: store.get(a.alert_id) is not None, 10, what="queued alert stored by the ingest")
    finally:
        ing.stop()
        store.close()
