"""The alert store's two schemas (SQLite in cloud/store_base.py, PostgreSQL in cloud/migrations/) stay
one schema: the same tables with the same columns in the same order, so one SQL set runs on both."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from cloud.alert_store import AlertStore
from cloud.store_base import SCHEMA


def _sqlite_columns(tmp: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(tmp / "s.db")
    db.executescript(SCHEMA)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    db.close()
    return out


def test_sqlite_and_postgresql_schemas_name_the_same_columns(pg_database: str, tmp_path: Path) -> None:
    AlertStore(pg_database).close()  # applies the migrations
    with psycopg.connect(pg_database) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name <> 'schema_migrations' ORDER BY table_name, ordinal_position").fetchall()
    pg: dict[str, list[str]] = {}
    for table, column in rows:
        pg.setdefault(table, []).append(column)
    lite = _sqlite_columns(tmp_path)
    assert set(lite) == set(pg)
    assert lite == pg
    assert "alerts" in lite and "person" in lite["alerts"]
