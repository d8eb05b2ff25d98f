"""Helpers shared by the test packages: waiting on conditions with deadlines, collecting observations."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from protocols.observation import RawObservation

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = "condition") -> T:
    """Poll ``cond`` until it returns something truthy and return that; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Collector:
    """A thread-safe observation sink (``ObservationSource.start(sink)``) that remembers what it got."""

    def __init__(self) -> None:
        self.items: list[RawObservation] = []
        self.lock = threading.Lock()
        self.last_mono = 0.0  # monotonic time of the last observation, 0 before the first

    def __call__(self, obs: RawObservation) -> None:
        with self.lock:
            self.items.append(obs)
            self.last_mono = time.monotonic()

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)

    def snapshot(self) -> list[RawObservation]:
        """A copy of everything collected so far."""
        with self.lock:
            return list(self.items)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[None]:
    """A real, small filesystem at `path` (tmpfs, needs root) to run a disk full for real."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        msg = f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + " — CI runs as root, so this is a failure, not a skip", pytrace=False)
        pytest.skip(msg)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
