"""The ingest's VictoriaMetrics write path, end to end: band telemetry → line protocol → HTTP → stored.

Target (issue 13): ≥ 100,000 band points/s per core of the ingest, including the HTTP write.

What runs, in this process: ``--messages`` band telemetry messages of ``--bands`` bands each, parsed
from JSON as the ingest parses them (not timed: the parse is the ingest's message path, measured by
bench.cloud_load), then timed: ``cloud.timeseries.band_lines`` for each message and
``TelemetryWriter.submit`` (its thread batches them and POSTs to a real VictoriaMetrics, a child
process), until the writer has every line written. "Per core" is the points divided by this
process's CPU time (user + system, all threads); VictoriaMetrics' own CPU is reported beside it.
The stored sample count is checked against VictoriaMetrics' ``vm_rows_inserted_total``.

The baseline in the same run: the same lines built with influxdb-client ``Point`` objects
(``band_lines_point``) and written the same way.

    nice -n 5 .venv/bin/python -m bench.timeseries_write [--messages 2000] [--bands 100]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cloud.timeseries import TelemetryWriter, band_lines, band_lines_point
from devtools.services import ServiceProcess, start_victoria_metrics
from protocols.payloads import BandState, BandTelemetry, parse_payload

console = Console(width=220)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def messages(n: int, bands: int, seed: int = 1) -> list[BandTelemetry]:
    """n messages of one site's node, each with ``bands`` bands, parsed from their JSON."""
    rng = random.Random(seed)
    t0 = time.time() - n
    pos = {b: [rng.uniform(0, 40), rng.uniform(0, 20)] for b in range(1001, 1001 + bands)}
    out = []
    for i in range(n):
        ts = t0 + i
        states = []
        for b, p in pos.items():
            p[0] += rng.gauss(0, 0.5)
            p[1] += rng.gauss(0, 0.5)
            states.append(BandState(band=b, ts=round(ts - rng.uniform(0, 1), 3), x=round(p[0], 2), y=round(p[1], 2),
                                    err_m=round(rng.uniform(1, 4), 2), zone="block-a", rssi=round(rng.gauss(-72, 6), 1),
                                    rx_count=rng.randint(2, 6), battery=80, temp_c=round(rng.gauss(36.6, 0.2), 2),
                                    flags=0))
        raw = BandTelemetry(ts=ts, bands=states).model_dump_json(by_alias=True)
        out.append(parse_payload(BandTelemetry, raw))
    return out


def vm_rows(vm: ServiceProcess) -> int:
    with urllib.request.urlopen(f"{vm.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("vm_rows_inserted_total"))


def vm_cpu_s(vm: ServiceProcess) -> float:
    with open(f"/proc/{vm.pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def run_path(vm: ServiceProcess, work: Path, msgs: list[BandTelemetry],
             build: Callable[[str, str, BandTelemetry], list[str]]) -> dict[str, float]:
    writer = TelemetryWriter(vm.url, work / f"spool-{time.monotonic_ns()}")
    writer.start()
    rows0, vcpu0 = vm_rows(vm), vm_cpu_s(vm)
    total = 0
    c0, w0 = time.process_time(), time.perf_counter()
    for m in msgs:
        lines = build("bench-site", "edge-01", m)
        total += len(lines)
        while not writer.submit(lines):  # the queue is full: wait for the writer, as the ingest would shed
            time.sleep(0.001)
    while writer.counts["lines_written"] < total:
        if writer.counts["lines_spooled"] or writer.counts["lines_rejected"]:
            raise SystemExit(f"writer failed: {writer.stats()}")
        time.sleep(0.001)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    writer.stop()
    time.sleep(0.5)
    return {"points": total, "cpu_s": cpu, "wall_s": wall, "vm_cpu_s": vm_cpu_s(vm) - vcpu0,
            "samples": vm_rows(vm) - rows0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--bands", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3, help="alternate the two paths this many times; best run kept")
    args = p.parse_args(argv)
    load0 = os.getloadavg()[0]
    msgs = messages(args.messages, args.bands)
    work = Path(tempfile.mkdtemp(prefix="qwatch-tsw-"))
    vm = start_victoria_metrics(work / "vm")
    results: dict[str, list[dict[str, float]]] = {"strings (band_lines)": [], "influxdb-client Point (baseline)": []}
    try:
        for _ in range(args.repeat):
            results["strings (band_lines)"].append(run_path(vm, work, msgs, band_lines))
            results["influxdb-client Point (baseline)"].append(run_path(vm, work, msgs, band_lines_point))
    finally:
        vm.stop()
        shutil.rmtree(work, ignore_errors=True)
    t = Table(title=f"{args.messages} messages × {args.bands} bands into VictoriaMetrics (best of {args.repeat})")
    for col in ("path", "points", "samples stored", "client CPU s", "points/s per core", "wall s", "VM CPU s",
                "ratio"):
        t.add_column(col, justify="right")
    best = {k: min(v, key=lambda r: r["cpu_s"]) for k, v in results.items()}
    base = best["influxdb-client Point (baseline)"]
    for name, r in best.items():
        t.add_row(name, f"{r['points']:.0f}", f"{r['samples']:.0f}", f"{r['cpu_s']:.2f}",
                  f"{r['points'] / r['cpu_s']:,.0f}", f"{r['wall_s']:.2f}", f"{r['vm_cpu_s']:.2f}",
                  f"{(r['points'] / r['cpu_s']) / (base['points'] / base['cpu_s']):.2f}×")
    console.print(t)
    console.print(f"load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
