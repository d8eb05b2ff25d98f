"""The synthetic alert storm: N alert messages with deterministic IDs, injected into a real agent.

Used by the fault-injection suite and the benchmarks: the test knows exactly which alerts the
edge raised (`storm_alert_id`), even across a `kill -9` and restart, because progress is kept
in a file in the data directory. Even message i raises alert i//2, odd i clears it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from protocols.payloads import Alert
from protocols.ulid import seeded_ulid


def storm_alert_id(storm_id: str, node: str, k: int) -> str:
    """Deterministic, valid ULID for synthetic alert `k` of a storm (time part orders by k)."""
    return seeded_ulid(1_700_000_000_000 + k, f"{storm_id}:{node}:{k}")


def storm_message(site: str, node: str, storm_id: str, i: int, ts: float) -> Alert:
    """Storm message `i`: even i raises alert i//2, odd i clears it. detail.storm_seq = i."""
    k = i // 2
    return Alert.model_validate(
        {"schema": "qwatch.alert/1", "alert_id": storm_alert_id(storm_id, node, k), "site": site,
         "node": node, "type": "sos", "severity": "critical", "state": "cleared" if i % 2 else "raised",
         "subject": {"band": 1 + k % 1000}, "ts": ts, "detail": {"storm_seq": i, "storm": storm_id}}
    )


class AlertStorm:
    """Synthetic alert source with a durable progress file, so a restart resumes, not repeats.

    Satisfies `edge.agent.AlertSource`.
    """

    def __init__(self, *, total: int, rate: float, storm_id: str, site: str, node: str, data_dir: Path) -> None:
        self.total = total
        self.rate = max(rate, 0.1)
        self.site, self.node, self.storm_id = site, node, storm_id
        self.progress = data_dir / f"storm-{storm_id}.progress"
        self.next_i = self._load_progress()
        self._t0 = time.monotonic()
        self._i0 = self.next_i
        self.progress_errors = 0
        self._fh: IO[str] = open(self.progress, "a", encoding="utf-8")  # noqa: SIM115 - lives with agent

    def _load_progress(self) -> int:
        try:
            lines = self.progress.read_text().split()
        except OSError:
            return 0
        return int(lines[-1]) + 1 if lines and lines[-1].isdigit() else 0

    def due(self, now_mono: float) -> list[int]:
        """Storm indexes whose time has come (paced at `rate` per second)."""
        want = self._i0 + int((now_mono - self._t0) * self.rate)
        return list(range(self.next_i, min(want, self.total)))

    def committed(self, i: int) -> None:
        """Record that message `i` is in the outbox (written after the commit)."""
        self.next_i = i + 1
        try:
            self._fh.write(f"{i}\n")
            self._fh.flush()
        except OSError:
            # Disk full: the alert itself is safe (outbox keeps it in memory); a restart may
            # re-send a few storm messages with the same IDs, which the cloud de-duplicates.
            self.progress_errors += 1

    @property
    def done(self) -> bool:
        """All messages committed."""
        return self.next_i >= self.total

    def step(self, mono: float, emit: Callable[[Alert], None]) -> None:
        """Emit the messages due by `mono`, recording each once the outbox holds it."""
        for i in self.due(mono):
            emit(storm_message(self.site, self.node, self.storm_id, i, time.time()))
            self.committed(i)

    def describe(self) -> str:
        return f"storm={self.storm_id} total={self.total} resume_at={self.next_i}"
