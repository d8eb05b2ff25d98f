"""The alert store's database: schema, connection, transactions, and what every part of the store shares.

One connection per store object, guarded by a lock; :meth:`StoreBase._tx` frames a transaction the
same way on both engines (``BEGIN IMMEDIATE`` on SQLite, which serialises all writers; ``BEGIN`` on
PostgreSQL, where each alert's writers also take an advisory lock, :meth:`StoreBase._serialise`).
The SQL of every part is written once with ``?`` placeholders and runs on both (:mod:`cloud.store_db`).

The SQLite schema is :data:`SCHEMA` here; the PostgreSQL one is the same tables with PostgreSQL types in
``cloud/migrations/postgresql/`` (tests/cloud/test_store_schema.py checks they name the same columns and indexes).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from cloud.sqlite_db import open_db, transaction
from cloud.store_db import ALERT_CHANNEL, DB_ERRORS, PgConn, migrate, parse_db, redact

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
-- Alerts that may still escalate (cloud.delivery_store.EscalationQueue.escalate_due reads only these).
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

# Columns added after the first release: (table, column, type). Existing databases gain them at open.
MIGRATIONS = (("alerts", "person", "TEXT"),)


class StoreBase:
    """Connection, lock and transactions of the alert store on SQLite or PostgreSQL (thread-safe).

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
        self._conn: Any  # a sqlite3.Connection or a PgConn: both answer execute(sql, args)
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
            with transaction(self._conn, "BEGIN" if self.postgresql else "BEGIN IMMEDIATE") as db:
                yield db

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

    def _pipeline(self, db: Any) -> AbstractContextManager[None]:
        """PostgreSQL: psycopg pipeline mode (cloud.store_db.PgConn.pipeline), statements sent without
        waiting for each answer; SQLite: nothing to save, nothing done."""
        return db.pipeline() if self.postgresql else nullcontext()

    def _announce(self, db: Any, alert_id: str) -> None:
        """PostgreSQL: NOTIFY the other processes that this alert changed (sent at commit, dropped on
        rollback). The receivers read the row themselves: the payload stays far below NOTIFY's 8000 bytes."""
        if self.postgresql:
            db.execute("SELECT pg_notify(?, ?)", (ALERT_CHANNEL, f"{self.origin}|{alert_id}"))
