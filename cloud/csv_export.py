"""Spreadsheet files for people, not programs: UTF-8 with a BOM, local times, no formula injection.

Excel opens a CSV as the machine's ANSI code page unless the file starts with a UTF-8 byte-order
mark, which would turn "Nguyễn" into mojibake on a province office's PC: so every file starts with
one. Times are the province's local wall-clock time (``YYYY-MM-DD HH:MM:SS``, which Excel reads as a
date) and the zone is named in the header. A text cell that starts with ``= + - @`` (or a tab or CR)
gets a leading apostrophe: a guard's note must never run as a spreadsheet formula.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

BOM = "\ufeff"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

ALERT_COLUMNS = (
    "alert_id", "site", "node", "type", "severity", "state", "band", "camera", "subject_node", "person",
    "raised_at", "cleared_at", "acknowledged_at", "acknowledged_by", "ack_note", "ack_s", "escalated_at",
    "outside_m", "left_zone",
)


def local_time(ts: float | None, tz: ZoneInfo) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in ``tz``, or empty."""
    return "" if ts is None else dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> str:
    """One CSV cell: numbers as they are, text defused against formula injection, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(round(value, 3)) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The whole file: BOM, header, rows (CRLF line ends, as RFC 4180 and Excel expect)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    for r in rows:
        w.writerow([cell(v) for v in r])
    return BOM + buf.getvalue()


def alert_row(view: Mapping[str, Any], tz: ZoneInfo) -> list[Any]:
    """One alert view as a CSV row in :data:`ALERT_COLUMNS` order."""
    subject = view.get("subject") or {}
    detail = view.get("detail") or {}
    ack = view.get("ack") or {}
    return [
        view["alert_id"], view["site"], view["node"], view["type"], view["severity"], view["state"],
        subject.get("band"), subject.get("camera"), subject.get("node"), view.get("person"),
        local_time(view.get("raised_ts"), tz), local_time(view.get("cleared_ts"), tz),
        local_time(ack.get("at"), tz), ack.get("by"), ack.get("note"), view.get("ack_s"),
        local_time(view.get("escalated_at"), tz), detail.get("outside_m"), detail.get("left_zone"),
    ]


def alerts_csv(views: Iterable[Mapping[str, Any]], tz: ZoneInfo) -> str:
    """Alert history as a spreadsheet; time columns are named with the zone they are in."""
    header = [f"{c} ({tz.key})" if c.endswith("_at") else c for c in ALERT_COLUMNS]
    return write_csv(header, (alert_row(v, tz) for v in views))
