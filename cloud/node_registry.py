"""Node liveness: birth, death (Last Will), silence, and the boot_id rule. Pure: no I/O, no clock.

Decisions (docs/protocol.md §5):
- A birth (``status`` online) starts a session identified by its ``boot_id`` and clears any open
  ``node_offline`` alert.
- A death (``status`` offline: the Last Will, or a clean shutdown) raises ``node_offline`` only if
  it belongs to the node's *current* session. A late Will from an older ``boot_id`` (the broker
  noticed the old TCP connection dying after the node had already reconnected) is ignored and
  counted, as Sparkplug does with ``bdSeq``.
- A birth older than the one we hold (a redelivered or retained copy) is ignored. Wills are
  judged by ``boot_id`` only: the node builds its Will when it connects, so its ``ts`` is older
  than the birth it follows.
- Silence: a node heard of nothing for ``silence_s`` gets ``node_offline`` (cause ``silence``);
  any later traffic, or a birth, clears it. Silence counts from when this process started at the
  earliest, so a restarted ingest does not declare every node dead at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

from protocols.payloads import Alert, Status, new_alert


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What the cloud knows about one node's current session."""

    site: str
    node: str
    boot_id: str
    online: bool
    status_ts: float
    last_seen: float
    version: str = ""
    offline_alert_id: str | None = None
    offline_cause: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The record as a ``nodes`` table row."""
        row = asdict(self)
        row["online"] = int(self.online)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> NodeRecord:
        """Inverse of :meth:`as_row`."""
        return cls(**{**row, "online": bool(row["online"])})


class NodeLiveness:
    """Tracks every node's session and returns the node_offline alerts to raise or clear."""

    def __init__(self, *, silence_s: float, started_at: float, records: list[NodeRecord] | None = None) -> None:
        self.silence_s = silence_s
        self.started_at = started_at
        self.records: dict[tuple[str, str], NodeRecord] = {(r.site, r.node): r for r in records or []}
        self.counts: Counter[str] = Counter()
        self.dirty: set[tuple[str, str]] = set()
        self._alerts: dict[str, Alert] = {}

    def _put(self, rec: NodeRecord) -> None:
        self.records[(rec.site, rec.node)] = rec
        self.dirty.add((rec.site, rec.node))

    def _raise(self, rec: NodeRecord, now: float, cause: str) -> tuple[NodeRecord, Alert]:
        alert = new_alert(
            site=rec.site, node=rec.node, type="node_offline", subject={"node": rec.node}, ts=now,
            detail={"cause": cause, "boot_id": rec.boot_id, "last_seen": rec.last_seen},
        )
        self._alerts[alert.alert_id] = alert
        self.counts[f"offline_{cause}"] += 1
        return replace(rec, online=False, offline_alert_id=alert.alert_id, offline_cause=cause), alert

    def _clear(self, rec: NodeRecord, now: float, why: str) -> tuple[NodeRecord, list[Alert]]:
        if rec.offline_alert_id is None:
            return rec, []
        raised = self._alerts.pop(rec.offline_alert_id, None)
        if raised is None:
            # Raised by an earlier process: rebuild the alert from what the record kept.
            raised = new_alert(site=rec.site, node=rec.node, type="node_offline", subject={"node": rec.node},
                               ts=now).model_copy(update={"alert_id": rec.offline_alert_id})
        self.counts[f"cleared_{why}"] += 1
        cleared = raised.cleared(now, {"cause": rec.offline_cause, "cleared_by": why, "boot_id": rec.boot_id})
        return replace(rec, online=True, offline_alert_id=None, offline_cause=None), [cleared]

    def on_status(self, site: str, node: str, status: Status, now: float) -> list[Alert]:
        """A birth or death message arrived. Returns node_offline alerts (raised or cleared)."""
        rec = self.records.get((site, node))
        if status.state == "online":
            return self._birth(rec, site, node, status, now)
        return self._death(rec, site, node, status, now)

    def _birth(self, rec: NodeRecord | None, site: str, node: str, status: Status, now: float) -> list[Alert]:
        if rec is not None and rec.boot_id == status.boot_id and status.ts < rec.status_ts:
            # An older birth of this session redelivered after a newer one. A new boot_id always
            # wins: a Pi without RTC may boot with its clock behind, and MQTT keeps per-topic order.
            self.counts["stale_birth"] += 1
            return []
        if rec is not None and rec.boot_id == status.boot_id and rec.status_ts == status.ts and rec.online:
            self.counts["duplicate_birth"] += 1
            return []
        fresh = NodeRecord(site, node, status.boot_id, True, status.ts, now, status.version)
        out: list[Alert] = []
        if rec is not None:
            fresh = replace(fresh, offline_alert_id=rec.offline_alert_id, offline_cause=rec.offline_cause)
            fresh, out = self._clear(fresh, now, "birth")
        self.counts["birth"] += 1
        self._put(fresh)
        return out

    def _death(self, rec: NodeRecord | None, site: str, node: str, status: Status, now: float) -> list[Alert]:
        # The Will's ts is when the node built it (at connect), which is older than its birth, so
        # only the boot_id tells whether it ends the current session.
        if rec is not None and rec.boot_id not in (status.boot_id, ""):
            self.counts["stale_will"] += 1
            return []
        if rec is not None and rec.offline_alert_id is not None:
            if rec.offline_cause == "silence":
                # Silence already raised it; the Will confirms it. Keep one alert, note the cause.
                self._put(replace(rec, offline_cause="will"))
            self.counts["duplicate_will"] += 1
            return []
        base = rec or NodeRecord(site, node, status.boot_id, True, 0.0, now, status.version)
        base = replace(base, boot_id=status.boot_id)
        updated, alert = self._raise(base, now, "will")
        self._put(updated)
        return [alert]

    def on_traffic(self, site: str, node: str, now: float) -> list[Alert]:
        """Any other message from the node: it is alive. Clears a silence-raised node_offline."""
        rec = self.records.get((site, node))
        if rec is None:
            # Heard before its birth (e.g. retained status not yet seen): track it for silence.
            self._put(NodeRecord(site, node, "", True, 0.0, now))
            return []
        out: list[Alert] = []
        rec = replace(rec, last_seen=now)
        if rec.offline_cause == "silence":
            rec, out = self._clear(rec, now, "traffic")
            self.dirty.add((site, node))
        self.records[(site, node)] = rec
        return out

    def tick(self, now: float) -> list[Alert]:
        """Raise node_offline for every online node silent for longer than ``silence_s``."""
        out: list[Alert] = []
        for rec in list(self.records.values()):
            if not rec.online or rec.offline_alert_id is not None:
                continue
            if now - max(rec.last_seen, self.started_at) > self.silence_s:
                updated, alert = self._raise(rec, now, "silence")
                self._put(updated)
                out.append(alert)
        return out

    def take_dirty(self) -> list[NodeRecord]:
        """Records changed since the last call (to persist); includes last_seen updates."""
        keys, self.dirty = self.dirty, set()
        return [self.records[k] for k in sorted(keys)]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every node as a plain dict (for the API)."""
        return [asdict(r) for r in sorted(self.records.values(), key=lambda r: (r.site, r.node))]
