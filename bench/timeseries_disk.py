"""VictoriaMetrics disk per 1,000 bands per month, measured on a known number of band points.

Writes ``--bands`` bands × ``--hours`` hours of 1 Hz band telemetry (what ``…/telemetry/bands``
carries once a second: random-walk positions with 2 decimals, err_m, RSSI with 1 decimal, rx_count,
battery, skin temperature in hundredths, flags; each band's own advert time in ms) through
``cloud.timeseries`` into a fresh VictoriaMetrics, forces a flush, waits for background merges to
settle, and measures the data directory (``du``-style: allocated blocks of the ``data`` dir, the
index dir separately). Then extrapolates linearly to 1,000 bands × 30 days, which assumes the
bytes per sample stay what a few hours showed (VictoriaMetrics compresses older parts no worse
after bigger merges, so this should err on the high side; it is an extrapolation, not a month's run).

``--dedup 10s`` starts VictoriaMetrics with ``-dedup.minScrapeInterval=10s`` (one sample per series per
10 s kept at merge time: the Debian build's way to thin old data; its downsampling flags are
Enterprise only) and compares in the same run.

    nice -n 5 .venv/bin/python -m bench.timeseries_disk [--bands 200] [--hours 2] [--dedup 10s]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cloud.timeseries import TelemetryWriter, band_lines
from devtools.services import ServiceProcess, flush_victoria_metrics, start_victoria_metrics
from protocols.payloads import BandState, BandTelemetry

console = Console(width=220)
MONTH_S = 30 * 86400


def du(path: Path) -> int:
    """Allocated bytes under ``path`` (st_blocks, as du counts them)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def band_series(bands: int, seconds: int, seed: int = 7) -> Iterator[BandTelemetry]:
    """One message per second for ``bands`` bands, values as the edge pipeline rounds them."""
    rng = random.Random(seed)
    t0 = float(int(time.time()) - seconds)
    pos = {b: [rng.uniform(0, 40), rng.uniform(0, 20)] for b in range(1001, 1001 + bands)}
    phase = {b: rng.uniform(0, 1) for b in pos}
    batt = {b: rng.randint(40, 100) for b in pos}
    for i in range(seconds):
        ts = t0 + i
        states = []
        for b, p in pos.items():
            p[0] = min(60.0, max(-20.0, p[0] + rng.gauss(0, 0.3)))
            p[1] = min(40.0, max(-20.0, p[1] + rng.gauss(0, 0.3)))
            if rng.random() < 1e-4:
                batt[b] = max(0, batt[b] - 1)
            states.append(BandState(
                band=b, ts=round(ts + phase[b] + rng.uniform(-0.01, 0.01) - 1, 3),
                x=round(p[0] + rng.gauss(0, 1.0), 2), y=round(p[1] + rng.gauss(0, 1.0), 2),
                err_m=round(rng.uniform(1, 4), 2), zone="block-a", rssi=round(rng.gauss(-72, 6), 1),
                rx_count=rng.randint(2, 6), battery=batt[b], temp_c=round(rng.gauss(36.6, 0.15), 2),
                flags=8 if rng.random() < 0.3 else 0))
        yield BandTelemetry(ts=ts, bands=states)


def ingest(vm: ServiceProcess, work: Path, msgs: Iterable[BandTelemetry]) -> tuple[int, int]:
    writer = TelemetryWriter(vm.url, work / "spool", batch_lines=20_000)
    writer.start()
    total = samples = 0
    for m in msgs:
        lines = band_lines("disk-site", "edge-01", m)
        total += len(lines)
        samples += sum(line.split(" ", 2)[1].count(",") + 1 for line in lines)
        while not writer.submit(lines):
            time.sleep(0.005)
    while writer.counts["lines_written"] < total:
        if writer.counts["lines_spooled"]:
            raise SystemExit(f"writer spooled: {writer.stats()}")
        time.sleep(0.05)
    writer.stop()
    return total, samples


def series_count(vm: ServiceProcess) -> int:
    q = urllib.parse.quote('count({__name__=~"band_.+"})')
    with urllib.request.urlopen(f"{vm.url}/api/v1/query?query={q}", timeout=10) as resp:
        return int(json.loads(resp.read())["data"]["result"][0]["value"][1])


def measure(work: Path, bands: int, seconds: int, dedup: str | None) -> dict[str, float]:
    extra = [f"-dedup.minScrapeInterval={dedup}"] if dedup else []
    vm = start_victoria_metrics(work, retention="100y", extra_args=extra)
    try:
        points, samples = ingest(vm, work, band_series(bands, seconds))
        flush_victoria_metrics(vm.url)
        time.sleep(5)  # let the in-memory parts' merges finish
        flush_victoria_metrics(vm.url)
        data = work / "vm-data"
        # The data and index directories only: the cache directory is rebuilt from them.
        sizes = {"data": du(data / "data"), "indexdb": du(data / "indexdb")}
        sizes["total"] = sizes["data"] + sizes["indexdb"]
        n_series = series_count(vm)
    finally:
        vm.stop()
    # Stopping VictoriaMetrics merges what is left; measure again after the stop too.
    after_stop = du(work / "vm-data" / "data") + du(work / "vm-data" / "indexdb")
    month = max(sizes["total"], after_stop) / (bands * seconds) * 1000 * MONTH_S
    return {"points": points, "samples": samples, "series": n_series, "total": sizes["total"],
            "data": sizes["data"], "index": sizes["indexdb"], "after_stop": after_stop,
            "bytes_per_sample": max(sizes["total"], after_stop) / samples, "month_gb_per_1000": month / 1e9}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bands", type=int, default=200)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--dedup", default="10s", help="also measure with this -dedup.minScrapeInterval ('' to skip)")
    args = p.parse_args(argv)
    seconds = int(args.hours * 3600)
    rows = []
    for dedup in [None, *([args.dedup] if args.dedup else [])]:
        work = Path(tempfile.mkdtemp(prefix="qwatch-tsdisk-"))
        try:
            rows.append((dedup or "none (1 Hz kept)", measure(work, args.bands, seconds, dedup)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    t = Table(title=f"{args.bands} bands × {args.hours:g} h at 1 Hz into VictoriaMetrics, then ×1000 bands × 30 days")
    for col in ("dedup", "band points", "samples", "series", "on disk MB (data / index)", "after stop MB",
                "bytes/sample", "GB per 1,000 bands per 30 days (extrapolated)"):
        t.add_column(col, justify="right")
    for name, r in rows:
        t.add_row(name, f"{r['points']:.0f}", f"{r['samples']:.0f}", f"{r['series']:.0f}",
                  f"{r['total'] / 1e6:.1f} ({r['data'] / 1e6:.1f} / {r['index'] / 1e6:.1f})",
                  f"{r['after_stop'] / 1e6:.1f}",
                  f"{r['bytes_per_sample']:.2f}", f"{r['month_gb_per_1000']:.1f}")
    console.print(t)
    console.print(f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
