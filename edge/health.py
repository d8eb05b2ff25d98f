"""Node health: host metrics (cpu, memory, disk, temperature) and the node's error list.

Reads /proc and /sys directly (no psutil on a Pi image). Every reader returns None when
the file is not there, so the agent runs the same in a container and on a Pi.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("qwatch.edge.health")

_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


@dataclass(frozen=True, slots=True)
class HostSample:
    """One reading of the host metrics that go into node telemetry."""

    cpu_pct: float
    mem_rss_mb: float
    mem_pct: float | None
    disk_free_mb: float | None
    temp_c: float | None


class HostMetrics:
    """CPU% of this process since the previous sample, RSS, system memory, disk and SoC temperature."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._last_cpu = _process_cpu_s()
        self._last_wall = time.monotonic()

    def sample(self) -> HostSample:
        """Take one sample (cpu_pct is 100 for one fully used core)."""
        cpu, wall = _process_cpu_s(), time.monotonic()
        dt = wall - self._last_wall
        cpu_pct = 100.0 * (cpu - self._last_cpu) / dt if dt > 0 else 0.0
        self._last_cpu, self._last_wall = cpu, wall
        return HostSample(
            cpu_pct=round(max(0.0, cpu_pct), 1),
            mem_rss_mb=round(_rss_mb(), 1),
            mem_pct=_mem_pct(),
            disk_free_mb=_disk_free_mb(self.data_dir),
            temp_c=_soc_temp_c(),
        )


def _process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _mem_pct() -> float | None:
    try:
        info = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            info[name] = int(rest.split()[0])
        total, avail = info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return round(100.0 * (total - avail) / total, 1) if total else None


def _disk_free_mb(path: Path) -> float | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return round(st.f_bavail * st.f_frsize / 1e6, 1)


def _soc_temp_c() -> float | None:
    try:
        return round(int(_THERMAL.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


class HealthErrors:
    """The node's current error conditions (code -> message). Thread-safe.

    A new error is logged at CRITICAL once; clearing it is logged too. The list goes out
    in every node telemetry message, so the command centre sees it within a second.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}

    def set(self, code: str, message: str) -> None:
        """Raise (or update) error `code`."""
        with self._lock:
            new = code not in self._errors
            self._errors[code] = message
        if new:
            log.critical("event=health_error node=%s code=%s message=%r", self.node, code, message)

    def clear(self, code: str) -> None:
        """Clear error `code` if it was set."""
        with self._lock:
            gone = self._errors.pop(code, None) is not None
        if gone:
            log.warning("event=health_error_cleared node=%s code=%s", self.node, code)

    def sync(self, prefix: str, current: dict[str, str]) -> None:
        """Make the errors starting with `prefix` equal to `current` (e.g. the outbox's own list)."""
        with self._lock:
            stale = [c for c in self._errors if c.startswith(prefix) and c not in current]
        for code in stale:
            self.clear(code)
        for code, msg in current.items():
            self.set(code, msg)

    def as_list(self) -> list[str]:
        """`code: message` strings, sorted by code."""
        with self._lock:
            return [f"{c}: {m}" for c, m in sorted(self._errors.items())]
