"""Node telemetry of the agent (`…/telemetry/node`) and the tick-time record it reports."""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols.payloads import CameraHealth, NodeTelemetry

if TYPE_CHECKING:
    from edge.agent import Agent

log = logging.getLogger("qwatch.edge.telemetry")

# The last node telemetry message, as published, kept in the data dir for `qwatch-edge doctor` and
# `qwatch-edge plan --receivers` (receiver health: docs/bands.md, "Receivers: floors, gains, health").
NODE_TELEMETRY_FILE = "node-telemetry.json"
SAVE_EVERY_S = 60.0  # an SD card need not be written every few seconds


class TelemetrySaver:
    """Writes the node telemetry message to `data_dir/node-telemetry.json` at most every `every_s` (atomically)."""

    def __init__(self, data_dir: Path, every_s: float = SAVE_EVERY_S) -> None:
        self.path = data_dir / NODE_TELEMETRY_FILE
        self.every_s = every_s
        self._last = -math.inf

    def maybe_save(self, tel: NodeTelemetry, now: float) -> bool:
        """Save `tel` if the last save is `every_s` old; False when not due or the write failed (logged)."""
        if now - self._last < self.every_s:
            return False
        self._last = now
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(tel.model_dump_json(by_alias=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("event=telemetry_save_failed path=%s error=%r", self.path, exc.strerror)
            return False
        return True


class TickTimes:
    """Durations of the last `keep` pipeline ticks, for their median, 99th percentile and maximum."""

    def __init__(self, keep: int = 1500) -> None:  # 25 minutes of the pipeline's 1 Hz ticks
        self._times: deque[float] = deque(maxlen=keep)

    def add(self, seconds: float) -> None:
        self._times.append(seconds)

    def summary(self) -> dict[str, int | float | str]:
        """`tick_ms_p50`, `tick_ms_p99`, `tick_ms_max` over the kept ticks, and how many they are."""
        if not self._times:
            return {"tick_n": 0}
        ms = sorted(1000.0 * t for t in self._times)
        n = len(ms)
        return {"tick_n": n, "tick_ms_p50": round(ms[n // 2], 2),
                "tick_ms_p99": round(ms[min(n - 1, math.ceil(0.99 * n) - 1)], 2), "tick_ms_max": round(ms[-1], 2)}


def build_node_telemetry(agent: Agent, now: float) -> NodeTelemetry:
    """Node health for `…/telemetry/node`: host metrics, rates, outbox, watchdog counters."""
    h = agent.host.sample()
    counts = dict(agent.pipeline.counters()) if agent.pipeline is not None else {}
    dt = max(agent.opts.node_telemetry_s, 1e-3)
    rates = {k: round((v - agent.last_counts.get(k, 0)) / dt, 2) for k, v in counts.items()}
    agent.last_counts = counts
    watchdogs: dict[str, dict[str, int | float | str]] = {
        "mqtt": dict(agent.link.stats()),
        "outbox": {**agent.outbox.counters, "depth": agent.outbox.depth(),
                   "oldest_age_s": round(agent.outbox.oldest_age(now), 2)},
        "agent": {**agent.counters, "obs_queue": agent.obs.qsize(), "tick_lag_max_ms": round(agent.max_lag_ms, 1),
                  **agent.tick_times.summary()},
    }
    if agent.pipeline is not None and (null := agent.pipeline.breach_null()):
        watchdogs["breach_null"] = dict(null)  # the breach threshold's scale on this site (docs/bands.md)
    if agent.learned is not None and (learned := agent.learned.stats()):
        watchdogs["learned_state"] = learned  # restored or why not, saves (docs/reliability.md)
    if agent.recorder is not None:
        watchdogs["recorder"] = dict(agent.recorder.stats())
    for src in agent.sources:
        watchdogs[f"source:{src.receiver_id}"] = safe_stats(src)
    cams: dict[str, CameraHealth] = {}
    for cam_id, worker in agent.cameras.items():
        st = safe_stats(worker)
        watchdogs[f"camera:{cam_id}"] = st
        cams[cam_id] = CameraHealth(
            online=bool(st.get("online", False)), fps_in=max(0.0, float(st.get("fps_in", 0.0))),
            fps_proc=max(0.0, float(st.get("fps_proc", 0.0))), skipped=max(0, int(st.get("skipped", 0))),
            reconnects=max(0, int(st.get("reconnects", 0))))
    return NodeTelemetry.model_validate({
        "schema": "qwatch.node/1", "ts": now, "boot_id": agent.boot_id,
        "uptime_s": round(time.monotonic() - agent.started_mono, 1), "cpu_pct": h.cpu_pct,
        "mem_rss_mb": h.mem_rss_mb, "mem_pct": h.mem_pct, "disk_free_mb": h.disk_free_mb, "temp_c": h.temp_c,
        "adverts_per_s": rates, "outbox_depth": agent.outbox.depth(),
        "telemetry_dropped": int(agent.link.counters.get("telemetry_dropped", 0)),
        "health_errors": [e[:1000] for e in agent.health.as_list()[:64]], "cameras": cams, "watchdogs": watchdogs,
        "config_version": agent.config_version,
        "receivers": agent.pipeline.receivers(now) if agent.pipeline is not None else {},
    })


def safe_stats(obj: Any) -> dict[str, int | float | str]:
    try:
        return {str(k)[:64]: v[:500] if isinstance(v, str) else v for k, v in obj.stats().items()
                if isinstance(v, int | float | str) and not (isinstance(v, float) and not math.isfinite(v))}
    except Exception as exc:
        return {"stats_error": f"{type(exc).__name__}: {exc}"}
