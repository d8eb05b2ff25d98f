"""A provisioned province on a real, secured Mosquitto (TLS + password file + ACL) for tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud.provision import Province
from devtools.services import ServiceProcess, require_binary, start_mosquitto_secure
from protocols.credentials import MqttCredentials, apply_credentials, load_credentials
from protocols.ulid import new_ulid

SITE = "kg-01"


@dataclass
class SecureBroker:
    """A province directory and the Mosquitto that uses its files."""

    province: Province
    broker: ServiceProcess
    bundles: dict[str, Path] = field(default_factory=dict)

    def creds(self, name: str) -> MqttCredentials:
        """The bundle of `name` (a node ID or "cloud"), pointed at the test broker's port."""
        path = self.bundles[name]
        return load_credentials(path).model_copy(update={"broker_port": self.broker.port})

    def stop(self) -> None:
        self.broker.stop()


def start_secure_broker(tmp_path: Path, nodes: tuple[str, ...] = ("edge-01", "edge-02")) -> SecureBroker:
    """`pki init` for 127.0.0.1/localhost, provision `nodes` under SITE, start the secured broker."""
    require_binary("mosquitto")
    require_binary("mosquitto_passwd")
    prov = Province(tmp_path / "province")
    prov.init("testprov", ["127.0.0.1", "localhost"])
    bundles = {n: prov.provision_node(SITE, n) for n in nodes}
    bundles["cloud"] = prov.bundles / "qwatch-cloud.json"
    broker = start_mosquitto_secure(tmp_path / "broker", prov.files)
    return SecureBroker(prov, broker, bundles)


class Client:
    """A paho MQTT 5 client over TLS that records what it receives."""

    def __init__(self, broker: ServiceProcess, creds: MqttCredentials, *, password: str | None = None,
                 host: str | None = None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.connack = threading.Event()
        self.reason: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{new_ulid()}", protocol=mqtt.MQTTv5)
        apply_credentials(self.c, creds)
        if password is not None:
            self.c.username_pw_set(creds.username, password)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *_a: self.disconnected.set()
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.host = host or broker.host
        self.port = broker.port

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.reason = reason
        self.connack.set()

    def start(self) -> Client:
        """Connect (raises on TLS failure) and run the network loop."""
        self.c.connect(self.host, self.port, keepalive=30)
        self.c.loop_start()
        return self

    def ok(self) -> bool:
        """True if the broker accepted the CONNECT."""
        assert self.connack.wait(5), "no CONNACK"
        return self.reason is not None and not self.reason.is_failure

    def topics(self) -> list[str]:
        return [t for t, _ in self.got]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
