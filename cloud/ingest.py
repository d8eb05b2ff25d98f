"""Cloud ingest: MQTT 5 persistent session → alert store, node registry, VictoriaMetrics, live hub.

Delivery guarantee: the session is persistent (fixed client ID, ``clean_start=False``, long
session expiry) and acknowledgements are manual (paho ``manual_ack=True``). A QoS 1 message is
PUBACKed only after its effect is durable: the alert row committed with ``synchronous=FULL``,
the node registry row saved. If the ingest dies before that, the broker redelivers the message
to the next ingest with the same client ID. Writes are idempotent by ``(alert_id, state)``, so
redelivery never duplicates. If the store fails, the message is left unacknowledged and the
ingest reconnects once the store answers again, which makes the broker redeliver it.

Telemetry is QoS 0 (nothing to acknowledge) and goes to :class:`TelemetryWriter`, which spools to
disk while VictoriaMetrics is away. Bad topics and payloads are counted by reason and
acknowledged, so a poison message cannot wedge the session.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.alert_store import AlertStore, alert_view
from cloud.ingest_config import INGEST_BOUNDS, PAYLOAD_LIMITS, STORE_FAILURES, IngestConfig, StoreUnavailable
from cloud.ingest_queues import IDLE_WAIT_S, IngestQueues, delivery_mode, subscriptions
from cloud.ingest_telemetry import band_telemetry, node_telemetry
from cloud.live import LiveHub
from cloud.node_registry import NodeLiveness, NodeRecord
from cloud.notifier import Notifier
from cloud.store_db import DB_ERRORS
from cloud.timeseries import TelemetryWriter
from protocols import topics as T
from protocols.credentials import apply_credentials, diagnose_tls, refusal_hint
from protocols.errors import PayloadError, TopicError
from protocols.payloads import (
    DOCTOR_PROBE_ID,
    AckCommand,
    Alert,
    BandTelemetry,
    CameraEvent,
    CommandResult,
    NodeTelemetry,
    Status,
    parse_payload,
)
from protocols.text import LabelError, clean_label
from protocols.ulid import new_ulid

log = logging.getLogger("qwatch.cloud.ingest")

# Re-exported: the settings moved to cloud.ingest_config, callers still import them from here.
__all__ = ["INGEST_BOUNDS", "PAYLOAD_LIMITS", "STORE_FAILURES", "Ingest", "IngestConfig", "StoreUnavailable"]

class Ingest:
    """The ingest service. ``handle()`` is the socket-free core; ``start()`` wires it to paho."""

    def __init__(
        self,
        cfg: IngestConfig,
        store: AlertStore,
        writer: TelemetryWriter | None,
        hub: LiveHub | None = None,
        *,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        # Sends escalations outside the browser (--notify); the ingest queues its channels when it escalates.
        self.notifier = notifier
        self.channels: Callable[[str], Sequence[str]] | None = notifier.channels if notifier is not None else None
        self.store = store
        self.writer = writer
        self.hub = hub or LiveHub()
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        self.security: Counter[str] = Counter()  # refused as an attack, not as a mistake (by reason)
        self.node_health: dict[tuple[str, str], dict[str, Any]] = {}
        self.started_at = clock()
        self.liveness = NodeLiveness(
            silence_s=cfg.silence_s, started_at=self.started_at,
            records=[NodeRecord.from_row(r) for r in store.load_nodes()],
        )
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        # Alerts first, telemetry in between and shed when its queue is full (cloud.ingest_queues).
        self._queues = IngestQueues(telemetry_max=cfg.telemetry_queue, max_batch=cfg.max_batch)
        self._counts_lock = threading.Lock()
        self._live_buffer: list[tuple[str, dict[str, Any]]] | None = None
        self._live_owner = 0
        self._ticker: threading.Thread | None = None
        self._writer_thread: threading.Thread | None = None
        self.last_batch = time.monotonic()
        self.last_tick = time.monotonic()
        self.last_message_at: float | None = None
        self.connected = False
        self.client = self._make_client()

    # ------------------------------------------------------------------ paho shell
    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        if self.cfg.credentials is not None:
            apply_credentials(c, self.cfg.credentials)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        self.client.connect_async(
            self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()

    def start(self) -> None:
        """Connect in the background (retrying forever) and start the liveness/escalation ticker."""
        self._writer_thread = threading.Thread(target=self._store_loop, name="ingest-store", daemon=True)
        self._writer_thread.start()
        self._connect()
        self._ticker = threading.Thread(target=self._tick_loop, name="ingest-tick", daemon=True)
        self._ticker.start()
        if self.notifier is not None:
            self.notifier.start()
        log.info("event=ingest_start broker=%s:%d client_id=%s shared=%s", self.cfg.host, self.cfg.port,
                 self.cfg.client_id, self.cfg.shared)

    def stop(self) -> None:
        """Disconnect (the session stays on the broker) and stop the ticker."""
        self._stop.set()
        if self.notifier is not None:
            self.notifier.stop()
        self.client.disconnect()
        self.client.loop_stop()
        for t in (self._ticker, self._writer_thread):
            if t is not None:
                t.join(5)
        self._persist_nodes()

    @property
    def relays_positions(self) -> bool:
        """A shared-subscription process that also takes every node's band positions for its live map."""
        return self.cfg.shared and self.cfg.all_positions

    @property
    def subscription(self) -> str:
        """``qwatch/v1/#``, or the shared ``$share/ingest/qwatch/v1/#`` for N workers."""
        return T.SHARED_INGEST if self.cfg.shared else T.SUBSCRIBE_ALL

    def _on_connect(self, client: mqtt.Client, _u: object, flags: Any, rc: Any, _p: object = None) -> None:
        if rc.is_failure:
            self.counts["connect_refused"] += 1
            log.error("event=connect_failed rc=%s hint=%r", rc, refusal_hint(rc, self.cfg.credentials))
            return
        self.connected = True
        self.counts["connects"] += 1
        # retainHandling=1: retained messages only for a new subscription, not on every reconnect. Relaying
        # positions: two subscriptions told apart by their MQTT 5 subscription identifiers (docs/cloud.md).
        for topic, qos, sub_id in subscriptions(self.subscription, self.relays_positions):
            props = None
            if sub_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            client.subscribe(topic, options=SubscribeOptions(qos=qos, retainHandling=1), properties=props)
        log.info("event=connected session_present=%s sub=%s", flags.session_present, self.subscription)

    def _on_connect_fail(self, _c: mqtt.Client, _u: object) -> None:
        self.counts["connect_failures"] += 1
        n = self.counts["connect_failures"]
        # paho swallows the reason; with TLS, find it out (1st, 2nd, 4th, 8th... failure: not every retry).
        if self.cfg.credentials is not None and n & (n - 1) == 0:
            why = diagnose_tls(self.cfg.host, self.cfg.port, self.cfg.credentials, timeout=2.0)
            if why is not None:
                log.error("event=connect_failed failures=%d reason=%r", n, why)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object = None) -> None:
        self.connected = False
        self.counts["disconnects"] += 1
        log.warning("event=disconnected rc=%s", rc)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        # Only hand over: the store thread commits in groups and acknowledges after the commit.
        ids = getattr(msg.properties, "SubscriptionIdentifier", None) if self.relays_positions else None
        mode = delivery_mode(msg.topic, ids) if self.relays_positions else "full"
        if not self._queues.offer(msg.topic, bytes(msg.payload), msg.mid, msg.qos, mode):
            self._count("telemetry_shed")

    def _count(self, key: str, counter: Counter[str] | None = None) -> None:
        # Two threads handle messages (store, telemetry): `c[k] += 1` is not atomic across them.
        with self._counts_lock:
            (self.counts if counter is None else counter)[key] += 1

    def _telemetry_slice(self) -> bool:
        """Handle queued telemetry (QoS 0: nothing to acknowledge, no store transaction) for one slice or
        until an alert is waiting. False when there was none."""
        handled = False
        for topic, payload, mode in self._queues.telemetry_slice(time.monotonic):
            handled = True
            try:
                self.handle(topic, payload, mode=mode)
            except Exception:  # the loop must not die (a store failure in a liveness alert included)
                self._count("telemetry_errors")
                log.exception("event=telemetry_error topic=%.200s", topic)
        return handled

    def _store_loop(self) -> None:
        # One thread for both queues, alerts first: a second thread for telemetry made every store round
        # trip wait for the GIL behind it (bursts of 200 alerts took seconds under load, bench.cloud_load).
        while not self._stop.is_set():
            self.last_batch = time.monotonic()
            batch = self._queues.alert_batch()
            if not batch:
                if self._telemetry_slice():
                    continue
                batch = self._queues.alert_batch(wait_s=IDLE_WAIT_S)
                if not batch:
                    continue
            if self._reconnect.is_set():
                continue  # unacknowledged on purpose: the broker redelivers after the reconnect
            try:
                self.process_batch(batch)
            except Exception:  # this thread must not die: count, withhold the acks, reconnect
                self.counts["batch_errors"] += 1
                log.exception("event=batch_error messages=%d", len(batch))
                self._live_buffer = None
                self._reconnect.set()

    def process_batch(self, batch: list[tuple[str, bytes, int, int]]) -> bool:
        """Handle messages in one store transaction, then PUBACK them all. False: none acknowledged."""
        self._live_buffer = []
        self._live_owner = threading.get_ident()
        try:
            with self.store.batch():
                for topic, payload, _mid, _qos in batch:
                    self.handle(topic, payload)
        except STORE_FAILURES as exc:
            # No ack: once the store answers again we reconnect and the broker redelivers.
            self.counts["store_errors"] += 1
            log.error("event=store_unavailable messages=%d error=%s", len(batch), exc)
            self._live_buffer = None
            self._reconnect.set()
            return False
        live, self._live_buffer = self._live_buffer, None
        for kind, data in live:
            self.hub.publish(kind, data)
        for _topic, _payload, mid, qos in batch:
            if qos > 0:
                self.client.ack(mid, qos)
                self.counts["acked"] += 1
        self.counts["batches"] += 1
        return True

    def _publish_live(self, kind: str, data: dict[str, Any]) -> None:
        # Inside a batch, alerts go live only after the commit: never show what may roll back.
        if self._live_buffer is not None and threading.get_ident() == self._live_owner:
            self._live_buffer.append((kind, data))
        else:
            self.hub.publish(kind, data)

    # ------------------------------------------------------------------ core
    def handle(self, topic: str, payload: bytes, *, mode: str = "full") -> str:
        """Process one message durably. Returns an outcome; raises StoreUnavailable to withhold the ack.
        ``mode`` (band telemetry only): "lines" or "positions" for half the work (``relays_positions``)."""
        now = self.clock()
        self.last_message_at = now
        self._count("messages" if mode != "positions" else "positions_relayed")
        if topic.startswith(T.CLOUD_PREFIX + "/"):
            self.counts["own_announcements"] += 1  # our escalations, echoed by the wildcard subscription
            return "ignored"
        try:
            parsed = T.parse_topic(topic)
        except TopicError:
            return self._bad("topic", topic)
        try:
            outcome = self._dispatch(parsed, payload, now, mode)
        except PayloadError as exc:
            return self._bad(f"{parsed.kind}:{exc.reason}", topic, str(exc))
        except DB_ERRORS as exc:
            raise StoreUnavailable(str(exc)) from exc
        except Exception:  # a bug must not take the ingest down; count it loudly
            log.exception("event=handler_error topic=%s", topic)
            return self._bad("internal_error", topic)
        self._count(f"{parsed.kind}:{outcome}")
        if parsed.kind not in (T.CMD, T.STATUS) and outcome != DOCTOR_PROBE_ID:
            self._traffic(parsed.site, parsed.node, now)
        return outcome

    def _bad(self, reason: str, topic: str, detail: str = "") -> str:
        self._count(reason, self.malformed)
        log.warning("event=malformed reason=%s topic=%.200s detail=%.200s", reason, topic, detail)
        return "malformed"

    def _dispatch(self, p: T.ParsedTopic, payload: bytes, now: float, mode: str = "full") -> str:
        limit = PAYLOAD_LIMITS.get(p.kind)
        if limit is not None and len(payload) > limit:
            raise PayloadError("too_large", f"{len(payload)} bytes; at most {limit} for {p.kind}")
        if p.kind == T.ALERT:
            alert = parse_payload(Alert, payload)
            if (alert.site, alert.node) != (p.site, p.node):
                self.security["topic_mismatch"] += 1
                raise PayloadError("topic_mismatch", f"alert for {alert.site}/{alert.node} on {p.site}/{p.node}")
            return self._store_alert(alert, now)
        if p.kind == T.STATUS:
            if not payload:
                return "retained_cleared"
            return self._status(p, parse_payload(Status, payload), now)
        if p.kind == T.TELEMETRY_BANDS:
            band_telemetry(p.site, p.node, parse_payload(BandTelemetry, payload),
                           self.writer if mode != "positions" else None, self.hub if mode != "lines" else None)
            return "ok"
        if p.kind == T.TELEMETRY_NODE:
            self.node_health[(p.site, p.node)] = node_telemetry(p.site, p.node, parse_payload(NodeTelemetry, payload),
                                                                self.writer)
            return "ok"
        if p.kind == T.CAMERA_EVENT:
            ev = parse_payload(CameraEvent, payload)
            new = self.store.add_camera_event(p.site, p.node, ev.camera, ev.kind, ev.ts, ev.to_json())
            if new:
                self._publish_live("camera_event", {"site": p.site, "node": p.node, **ev.model_dump(by_alias=True)})
            return "ok" if new else "duplicate"
        if p.kind == T.SNAPSHOT:
            if not payload.startswith(b"\xff\xd8"):
                raise PayloadError("not_jpeg", "snapshot payload is not a JPEG")
            assert p.camera is not None and p.alert_id is not None
            return "ok" if self.store.add_snapshot(p.site, p.node, p.camera, p.alert_id, payload) else "duplicate"
        if p.kind == T.CMD_RESULT:
            res = parse_payload(CommandResult, payload)
            if res.cmd_id == DOCTOR_PROBE_ID:
                return DOCTOR_PROBE_ID  # `qwatch-edge doctor` testing the ACL: not a sign the agent runs
            log.info("event=cmd_result site=%s node=%s cmd_id=%s ok=%s error=%s", p.site, p.node, res.cmd_id,
                     res.ok, res.error)
            return "ok"
        return "ignored"  # our own commands, echoed by the wildcard subscription

    def person_of(self, alert: Alert) -> str | None:
        """The band wearer's label: the edge's ``detail.person``, else the site config's ``bands[].person``.
        A label that is not clean text (protocols.text) is refused and counted, never stored."""
        raw = alert.detail.get("person")
        if raw is not None and raw != "":
            try:
                return clean_label(raw, max_len=64, what="person")
            except LabelError:
                self.malformed["alert:person_label"] += 1
        band = getattr(alert.subject, "band", None)
        label = self.cfg.people.get(alert.site, {}).get(band) if band is not None else None
        return label or None

    def _store_alert(self, alert: Alert, now: float) -> str:
        res = self.store.upsert(alert, now=now, person=self.person_of(alert))
        if res.outcome == "conflict":
            # A node reused an alert_id that belongs to another site or node: refused, counted, loud.
            self.security["alert_id_conflict"] += 1
            log.warning("event=security reason=alert_id_conflict alert=%s site=%s node=%s state=%s", alert.alert_id,
                        alert.site, alert.node, alert.state)
            return res.outcome
        if res.outcome != "duplicate":
            log.info("event=alert_stored alert=%s state=%s type=%s site=%s node=%s outcome=%s", alert.alert_id,
                     alert.state, alert.type, alert.site, alert.node, res.outcome)
            if res.alert is not None:
                self._publish_live("alert", alert_view(res.alert))
        return res.outcome

    def _status(self, p: T.ParsedTopic, status: Status, now: float) -> str:
        # Read before taking the liveness lock: the lock order everywhere is store, then liveness.
        shared = self.store.load_node(p.site, p.node) if self.store.postgresql else None
        with self._lock:
            if shared is not None:
                self._refresh_node(shared)
            alerts = self.liveness.on_status(p.site, p.node, status, now)
            for a in alerts:
                self._store_alert(a, now)
            self._persist_nodes()
        rec = self.liveness.records.get((p.site, p.node))
        if rec is not None:
            self._publish_live("node", rec.as_row())
        log.info("event=status site=%s node=%s state=%s boot_id=%s alerts=%d", p.site, p.node, status.state,
                 status.boot_id, len(alerts))
        return status.state

    def _refresh_node(self, row: dict[str, Any]) -> None:
        """Take the node's session from the shared store before judging a birth or Will: with ingest replicas
        the node's last birth may have gone to another process (shared subscription), and judging its Will
        by this process's memory called it stale and lost the node_offline (bench.cloud_load --workers 1)."""
        rec = NodeRecord.from_row(row)
        mine = self.liveness.records.get((rec.site, rec.node))
        if mine is not None:
            rec = replace(rec, last_seen=max(rec.last_seen, mine.last_seen))
        self.liveness.records[(rec.site, rec.node)] = rec

    def _traffic(self, site: str, node: str, now: float) -> None:
        # Stored outside the liveness lock: the telemetry thread holds no store lock here, and the
        # lock order everywhere is store, then liveness.
        with self._lock:
            alerts = self.liveness.on_traffic(site, node, now)
        for a in alerts:
            self._store_alert(a, now)

    def _persist_nodes(self) -> None:
        for rec in self.liveness.take_dirty():
            self.store.save_node(rec.as_row())

    # ------------------------------------------------------------------ periodic work
    def tick(self, now: float | None = None) -> None:
        """Silence detection, escalation, node persistence. Called every ``tick_s`` by the ticker."""
        now = self.clock() if now is None else now
        # Lock order everywhere: store, then liveness (the store thread holds the store in a batch).
        with self.store.batch(), self._lock:
            for a in self.liveness.tick(now):
                log.warning("event=node_silent site=%s node=%s alert=%s", a.site, a.node, a.alert_id)
                self._store_alert(a, now)
            self._persist_nodes()
        for row in self.store.escalate_due(now, default_after_s=self.cfg.escalate_after_s,
                                           per_site=self.cfg.escalate_per_site, channels=self.channels):
            self._announce_escalation(row)

    def _announce_escalation(self, row: dict[str, Any]) -> None:
        """An alert this process marked escalated (only the winner of the mark gets here): tell the
        broker (``qwatch/v1/cloud/escalation``, QoS 1) and the live dashboards (kinds ``escalation``
        and ``alert``). Out-of-browser channels were queued with the mark (cloud.notifier)."""
        self.counts["escalated"] += 1
        view = alert_view(row)
        log.warning("event=alert_escalated alert=%s site=%s type=%s person=%s", row["alert_id"], row["site"],
                    row["type"], row.get("person"))
        info = self.client.publish(T.CLOUD_ESCALATION, json.dumps(view, separators=(",", ":")), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho keeps a QoS 1 message queued across a reconnect; anything else is counted.
            self.counts["escalation_publish_errors"] += 1
            log.warning("event=escalation_publish_failed alert=%s rc=%s", row["alert_id"], info.rc)
        self.hub.publish("escalation", view)
        self.hub.publish("alert", view)

    def _tick_loop(self) -> None:
        last_full_save = time.monotonic()
        while not self._stop.wait(self.cfg.tick_s):
            self.last_tick = time.monotonic()
            try:
                self.tick()
                if time.monotonic() - last_full_save > 30:
                    # last_seen changes on every message; save it in bulk, not per message.
                    if self.store.postgresql:
                        # Shared with other processes: only move last_seen forward, never write this process's
                        # view of a session over a newer birth or Will another process stored.
                        with self._lock:
                            seen = [(r.site, r.node, r.last_seen) for r in self.liveness.records.values()]
                        self.store.touch_nodes(seen)
                    else:
                        with self.store.batch(), self._lock:
                            self.liveness.dirty.update(self.liveness.records)
                            self._persist_nodes()
                    last_full_save = time.monotonic()
            except DB_ERRORS as exc:
                self.counts["tick_store_errors"] += 1
                log.error("event=tick_store_error error=%s", exc)
            if self._reconnect.is_set() and self.store.ping():
                log.warning("event=reconnect_for_redelivery")
                # A fresh connection on the same session makes the broker resend unacked messages.
                self.client.disconnect()
                self.client.loop_stop()
                self._queues.discard_alerts()  # their mids die with the old connection: the broker resends
                self._reconnect.clear()
                self._connect()

    # ------------------------------------------------------------------ commands to nodes
    def send_ack_command(self, alert: Mapping[str, Any], *, by: str, note: str) -> str | None:
        """Tell the alert's node that a guard acknowledged it (``…/cmd/ack``). Returns the cmd_id."""
        if alert.get("type") == "node_offline" or not self.connected:
            return None
        cmd = AckCommand(cmd_id=new_ulid(), alert_id=alert["alert_id"], by=by[:128], note=note[:2000])
        topic = T.NodeTopics(alert["site"], alert["node"]).cmd("ack")
        self.client.publish(topic, cmd.model_dump_json(), qos=1)
        return cmd.cmd_id

    def stats(self) -> dict[str, Any]:
        """Counters for /healthz."""
        return {
            "connected": self.connected,
            "client_id": self.cfg.client_id,
            "subscription": self.subscription,
            "counts": dict(self.counts),
            "malformed": dict(self.malformed),
            "security": dict(self.security),
            "liveness": dict(self.liveness.counts),
            "last_message_at": self.last_message_at,
            "tick_age_s": round(time.monotonic() - self.last_tick, 3),
            "store_loop_age_s": round(time.monotonic() - self.last_batch, 3),
            "inbox_depth": self._queues.depths()[0],
            "telemetry_depth": self._queues.depths()[1],
            "live": dict(self.hub.counts),
        }
