"""Cross-replica live feed: alert changes made by other processes on the shared PostgreSQL store.

Every upsert, acknowledgement and escalation mark commits a ``NOTIFY qwatch_alert, '<origin>|<alert_id>'``
(cloud/alert_store.py). Each ``serve`` process listens on its own connection; for a change made by
another process it reads the alert row and pushes it to its WebSockets as an ``alert`` message, the
same message its own ingest or ack route would send. Changes of its own store are skipped (they are
already pushed, after commit, by the code that made them).

Why PostgreSQL and not the broker: the notification is sent by the same commit that stores the change
(never one without the other, never before the commit), it costs no broker ACL for the API processes,
and an API replica that does not ingest needs no MQTT connection at all. The payload is only the key:
the receiver reads the committed row, so a notification can never carry a stale or oversized alert.
A listener that loses its connection reconnects and says so in the log; alerts changed while it was
away are in the next ``hello`` of any client that reconnects, and in every API read.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import psycopg

from cloud.alert_rows import fetch_alert
from cloud.alert_store import AlertStore, alert_view
from cloud.live import LiveHub
from cloud.store_db import ALERT_CHANNEL, PgConn

log = logging.getLogger("qwatch.cloud.live")
RETRY_S = 2.0


class AlertListener:
    """A daemon thread: LISTEN on the store's database and republish other processes' alert changes."""

    def __init__(self, store: AlertStore, hub: LiveHub) -> None:
        if not store.postgresql:
            raise ValueError("the cross-replica listener needs the PostgreSQL store")
        self.store = store
        self.hub = hub
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-listener", daemon=True)
        self._conn: PgConn | None = None

    def start(self) -> AlertListener:
        self._thread.start()
        return self

    def wait_listening(self, timeout: float) -> bool:
        """True once LISTEN is in place (changes committed after that are seen)."""
        return self._listening.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            conn: PgConn | None = None
            try:
                # Its own connection, for the LISTEN and for reading the changed rows: the store's connection
                # is held by the local ingest for a whole batch, and a relayed alert waited for it (p99 1.5 s
                # at 500 sites in bench.cloud_load run 3).
                conn = PgConn(self.store.path, connect_timeout=5)
                self._conn = conn
                for payload in conn.listen(ALERT_CHANNEL):
                    if not self._listening.is_set():
                        self._listening.set()
                        log.info("event=live_listening db=%s", self.store.display)
                    if self._stop.is_set():
                        break
                    if payload:
                        self.handle(payload)
            except psycopg.Error as exc:
                self._listening.clear()
                self.counts["listener_errors"] += 1
                log.warning("event=live_listener_lost error=%s retry_s=%g", exc, RETRY_S)
                self._stop.wait(RETRY_S)
            finally:
                if conn is not None:
                    conn.close()

    def handle(self, payload: str) -> None:
        """One notification: publish the alert unless this process made the change."""
        origin, sep, alert_id = payload.partition("|")
        if not sep or not alert_id:
            self.counts["bad_payload"] += 1
            return
        if origin == self.store.origin:
            self.counts["own"] += 1
            return
        try:
            row = fetch_alert(self._conn, alert_id) if self._conn is not None else self.store.get(alert_id)
        except psycopg.Error as exc:
            self.counts["read_errors"] += 1
            log.warning("event=live_read_failed alert=%s error=%s", alert_id, exc)
            return
        if row is None:
            return
        self.counts["relayed"] += 1
        self.hub.publish("alert", alert_view(row))
