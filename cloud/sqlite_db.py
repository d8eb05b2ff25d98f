"""The cloud's SQLite connections (alert store, band registry): one way to open them."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path


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

    Never open and close an existing database file here: closing any descriptor of a file drops
    every POSIX lock this process holds on it, including those of another SQLite connection to it
    (the alert store and the band registry share one file); another process may then reset the
    WAL index under that connection, and its commits vanish from view (sqlite.org/howtocorrupt.html
    §2.2). Only a file that does not exist yet is created here, before any connection has it.
    """
    if not db.exists():
        # FileExistsError: another process created it meanwhile; the chmod below still applies.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)
