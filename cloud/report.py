"""The daily report the province sends on (issue 10 §7): per site and for the province, one local day.

Pure: it takes the alert rows of the day (``AlertStore.report_alerts``), the configured people per site,
the known nodes and a clock, and returns the report. What each number means:

- ``people_under_watch``: bands in the site's config (``serve --site-config``); null for a site the cloud
  has no config for.
- ``alerts``: alerts raised during the day (the edge's raise time, else the cloud's receipt), by type and
  by severity.
- ``breaches``: ``geofence_breach`` alerts raised during the day; how many were acknowledged, and the
  mean and 95th percentile (nearest rank) of the time from raise to acknowledgement, in seconds.
- ``escalations``: alerts escalated during the day (whenever they were raised).
- ``nodes``: per node, minutes offline during the day (``node_offline`` alerts, overlapping outages
  merged) and uptime in percent of the part of the day that has passed; ``node_uptime_pct`` is their mean.
- ``cameras``: per camera, minutes offline during the day (``camera_offline`` alerts, merged).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from cloud.alert_store import AlertStore, ack_seconds
from cloud.csv_export import write_csv
from protocols.payloads import DEFAULT_SEVERITY

SCHEMA = "qwatch.daily_report/1"
TYPES = tuple(DEFAULT_SEVERITY)
SEVERITIES = ("critical", "major", "minor")


def day_window(day: dt.date, tz: ZoneInfo) -> tuple[float, float]:
    """``[start, end)`` of a local calendar day as Unix seconds (23 or 25 h long across a DST change)."""
    start = dt.datetime.combine(day, dt.time(0), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz)
    return start.timestamp(), end.timestamp()


def _raised_at(row: Mapping[str, Any]) -> float:
    return float(row["raised_ts"] if row["raised_ts"] is not None else row["first_received"])


def p95(values: Sequence[float]) -> float | None:
    """95th percentile by nearest rank (the smallest value with at least 95 % of values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _merged_seconds(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Length of the union of intervals clipped to ``[start, end]``."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if min(b, end) > max(a, start))
    total, cur_a, cur_b = 0.0, None, None
    for a, b in clipped:
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def _outages(rows: Iterable[Mapping[str, Any]], alert_type: str, key: str, until: float
             ) -> dict[tuple[str, str], list[tuple[float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r["type"] == alert_type:
            ident = str(r["subject"].get(key) or r["node"])
            end = r["cleared_ts"] if r["cleared_ts"] is not None else until
            out.setdefault((r["node"], ident), []).append((_raised_at(r), float(end)))
    return out


def _breaches(rows: Iterable[Mapping[str, Any]]) -> tuple[int, list[float]]:
    n, times = 0, []
    for r in rows:
        if r["type"] == "geofence_breach":
            n += 1
            s = ack_seconds(r)
            if s is not None:
                times.append(s)
    return n, times


def _breach_block(n: int, times: list[float]) -> dict[str, Any]:
    return {"count": n, "acknowledged": len(times), "unacknowledged": n - len(times),
            "ack_mean_s": round(sum(times) / len(times), 1) if times else None,
            "ack_p95_s": round(v, 1) if (v := p95(times)) is not None else None}


def site_report(site: str, rows: Sequence[Mapping[str, Any]], *, start: float, end: float, now: float,
                people: int | None, nodes: Iterable[str] = (), name: str | None = None) -> dict[str, Any]:
    """One site's day (``rows``: ``AlertStore.report_alerts(site, start, end)``)."""
    until = min(end, now)
    raised = [r for r in rows if start <= _raised_at(r) < end]
    n_breach, times = _breaches(raised)
    node_out = _outages(rows, "node_offline", "node", until)
    cam_out = _outages(rows, "camera_offline", "camera", until)
    span = until - start
    node_rows: list[dict[str, Any]] = []
    for node in sorted(set(nodes) | {n for n, _ in node_out}):
        off = _merged_seconds(node_out.get((node, node), []), start, until) if span > 0 else 0.0
        node_rows.append({"node": node, "offline_min": round(off / 60, 1),
                          "uptime_pct": round(100 * (1 - off / span), 2) if span > 0 else None})
    uptimes = [n["uptime_pct"] for n in node_rows if n["uptime_pct"] is not None]
    cameras: list[dict[str, Any]] = [
        {"node": node, "camera": cam, "offline_min": round(_merged_seconds(iv, start, until) / 60, 1)}
        for (node, cam), iv in sorted(cam_out.items())]
    return {
        "site": site, "name": name, "people_under_watch": people,
        "alerts": {"total": len(raised), "by_type": dict(sorted(Counter(r["type"] for r in raised).items())),
                   "by_severity": {s: sum(r["severity"] == s for r in raised) for s in SEVERITIES}},
        "breaches": _breach_block(n_breach, times),
        "escalations": sum(1 for r in rows if r["escalated_at"] is not None and start <= r["escalated_at"] < end),
        "nodes": node_rows,
        "node_uptime_pct": round(sum(uptimes) / len(uptimes), 2) if uptimes else None,
        "cameras": cameras,
        "camera_offline_min": round(float(sum(c["offline_min"] for c in cameras)), 1),
        "_breach_ack_s": times,
    }


def daily_report(day: dt.date, tz: ZoneInfo, sites: Sequence[dict[str, Any]], *, now: float) -> dict[str, Any]:
    """The whole report: the sites' days (from :func:`site_report`) and the province's sum of them."""
    start, end = day_window(day, tz)
    all_times = [t for s in sites for t in s["_breach_ack_s"]]
    nodes = [n for s in sites for n in s["nodes"]]
    uptimes = [n["uptime_pct"] for n in nodes if n["uptime_pct"] is not None]
    people = [s["people_under_watch"] for s in sites if s["people_under_watch"] is not None]
    by_type: Counter[str] = Counter()
    for s in sites:
        by_type.update(s["alerts"]["by_type"])
    province = {
        "sites": len(sites), "people_under_watch": sum(people) if people else None,
        "alerts": {"total": sum(s["alerts"]["total"] for s in sites), "by_type": dict(sorted(by_type.items())),
                   "by_severity": {v: sum(s["alerts"]["by_severity"][v] for s in sites) for v in SEVERITIES}},
        "breaches": _breach_block(sum(s["breaches"]["count"] for s in sites), all_times),
        "escalations": sum(s["escalations"] for s in sites),
        "nodes": len(nodes),
        "node_uptime_pct": round(sum(uptimes) / len(uptimes), 2) if uptimes else None,
        "camera_offline_min": round(float(sum(s["camera_offline_min"] for s in sites)), 1),
    }
    return {"schema": SCHEMA, "date": day.isoformat(), "tz": tz.key, "from": start, "until": end,
            "generated_at": now, "sites": [{k: v for k, v in s.items() if not k.startswith("_")} for s in sites],
            "province": province}


CSV_HEAD = ("date", "scope", "site", "name", "people_under_watch", "alerts_total", *SEVERITIES,
            *TYPES, "breaches", "breaches_acknowledged", "ack_mean_s", "ack_p95_s", "escalations", "nodes",
            "node_uptime_pct", "camera_offline_min")


def report_csv(report: Mapping[str, Any]) -> str:
    """One row per site, then the province: the shape a province office pastes into its own sheet."""
    def row(scope: str, site: str, name: str | None, block: Mapping[str, Any], nodes: int) -> list[Any]:
        a, b = block["alerts"], block["breaches"]
        return [report["date"], scope, site, name, block["people_under_watch"], a["total"],
                *(a["by_severity"][s] for s in SEVERITIES), *(a["by_type"].get(t, 0) for t in TYPES),
                b["count"], b["acknowledged"], b["ack_mean_s"], b["ack_p95_s"], block["escalations"], nodes,
                block["node_uptime_pct"], block["camera_offline_min"]]

    rows = [row("site", s["site"], s["name"], s, len(s["nodes"])) for s in report["sites"]]
    p = report["province"]
    rows.append(row("province", "", None, p, p["nodes"]))
    return write_csv(CSV_HEAD, rows)


def collect(store: AlertStore, day: dt.date, tz: ZoneInfo, sites: Iterable[str], *,
            people: Mapping[str, Mapping[int, str]], names: Mapping[str, str], now: float) -> dict[str, Any]:
    """Read the day of each of ``sites`` from the store and build the report (the thin I/O shell)."""
    start, end = day_window(day, tz)
    nodes: dict[str, list[str]] = {}
    for rec in store.load_nodes():
        nodes.setdefault(rec["site"], []).append(rec["node"])
    reports = [site_report(s, store.report_alerts(s, start, end), start=start, end=end, now=now,
                           people=len(people[s]) if s in people else None, nodes=nodes.get(s, ()),
                           name=names.get(s) or None)
               for s in sorted(set(sites))]
    return daily_report(day, tz, reports, now=now)


def known_sites(store: AlertStore, configured: Iterable[str]) -> set[str]:
    """Every site the cloud knows of: configured, alerted or with a node."""
    return set(configured) | {r["site"] for r in store.site_summary()} | {r["site"] for r in store.load_nodes()}
