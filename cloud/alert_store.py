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
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.delivery_store import DeliveryQueue
from cloud.sqlite_db import open_db
from cloud.store_db import ALERT_CHANNEL, DB_ERRORS, PgConn, migrate, parse_db, redact
from protocols.payloads import Alert

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_events (
    seq INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    state TEXT NOT NULL,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (alert_id, state)
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_ts REAL,
    cleared_ts REAL,
    first_received REAL NOT NULL,
    updated_at REAL NOT NULL,
    acked_at REAL,
    acked_by TEXT,
    ack_note TEXT,
    escalated_at REAL,
    person TEXT
);
CREATE INDEX IF NOT EXISTS alerts_site_received ON alerts (site, first_received);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state);
CREATE INDEX IF NOT EXISTS alerts_received ON alerts (first_received);
CREATE INDEX IF NOT EXISTS alert_events_node ON alert_events (site, node, seq);
-- Alerts that may still escalate (cloud.alert_store.AlertStore.escalate_due reads only these).
CREATE INDEX IF NOT EXISTS alerts_escalation_pending ON alerts (first_received)
    WHERE state = 'raised' AND acked_at IS NULL AND escalated_at IS NULL;
CREATE TABLE IF NOT EXISTS nodes (
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    online INTEGER NOT NULL,
    status_ts REAL NOT NULL,
    last_seen REAL NOT NULL,
    version TEXT NOT NULL,
    offline_alert_id TEXT,
    offline_cause TEXT,
    PRIMARY KEY (site, node)
);
CREATE TABLE IF NOT EXISTS camera_events (
    seq INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (site, node, camera, kind, ts)
);
CREATE TABLE IF NOT EXISTS alert_history (
    seq INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    event TEXT NOT NULL,
    ts REAL NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history (alert_id, seq);
CREATE TABLE IF NOT EXISTS escalation_deliveries (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    lease_until REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (site, node, alert_id, channel)
);
CREATE INDEX IF NOT EXISTS escalation_deliveries_due ON escalation_deliveries (state, next_at);
CREATE TABLE IF NOT EXISTS snapshots (
    alert_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    jpeg BLOB NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (alert_id, camera)
);
"""

ALERT_COLUMNS = (
    "alert_id, site, node, type, severity, subject, detail, state, raised_ts, cleared_ts, "
    "first_received, updated_at, acked_at, acked_by, ack_note, escalated_at, person"
)
# Columns added after the first release: (table, column, type). Existing databases gain them at open.
MIGRATIONS = (("alerts", "person", "TEXT"),)



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


def _no_constant(_name: str) -> None:
    """NaN/Infinity in a row written before payloads refused them: read as null, never sent on."""
    return None


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constant)


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def _row_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d["subject"] = _loads(d["subject"])
    d["detail"] = _loads(d["detail"])
    d["acknowledged"] = d["acked_at"] is not None
    d["escalated"] = d["escalated_at"] is not None
    d["events"] = []
    return d


def ack_seconds(row: Mapping[str, Any]) -> float | None:
    """Seconds from the edge's raise to the guard's acknowledgement (never negative: the two clocks
    differ), or None when not acknowledged or never raised."""
    if row["acked_at"] is None or row["raised_ts"] is None:
        return None
    return round(max(0.0, float(row["acked_at"]) - float(row["raised_ts"])), 3)


def alert_history(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alert's life in time order: raised, cleared, acknowledged and escalated from the row's own
    columns, then every escalation delivery attempt from ``alert_history``."""
    out: list[dict[str, Any]] = []
    if row["raised_ts"] is not None:
        out.append({"event": "raised", "ts": row["raised_ts"]})
    if row["cleared_ts"] is not None:
        out.append({"event": "cleared", "ts": row["cleared_ts"]})
    if row["acked_at"] is not None:
        out.append({"event": "acknowledged", "ts": row["acked_at"], "by": row["acked_by"], "note": row["ack_note"]})
    if row["escalated_at"] is not None:
        out.append({"event": "escalated", "ts": row["escalated_at"]})
    out.extend(row.get("events") or [])
    out.sort(key=lambda e: e["ts"])
    return out


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    """A stored alert as the API shows it: the §4 payload plus the cloud lifecycle."""
    ts = row["raised_ts"] if row["raised_ts"] is not None else row["cleared_ts"]
    ack = None
    if row["acked_at"] is not None:
        ack = {"by": row["acked_by"], "note": row["ack_note"], "at": row["acked_at"]}
    return {
        "schema": "qwatch.alert/1", "alert_id": row["alert_id"], "site": row["site"], "node": row["node"],
        "type": row["type"], "severity": row["severity"], "state": row["state"], "subject": row["subject"],
        "ts": ts, "detail": row["detail"], "raised_ts": row["raised_ts"], "cleared_ts": row["cleared_ts"],
        "received_at": row["first_received"], "updated_at": row["updated_at"], "acknowledged": ack is not None,
        "ack": ack, "escalated": row["escalated_at"] is not None, "escalated_at": row["escalated_at"],
        "person": row.get("person"), "ack_s": ack_seconds(row), "history": alert_history(row),
    }


class AlertStore(DeliveryQueue):
    """Alert store and node registry persistence on SQLite or PostgreSQL (thread-safe, one connection).
    The escalation outbox and the report's query are in :class:`cloud.delivery_store.DeliveryQueue`.

    ``db``: a file path, ``sqlite:///PATH`` or ``postgresql://…`` (:func:`cloud.store_db.parse_db`).
    """

    def __init__(self, db: Path | str) -> None:
        target = parse_db(db)
        self.path = target.location
        self.postgresql = target.is_postgresql
        # Tags this store's NOTIFYs, so the live listener of the same process skips what it published.
        self.origin = secrets.token_hex(6)
        self._lock = threading.RLock()
        self._batch_depth = 0
        self._conn: Any
        if self.postgresql:
            self._conn = PgConn(self.path)
            migrate(self._conn)
        else:
            # synchronous=FULL: an alert is acknowledged to the broker only after its commit reaches the disk.
            self._conn = open_db(self.path, SCHEMA)
            with self._lock:
                self._migrate()

    @property
    def display(self) -> str:
        """Where the store is, for logs (no password)."""
        return redact(self.path)

    def _migrate(self) -> None:
        """SQLite: add the columns of :data:`MIGRATIONS` that an older database lacks (additive only)."""
        for table, column, sql_type in MIGRATIONS:
            try:
                self._conn.execute(f"SELECT {column} FROM {table} LIMIT 0")
            except sqlite3.OperationalError:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction (one fsync) around many writes: the ingest's group commit.

        Writes inside join it; other threads wait. On any exception everything is rolled back.
        """
        with self._tx():
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            if self._batch_depth:
                yield self._conn
                return
            self._conn.execute("BEGIN" if self.postgresql else "BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def ping(self) -> bool:
        """True if the database answers a trivial query."""
        try:
            with self._lock:
                if self.postgresql:
                    return bool(self._conn.ping())
                self._conn.execute("SELECT 1").fetchone()
            return True
        except DB_ERRORS:
            return False

    def _serialise(self, db: Any, alert_id: str) -> None:
        """PostgreSQL: hold the alert's advisory lock until the transaction ends, so concurrent
        processes read-then-write one alert one at a time (SQLite's BEGIN IMMEDIATE already does)."""
        if self.postgresql:
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (alert_id,))

    def _announce(self, db: Any, alert_id: str) -> None:
        """PostgreSQL: NOTIFY the other processes that this alert changed (sent at commit, dropped on
        rollback). The receivers read the row themselves: the payload stays far below NOTIFY's 8000 bytes."""
        if self.postgresql:
            db.execute("SELECT pg_notify(?, ?)", (ALERT_CHANNEL, f"{self.origin}|{alert_id}"))

    # --- alerts -------------------------------------------------------------------------------

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
                    stored = self._get(db, alert.alert_id, events=False)
                return UpsertResult("inserted", stored)
            if self._insert_event(db, alert, now).rowcount == 0:
                return UpsertResult("duplicate", None)
            with self._pipeline(db):
                if alert.state == "raised":
                    # A late raised (its cleared came first): keep the state, fill in the raise facts.
                    db.execute(
                        "UPDATE alerts SET raised_ts = ?, detail = ?, severity = ?, updated_at = ?, "
                        "person = COALESCE(person, ?) WHERE alert_id = ?",
                        (alert.ts, _dumps(alert.detail), alert.severity, now, person, alert.alert_id),
                    )
                else:
                    db.execute(
                        "UPDATE alerts SET state = 'cleared', cleared_ts = ?, updated_at = ? WHERE alert_id = ?",
                        (alert.ts, now, alert.alert_id),
                    )
                self._announce(db, alert.alert_id)
                stored = self._get(db, alert.alert_id)
        return UpsertResult("updated", stored)

    def _pipeline(self, db: Any) -> AbstractContextManager[None]:
        """PostgreSQL: psycopg pipeline mode (cloud.store_db.PgConn.pipeline); SQLite: nothing to save."""
        return db.pipeline() if self.postgresql else nullcontext()

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
             _dumps(alert.subject.model_dump()), _dumps(alert.detail), alert.state,
             raised_ts, cleared_ts, now, now, person),
        )

    @staticmethod
    def _get(db: Any, alert_id: str, *, events: bool = True) -> dict[str, Any] | None:
        row = db.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        if row is None:
            return None
        out = _row_to_dict(row)
        if events:
            AlertStore._attach_events(db, [out])
        return out

    @staticmethod
    def _attach_events(db: Any, rows: list[dict[str, Any]]) -> None:
        """Fill each row's ``events`` (escalation deliveries) from ``alert_history``, 500 IDs per query."""
        by_id = {r["alert_id"]: r for r in rows}
        ids = list(by_id)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            sql = (f"SELECT alert_id, event, ts, detail FROM alert_history WHERE alert_id IN "
                   f"({', '.join('?' * len(chunk))}) ORDER BY seq")
            for r in db.execute(sql, chunk).fetchall():
                by_id[r["alert_id"]]["events"].append({"event": r["event"], "ts": r["ts"], **json.loads(r["detail"])})

    def get(self, alert_id: str) -> dict[str, Any] | None:
        """One alert with its lifecycle, or None."""
        with self._lock:
            return self._get(self._conn, alert_id)

    def acknowledge(self, alert_id: str, *, by: str, note: str, now: float | None = None) -> dict[str, Any]:
        """Record a guard's acknowledgement. Raises :class:`AckError` if unknown or already acked."""
        now = time.time() if now is None else now
        with self._tx() as db:
            self._serialise(db, alert_id)
            current = self._get(db, alert_id)
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
            stored = self._get(db, alert_id)
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
            rows = [_row_to_dict(r) for r in self._conn.execute(sql, args).fetchall()]
            self._attach_events(self._conn, rows)
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

    def escalate_due(
        self, now: float, *, default_after_s: float, per_site: Mapping[str, float] | None = None,
        channels: Callable[[str], Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Mark raised, unacknowledged, not yet escalated alerts older than their site's limit.

        Age counts from the edge's decision time, so an alert that sat in an outbox during an
        outage escalates at once. Returns the alerts escalated now. The mark is a conditional
        ``UPDATE … WHERE escalated_at IS NULL``: when several processes share the store, exactly one
        wins each alert and only the winner gets it back (and notifies). ``channels(site)`` names the
        delivery channels to queue for each escalated alert, in the same transaction.
        """
        per_site = per_site or {}
        # Only alerts old enough for the shortest limit come back (exact per-site check below), through a
        # partial index of the pending ones: a tick no longer reads every raised alert of the province.
        # min(raised_ts, first_received) <= cutoff, written portably (raised_ts may be NULL).
        cutoff = now - min([default_after_s, *per_site.values()])
        with self._tx() as db:
            rows = db.execute(
                "SELECT alert_id, site, node, raised_ts, first_received FROM alerts "
                "WHERE state = 'raised' AND acked_at IS NULL AND escalated_at IS NULL "
                "AND (first_received <= ? OR raised_ts <= ?) ORDER BY alert_id", (cutoff, cutoff)
            ).fetchall()  # one order for every process: row locks taken in it cannot deadlock
            won: list[str] = []
            for r in rows:
                if now - min(r["raised_ts"] or r["first_received"], r["first_received"]) \
                        < per_site.get(r["site"], default_after_s):
                    continue
                cur = db.execute(
                    "UPDATE alerts SET escalated_at = ?, updated_at = ? WHERE alert_id = ? AND escalated_at IS NULL "
                    "AND acked_at IS NULL", (now, now, r["alert_id"]))
                if cur.rowcount != 1:
                    continue
                won.append(r["alert_id"])
                self._announce(db, r["alert_id"])
                for channel in channels(r["site"]) if channels is not None else ():
                    db.execute(
                        "INSERT INTO escalation_deliveries (alert_id, site, node, channel, state, attempts, next_at, "
                        "lease_until, last_error, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, 0, "
                        "NULL, ?, ?) ON CONFLICT (site, node, alert_id, channel) DO NOTHING",
                        (r["alert_id"], r["site"], r["node"], channel, now, now, now))
            escalated = [self._get(db, a) for a in won]
        return [a for a in escalated if a is not None]

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

    # --- snapshots and camera events ----------------------------------------------------------

    def add_camera_event(self, site: str, node: str, camera: str, kind: str, ts: float, payload: str) -> bool:
        """Store a camera event once; False if it was a duplicate delivery."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO camera_events (site, node, camera, kind, ts, payload) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (site, node, camera, kind, ts) DO NOTHING",
                (site, node, camera, kind, ts, payload),
            )
            return bool(cur.rowcount > 0)

    def add_snapshot(self, site: str, node: str, camera: str, alert_id: str, jpeg: bytes) -> bool:
        """Store an alert snapshot once; False if it was a duplicate delivery."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO snapshots (alert_id, camera, site, node, jpeg, received_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (alert_id, camera) DO NOTHING",
                (alert_id, camera, site, node, jpeg, time.time()),
            )
            return bool(cur.rowcount > 0)

    def snapshot(self, alert_id: str) -> bytes | None:
        """The first snapshot JPEG stored for an alert, if any."""
        with self._lock:
            row = self._conn.execute("SELECT jpeg FROM snapshots WHERE alert_id = ? LIMIT 1", (alert_id,)).fetchone()
        return bytes(row["jpeg"]) if row is not None else None

    # --- node registry persistence ------------------------------------------------------------

    def load_nodes(self) -> list[dict[str, Any]]:
        """All node registry rows."""
        with self._lock:
            return [dict(r) for r in self._conn.execute("SELECT * FROM nodes ORDER BY site, node").fetchall()]

    def save_node(self, rec: Mapping[str, Any]) -> None:
        """Insert or replace one node registry row (keys as in the ``nodes`` table)."""
        cols = ("site", "node", "boot_id", "online", "status_ts", "last_seen", "version",
                "offline_alert_id", "offline_cause")
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
        with self._tx() as db:
            db.execute(
                f"INSERT INTO nodes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT (site, node) DO UPDATE SET {updates}",
                tuple(rec[c] for c in cols),
            )
