"""Which database the alert store uses, chosen by ``--db``, and the PostgreSQL side of it.

``--db`` takes a URL: ``postgresql://user@host:port/dbname`` (or ``postgres://``) for PostgreSQL,
``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a bare path for SQLite (the
default: ``make demo``, a small site).

The store's SQL is written once, with ``?`` placeholders and portable statements (``INSERT … ON
CONFLICT``, conditional ``UPDATE``). :class:`PgConn` runs it on psycopg 3 by rewriting the placeholders;
rows come back as dicts in both cases. The PostgreSQL schema is a list of ordered SQL files in
``cloud/migrations/postgresql/`` applied once each and recorded in ``schema_migrations`` (see
docs/deploy.md, "PostgreSQL": why not alembic).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from protocols.errors import QwatchError

MIGRATIONS_DIR = Path(__file__).with_name("migrations") / "postgresql"
# One advisory lock key for "the schema is being migrated": two processes starting at once apply each
# migration once (the second waits, then finds it recorded).
_MIGRATION_LOCK = 0x71_77_61_74  # "qwat"
# NOTIFY channel of alert changes (cloud/live_pg.py listens): payload "<origin>|<alert_id>".
ALERT_CHANNEL = "qwatch_alert"

# What a store operation may raise when its database fails (the ingest retries, /healthz says 503).
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


class DbUrlError(QwatchError):
    """``--db`` is neither a path nor a URL the store knows."""


@dataclass(frozen=True, slots=True)
class DbTarget:
    """A parsed ``--db``: ``kind`` is ``sqlite`` (``location`` a file path) or ``postgresql`` (a libpq URL)."""

    kind: str
    location: str

    @property
    def is_postgresql(self) -> bool:
        return self.kind == "postgresql"


def parse_db(value: str | Path) -> DbTarget:
    """``--db`` as a :class:`DbTarget`; a bare path (no scheme) is SQLite so old command lines keep working."""
    text = str(value)
    if text.startswith(("postgresql://", "postgres://")):
        return DbTarget("postgresql", text)
    if text.startswith("sqlite:///"):
        return DbTarget("sqlite", text[len("sqlite:///"):])  # SQLAlchemy's form: 4 slashes for an absolute path
    if text.startswith("sqlite://"):
        raise DbUrlError(f"{text!r}: a SQLite URL is sqlite:///PATH (three slashes, then the path)")
    if "://" in text:
        raise DbUrlError(f"{text!r}: --db is postgresql://… , sqlite:///PATH or a file path")
    return DbTarget("sqlite", text)


def redact(url: str) -> str:
    """A database URL fit for a log line: any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


@lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    """The store's ``?``-placeholder SQL for psycopg (``%s``; a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """One psycopg connection that answers the few calls the stores make of a ``sqlite3.Connection``:
    ``execute(sql, args)`` returning a cursor (``rowcount``, ``fetchone``, ``fetchall``; rows are dicts).

    Autocommit, so the store's own ``BEGIN``/``COMMIT`` frame each transaction as on SQLite. A broken
    connection (server restarted, failover) is replaced at the next statement outside a transaction;
    a transaction it broke fails (the caller retries: the ingest leaves the batch unacknowledged).
    """

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self.url = url
        self._timeout = connect_timeout
        self._in_tx = False
        self._c = self._connect()

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                               connect_timeout=max(1, int(self._timeout)))

    def _fresh(self) -> None:
        if self._c.closed or self._c.broken:
            self._in_tx = False
            self._c = self._connect()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[dict[str, Any]]:
        if sql in ("COMMIT", "ROLLBACK"):
            self._in_tx = False
        elif sql == "BEGIN" or not self._in_tx:
            self._fresh()  # outside a transaction; inside one, a lost connection must fail it
        cur = self._c.execute(pg_sql(sql), tuple(args))
        if sql == "BEGIN":
            self._in_tx = True
        return cur

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """Send the statements of the block without waiting for each answer (psycopg pipeline mode).

        The server still runs them in order; a ``fetch*()`` or ``rowcount`` inside the block waits for
        the answers up to that statement. The ingest's alert upsert sends its lock, reads and writes
        in two or three round trips this way instead of six or seven (docs/cloud.md)."""
        with self._c.pipeline():
            yield

    def listen(self, channel: str) -> Iterator[str]:
        """LISTEN on ``channel`` and yield each notification's payload as it arrives (at most 1 s apart,
        ``""`` then, so the caller can look at its stop flag). The connection must not be used for a
        transaction meanwhile (autocommit reads are fine)."""
        self._c.execute(f"LISTEN {channel}")
        yield ""  # listening from here on
        while True:
            # Taken out of psycopg's generator before they are handed over: it holds the connection's lock
            # while it runs, and the caller reads rows on this connection between two notifications.
            payloads = [n.payload for n in self._c.notifies(timeout=1.0, stop_after=1)]
            yield from payloads or [""]

    def script(self, sql: str) -> None:
        """Run several statements (no parameters: psycopg then sends them as one simple query)."""
        self._c.execute(sql.encode())

    def ping(self) -> bool:
        try:
            self._fresh()
            self._c.execute("SELECT 1").fetchone()
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        self._c.close()


def migrate(conn: PgConn, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply, in file-name order, every ``NNNN_name.sql`` of ``directory`` not yet in
    ``schema_migrations``, each in one transaction with its record. Returns the names applied now."""
    files = sorted(p for p in directory.glob("*.sql") if p.stem.split("_", 1)[0].isdigit())
    applied_now: list[str] = []
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
        done = {int(r["version"]) for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        for path in files:
            version = int(path.stem.split("_", 1)[0])
            if version in done:
                continue
            conn.script(path.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                         (version, path.name, time.time()))
            applied_now.append(path.name)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied_now

