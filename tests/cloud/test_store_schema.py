"""The alert store's two schemas (SQLite in cloud/store_base.py, PostgreSQL in cloud/migrations/) stay
one schema: the same tables with the same columns in the same order and the same named indexes, so one SQL
set runs on both, equally fast."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from cloud.alert_store import AlertStore
from cloud.store_base import SCHEMA


def _sqlite_schema(tmp: Path) -> tuple[dict[str, list[str]], set[str]]:
    """Columns per table, and the named indexes (not the ones SQLite makes for keys)."""
    db = sqlite3.connect(tmp / "s.db")
    db.executescript(SCHEMA)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    db.close()
    return out, indexes


def test_sqlite_and_postgresql_schemas_name_the_same_columns(pg_database: str, tmp_path: Path) -> None:
    AlertStore(pg_database).close()  # applies the migrations
    with psycopg.connect(pg_database) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name <> 'schema_migrations' ORDER BY table_name, ordinal_position").fetchall()
        # Named indexes: not the ones PostgreSQL makes for primary keys and UNIQUE constraints.
        pg_indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'schema_migrations' "
            "AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key'").fetchall()}
    pg: dict[str, list[str]] = {}
    for table, column in rows:
        pg.setdefault(table, []).append(column)
    lite, lite_indexes = _sqlite_schema(tmp_path)
    assert set(lite) == set(pg)
    assert lite == pg
    assert "alerts" in lite and "person" in lite["alerts"]
    assert lite_indexes == pg_indexes and "alerts_received" in lite_indexes
