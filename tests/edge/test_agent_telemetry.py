"""The agent's tick-time record reported in node telemetry (`watchdogs.agent.tick_ms_*`)."""

from __future__ import annotations

from edge.agent_telemetry import TickTimes


def test_tick_times_report_median_p99_and_max_of_the_kept_ticks() -> None:
    times = TickTimes(keep=200)
    assert times.summary() == {"tick_n": 0}
    for i in range(1000):  # only the last 200 are kept: 800 .. 999 ms
        times.add(i / 1000.0)
    s = times.summary()
    assert s["tick_n"] == 200
    assert s["tick_ms_p50"] == 900.0 and s["tick_ms_max"] == 999.0
    assert s["tick_ms_p99"] == 997.0  # the 198th of 200 sorted values: 1 % (2 ticks) lie above it
