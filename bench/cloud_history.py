"""How long the history list, the CSV export and the daily report take on a store of a busy province.

Fills a SQLite alert store with ``--days`` days of ``--per-day`` alerts per site over ``--sites`` sites (80 %
breaches, a third acknowledged, some escalated with a delivery event each), then times, median of
``--repeat`` runs: the list of 200 (with history), the CSV of 5000, and one day's report of every site.

    .venv/bin/python -m bench.cloud_history [--sites 20 --days 30 --per-day 150]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from cloud.alert_store import AlertQuery, AlertStore, alert_view
from cloud.csv_export import alerts_csv
from cloud.report import collect, day_window
from protocols.payloads import new_alert

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def fill(store: AlertStore, sites: int, days: int, per_day: int, first: dt.date) -> int:
    rng = random.Random(7)
    n = 0
    for d in range(days):
        start, _ = day_window(first + dt.timedelta(days=d), TZ)
        with store.batch():
            for s in range(sites):
                for _ in range(per_day):
                    typ = "geofence_breach" if rng.random() < 0.8 else rng.choice(["fever", "camera_offline",
                                                                                    "node_offline", "sos"])
                    subject = ({"camera": "cam-1", "zone": None} if typ == "camera_offline"
                               else {"node": "edge-01"} if typ == "node_offline" else {"band": rng.randint(1, 500)})
                    ts = start + rng.uniform(0, 86000)
                    a = new_alert(site=f"site-{s:02d}", node="edge-01", type=typ, subject=subject, ts=ts)
                    store.upsert(a, now=ts + 1, person=f"Nguyễn Văn {rng.randint(1, 500)}")
                    if rng.random() < 0.33:
                        store.acknowledge(a.alert_id, by="Trần Thị Mai", note="", now=ts + rng.uniform(10, 300))
                    else:
                        store.upsert(a.cleared(ts + 400), now=ts + 401)
                    n += 1
        store.escalate_due(start + 86400, default_after_s=300.0, channels=lambda _s: ["email"])
        for d_ in store.claim_deliveries(start + 86400, limit=100000):
            store.finish_delivery(d_["id"], start + 86400, ok=True, error=None, retry_at=None)
    return n


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    first = dt.date(2026, 11, 1)
    with tempfile.TemporaryDirectory() as tmp:
        store = AlertStore(Path(tmp) / "q.db")
        t = time.perf_counter()
        n = fill(store, args.sites, args.days, args.per_day, first)
        fill_s = time.perf_counter() - t
        day = first + dt.timedelta(days=args.days // 2)
        sites = [f"site-{s:02d}" for s in range(args.sites)]
        rows = [
            ("list 200 (with history)", timed(lambda: [alert_view(r) for r in store.list_alerts(AlertQuery())],
                                              args.repeat)),
            ("list 200, person filter", timed(lambda: store.list_alerts(AlertQuery(person="Văn 42")), args.repeat)),
            ("CSV 5000 alerts", timed(lambda: alerts_csv([alert_view(r) for r in store.list_alerts(
                AlertQuery(limit=5000))], TZ), args.repeat)),
            (f"daily report, {args.sites} sites", timed(lambda: collect(
                store, day, TZ, sites, people={}, names={}, now=time.time()), args.repeat)),
        ]
        store.close()
    print(f"store: {n} alerts ({args.sites} sites x {args.days} days x {args.per_day}), filled in {fill_s:.1f} s")
    print(f"{'operation':<32} {'median s':>9}")
    for name, secs in rows:
        print(f"{name:<32} {secs:>9.3f}")


if __name__ == "__main__":
    main()
