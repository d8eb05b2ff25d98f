"""Helpers shared by the test packages: waiting on conditions with deadlines, collecting observations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

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
