"""Node sessions, camera events and alert snapshots: the alert store's tables that are not alerts.

Part of :class:`cloud.alert_store.AlertStore` (same connection and transactions, :class:`StoreBase`).
Camera events and snapshots are stored once per delivery key, so a redelivered MQTT copy is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from cloud.store_base import StoreBase

NODE_COLUMNS = ("site", "node", "boot_id", "online", "status_ts", "last_seen", "version",
                "offline_alert_id", "offline_cause")


class NodeEventStore(StoreBase):
    """The ``nodes``, ``camera_events`` and ``snapshots`` tables."""

    def add_camera_event(self, site: str, node: str, camera: str, kind: str, ts: float, payload: str) -> bool:
        """Store a camera event once; False if it was a duplicate delivery."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO camera_events (site, node, camera, kind, ts, payload) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (site, node, camera, kind, ts) DO NOTHING",
                (site, node, camera, kind, ts, payload),
            )
            return bool(cur.rowcount > 0)

    def add_snapshot(self, site: str, node: str, camera: str, alert_id: str, jpeg: bytes) -> bool:
        """Store an alert snapshot once; False if it was a duplicate delivery."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO snapshots (alert_id, camera, site, node, jpeg, received_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (alert_id, camera) DO NOTHING",
                (alert_id, camera, site, node, jpeg, time.time()),
            )
            return bool(cur.rowcount > 0)

    def snapshot(self, alert_id: str) -> bytes | None:
        """The first snapshot JPEG stored for an alert, if any."""
        with self._lock:
            row = self._conn.execute("SELECT jpeg FROM snapshots WHERE alert_id = ? LIMIT 1", (alert_id,)).fetchone()
        return bytes(row["jpeg"]) if row is not None else None

    def load_nodes(self) -> list[dict[str, Any]]:
        """All node registry rows."""
        with self._lock:
            return [dict(r) for r in self._conn.execute("SELECT * FROM nodes ORDER BY site, node").fetchall()]

    def load_node(self, site: str, node: str) -> dict[str, Any] | None:
        """One node registry row, or None."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM nodes WHERE site = ? AND node = ?", (site, node)).fetchone()
        return dict(row) if row is not None else None

    def touch_nodes(self, seen: Sequence[tuple[str, str, float]]) -> None:
        """Move ``last_seen`` of existing rows forward only (``(site, node, last_seen)`` each), leaving the
        session columns alone: with a shared store another process may have written a newer birth or Will."""
        with self._tx() as db, self._pipeline(db):
            for site, node, t in seen:
                db.execute("UPDATE nodes SET last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END "
                           "WHERE site = ? AND node = ?", (t, t, site, node))

    def save_node(self, rec: Mapping[str, Any]) -> None:
        """Insert or replace one node registry row (keys as in the ``nodes`` table)."""
        updates = ", ".join(f"{c} = excluded.{c}" for c in NODE_COLUMNS[2:])
        with self._tx() as db:
            db.execute(
                f"INSERT INTO nodes ({', '.join(NODE_COLUMNS)}) VALUES ({', '.join('?' * len(NODE_COLUMNS))}) "
                f"ON CONFLICT (site, node) DO UPDATE SET {updates}",
                tuple(rec[c] for c in NODE_COLUMNS),
            )
