"""Rows of the ``alerts`` table: reading one (with its delivery history) and showing it as the API does.

Shared by every part of the alert store that hands alerts back (alerts and acknowledgements, escalation,
the daily report) and by the API, the live feed and the notifier (:func:`alert_view`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ALERT_COLUMNS = (
    "alert_id, site, node, type, severity, subject, detail, state, raised_ts, cleared_ts, "
    "first_received, updated_at, acked_at, acked_by, ack_note, escalated_at, person"
)


def _no_constant(_name: str) -> None:
    """NaN/Infinity in a row written before payloads refused them: read as null, never sent on."""
    return None


def loads(text: str) -> Any:
    """A stored JSON column; a bare NaN/Infinity from an old row reads as null."""
    return json.loads(text, parse_constant=_no_constant)


def dumps(value: Any) -> str:
    """A JSON column as stored: strict (a non-finite number raises)."""
    return json.dumps(value, allow_nan=False)


def row_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """An ``alerts`` row (``SELECT ALERT_COLUMNS``) as the store hands it out; ``events`` still empty."""
    d = dict(row)
    d["subject"] = loads(d["subject"])
    d["detail"] = loads(d["detail"])
    d["acknowledged"] = d["acked_at"] is not None
    d["escalated"] = d["escalated_at"] is not None
    d["events"] = []
    return d


def attach_events(db: Any, rows: list[dict[str, Any]]) -> None:
    """Fill each row's ``events`` (escalation deliveries) from ``alert_history``, 500 IDs per query."""
    by_id = {r["alert_id"]: r for r in rows}
    ids = list(by_id)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        sql = (f"SELECT alert_id, event, ts, detail FROM alert_history WHERE alert_id IN "
               f"({', '.join('?' * len(chunk))}) ORDER BY seq")
        for r in db.execute(sql, chunk).fetchall():
            by_id[r["alert_id"]]["events"].append({"event": r["event"], "ts": r["ts"], **json.loads(r["detail"])})


def fetch_alert(db: Any, alert_id: str, *, events: bool = True) -> dict[str, Any] | None:
    """One alert read on ``db`` (inside the caller's transaction), with its history unless ``events`` is
    False, or None."""
    row = db.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
    if row is None:
        return None
    out = row_to_dict(row)
    if events:
        attach_events(db, [out])
    return out


def ack_seconds(row: Mapping[str, Any]) -> float | None:
    """Seconds from the edge's raise to the guard's acknowledgement (never negative: the two clocks
    differ), or None when not acknowledged or never raised."""
    if row["acked_at"] is None or row["raised_ts"] is None:
        return None
    return round(max(0.0, float(row["acked_at"]) - float(row["raised_ts"])), 3)


def alert_history(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alert's life in time order: raised, cleared, acknowledged and escalated from the row's own
    columns, then every escalation delivery attempt from ``alert_history``."""
    out: list[dict[str, Any]] = []
    if row["raised_ts"] is not None:
        out.append({"event": "raised", "ts": row["raised_ts"]})
    if row["cleared_ts"] is not None:
        out.append({"event": "cleared", "ts": row["cleared_ts"]})
    if row["acked_at"] is not None:
        out.append({"event": "acknowledged", "ts": row["acked_at"], "by": row["acked_by"], "note": row["ack_note"]})
    if row["escalated_at"] is not None:
        out.append({"event": "escalated", "ts": row["escalated_at"]})
    out.extend(row.get("events") or [])
    out.sort(key=lambda e: e["ts"])
    return out


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    """A stored alert as the API shows it: the §4 payload plus the cloud lifecycle."""
    ts = row["raised_ts"] if row["raised_ts"] is not None else row["cleared_ts"]
    ack = None
    if row["acked_at"] is not None:
        ack = {"by": row["acked_by"], "note": row["ack_note"], "at": row["acked_at"]}
    return {
        "schema": "qwatch.alert/1", "alert_id": row["alert_id"], "site": row["site"], "node": row["node"],
        "type": row["type"], "severity": row["severity"], "state": row["state"], "subject": row["subject"],
        "ts": ts, "detail": row["detail"], "raised_ts": row["raised_ts"], "cleared_ts": row["cleared_ts"],
        "received_at": row["first_received"], "updated_at": row["updated_at"], "acknowledged": ack is not None,
        "ack": ack, "escalated": row["escalated_at"] is not None, "escalated_at": row["escalated_at"],
        "person": row.get("person"), "ack_s": ack_seconds(row), "history": alert_history(row),
    }
