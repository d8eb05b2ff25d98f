"""Durable edge outbox: every alert and camera event is on disk before it is published.

SQLite in WAL mode under the agent's data dir, `synchronous=FULL`, so a committed row
survives a power cut or a `kill -9`. A row leaves the outbox only when the broker's
PUBACK with a success reason code arrives (`ack`). Rows carry a node-local sequence
number; publishing in sequence order is what keeps per-node order across reconnects and
restarts.

The pending rows are mirrored in memory, so the publish pump never waits on the disk.
A full disk is met in two steps. First, the outbox keeps an emergency reserve file beside
the database (space allocated at start); the first commit that fails for lack of space
releases it and is retried, so the alerts of the next hours still reach the disk while
the node reports `outbox_disk_full`. Only when the reserve is used up too (or the
database is corrupt) does a row stay in memory (marked not durable); it is still
published and is written to disk again as soon as the disk accepts it. Nothing is
dropped, and every failure is reported as a health error (loud log line, node telemetry)
via `health_errors()`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger("qwatch.edge.outbox")

DB_NAME = "outbox.sqlite3"
RESERVE_NAME = "outbox.reserve"
RESERVE_BYTES = 8 << 20  # measured: 19,845 committed alert rows of 312 B fit (docs/reliability.md)
RESERVE_MAX_SHARE = 0.05  # never take more than this share of a small data partition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL,
    ref     TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS probe (k TEXT PRIMARY KEY, v REAL);
CREATE TABLE IF NOT EXISTS active_alerts (key TEXT PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS band_counters (band INTEGER PRIMARY KEY, counter INTEGER NOT NULL, saved REAL NOT NULL)
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message waiting for its PUBACK. `ref` is the alert/event ID for logs."""

    seq: int
    kind: str
    topic: str
    payload: bytes
    ref: str
    created: float
    durable: bool = True


class Outbox:
    """SQLite (WAL, synchronous=FULL) outbox with an in-memory mirror of pending rows.

    Thread-safe: `put` runs on the agent thread, `ack` on the MQTT network thread.
    """

    def __init__(self, data_dir: Path, *, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = Path(data_dir) / DB_NAME
        self.reserve_path = Path(data_dir) / RESERVE_NAME
        self._lock = threading.Lock()
        self._rows: OrderedDict[int, OutboxRow] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        self._next_seq = 1
        # Active-alert changes not yet on disk (key -> payload, None = cleared): written with the next
        # commit, so a raise and its outbox row reach the disk together.
        self._active_pending: dict[str, bytes | None] = {}
        self._active: dict[str, bytes] = {}
        self.counters: dict[str, int] = {
            "put": 0, "acked": 0, "write_errors": 0, "recovered_rows": 0, "corrupt_reset": 0,
            "reserve_released": 0,
        }
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self._reserve_bytes = self._reserve_size(reserve_bytes)
        self._open()
        if not self._make_reserve():
            self._errors["outbox_disk_full"] = (
                f"no room for the {self._reserve_bytes} B emergency reserve {self.reserve_path}; "
                "free space on the data partition")
            log.critical("event=outbox_reserve_missing path=%s bytes=%d", self.reserve_path, self._reserve_bytes)

    # ---------------------------------------------------------------- open / recover
    def _open(self) -> None:
        try:
            self._db = self._connect()
            rows = self._db.execute(
                "SELECT seq, kind, topic, payload, ref, created FROM outbox ORDER BY seq"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            self._quarantine_corrupt(exc)
            return
        try:
            self._active = {k: bytes(v) for k, v in self._db.execute("SELECT key, payload FROM active_alerts")}
        except sqlite3.DatabaseError as exc:
            log.error("event=outbox_active_unreadable path=%s error=%r", self.path, str(exc))
        for seq, kind, topic, payload, ref, created in rows:
            self._rows[seq] = OutboxRow(seq, kind, topic, bytes(payload), ref, created)
        self._next_seq = (max(self._rows) + 1) if self._rows else 1
        self.counters["recovered_rows"] = len(rows)
        if rows:
            log.info("event=outbox_recovered rows=%d first_seq=%d", len(rows), rows[0][0])

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # Keep the WAL small (SD cards, small data partitions) and truncate it after each checkpoint,
        # so a full disk shows up within a few dozen commits instead of hiding behind a WAL file
        # whose old blocks are silently reused.
        db.execute("PRAGMA wal_autocheckpoint=64")
        db.execute("PRAGMA journal_size_limit=0")
        ok = db.execute("PRAGMA quick_check").fetchone()
        if ok is None or ok[0] != "ok":
            db.close()
            raise sqlite3.DatabaseError(f"quick_check failed: {ok}")
        db.executescript(_SCHEMA)
        return db

    def _quarantine_corrupt(self, exc: Exception) -> None:
        """Move a corrupt DB aside (kept for forensics) and start a fresh one; report loudly."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = []
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                dst = Path(f"{self.path}.corrupt-{stamp}{suffix}")
                try:
                    src.rename(dst)
                    moved.append(dst.name)
                except OSError:
                    pass
        self.counters["corrupt_reset"] += 1
        msg = f"outbox database {self.path} was corrupt ({exc}); moved aside as {moved}, started empty"
        self._errors["outbox_corrupt"] = msg
        log.critical("event=outbox_corrupt path=%s error=%r moved=%s", self.path, str(exc), moved)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc2:
            self._db = None
            self._errors["outbox_unavailable"] = f"cannot open {self.path}: {exc2}"
            log.critical("event=outbox_unavailable path=%s error=%r", self.path, str(exc2))

    # ---------------------------------------------------------------- emergency reserve
    def _reserve_size(self, wanted: int) -> int:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return wanted
        return max(0, min(wanted, int(st.f_blocks * st.f_frsize * RESERVE_MAX_SHARE)))

    def _make_reserve(self) -> bool:
        """Allocate the reserve file if it is missing; False when the disk has no room for it."""
        if self._reserve_bytes == 0:
            return True
        try:
            if self.reserve_path.stat().st_size >= self._reserve_bytes:
                return True
        except FileNotFoundError:
            pass
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, self._reserve_bytes)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    # Filesystems without fallocate: really write the blocks, or they are not reserved.
                    chunk = b"\0" * 65536
                    for off in range(0, self._reserve_bytes, len(chunk)):
                        os.pwrite(fd, chunk[: self._reserve_bytes - off], off)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self.reserve_path.unlink(missing_ok=True)
            return False
        return True

    def _release_reserve_locked(self, row: OutboxRow) -> bool:
        """Disk full: give the reserve's space to the database. False if there was none left."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        self.counters["reserve_released"] += 1
        self._errors["outbox_disk_full"] = (
            f"data partition of {self.path} is full; emergency reserve released, alerts still committed "
            "to disk; free space on the data partition")
        log.critical("event=outbox_disk_full path=%s kind=%s ref=%s action=release_reserve bytes=%d",
                     self.path, row.kind, row.ref, self._reserve_bytes)
        return True

    # ---------------------------------------------------------------- write side
    def put(self, kind: str, topic: str, payload: bytes, ref: str, *, active_key: str | None = None,
            active: bool = False) -> OutboxRow:
        """Commit one message durably, then return it (it is published after this returns).

        With `active_key`, the message raises (`active=True`) or clears an alert: the set of active
        alerts is updated in the same transaction. Never raises for disk trouble: the row is then
        kept in memory, marked not durable.
        """
        with self._lock:
            row = OutboxRow(self._next_seq, kind, topic, payload, ref, time.time(), durable=False)
            self._next_seq += 1
            self._flush_nondurable_locked()
            if active_key is not None:
                if active:
                    self._active[active_key] = payload
                else:
                    self._active.pop(active_key, None)
                self._active_pending[active_key] = payload if active else None
            if self._write_locked(row):
                row = replace(row, durable=True)
            self._rows[row.seq] = row
            self.counters["put"] += 1
            return row

    def _write_locked(self, row: OutboxRow) -> bool:
        if self._db is None:
            return False
        try:
            self._insert_locked(row)
        except sqlite3.Error as exc:
            if _is_full(exc) and self._release_reserve_locked(row):
                try:
                    self._insert_locked(row)
                    return True
                except sqlite3.Error as exc2:
                    exc = exc2
            self.counters["write_errors"] += 1
            code = "outbox_disk_full" if _is_full(exc) else "outbox_write_failed"
            if code not in self._errors:
                log.critical(
                    "event=%s path=%s kind=%s ref=%s error=%r action=keep_in_memory_and_publish",
                    code, self.path, row.kind, row.ref, str(exc),
                )
            self._errors[code] = f"cannot commit to {self.path}: {exc}; pending rows held in memory"
            return False
        return True

    def _insert_locked(self, row: OutboxRow | None) -> None:
        """Commit `row` (if any) and the pending active-alert changes in one transaction."""
        db = self._db
        assert db is not None
        pending = list(self._active_pending.items())
        db.execute("BEGIN IMMEDIATE")
        try:
            if row is not None:
                db.execute(
                    "INSERT OR REPLACE INTO outbox (seq, kind, topic, payload, ref, created) VALUES (?,?,?,?,?,?)",
                    (row.seq, row.kind, row.topic, row.payload, row.ref, row.created),
                )
            for key, payload in pending:
                if payload is None:
                    db.execute("DELETE FROM active_alerts WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO active_alerts (key, payload) VALUES (?, ?)", (key, payload))
            db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        for key, _ in pending:
            self._active_pending.pop(key, None)

    def _flush_nondurable_locked(self) -> None:
        """Retry committing rows that failed to reach the disk, oldest first."""
        pending = [r for r in self._rows.values() if not r.durable]
        if not pending and not self._errors and not self._active_pending:
            return
        for r in pending:
            if not self._write_locked(r):
                return
            self._rows[r.seq] = replace(r, durable=True)
        if self._active_pending and self._db is not None:
            try:
                self._insert_locked(None)
            except sqlite3.Error:
                return
        # While the reserve is spent the partition is still full: the error stays until it is back.
        codes = ("outbox_disk_full", "outbox_write_failed") if self._reserve_present() else ("outbox_write_failed",)
        for code in codes:
            if self._errors.pop(code, None) is not None:
                log.warning("event=outbox_recovered_from_error code=%s path=%s", code, self.path)

    def retry_persist(self) -> None:
        """Periodic hook after a disk error: write back rows held in memory, or probe the disk.

        When every in-memory row was acknowledged meanwhile there is nothing to write back, so a
        one-row probe commit decides whether the disk has room again and the error can clear. A
        released emergency reserve is re-allocated first: the error clears only once it is back.
        """
        with self._lock:
            in_memory = any(not r.durable for r in self._rows.values()) or bool(self._active_pending)
            disk_error = bool(self._errors.keys() & {"outbox_disk_full", "outbox_write_failed"})
            if not (in_memory or disk_error):
                return
            if not self._reserve_present() and self._make_reserve():
                log.warning("event=outbox_reserve_restored path=%s bytes=%d", self.reserve_path, self._reserve_bytes)
            if in_memory or self._probe_locked():
                self._flush_nondurable_locked()

    def _reserve_present(self) -> bool:
        return self._reserve_bytes == 0 or self.reserve_path.exists()

    def _probe_locked(self) -> bool:
        if self._db is None:
            return False
        try:
            self._db.execute("INSERT OR REPLACE INTO probe (k, v) VALUES ('last_ok', ?)", (time.time(),))
        except sqlite3.Error:
            return False
        return True

    def ack(self, seq: int) -> None:
        """The broker acknowledged `seq` with success: forget it."""
        with self._lock:
            row = self._rows.pop(seq, None)
            if row is None:
                return
            self.counters["acked"] += 1
            if row.durable and self._db is not None:
                try:
                    self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                except sqlite3.Error as exc:
                    # The row stays on disk and is sent again after a restart; the cloud de-duplicates.
                    self.counters["write_errors"] += 1
                    log.error("event=outbox_delete_failed seq=%d ref=%s error=%r", seq, row.ref, str(exc))

    # ---------------------------------------------------------------- crash-surviving edge state
    def active_alerts(self) -> dict[str, bytes]:
        """Alerts raised and not cleared (key -> the raise's JSON), as committed before a restart."""
        with self._lock:
            return dict(self._active)

    def band_counters(self) -> dict[int, int]:
        """Each band's last accepted advert counter as last saved (empty when unreadable)."""
        with self._lock:
            if self._db is None:
                return {}
            try:
                return {int(b): int(c) for b, c in self._db.execute("SELECT band, counter FROM band_counters")}
            except sqlite3.Error as exc:
                log.error("event=band_counters_unreadable path=%s error=%r", self.path, str(exc))
                return {}

    def save_band_counters(self, counters: dict[int, int], now: float) -> bool:
        """Upsert the given bands' counters in one transaction. False (counted) when the disk refuses."""
        if not counters:
            return True
        with self._lock:
            db = self._db
            if db is None:
                return False
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO band_counters (band, counter, saved) VALUES (?, ?, ?)",
                               [(b, c, now) for b, c in counters.items()])
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self.counters["state_write_errors"] = self.counters.get("state_write_errors", 0) + 1
                log.error("event=band_counters_write_failed path=%s error=%r", self.path, str(exc))
                return False
            self.counters["state_saves"] = self.counters.get("state_saves", 0) + 1
            return True

    # ---------------------------------------------------------------- read side
    def pending_after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Up to `limit` pending rows with a sequence number above `seq`, oldest first."""
        with self._lock:
            out: list[OutboxRow] = []
            for s, row in self._rows.items():
                if s > seq:
                    out.append(row)
                    if len(out) >= limit:
                        break
            return out

    def get(self, seq: int) -> OutboxRow | None:
        """The pending row `seq`, if it is still waiting for its PUBACK."""
        with self._lock:
            return self._rows.get(seq)

    def depth(self) -> int:
        """Rows waiting for a PUBACK."""
        with self._lock:
            return len(self._rows)

    def oldest_age(self, now: float) -> float:
        """Age in seconds of the oldest pending row (0 when empty)."""
        with self._lock:
            first = next(iter(self._rows.values()), None)
            return 0.0 if first is None else max(0.0, now - first.created)

    def health_errors(self) -> dict[str, str]:
        """Current outbox errors (code -> message); empty when healthy."""
        with self._lock:
            return dict(self._errors)

    def close(self) -> None:
        """Close the database (pending rows stay on disk for the next start)."""
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                finally:
                    self._db = None


def _is_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL ("database or disk is full"), the only error the reserve can cure."""
    return "full" in str(exc).lower()
