"""Band telemetry → line protocol, the ingest's VictoriaMetrics write path: points per second on one core.

Compares, in the same run and on the same messages, ``cloud.timeseries.band_lines`` (strings built
directly) with ``band_lines_point`` (influxdb-client ``Point`` objects, the previous implementation).
One point = one band line. Only the line building is timed (the HTTP write is batched and the same
for both).

Run: ``nice -n 5 .venv/bin/python -m bench.timeseries_lines [--messages 400] [--bands 50] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from cloud.timeseries import band_lines, band_lines_point
from protocols.payloads import BandTelemetry


def _messages(n: int, bands: int) -> list[BandTelemetry]:
    rng = random.Random(7)
    out = []
    for m in range(n):
        rows = [{"band": 1000 + m * bands + i, "ts": 1.7e9 + m, "x": rng.uniform(0, 80), "y": rng.uniform(0, 40),
                 "err_m": rng.uniform(1, 9), "zone": rng.choice(["block-a", "yard", None]),
                 "rssi": float(rng.randint(-95, -45)), "rx_count": rng.randint(1, 6), "battery": rng.randint(5, 100),
                 "temp_c": round(rng.uniform(35.5, 38.5), 1), "flags": 0} for i in range(bands)]
        out.append(BandTelemetry.model_validate({"schema": "qwatch.bands/1", "ts": 1.7e9 + m, "bands": rows}))
    return out


def _rate(build: Callable[[str, str, BandTelemetry], list[str]], msgs: list[BandTelemetry], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        t0 = time.process_time()  # CPU time of this process: the question is points per core-second
        n = sum(len(build("kg-rachgia-01", "edge-01", m)) for m in msgs)
        best = max(best, n / max(time.process_time() - t0, 1e-9))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--bands", type=int, default=50, help="bands per message")
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    args = ap.parse_args()
    msgs = _messages(args.messages, args.bands)
    assert all(band_lines("s", "n", m) == band_lines_point("s", "n", m) for m in msgs[:20])
    point = _rate(band_lines_point, msgs, args.repeat)
    strings = _rate(band_lines, msgs, args.repeat)
    t = Table(title=f"Band line protocol: {args.messages} messages x {args.bands} bands, best of {args.repeat}")
    for col in ("builder", "points/s per core", "vs Point"):
        t.add_column(col, justify="right")
    t.add_row("influxdb-client Point", f"{point:,.0f}", "1.00x")
    t.add_row("strings (band_lines)", f"{strings:,.0f}", f"{strings / point:.2f}x")
    Console().print(t)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
