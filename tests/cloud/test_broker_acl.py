"""The shipped ACL template (config/mosquitto/qwatch.acl.example) enforces docs/protocol.md §5 on a
real Mosquitto: a node writes only under its own prefix and reads only its own cmd/#."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devtools.services import ServiceProcess, require_binary, start_mosquitto

ACL = Path(__file__).resolve().parents[2] / "config" / "mosquitto" / "qwatch.acl.example"
USERS = {"edge-01": "pw-edge-01", "edge-02": "pw-edge-02", "qwatch-cloud": "pw-cloud"}


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[ServiceProcess]:
    passwd = tmp_path / "passwd"
    tool = require_binary("mosquitto_passwd")
    for i, (user, pw) in enumerate(USERS.items()):
        subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(passwd), user, pw], check=True)
    broker = start_mosquitto(tmp_path, extra_conf=f"allow_anonymous false\npassword_file {passwd}\n"
                                                  f"acl_file {ACL}\n")
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    def __init__(self, broker: ServiceProcess, user: str | None) -> None:
        self.got: list[str] = []
        self.connected = threading.Event()
        self.reason: object = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5)
        if user:
            self.c.username_pw_set(user, USERS[user])
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self.got.append(m.topic)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        self.reason = reason
        self.connected.set()

    def ok(self) -> bool:
        assert self.connected.wait(5), "no CONNACK"
        return not getattr(self.reason, "is_failure", True)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_acl_template_confines_each_node_to_its_own_prefix(secured_broker: ServiceProcess) -> None:
    anon = Client(secured_broker, None)
    assert not anon.ok(), "anonymous clients must be refused"
    anon.close()
    cloud, n1, n2 = (Client(secured_broker, u) for u in ("qwatch-cloud", "edge-01", "edge-02"))
    try:
        assert cloud.ok() and n1.ok() and n2.ok()
        cloud.c.subscribe("qwatch/v1/#", qos=1)
        n1.c.subscribe("qwatch/v1/kg-01/edge-01/cmd/#", qos=1)
        n1.c.subscribe("qwatch/v1/kg-01/edge-02/cmd/#", qos=1)  # not its own: must get nothing
        time.sleep(0.3)
        # edge-01 tries to speak for edge-02, then speaks for itself: the forged one is dropped.
        n1.c.publish("qwatch/v1/kg-01/edge-02/alert", b"{}", qos=1).wait_for_publish(5)
        n1.c.publish("qwatch/v1/kg-01/edge-01/alert", b"{}", qos=1).wait_for_publish(5)
        assert wait_for(lambda: "qwatch/v1/kg-01/edge-01/alert" in cloud.got)
        assert "qwatch/v1/kg-01/edge-02/alert" not in cloud.got
        # Commands: each node hears only its own.
        cloud.c.publish("qwatch/v1/kg-01/edge-02/cmd/ack", b"{}", qos=1).wait_for_publish(5)
        cloud.c.publish("qwatch/v1/kg-01/edge-01/cmd/ack", b"{}", qos=1).wait_for_publish(5)
        assert wait_for(lambda: "qwatch/v1/kg-01/edge-01/cmd/ack" in n1.got)
        assert "qwatch/v1/kg-01/edge-02/cmd/ack" not in n1.got
        # A node cannot inject commands to another node.
        n1.c.publish("qwatch/v1/kg-01/edge-02/cmd/config", b"{}", qos=1).wait_for_publish(5)
        n1.c.publish("qwatch/v1/kg-01/edge-01/status", b"{}", qos=1).wait_for_publish(5)
        assert wait_for(lambda: "qwatch/v1/kg-01/edge-01/status" in cloud.got)
        assert "qwatch/v1/kg-01/edge-02/cmd/config" not in cloud.got
    finally:
        for c in (cloud, n1, n2):
            c.close()
