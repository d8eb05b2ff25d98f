"""Shared fixtures: real Mosquitto and VictoriaMetrics as child processes on free loopback ports.

A missing binary fails the run under ``CI=true`` and skips the test otherwise (see
``devtools.services.require_binary``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.services import ServiceProcess, require_binary, start_mosquitto, start_victoria_metrics


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
