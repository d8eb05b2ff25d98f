"""Escalation: marking overdue alerts escalated and the outbox of their deliveries, as part of
:class:`cloud.alert_store.AlertStore`.

:meth:`EscalationQueue.escalate_due` marks an alert and queues its deliveries in one transaction; here
they are then leased (a conditional update: two processes never send the same one at once), finished
(sent, to retry, or given up) and counted. Each finished try is an ``escalation_delivery`` event in
``alert_history``. The SQL is as portable as the rest of the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloud.alert_rows import fetch_alert
from cloud.store_base import StoreBase

# Which history events live in ``alert_history``; raised/cleared/acknowledged/escalated are the row's columns.
DELIVERY_EVENT = "escalation_delivery"


class EscalationQueue(StoreBase):
    """``alerts.escalated_at``, the ``escalation_deliveries`` outbox and its ``alert_history`` events."""

    def escalate_due(
        self, now: float, *, default_after_s: float, per_site: Mapping[str, float] | None = None,
        channels: Callable[[str], Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Mark raised, unacknowledged, not yet escalated alerts older than their site's limit.

        Age counts from the edge's decision time, so an alert that sat in an outbox during an
        outage escalates at once. Returns the alerts escalated now. The mark is a conditional
        ``UPDATE … WHERE escalated_at IS NULL``: when several processes share the store, exactly one
        wins each alert and only the winner gets it back (and notifies). ``channels(site)`` names the
        delivery channels to queue for each escalated alert, in the same transaction.
        """
        per_site = per_site or {}
        # Only alerts old enough for the shortest limit come back (exact per-site check below), through a
        # partial index of the pending ones: a tick no longer reads every raised alert of the province.
        # min(raised_ts, first_received) <= cutoff, written portably (raised_ts may be NULL).
        cutoff = now - min([default_after_s, *per_site.values()])
        with self._tx() as db:
            rows = db.execute(
                "SELECT alert_id, site, node, raised_ts, first_received FROM alerts "
                "WHERE state = 'raised' AND acked_at IS NULL AND escalated_at IS NULL "
                "AND (first_received <= ? OR raised_ts <= ?) ORDER BY alert_id", (cutoff, cutoff)
            ).fetchall()  # one order for every process: row locks taken in it cannot deadlock
            won: list[str] = []
            for r in rows:
                if now - min(r["raised_ts"] or r["first_received"], r["first_received"]) \
                        < per_site.get(r["site"], default_after_s):
                    continue
                cur = db.execute(
                    "UPDATE alerts SET escalated_at = ?, updated_at = ? WHERE alert_id = ? AND escalated_at IS NULL "
                    "AND acked_at IS NULL", (now, now, r["alert_id"]))
                if cur.rowcount != 1:
                    continue
                won.append(r["alert_id"])
                self._announce(db, r["alert_id"])
                for channel in channels(r["site"]) if channels is not None else ():
                    db.execute(
                        "INSERT INTO escalation_deliveries (alert_id, site, node, channel, state, attempts, next_at, "
                        "lease_until, last_error, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, 0, "
                        "NULL, ?, ?) ON CONFLICT (site, node, alert_id, channel) DO NOTHING",
                        (r["alert_id"], r["site"], r["node"], channel, now, now, now))
            escalated = [fetch_alert(db, a) for a in won]
        return [a for a in escalated if a is not None]

    def claim_deliveries(self, now: float, *, lease_s: float = 60.0, limit: int = 20) -> list[dict[str, Any]]:
        """Pending deliveries that are due, each leased to the caller for ``lease_s`` (a conditional
        update, so two processes never send the same one at once); ``attempts`` counts this try."""
        with self._tx() as db:
            due = db.execute(
                "SELECT id FROM escalation_deliveries WHERE state = 'pending' AND next_at <= ? AND lease_until <= ? "
                "ORDER BY next_at, id LIMIT ?", (now, now, limit)).fetchall()
            claimed: list[dict[str, Any]] = []
            for r in due:
                cur = db.execute(
                    "UPDATE escalation_deliveries SET lease_until = ?, attempts = attempts + 1, updated_at = ? "
                    "WHERE id = ? AND state = 'pending' AND lease_until <= ?", (now + lease_s, now, r["id"], now))
                if cur.rowcount == 1:
                    row = db.execute("SELECT * FROM escalation_deliveries WHERE id = ?", (r["id"],)).fetchone()
                    claimed.append(dict(row))
        return claimed

    def finish_delivery(self, delivery_id: int, now: float, *, ok: bool, error: str | None,
                        retry_at: float | None) -> dict[str, Any] | None:
        """Record one attempt: sent (``ok``), to be retried at ``retry_at``, or given up (``retry_at``
        None). Appends an ``escalation_delivery`` event to the alert's history; returns the delivery."""
        state = "ok" if ok else ("pending" if retry_at is not None else "failed")
        with self._tx() as db:
            db.execute(
                "UPDATE escalation_deliveries SET state = ?, next_at = ?, lease_until = 0, last_error = ?, "
                "updated_at = ? WHERE id = ?", (state, retry_at if retry_at is not None else now, error, now,
                                                 delivery_id))
            row = db.execute("SELECT * FROM escalation_deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return None
            detail = {"channel": row["channel"], "ok": ok, "error": error, "attempt": row["attempts"],
                      "state": state, "next_at": retry_at}
            db.execute("INSERT INTO alert_history (alert_id, site, node, event, ts, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       (row["alert_id"], row["site"], row["node"], DELIVERY_EVENT, now, json.dumps(detail)))
            return dict(row)

    def delivery_counts(self) -> dict[str, dict[str, int]]:
        """Escalation deliveries per site by state (``pending``, ``ok``, ``failed``)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT site, state, COUNT(*) AS n FROM escalation_deliveries GROUP BY site, state").fetchall()
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["site"], {"pending": 0, "ok": 0, "failed": 0})[r["state"]] = int(r["n"])
        return out
