"""The cloud alert store: idempotent by ``(alert_id, state)``, order-independent, SQL kept portable.

Every MQTT delivery of an alert is appended to ``alert_events`` once per ``(alert_id, state)``;
a redelivered copy hits the unique key and is reported as a duplicate. The ``alerts`` table holds
one row per alert with its lifecycle (docs/protocol.md §4): raised → acknowledged → cleared, or
raised → cleared → acknowledged. ``state`` is the latest transition. A ``cleared`` that arrives
before its ``raised`` (possible after redelivery) creates the row as cleared; the late ``raised``
only fills in the raise time and detail, so the final state is right whatever the arrival order.

The SQL is plain (``INSERT … ON CONFLICT``, conditional ``UPDATE``, no SQLite-only functions), so the
same statements run on SQLite (``--db PATH``) and on PostgreSQL (``--db postgresql://…``, see
:mod:`cloud.store_db`; schema in ``cloud/migrations/postgresql/``). On PostgreSQL several processes
share the store: each alert's upsert and acknowledgement take a transaction-scoped advisory lock on the
alert (SQLite's ``BEGIN IMMEDIATE`` already serialises all writers), and every change of an alert is
announced with ``NOTIFY`` so the other API replicas push it live (cloud/live_pg.py).

The store is one object over one connection, split by job:

- here: alerts, acknowledgements, listing, per-site counts and the daily report's read;
- :mod:`cloud.store_base`: schema, connection, transactions, locks and NOTIFY;
- :mod:`cloud.alert_rows`: reading one alert row and its API view (:func:`alert_view`);
- :mod:`cloud.delivery_store`: escalation and the outbox of its deliveries;
- :mod:`cloud.node_store`: node sessions, camera events, snapshots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cloud.alert_rows import (
    ALERT_COLUMNS,
    ack_seconds,
    alert_history,
    alert_view,
    attach_events,
    dumps,
    fetch_alert,
    row_to_dict,
)
from cloud.delivery_store import EscalationQueue
from cloud.node_store import NodeEventStore
from protocols.payloads import Alert

# Re-exported: callers import the store's whole public face from here.
__all__ = ["AckError", "AlertQuery", "AlertStore", "UpsertResult", "ack_seconds", "alert_history", "alert_view"]


class AckError(Exception):
    """An acknowledgement was refused. ``code`` is ``not_found`` or ``already_acknowledged``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What one alert delivery did: ``inserted`` (new alert), ``updated`` (new state), ``duplicate``, or
    ``conflict`` (the alert_id belongs to another site or node: refused)."""

    outcome: str
    alert: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters for :meth:`AlertStore.list_alerts`."""

    site: str | None = None
    state: str | None = None
    type: str | None = None
    since: float | None = None
    unacknowledged: bool = False
    limit: int = 200
    until: float | None = None
    person: str | None = None


class AlertStore(EscalationQueue, NodeEventStore):
    """Alert store on SQLite or PostgreSQL (thread-safe, one connection): alerts and acknowledgements here;
    escalation deliveries from :class:`cloud.delivery_store.EscalationQueue`; nodes, camera events and
    snapshots from :class:`cloud.node_store.NodeEventStore`; the connection from :class:`StoreBase`.

    ``db``: a file path, ``sqlite:///PATH`` or ``postgresql://…`` (:func:`cloud.store_db.parse_db`).
    """

    def upsert(self, alert: Alert, *, now: float | None = None, person: str | None = None) -> UpsertResult:
        """Store one delivery of ``alert`` durably; duplicates of ``(alert_id, state)`` are no-ops.
        ``person``: the label of the band's wearer, stored with the alert (kept once known).

        An alert belongs to the (site, node) that first stored it: a delivery of the same alert_id from
        another site or node is refused (outcome ``conflict``, nothing written). Without this a node of
        site B could clear or rewrite a site-A alert by reusing its alert_id.
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            with self._pipeline(db):  # the lock and the read in one round trip (the server runs them in order)
                self._serialise(db, alert.alert_id)
                owner = db.execute("SELECT site, node FROM alerts WHERE alert_id = ?", (alert.alert_id,)).fetchone()
            if owner is not None and (owner["site"], owner["node"]) != (alert.site, alert.node):
                return UpsertResult("conflict", None)
            if owner is None:
                # A first delivery: no event of it can exist (events and their alert row are written in one
                # transaction, under the alert's lock), so every write and the read-back go in one round trip.
                with self._pipeline(db):
                    self._insert_event(db, alert, now)
                    self._insert_alert(db, alert, now, person)
                    self._announce(db, alert.alert_id)
                    # A new alert has no delivery history yet: no history read.
                    stored = fetch_alert(db, alert.alert_id, events=False)
                return UpsertResult("inserted", stored)
            if self._insert_event(db, alert, now).rowcount == 0:
                return UpsertResult("duplicate", None)
            with self._pipeline(db):
                if alert.state == "raised":
                    # A late raised (its cleared came first): keep the state, fill in the raise facts.
                    db.execute(
                        "UPDATE alerts SET raised_ts = ?, detail = ?, severity = ?, updated_at = ?, "
                        "person = COALESCE(person, ?) WHERE alert_id = ?",
                        (alert.ts, dumps(alert.detail), alert.severity, now, person, alert.alert_id),
                    )
                else:
                    db.execute(
                        "UPDATE alerts SET state = 'cleared', cleared_ts = ?, updated_at = ? WHERE alert_id = ?",
                        (alert.ts, now, alert.alert_id),
                    )
                self._announce(db, alert.alert_id)
                stored = fetch_alert(db, alert.alert_id)
        return UpsertResult("updated", stored)

    @staticmethod
    def _insert_event(db: Any, alert: Alert, now: float) -> Any:
        return db.execute(
            "INSERT INTO alert_events (alert_id, state, site, node, ts, received_at, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id, state) DO NOTHING",
            (alert.alert_id, alert.state, alert.site, alert.node, alert.ts, now, alert.to_json()),
        )

    @staticmethod
    def _insert_alert(db: Any, alert: Alert, now: float, person: str | None = None) -> None:
        raised_ts = alert.ts if alert.state == "raised" else None
        cleared_ts = alert.ts if alert.state == "cleared" else None
        db.execute(
            f"INSERT INTO alerts ({ALERT_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?)",
            (alert.alert_id, alert.site, alert.node, alert.type, alert.severity,
             dumps(alert.subject.model_dump()), dumps(alert.detail), alert.state,
             raised_ts, cleared_ts, now, now, person),
        )

    def get(self, alert_id: str) -> dict[str, Any] | None:
        """One alert with its lifecycle, or None."""
        with self._lock:
            return fetch_alert(self._conn, alert_id)

    def acknowledge(self, alert_id: str, *, by: str, note: str, now: float | None = None) -> dict[str, Any]:
        """Record a guard's acknowledgement. Raises :class:`AckError` if unknown or already acked."""
        now = time.time() if now is None else now
        with self._tx() as db:
            self._serialise(db, alert_id)
            current = fetch_alert(db, alert_id)
            if current is None:
                raise AckError("not_found", f"alert {alert_id} not found")
            if current["acked_at"] is not None:
                raise AckError("already_acknowledged", f"alert {alert_id} was acknowledged by {current['acked_by']}")
            # raised → acknowledged (cleared may follow), or cleared → acknowledged (the end).
            cur = db.execute(
                "UPDATE alerts SET state = 'acknowledged', acked_at = ?, acked_by = ?, ack_note = ?, "
                "updated_at = ? WHERE alert_id = ? AND acked_at IS NULL",
                (now, by, note, now, alert_id),
            )
            if cur.rowcount != 1:  # cannot happen under the lock; never let a second guard overwrite the first
                raise AckError("already_acknowledged", f"alert {alert_id} was acknowledged meanwhile")
            stored = fetch_alert(db, alert_id)
            self._announce(db, alert_id)
        assert stored is not None
        return stored

    def list_alerts(self, q: AlertQuery) -> list[dict[str, Any]]:
        """Alerts newest first, filtered."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("site", q.site), ("state", q.state), ("type", q.type)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.since is not None:
            where.append("updated_at >= ?")
            args.append(q.since)
        if q.until is not None:  # with since: every alert whose life overlaps [since, until]
            where.append("COALESCE(raised_ts, first_received) <= ?")
            args.append(q.until)
        if q.person is not None:
            # ILIKE on PostgreSQL: SQLite's LIKE ignores (ASCII) case, PostgreSQL's does not.
            where.append(f"person {'ILIKE' if self.postgresql else 'LIKE'} ? ESCAPE '!'")
            args.append("%" + q.person.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
        if q.unacknowledged:
            where.append("acked_at IS NULL")
        sql = f"SELECT {ALERT_COLUMNS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY first_received DESC, alert_id DESC LIMIT ?"
        args.append(q.limit)
        with self._lock:
            rows = [row_to_dict(r) for r in self._conn.execute(sql, args).fetchall()]
            attach_events(self._conn, rows)
        return rows

    def events(self, *, site: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        """Every stored delivery in arrival order (for audits and the fault-injection invariants)."""
        sql = "SELECT seq, alert_id, state, site, node, ts, received_at FROM alert_events"
        where, args = [], []
        if site is not None:
            where.append("site = ?")
            args.append(site)
        if node is not None:
            where.append("node = ?")
            args.append(node)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql + " ORDER BY seq", args).fetchall()]

    def counts(self) -> dict[str, int]:
        """Alerts by state, plus unacknowledged and escalated totals (for /healthz and /sites)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) AS n FROM alerts GROUP BY state").fetchall()
            out = {r["state"]: int(r["n"]) for r in rows}
            unacked = self._conn.execute("SELECT COUNT(*) AS n FROM alerts WHERE acked_at IS NULL").fetchone()["n"]
        out["unacknowledged"] = int(unacked)
        return out

    def site_summary(self) -> list[dict[str, Any]]:
        """Per site: alerts open (not acknowledged and not cleared), unacknowledged, critical open."""
        sql = (
            "SELECT site, "
            "SUM(CASE WHEN state = 'raised' THEN 1 ELSE 0 END) AS open, "
            "SUM(CASE WHEN acked_at IS NULL THEN 1 ELSE 0 END) AS unacknowledged, "
            "SUM(CASE WHEN state = 'raised' AND severity = 'critical' THEN 1 ELSE 0 END) AS critical_open, "
            "SUM(CASE WHEN escalated_at IS NOT NULL AND acked_at IS NULL THEN 1 ELSE 0 END) AS escalated, "
            "MAX(first_received) AS last_alert_at "
            "FROM alerts GROUP BY site ORDER BY site"
        )
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql).fetchall()]

    def report_alerts(self, site: str, start: float, end: float) -> list[dict[str, Any]]:
        """What a daily report of ``site`` over ``[start, end)`` needs: alerts raised in the window, alerts
        escalated in it, and node/camera outages that overlap it (to count offline time)."""
        sql = (f"SELECT {ALERT_COLUMNS} FROM alerts WHERE site = ? AND ("
               "(COALESCE(raised_ts, first_received) >= ? AND COALESCE(raised_ts, first_received) < ?) "
               "OR (escalated_at >= ? AND escalated_at < ?) "
               "OR (type IN ('node_offline', 'camera_offline') AND COALESCE(raised_ts, first_received) < ? "
               "AND (cleared_ts IS NULL OR cleared_ts > ?))) ORDER BY first_received, alert_id")
        with self._lock:
            return [row_to_dict(r) for r in self._conn.execute(
                sql, (site, start, end, start, end, end, start)).fetchall()]
