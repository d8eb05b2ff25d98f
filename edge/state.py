"""Edge state that survives a crash, kept in the outbox database (docs/reliability.md, "Edge state").

- Active alerts: every raise and clear updates the `active_alerts` table in the same commit as its
  outbox row (`active_key` names the row). After a restart `restore_alerts` hands each one back to
  the band pipeline, which keeps it raised and clears it with the same alert_id when its condition
  ends; one the pipeline cannot own (a camera alert, a band no longer configured) is cleared at
  once with `detail.reason = "node_restart"`. Without this, an alert raised before a `kill -9`
  stayed raised in the cloud for ever and escalated.
- Anti-replay: each band's last accepted advert counter is saved every `COUNTER_SAVE_S` seconds
  (only the bands whose counter moved) and at a clean stop, and loaded before the first advert.
  After a crash, at most the adverts a band sent in the last `COUNTER_SAVE_S` seconds before it
  can be accepted once more (at 1 advert/s: 5 adverts); after a clean stop, none.

Pure decisions take data and return messages; the only I/O is through the `Outbox` passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from edge.outbox import Outbox
from protocols.errors import PayloadError
from protocols.payloads import Alert, BandSubject, CameraSubject, parse_payload

log = logging.getLogger("qwatch.edge.state")

COUNTER_SAVE_S = 5.0


class _Adopter(Protocol):
    def adopt_alert(self, alert: Alert, now: float) -> Alert | None: ...


class _CounterSource(Protocol):
    def take_changed_counters(self) -> dict[int, int]: ...


def active_key(alert: Alert) -> str | None:
    """The key of an alert in the active set: one per (subject, type); None for untracked subjects."""
    subj = alert.subject
    if isinstance(subj, BandSubject):
        return f"band:{subj.band}|{alert.type}"
    if isinstance(subj, CameraSubject):
        return f"camera:{subj.camera}|{alert.type}"
    return None


def restore_alerts(saved: Mapping[str, bytes], pipeline: _Adopter | None, now: float) -> list[Alert]:
    """Alerts active before the restart: adopt what the pipeline can own; return the clears to send."""
    clears: list[Alert] = []
    for key, payload in sorted(saved.items()):
        try:
            alert = parse_payload(Alert, payload)
        except PayloadError as exc:
            log.error("event=active_alert_unreadable key=%s error=%r", key, str(exc))
            continue
        if pipeline is not None and key.startswith("band:"):
            clear = pipeline.adopt_alert(alert, now)
        else:
            clear = alert.cleared(now, {"reason": "node_restart"})
        if clear is not None:
            log.warning("event=alert_cleared_on_restart alert=%s type=%s key=%s", alert.alert_id, alert.type, key)
            clears.append(clear)
    return clears


class CounterSaver:
    """Writes changed band counters to the outbox database at most every `every_s` seconds."""

    def __init__(self, outbox: Outbox, every_s: float = COUNTER_SAVE_S) -> None:
        self.outbox = outbox
        self.every_s = every_s
        self._next = 0.0
        self._unsaved: dict[int, int] = {}

    def maybe_save(self, source: _CounterSource | None, mono: float, wall: float, *, force: bool = False) -> None:
        """Save what moved when the cadence is due (or `force`, at a clean stop)."""
        if source is None or (not force and mono < self._next):
            return
        self._next = mono + self.every_s
        self._unsaved.update(source.take_changed_counters())
        if self._unsaved and self.outbox.save_band_counters(self._unsaved, wall):
            self._unsaved = {}
