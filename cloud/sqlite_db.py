"""The cloud's SQLite connections (alert store, band registry): one way to open them, and the one
transaction frame every store uses (on SQLite and on :class:`cloud.store_db.PgConn` alike)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def open_db(path: str, schema: str, *, private: bool = False) -> sqlite3.Connection:
    """Open (creating the directory) a connection shared by a store's threads under its own lock.

    Autocommit mode (the stores open their own transactions), rows by column name, WAL, and
    `synchronous=FULL`: a row the cloud acknowledges to the broker or to an API client has
    reached the disk. `schema` is run as a script (CREATE … IF NOT EXISTS). `private`: the file
    holds secrets (band keys), so it and its -wal/-shm files are owner-only.
    """
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if private:
            _make_private(Path(path))
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(schema)
    return conn


def _make_private(db: Path) -> None:
    """Owner-only from creation (SQLite gives its -wal/-shm files the database file's mode).

    The file is opened here only to create it: closing any descriptor of a database file drops
    every POSIX lock this process holds on it, so doing that while another connection of this
    process (the alert store shares the file) has it open lets other processes think nobody
    uses the database, checkpoint and delete its WAL under that connection.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)


@contextlib.contextmanager
def transaction(conn: Any, begin: str = "BEGIN IMMEDIATE") -> Iterator[Any]:
    """``begin`` … ``COMMIT`` around the block, ``ROLLBACK`` on any exception. The caller holds its store's
    lock. ``BEGIN IMMEDIATE`` (SQLite's default here) takes the write lock at once, so two writers never
    both read and then fail to upgrade; PostgreSQL's stores pass ``BEGIN``."""
    conn.execute(begin)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
