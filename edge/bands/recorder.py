"""Observation-log recorder (docs/protocol.md §2) with size-based rotation, for field logs that `replay` reads.

Sources call `write` from their own threads; the recorder never raises into them. Write
errors (disk full, directory gone) are counted and reported through `stats()`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TextIO

from protocols.observation import RawObservation

log = logging.getLogger("qwatch.edge.recorder")


class ObservationRecorder:
    """Append observations as JSON lines to `path`; rotate to path.1 … path.N past `max_bytes`."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 64 << 20, backups: int = 5,
                 flush_every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.flush_every_s = flush_every_s
        self._lock = threading.Lock()
        self._fh: TextIO | None = None
        self._size = 0
        self._last_flush = time.monotonic()
        self.written = 0
        self.rotations = 0
        self.errors = 0

    def _open(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a", encoding="utf-8")
        self._size = fh.tell()
        return fh

    def write(self, obs: RawObservation) -> None:
        """Record one observation. Never raises."""
        line = obs.to_json_line() + "\n"
        with self._lock:
            try:
                if self._fh is None:
                    self._fh = self._open()
                if self._size + len(line) > self.max_bytes and self._size > 0:
                    self._rotate()
                    self._fh = self._open()
                self._fh.write(line)
                self._size += len(line)
                self.written += 1
                now = time.monotonic()
                if now - self._last_flush >= self.flush_every_s:
                    self._fh.flush()
                    self._last_flush = now
            except OSError as exc:
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    log.error("event=record_error path=%s errors=%d error=%s", self.path, self.errors, exc)
                self._close_quietly()

    def _rotate(self) -> None:
        self._close_quietly()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self.rotations += 1
        log.info("event=record_rotated path=%s rotations=%d", self.path, self.rotations)

    def _close_quietly(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                self.errors += 1
            self._fh = None

    def flush(self) -> None:
        """Push buffered lines to the file."""
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.flush()
                except OSError:
                    self.errors += 1

    def close(self) -> None:
        """Flush and close; a later write reopens the file."""
        with self._lock:
            self._close_quietly()

    def stats(self) -> dict[str, int]:
        """Watchdog counters for node telemetry."""
        return {"written": self.written, "rotations": self.rotations, "errors": self.errors}
