"""The escalation outbox and the daily report's query, as part of :class:`cloud.alert_store.AlertStore`.

Deliveries are queued by ``AlertStore.escalate_due`` in the transaction that marks the alert escalated;
here they are leased (a conditional update: two processes never send the same one at once), finished
(sent, to retry, or given up) and counted. Each finished try is an ``escalation_delivery`` event in
``alert_history``. The SQL is as portable as the rest of the store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

# Which history events live in ``alert_history``; raised/cleared/acknowledged/escalated are the row's columns.
DELIVERY_EVENT = "escalation_delivery"


class DeliveryQueue:
    """Mixin over the store's connection, lock and transactions."""

    _conn: Any  # a sqlite3.Connection or a cloud.store_db.PgConn
    _lock: threading.RLock
    _tx: Callable[[], AbstractContextManager[Any]]

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

    def report_alerts(self, site: str, start: float, end: float) -> list[dict[str, Any]]:
        """What a daily report of ``site`` over ``[start, end)`` needs: alerts raised in the window, alerts
        escalated in it, and node/camera outages that overlap it (to count offline time)."""
        from cloud.alert_store import ALERT_COLUMNS, _row_to_dict

        sql = (f"SELECT {ALERT_COLUMNS} FROM alerts WHERE site = ? AND ("
               "(COALESCE(raised_ts, first_received) >= ? AND COALESCE(raised_ts, first_received) < ?) "
               "OR (escalated_at >= ? AND escalated_at < ?) "
               "OR (type IN ('node_offline', 'camera_offline') AND COALESCE(raised_ts, first_received) < ? "
               "AND (cleared_ts IS NULL OR cleared_ts > ?))) ORDER BY first_received, alert_id")
        with self._lock:
            return [_row_to_dict(r) for r in self._conn.execute(
                sql, (site, start, end, start, end, end, start)).fetchall()]
