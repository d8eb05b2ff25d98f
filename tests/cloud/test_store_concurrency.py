"""The alert store shared by several processes: real concurrent connections on SQLite and PostgreSQL.

Each store object below has its own connection, as each ingest or API process has; threads release
the GIL while they wait on the database, so the writes really race.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from cloud.alert_store import AckError, AlertStore, UpsertResult
from cloud.store_db import ALERT_CHANNEL, MIGRATIONS_DIR, DbTarget, DbUrlError, parse_db, redact
from protocols.payloads import Alert, new_alert

WORKERS = 4


def _alert(i: int, site: str = "s1") -> Alert:
    return new_alert(site=site, node="n1", type="geofence_breach", subject={"band": 1000 + i}, ts=100.0 + i,
                     detail={"zone": None})


def _race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(k)`` for k in 0..n-1 on n threads released at once; results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(k: int) -> None:
        barrier.wait()
        try:
            out[k] = work(k)
        except Exception as exc:  # collected: the test looks at who won and who was refused
            out[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_db_url_chooses_the_backend() -> None:
    assert parse_db("var/cloud/qwatch.db") == parse_db("sqlite:///var/cloud/qwatch.db") == DbTarget(
        "sqlite", "var/cloud/qwatch.db")
    assert parse_db("sqlite:////abs/q.db").location == "/abs/q.db"
    assert parse_db("postgresql://qwatch@db:5432/qwatch").is_postgresql
    assert parse_db("postgres://h/q").is_postgresql
    for bad in ("sqlite://q.db", "mysql://h/q"):
        with pytest.raises(DbUrlError):
            parse_db(bad)
    assert redact("postgresql://qwatch:s3cret@db/q") == "postgresql://qwatch:***@db/q"
    assert redact("postgresql://qwatch@db/q") == "postgresql://qwatch@db/q"


def test_concurrent_guards_one_ack_wins(store_db: str) -> None:
    stores = [AlertStore(store_db) for _ in range(WORKERS)]
    alerts = [_alert(i) for i in range(10)]
    for a in alerts:
        stores[0].upsert(a, now=200.0)
    for a in alerts:
        def ack(k: int, a: Alert = a) -> dict[str, Any]:
            return stores[k].acknowledge(a.alert_id, by=f"guard{k}", note="")

        got = _race(WORKERS, ack)
        wins = [g for g in got if isinstance(g, dict)]
        refused = [g for g in got if isinstance(g, AckError)]
        assert len(wins) == 1 and len(refused) == WORKERS - 1, got
        assert all(r.code == "already_acknowledged" for r in refused)
        row = stores[1].get(a.alert_id)
        assert row is not None and row["acked_by"] == wins[0]["acked_by"]  # the winner's ack, not overwritten
    for s in stores:
        s.close()


def test_concurrent_deliveries_of_one_alert_are_stored_once(store_db: str) -> None:
    """Ingest replicas racing on redelivered copies and on raised/cleared of the same alerts."""
    stores = [AlertStore(store_db) for _ in range(WORKERS)]
    alerts = [_alert(i) for i in range(15)]
    outcomes: Counter[str] = Counter()
    for a in alerts:
        # Even workers deliver the raised, odd ones the cleared: both orders of arrival happen.
        def deliver(k: int, a: Alert = a) -> UpsertResult:
            return stores[k].upsert(a if k % 2 == 0 else a.cleared(a.ts + 5), now=300.0)

        got = _race(WORKERS, deliver)
        assert not [g for g in got if isinstance(g, Exception)], got
        outcomes.update(g.outcome for g in got)
    assert outcomes == {"inserted": 15, "updated": 15, "duplicate": 30}
    events = stores[0].events()
    assert Counter((e["alert_id"], e["state"]) for e in events) == Counter(
        {(a.alert_id, s): 1 for a in alerts for s in ("raised", "cleared")})
    for a in alerts:
        row = stores[0].get(a.alert_id)
        assert row is not None and row["state"] == "cleared" and row["raised_ts"] == a.ts  # order independent
    for s in stores:
        s.close()


def test_concurrent_escalation_marks_each_alert_once(store_db: str) -> None:
    stores = [AlertStore(store_db) for _ in range(WORKERS)]
    alerts = [_alert(i) for i in range(20)]
    with stores[0].batch():
        for a in alerts:
            stores[0].upsert(a, now=100.0)
    got = _race(WORKERS, lambda k: stores[k].escalate_due(1000.0 + k, default_after_s=60.0,
                                                          channels=lambda _s: ["webhook"]))
    assert not [g for g in got if isinstance(g, Exception)], got
    won = [row["alert_id"] for rows in got for row in rows]
    assert sorted(won) == sorted(a.alert_id for a in alerts)  # every alert once, by exactly one process
    claimed = _race(WORKERS, lambda k: stores[k].claim_deliveries(2000.0, limit=100))
    assert sorted(d["alert_id"] for c in claimed for d in c) == sorted(won)  # each delivery leased once
    for s in stores:
        s.close()


@pytest.mark.parametrize("n", [3])
def test_postgresql_schema_migrates_once_and_changes_are_notified(pg_database: str, n: int) -> None:
    stores = _race(n, lambda _k: AlertStore(pg_database))  # processes starting together
    assert all(isinstance(s, AlertStore) for s in stores), stores
    with psycopg.connect(pg_database, autocommit=True) as listener:
        assert [r[0] for r in listener.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
                ] == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))  # each once
        listener.execute(f"LISTEN {ALERT_CHANNEL}")
        a = _alert(1)
        stores[0].upsert(a, now=1.0)
        stores[1].acknowledge(a.alert_id, by="g", note="", now=2.0)
        with pytest.raises(AckError):
            stores[2].acknowledge(a.alert_id, by="h", note="", now=3.0)  # refused: nothing announced
        got = [note.payload for note in listener.notifies(timeout=2.0, stop_after=2)]
    assert got == [f"{stores[0].origin}|{a.alert_id}", f"{stores[1].origin}|{a.alert_id}"]
    for s in stores:
        s.close()


def test_postgresql_store_reconnects_after_its_connection_is_killed(pg_database: str) -> None:
    """A failover or a server restart breaks the store's connection: the next operation may fail (the
    ingest then leaves its batch unacknowledged), the ones after it run on a new connection."""
    store = AlertStore(pg_database)
    a = _alert(1)
    store.upsert(a, now=1.0)
    with psycopg.connect(pg_database, autocommit=True) as admin:
        killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    assert killed
    with pytest.raises(psycopg.OperationalError):
        store.upsert(a.cleared(110.0), now=2.0)  # the transaction the kill broke fails, nothing half-written
    assert store.get(a.alert_id) is not None  # a plain read reconnects on its own
    assert store.ping()
    assert store.upsert(a.cleared(110.0), now=3.0).outcome == "updated"  # the redelivery is stored once
    row = store.get(a.alert_id)
    assert row is not None and row["state"] == "cleared"
    store.close()
