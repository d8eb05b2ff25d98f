"""Create the cloud ingest's persistent session on the broker before any node connects.

A QoS 1 alert published while no session subscribes to it is answered with PUBACK 0x10 "No
matching subscribers" and dropped by the broker. The edge keeps such rows and retries them
(edge.mqtt_link), so nothing is lost, but alerts then wait for the cloud's first connect. Run
`qwatch-cloud ensure-session` once after installing the broker (docs/deploy.md): from then on the
broker queues every alert for the ingest even while the cloud is down. `qwatch-edge doctor` checks
that the session exists (edge.doctor_broker).
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.ingest import IngestConfig
from protocols import topics as T
from protocols.credentials import apply_credentials, refusal_hint
from protocols.errors import QwatchError

log = logging.getLogger("qwatch.cloud.ingest_session")


class SessionError(QwatchError):
    """The session could not be created; the message says why and what to do."""


def ensure_ingest_session(cfg: IngestConfig, *, timeout: float = 10.0) -> bool:
    """Connect as the ingest would (same client ID, no clean start, same expiry), subscribe, leave.

    Returns whether the broker already had the session. Messages queued for it are not acknowledged
    here (manual acks), so the real ingest still receives every one of them.
    """
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    if cfg.credentials is not None:
        apply_credentials(c, cfg.credentials)
    done = threading.Event()
    result: dict[str, object] = {}

    def on_connect(client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            result["error"] = f"broker refused the connection: {rc}; {refusal_hint(rc, cfg.credentials)}"
            done.set()
            return
        result["present"] = bool(flags.session_present)
        sub = T.SHARED_INGEST if cfg.shared else T.SUBSCRIBE_ALL
        client.subscribe(sub, options=SubscribeOptions(qos=1, retainHandling=1))

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: Properties) -> None:
        bad = [str(r) for r in codes if r.is_failure]
        if bad:
            result["error"] = f"subscription refused: {', '.join(bad)} (check the ACL of the cloud user)"
        done.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = cfg.session_expiry_s
    props.ReceiveMaximum = 1  # take as little of the queue as possible: it is left unacknowledged
    try:
        c.connect(cfg.host, cfg.port, keepalive=15, clean_start=False, properties=props)
    except OSError as exc:
        raise SessionError(f"cannot reach the broker at {cfg.host}:{cfg.port}: {exc}") from None
    c.loop_start()
    try:
        if not done.wait(timeout):
            raise SessionError(f"no answer from the broker at {cfg.host}:{cfg.port} within {timeout:.0f} s")
        if "error" in result:
            raise SessionError(str(result["error"]))
    finally:
        c.disconnect()
        c.loop_stop()
    present = bool(result.get("present"))
    log.info("event=ingest_session client_id=%s existed=%s expiry_s=%d", cfg.client_id, present,
             cfg.session_expiry_s)
    return present
