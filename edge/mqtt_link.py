"""The node's MQTT 5 link: outbox pump, telemetry buffer, birth/death, commands.

- Alerts and camera events come from the durable `Outbox`. The pump hands them to paho
  in sequence order, at most `max_inflight` unacknowledged, QoS 1. A row is deleted only
  when its PUBACK carries reason code 0 (Success). Every other code keeps it, including the
  non-error 0x10 "No matching subscribers": with it the broker dropped the message because
  no session subscribes (the cloud's ingest session does not exist yet, or was lost), so the
  cloud does not have it. Refused rows are sent again with exponential backoff; while any
  row waits for a retry no newer row is sent, so the outbox order is kept. Refusals are
  counted by reason and reported as a health error until a row is accepted again.
  paho re-sends its in-flight messages first after a reconnect, and the pump continues
  after them, so the order of first arrival at the broker is the outbox order.
- Telemetry goes through a bounded in-memory buffer (drop oldest, counted) and is sent
  QoS 0 only while connected, after the outbox backlog had its turn.
- Birth: retained `status` online with this process's `boot_id` on every connect. Death:
  the same topic as Last Will, state offline, same `boot_id`; on a clean stop the node
  publishes the offline status itself (a normal DISCONNECT suppresses the Will).
- The Will has an MQTT 5 Will Delay (`will_delay_s`): a reconnect within it (a network blip,
  or a session takeover when the broker had not yet noticed the old connection die) cancels
  the Will, so the cloud sees no false node_offline; a dead node still goes offline after it.
- A keepalive short enough to notice a stalled broker (TCP alive, no PINGRESP).
- Commands on `…/cmd/#` are queued for the agent thread; replies go to `…/cmd_result`.

paho callbacks run on paho's network thread and only enqueue; all outbox I/O happens on
the pump thread, so a slow fsync never blocks keepalives, and no lock is held across a
paho call that paho might also need inside a callback.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.outbox import Outbox
from protocols.bounds import Range, SettingError, check_bounds
from protocols.credentials import (
    MqttCredentials,
    apply_credentials,
    diagnose_tcp,
    diagnose_tls,
    node_username,
    refusal_hint,
)
from protocols.payloads import CommandResult, Status
from protocols.topics import NodeTopics

log = logging.getLogger("qwatch.edge.mqtt")


# Bounds of LinkConfig (and of the matching `qwatch-edge run` options). MQTT carries keepalive and
# Receive Maximum as 16-bit values; back-offs and delays are positive and at most an hour or a day.
LINK_BOUNDS = {
    "port": Range(ge=1, le=65535), "keepalive_s": Range(ge=1, le=65535), "reconnect_min_s": Range(ge=0.01, le=3600),
    "reconnect_max_s": Range(ge=0.01, le=3600), "max_inflight": Range(ge=1, le=65535),
    "telemetry_buffer": Range(ge=1, le=1_000_000), "telemetry_burst": Range(ge=1, le=100_000),
    "retry_failed_after_s": Range(ge=0, le=3600), "will_delay_s": Range(ge=0, le=86400),
}


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Connection and flow-control settings. Tests shorten the timeouts."""

    host: str
    port: int
    keepalive_s: int = 15
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    max_inflight: int = 50
    telemetry_buffer: int = 600
    telemetry_burst: int = 50
    retry_failed_after_s: float = 2.0
    retry_max_s: float = 15.0
    will_delay_s: int = 5
    # None: plain MQTT, no authentication (loopback test/demo broker). A bundle: TLS verified
    # against its CA with host name check, and its username/password.
    credentials: MqttCredentials | None = None

    def __post_init__(self) -> None:
        check_bounds(self, LINK_BOUNDS)
        if self.reconnect_max_s < self.reconnect_min_s:
            raise SettingError("LinkConfig", "reconnect_max_s", f"{self.reconnect_max_s!r} is below reconnect_min_s "
                               f"({self.reconnect_min_s!r})")


@dataclass(frozen=True, slots=True)
class Command:
    """A command received on `…/cmd/{name}` (raw JSON payload, validated by the agent)."""

    name: str
    payload: bytes


class MqttLink:
    """Owns the paho client and the pump thread that drains the outbox and telemetry."""

    def __init__(
        self, cfg: LinkConfig, topics: NodeTopics, outbox: Outbox, *, boot_id: str, version: str
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.outbox = outbox
        self.boot_id = boot_id
        self.version = version
        self.commands: queue.Queue[Command] = queue.Queue()
        self._acks: queue.SimpleQueue[tuple[int, bool, str]] = queue.SimpleQueue()
        self._telemetry: collections.deque[tuple[str, bytes]] = collections.deque()
        self._tlock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._mid_seq: dict[int, int] = {}
        self._sent_at: dict[int, float] = {}
        self._cursor = 0
        self._retry: dict[int, float] = {}
        self._refusals = 0  # consecutive refused PUBACKs: sets the backoff
        self.refusal: str | None = None  # why rows are being refused now (health error), None when fine
        self._pump: threading.Thread | None = None
        self.counters: dict[str, int] = collections.defaultdict(int)
        self._last_ack_ts = time.monotonic()
        self._last_loop_ts = time.monotonic()
        self.last_connect_error: str | None = None
        self.client = self._make_client()

    # ------------------------------------------------------------------ setup
    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            # The broker username (`site/node`), which production brokers enforce as the client ID
            # (use_username_as_clientid): one-to-one, where `qwatch-edge-{site}-{node}` made
            # kg-01/gate and kg/01-gate the same client and let one take over the other.
            client_id=node_username(self.topics.site, self.topics.node),
            protocol=mqtt.MQTTv5,
        )
        if self.cfg.credentials is not None:
            apply_credentials(c, self.cfg.credentials)
        c.max_inflight_messages_set(self.cfg.max_inflight)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(
            min_delay=max(1, round(self.cfg.reconnect_min_s)),
            max_delay=max(1, round(self.cfg.reconnect_max_s)),
        )
        will_props = None
        if self.cfg.will_delay_s > 0:
            will_props = Properties(PacketTypes.WILLMESSAGE)
            will_props.WillDelayInterval = self.cfg.will_delay_s
        c.will_set(self.topics.status, self._status_json("offline"), qos=1, retain=True, properties=will_props)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        return c

    def _status_json(self, state: str) -> bytes:
        st = Status.model_validate(
            {"schema": "qwatch.status/1", "state": state, "ts": time.time(), "version": self.version,
             "boot_id": self.boot_id}
        )
        return st.model_dump_json(by_alias=True).encode()

    def start(self) -> None:
        """Connect in the background (retrying forever) and start the pump thread."""
        props = None
        if self.cfg.will_delay_s > 0:
            # The broker sends the Will when the delay passes or the session ends, whichever is
            # first (MQTT 5 §3.1.3.2.2), so the session must outlive the delay.
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.will_delay_s
        # Clean start on the process's first connect only: a reconnect with Clean Start=1 ends
        # the old session, and the spec then sends its Will at once, delay or not (§3.1.4).
        self.client.connect_async(
            self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props,
        )
        self.client.loop_start()
        self._pump = threading.Thread(target=self._pump_loop, name="mqtt-pump", daemon=True)
        self._pump.start()
        log.info("event=link_start node=%s broker=%s:%d boot_id=%s tls=%s user=%s", self.topics.node,
                 self.cfg.host, self.cfg.port, self.boot_id, self.cfg.credentials is not None,
                 self.cfg.credentials.username if self.cfg.credentials else "-")

    def stop(self, *, drain_s: float = 2.0) -> None:
        """Give in-flight messages `drain_s` to be acked, publish offline, disconnect."""
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and self._connected.is_set() and self.outbox.depth():
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._pump is not None:
            self._pump.join(timeout=5)
        if self._connected.is_set():
            info = self.client.publish(self.topics.status, self._status_json("offline"), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
        log.info("event=link_stop node=%s outbox_depth=%d", self.topics.node, self.outbox.depth())

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self.counters["connect_refused"] += 1
            self.last_connect_error = f"refused: {rc}"
            log.error("event=mqtt_connect_refused node=%s reason=%r hint=%r", self.topics.node, str(rc),
                      refusal_hint(rc, self.cfg.credentials))
            return
        self.counters["connects"] += 1
        client.publish(self.topics.status, self._status_json("online"), qos=1, retain=True)
        client.subscribe(self.topics.cmd_subscription, qos=1)
        self._connected.set()
        self._wake.set()
        log.info("event=mqtt_connected node=%s connects=%d", self.topics.node, self.counters["connects"])

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self.counters["connect_failures"] += 1
        n = self.counters["connect_failures"]
        # paho swallows the reason: find it out and log it (1st, 2nd, 4th, 8th... failure: not every retry).
        if n & (n - 1) == 0:
            self._log_connect_failure(n)

    def _log_connect_failure(self, n: int) -> None:
        creds = self.cfg.credentials
        why = (diagnose_tls(self.cfg.host, self.cfg.port, creds, timeout=2.0) if creds is not None
               else diagnose_tcp(self.cfg.host, self.cfg.port, timeout=2.0))
        if why is None:
            why = (f"tcp to {self.cfg.host}:{self.cfg.port} works but the MQTT handshake failed: "
                   + ("is it an MQTT broker?" if creds is not None else
                      "a TLS listener needs --credentials (a province broker), or it is not an MQTT broker"))
        self.last_connect_error = why
        log.error("event=mqtt_connect_failed node=%s failures=%d broker=%s:%d tls=%s reason=%r", self.topics.node,
                  n, self.cfg.host, self.cfg.port, creds is not None, why)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        never = not self.counters["connects"] and not self.counters["connect_refused"]
        if not was and never and not self._stop.is_set():
            # Dropped before CONNACK (e.g. plain MQTT to a TLS port): paho calls no connect_fail here.
            self._on_connect_fail(_c, _u)
        if was:
            self.counters["disconnects"] += 1
            reason = str(rc).lower().replace(" ", "_")
            self.counters[f"disconnect_{reason}"[:48]] += 1
            level = logging.INFO if self._stop.is_set() else logging.WARNING
            log.log(level, "event=mqtt_disconnected node=%s reason=%r in_flight=%d outbox_depth=%d",
                    self.topics.node, str(rc), len(self._mid_seq), self.outbox.depth())
            if getattr(rc, "value", None) == 0x8E:  # Session taken over
                self.counters["session_taken_over"] += 1
                log.error("event=session_taken_over node=%s client_id=%s hint=%r", self.topics.node,
                          node_username(self.topics.site, self.topics.node),
                          "another client connected with this node's client ID: if this node did not restart "
                          "twice, its credentials are in use elsewhere; re-key it with `qwatch-cloud "
                          "provision-node --rotate` and install the new bundle")

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        # Only 0 means the broker delivered it; 0x10 "No matching subscribers" is not a failure to
        # paho (< 0x80) but the message went nowhere.
        self._acks.put((mid, rc.value == 0, str(rc)))
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        name = msg.topic.rsplit("/", 1)[-1]
        self.counters["commands"] += 1
        self.commands.put(Command(name, bytes(msg.payload)))

    # ------------------------------------------------------------------ API for the agent thread
    def notify(self) -> None:
        """A new outbox row was committed: wake the pump."""
        self._wake.set()

    def publish_telemetry(self, topic: str, payload: bytes) -> None:
        """Queue one telemetry message (QoS 0). When the buffer is full the OLDEST is dropped."""
        with self._tlock:
            self.counters["telemetry_queued"] += 1
            if len(self._telemetry) >= self.cfg.telemetry_buffer:
                self._telemetry.popleft()
                self.counters["telemetry_dropped"] += 1
            self._telemetry.append((topic, payload))
        self._wake.set()

    def reply(self, result: CommandResult) -> None:
        """Publish a command result (QoS 1; not durable: the cloud re-asks if it is lost)."""
        self.client.publish(self.topics.cmd_result, result.model_dump_json().encode(), qos=1)

    def publish_direct(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish outside the outbox (snapshots: large, re-creatable, not worth a disk copy)."""
        self.client.publish(topic, payload, qos=qos)

    @property
    def connected(self) -> bool:
        """True between CONNACK and the next disconnect."""
        return self._connected.is_set()

    def stats(self) -> dict[str, int | float]:
        """Watchdog counters for node telemetry."""
        now = time.monotonic()
        with self._tlock:
            out: dict[str, int | float] = dict(self.counters)
            out["telemetry_buffered"] = len(self._telemetry)
        out["connected"] = int(self.connected)
        out["in_flight"] = len(self._mid_seq)
        out["retry_waiting"] = len(self._retry)
        out["last_ack_age_s"] = round(now - self._last_ack_ts, 3)
        out["pump_loop_age_s"] = round(now - self._last_loop_ts, 3)
        return out

    # ------------------------------------------------------------------ pump thread
    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.25)
            self._wake.clear()
            self._last_loop_ts = time.monotonic()
            try:
                self._process_acks()
                if self._connected.is_set():
                    self._send_outbox()
                    self._send_telemetry()
                self._check_stall()
            except Exception:  # the pump must never die: count, log, keep going
                self.counters["pump_errors"] += 1
                log.exception("event=pump_error node=%s", self.topics.node)
                time.sleep(0.2)
        self._process_acks()

    def _process_acks(self) -> None:
        while True:
            try:
                mid, ok, reason = self._acks.get_nowait()
            except queue.Empty:
                return
            seq = self._mid_seq.pop(mid, None)
            self._sent_at.pop(mid, None)
            if seq is None:
                continue  # QoS 0 telemetry, status, cmd_result
            self._last_ack_ts = time.monotonic()
            if ok:
                self.outbox.ack(seq)
                self.counters["acked"] += 1
                if self._refusals:
                    log.warning("event=puback_accepted_again node=%s seq=%d after_refusals=%d", self.topics.node,
                                seq, self._refusals)
                    self._refusals = 0
                    self.refusal = None
                    now = time.monotonic()
                    self._retry = dict.fromkeys(self._retry, now)  # the cloud is back: send the rest now
            else:
                self._refused(seq, reason)

    def _refused(self, seq: int, reason: str) -> None:
        """A PUBACK other than Success: keep the row, retry with backoff, report it."""
        self.counters["puback_refused"] += 1
        self.counters[("puback_" + reason.lower().replace(" ", "_"))[:48]] += 1
        self._refusals += 1
        delay = min(self.cfg.retry_failed_after_s * 2 ** min(self._refusals - 1, 16), self.cfg.retry_max_s)
        self._retry[seq] = time.monotonic() + delay
        self.refusal = (f"broker refused alert delivery ({reason}); {len(self._retry)} row(s) kept in the outbox "
                        "and retried" + ("; the cloud ingest session is missing: start `qwatch-cloud serve` "
                                         "(see `qwatch-edge doctor`)" if "subscriber" in reason.lower() else ""))
        row = self.outbox.get(seq)
        log.error("event=puback_refused node=%s seq=%d ref=%s reason=%r action=retry_in_%.1fs",
                  self.topics.node, seq, row.ref if row else "?", reason, delay)

    def _send_outbox(self) -> None:
        room = self.cfg.max_inflight - len(self._mid_seq)
        now = time.monotonic()
        # While the broker refuses, probe with one row at a time (the oldest), not the whole backlog.
        probing = self._refusals > 0
        if probing:
            room = min(room, 1 - len(self._mid_seq))
        for seq, due in sorted(self._retry.items()):
            if room <= 0 or due > now:
                break
            del self._retry[seq]
            row = self.outbox.get(seq)
            if row is not None:
                self._publish_row(seq, row.topic, row.payload)
                room -= 1
        if room <= 0 or self._retry or probing:
            return  # older rows wait for a retry: newer ones must not overtake them
        for row in self.outbox.pending_after(self._cursor, room):
            self._cursor = row.seq
            self._publish_row(row.seq, row.topic, row.payload)

    def _publish_row(self, seq: int, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # Not queued by paho (e.g. too large): keep the row, try again later.
            self.counters["publish_errors"] += 1
            self._retry[seq] = time.monotonic() + self.cfg.retry_failed_after_s
            log.error("event=publish_error node=%s seq=%d rc=%s", self.topics.node, seq, info.rc)
            return
        # NO_CONN: paho keeps QoS 1 messages and sends them after the reconnect.
        self._mid_seq[info.mid] = seq
        self._sent_at[info.mid] = time.monotonic()
        self.counters["published"] += 1

    def _send_telemetry(self) -> None:
        for _ in range(self.cfg.telemetry_burst):
            with self._tlock:
                if not self._telemetry:
                    return
                topic, payload = self._telemetry.popleft()
                self.counters["telemetry_sent"] += 1
            self.client.publish(topic, payload, qos=0)
        self._wake.set()  # more left: come back soon instead of after the idle timeout

    def _check_stall(self) -> None:
        """Count (not fix: keepalive does that) when the oldest in-flight message waits too long."""
        if not self._sent_at:
            return
        oldest = min(self._sent_at.values())
        if time.monotonic() - oldest > 2 * self.cfg.keepalive_s:
            self.counters["stalled_checks"] += 1
