"""Shared fixtures: real Mosquitto, VictoriaMetrics and PostgreSQL as child processes on free loopback ports.

A missing binary fails the run under ``CI=true`` and skips the test otherwise (see
``devtools.services.require_binary``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.services import (
    ServiceProcess,
    pg_url,
    require_binary,
    start_mosquitto,
    start_postgresql,
    start_victoria_metrics,
)

_db_names = itertools.count(1)


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A fresh Mosquitto per test (tests kill/restart it and rely on empty retained state)."""
    require_binary("mosquitto")
    svc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A fresh VictoriaMetrics per test, with ``-search.latencyOffset=0s``."""
    require_binary("victoria-metrics")
    svc = start_victoria_metrics(tmp_path_factory.mktemp("victoria-metrics"))
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def shared_victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One VictoriaMetrics for the session, for read-mostly tests that use distinct series names.

    Do not stop or pause it in a test; use ``victoria_metrics`` for that.
    """
    require_binary("victoria-metrics")
    svc = start_victoria_metrics(tmp_path_factory.mktemp("vm-shared"))
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    """A per-test directory for service data (kept by pytest for post-mortem logs)."""
    return tmp_path


@pytest.fixture(scope="session")
def postgresql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One PostgreSQL (Debian's, ``initdb`` in a temp dir) for the session; tests take a fresh database
    each (:func:`pg_database`). fsync off: a scratch cluster, rebuilt every run."""
    require_binary("initdb")
    require_binary("postgres")
    svc = start_postgresql(tmp_path_factory.mktemp("postgresql"), fsync=False)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def pg_database(postgresql_server: ServiceProcess) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL (dropped after the test)."""
    import psycopg

    name = f"t{next(_db_names)}"
    with psycopg.connect(pg_url(postgresql_server), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        yield pg_url(postgresql_server, name)
    finally:
        with psycopg.connect(pg_url(postgresql_server), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The alert store's ``--db`` for each backend: a SQLite file, then a fresh PostgreSQL database.
    A store test that takes this runs once per backend."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    url: str = request.getfixturevalue("pg_database")
    return url
