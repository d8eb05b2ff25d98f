"""Durable edge outbox: every alert and camera event is on disk before it is published.

SQLite in WAL mode under the agent's data dir, `synchronous=FULL`, so a committed row
survives a power cut or a `kill -9`. A row leaves the outbox only when the broker's
PUBACK with a success reason code arrives (`ack`). Rows carry a node-local sequence
number; publishing in sequence order is what keeps per-node order across reconnects and
restarts.

The pending rows are mirrored in memory, so the publish pump never waits on the disk.
When the disk is full or the database is corrupt, the outbox does NOT drop anything: a
row that cannot be committed stays in memory (marked not durable), is still published,
and is written to disk again as soon as the disk accepts it. The failure is reported as
a health error (loud log line, node telemetry) via `health_errors()`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger("qwatch.edge.outbox")

DB_NAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL,
    ref     TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS probe (k TEXT PRIMARY KEY, v REAL)
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

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._lock = threading.Lock()
        self._rows: OrderedDict[int, OutboxRow] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        self._next_seq = 1
        self.counters: dict[str, int] = {
            "put": 0, "acked": 0, "write_errors": 0, "recovered_rows": 0, "corrupt_reset": 0,
        }
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self._open()

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

    # ---------------------------------------------------------------- write side
    def put(self, kind: str, topic: str, payload: bytes, ref: str) -> OutboxRow:
        """Commit one message durably, then return it (it is published after this returns).

        Never raises for disk trouble: the row is then kept in memory, marked not durable.
        """
        with self._lock:
            row = OutboxRow(self._next_seq, kind, topic, payload, ref, time.time(), durable=False)
            self._next_seq += 1
            self._flush_nondurable_locked()
            if self._write_locked(row):
                row = replace(row, durable=True)
            self._rows[row.seq] = row
            self.counters["put"] += 1
            return row

    def _write_locked(self, row: OutboxRow) -> bool:
        if self._db is None:
            return False
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO outbox (seq, kind, topic, payload, ref, created) "
                "VALUES (?,?,?,?,?,?)",
                (row.seq, row.kind, row.topic, row.payload, row.ref, row.created),
            )
        except sqlite3.Error as exc:
            self.counters["write_errors"] += 1
            code = "outbox_disk_full" if "full" in str(exc).lower() else "outbox_write_failed"
            if code not in self._errors:
                log.critical(
                    "event=%s path=%s kind=%s ref=%s error=%r action=keep_in_memory_and_publish",
                    code, self.path, row.kind, row.ref, str(exc),
                )
            self._errors[code] = f"cannot commit to {self.path}: {exc}; pending rows held in memory"
            return False
        return True

    def _flush_nondurable_locked(self) -> None:
        """Retry committing rows that failed to reach the disk, oldest first."""
        pending = [r for r in self._rows.values() if not r.durable]
        if not pending and not self._errors:
            return
        for r in pending:
            if not self._write_locked(r):
                return
            self._rows[r.seq] = replace(r, durable=True)
        for code in ("outbox_disk_full", "outbox_write_failed"):
            if self._errors.pop(code, None) is not None:
                log.warning("event=outbox_recovered_from_error code=%s path=%s", code, self.path)

    def retry_persist(self) -> None:
        """Periodic hook after a disk error: write back rows held in memory, or probe the disk.

        When every in-memory row was acknowledged meanwhile there is nothing to write back, so a
        one-row probe commit decides whether the disk has room again and the error can clear.
        """
        with self._lock:
            in_memory = any(not r.durable for r in self._rows.values())
            disk_error = bool(self._errors.keys() & {"outbox_disk_full", "outbox_write_failed"})
            if in_memory or (disk_error and self._probe_locked()):
                self._flush_nondurable_locked()

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
