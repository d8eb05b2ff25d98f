"""Does the cloud's ingest session exist on the broker? (for `qwatch-edge doctor`)

The node publishes one harmless QoS 1 message on its own `…/cmd_result` topic (the only topic
of its own prefix the ingest reads and ignores) and reads the PUBACK reason code:
0 (Success) means a session subscribes to the node's messages; 0x10 "No matching subscribers"
means none does, so alerts would wait in the outbox until the cloud first connects
(`qwatch-cloud ensure-session` creates the session; docs/deploy.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.credentials import MqttCredentials, apply_credentials, node_username, refusal_hint
from protocols.payloads import CommandResult
from protocols.topics import NodeTopics

NO_MATCHING_SUBSCRIBERS = 0x10


@dataclass(frozen=True, slots=True)
class IngestCheck:
    """The outcome: `ok`, and one line for the technician (what is wrong and how to fix it)."""

    ok: bool
    message: str


def check_ingest_session(host: str, port: int, site: str, node: str, *,
                         credentials: MqttCredentials | None = None, timeout: float = 10.0) -> IngestCheck:
    """Publish a probe as this node and judge the broker's PUBACK. Never raises for network trouble."""
    # A client ID of its own, where the broker allows it; a production broker makes the client ID the
    # username (use_username_as_clientid), so there the probe briefly takes over the agent's session
    # and the agent reconnects within its Will Delay (no node_offline).
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{node_username(site, node)}/doctor",
                    protocol=mqtt.MQTTv5)
    if credentials is not None:
        apply_credentials(c, credentials)
    done = threading.Event()
    out: dict[str, IngestCheck] = {}

    def on_connect(client: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            out["r"] = IngestCheck(False, f"broker refused the connection: {rc}; "
                                          f"{refusal_hint(rc, credentials)}")
            done.set()
            return
        probe = CommandResult(cmd_id="doctor-ingest-probe", ok=True).model_dump_json()
        client.publish(NodeTopics(site, node).cmd_result, probe, qos=1)

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, rc: object, _p: object) -> None:
        code = getattr(rc, "value", -1)
        if code == 0:
            out["r"] = IngestCheck(True, "the cloud ingest session exists: alerts are queued for the cloud "
                                         "even while it is down")
        elif code == NO_MATCHING_SUBSCRIBERS:
            out["r"] = IngestCheck(False, "no cloud ingest session on the broker: alerts wait in this node's "
                                          "outbox until the cloud first connects; run `qwatch-cloud "
                                          "ensure-session` (or start `qwatch-cloud serve`) once")
        else:
            out["r"] = IngestCheck(False, f"the broker refused the probe publish: {rc} (check this node's ACL)")
        done.set()

    c.on_connect = on_connect
    c.on_publish = on_publish
    try:
        c.connect(host, port, keepalive=15)
    except OSError as exc:
        return IngestCheck(False, f"cannot reach the broker at {host}:{port}: {exc}")
    c.loop_start()
    try:
        if not done.wait(timeout):
            return IngestCheck(False, f"no answer from the broker at {host}:{port} within {timeout:.0f} s")
        return out["r"]
    finally:
        c.disconnect()
        c.loop_stop()
