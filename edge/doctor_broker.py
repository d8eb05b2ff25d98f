"""`qwatch-edge doctor`: the broker, seen with this node's own credentials.

1. TLS: the broker's certificate chains to the bundle's CA and names the host (`diagnose_tls`).
2. CONNECT with the node's username/password (a refusal names the fix).
3. A QoS 1 publish to the node's own `cmd_result` (a harmless, well-formed CommandResult the
   ingest just logs). The PUBACK reason code says two things: a failure code means the ACL
   does not let the node write its own namespace; 0x10 "no matching subscribers" means nobody
   subscribes to the node's topics, i.e. the cloud ingest has no (persistent) session on the
   broker and alerts would be dropped there. 0x00 means the ingest's session exists.
4. A QoS 1 publish to another node's topic must be refused: MQTT 5 PUBACK reason code >= 0x80
   (Mosquitto answers 0x87 "Not authorized"). Success there means the ACL is not confining nodes.

The doctor connects with its own client ID (`qwatch-doctor-…`). A province broker makes the
client ID the username (`use_username_as_clientid`, cloud/broker_conf.py: one session per node,
so stolen credentials cannot take over another node), so there the probe briefly takes over the
running agent's session; the agent reconnects within a second and its Will Delay keeps the
cloud from seeing the node offline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.doctor_checks import Check, fail, ok, warn
from protocols.credentials import MqttCredentials, apply_credentials, diagnose_tcp, diagnose_tls, refusal_hint
from protocols.payloads import DOCTOR_PROBE_ID, CommandResult
from protocols.topics import PREFIX, NodeTopics

NO_MATCHING_SUBSCRIBERS = 0x10
FOREIGN_NODE = "zz-doctor-foreign"


@dataclass
class _Probe:
    connack: threading.Event = field(default_factory=threading.Event)
    reason: ReasonCode | None = None
    acks: dict[int, int] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)


def _connect_fix(creds: MqttCredentials | None, host: str, port: int) -> str:
    if creds is None:
        return (f"check --broker {host}:{port} (the broker's address and port) and that it runs; a province "
                "broker needs TLS: pass --credentials")
    return (f"check the broker address {host}:{port} (in the bundle, or --broker), that Mosquitto runs "
            "(systemctl status mosquitto) and that the node's network reaches it")


def probe_broker(host: str, port: int, topics: NodeTopics, creds: MqttCredentials | None,
                 *, timeout: float = 5.0) -> list[Check]:
    """Connect, publish to our own namespace and to a foreign one; one Check per finding."""
    if creds is not None:
        why = diagnose_tls(host, port, creds, timeout=timeout)
        if why is not None:
            fix = (why.split("; ", 1)[1] if "; " in why and why.startswith("tls:")
                   else _connect_fix(creds, host, port))
            return [fail("broker", "connect", why.split("; ", 1)[0], fix)]
    else:
        why = diagnose_tcp(host, port, timeout)
        if why is not None:
            return [fail("broker", "connect", why, _connect_fix(None, host, port))]
    probe = _Probe()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"qwatch-doctor-{topics.site}-{topics.node}"[:64],
                    protocol=mqtt.MQTTv5)
    if creds is not None:
        apply_credentials(c, creds)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        probe.reason = rc
        probe.connack.set()

    def on_publish(_c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        with probe.acked:
            probe.acks[mid] = rc.value
            probe.acked.notify_all()

    c.on_connect = on_connect
    c.on_publish = on_publish
    try:
        c.connect(host, port, keepalive=30)
    except (OSError, ValueError) as exc:
        return [fail("broker", "connect", f"{host}:{port}: {exc}", _connect_fix(creds, host, port))]
    c.loop_start()
    try:
        return _after_connect(c, probe, host, port, topics, creds, timeout)
    finally:
        c.disconnect()
        c.loop_stop()


def _wait_ack(probe: _Probe, mid: int, timeout: float) -> int | None:
    with probe.acked:
        probe.acked.wait_for(lambda: mid in probe.acks, timeout)
        return probe.acks.get(mid)


def _after_connect(c: mqtt.Client, probe: _Probe, host: str, port: int, topics: NodeTopics,
                   creds: MqttCredentials | None, timeout: float) -> list[Check]:
    if not probe.connack.wait(timeout):
        return [fail("broker", "connect", f"{host}:{port} accepted TCP but sent no CONNACK within {timeout:.0f} s "
                     "(a TLS port spoken to without TLS, or not an MQTT broker)", _connect_fix(creds, host, port))]
    assert probe.reason is not None
    if probe.reason.is_failure:
        return [fail("broker", "connect", f"the broker refused the connection: {probe.reason}",
                     refusal_hint(probe.reason, creds))]
    who = creds.username if creds else "anonymous"
    out = [ok("broker", "connect", f"{host}:{port} as {who}" + (" over TLS" if creds else " (no TLS)"))]
    payload = CommandResult(cmd_id=DOCTOR_PROBE_ID, ok=True).model_dump_json().encode()
    own = _wait_ack(probe, c.publish(topics.cmd_result, payload, qos=1).mid, timeout)
    if own is None:
        out.append(fail("broker", "publish own", f"no PUBACK for {topics.cmd_result} within {timeout:.0f} s",
                        "the broker is overloaded or dropping the node: see the broker log"))
    elif own >= 0x80:
        out.append(fail("broker", "publish own", f"{topics.cmd_result} refused (reason 0x{own:02x})",
                        "the broker's ACL does not give this node its own namespace: re-provision it "
                        "(`qwatch-cloud provision-node --rotate`) and reload the broker"))
    else:
        out.append(ok("broker", "publish own", f"{topics.cmd_result} accepted (PUBACK 0x{own:02x})"))
        if own == NO_MATCHING_SUBSCRIBERS:
            out.append(fail("broker", "ingest session", "nobody subscribes to this node's topics (PUBACK 0x10): "
                            "the cloud ingest has no session on this broker: alerts wait in the outbox for the cloud",
                            "run `qwatch-cloud ensure-session --credentials …` (or start `qwatch-cloud serve`) "
                            "once: its persistent session then keeps this node's messages while the cloud is "
                            "away; until then the node keeps refused alerts in its outbox and retries"))
        else:
            out.append(ok("broker", "ingest session", "a subscriber (the cloud ingest's session) takes this "
                          "node's messages"))
    foreign_topic = f"{PREFIX}/{topics.site}/{FOREIGN_NODE}/cmd_result"
    foreign = _wait_ack(probe, c.publish(foreign_topic, payload, qos=1).mid, timeout)
    if foreign is not None and foreign >= 0x80:
        out.append(ok("broker", "foreign topic refused", f"{foreign_topic}: reason 0x{foreign:02x} (not authorized)"))
    elif creds is None:
        out.append(warn("broker", "foreign topic refused", "the broker let this node write another node's topic "
                        "(plain broker without per-node ACL)", "use a province broker: `qwatch-cloud pki init`, "
                        "provision-node, and run with --credentials"))
    else:
        out.append(fail("broker", "foreign topic refused", f"{foreign_topic} was accepted: the broker does not "
                        "confine nodes to their own topics", "install the province ACL (acl_file from `qwatch-cloud "
                        "pki init`, docs/deploy.md) and reload the broker"))
    return out
