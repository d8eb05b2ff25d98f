"""Serial scanner path: host CPU per advert, end to end over a real pty, vs. decode-only baseline.

The firmware simulator runs as a child process (its CPU is not ours) and replays a generated
observation log at a fixed rate; the host (ScannerHost -> SerialSource -> RawObservation)
runs in this process. Baseline, measured in the same run: the same frames decoded in memory
(FrameDecoder + AdvReport + AD parsing + RawObservation), no I/O. Target: one receiver of a
500-band site (500 adverts/s) must cost a small fraction of a Pi 4 core (~3.5x this machine).

    .venv/bin/python -m bench.bands_serial_source [--rate 500] [--seconds 6]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edge.sources.serial_source import SerialSource
from firmware_interface.device import advert_address
from firmware_interface.link import LinkOptions
from firmware_interface.scanner import ScannerOptions
from protocols.advert import build_advertising_data, encode_status, manufacturer_data
from protocols.observation import RawObservation
from protocols.serial_frame import AdvReport, FrameDecoder, MsgType, encode_frame

PI4_FACTOR = 3.5
CID = 0xFFFF


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def make_log(path: Path, n: int, rate: float, bands: int = 500) -> list[bytes]:
    key = bytes(range(16))
    payloads = [encode_status(band_id=1 + i % bands, counter=i, key=key) for i in range(n)]
    with path.open("w") as fh:
        for i, p in enumerate(payloads):
            fh.write(RawObservation(1000.0 + i / rate, "rx-a", -60 - i % 30, CID, p).to_json_line() + "\n")
    return payloads


def baseline_us(payloads: list[bytes]) -> float:
    wire = b"".join(
        encode_frame(MsgType.ADV_REPORT, i & 0xFF,
                     AdvReport(i, -60, 1, advert_address(p), build_advertising_data(CID, p)).to_payload())
        for i, p in enumerate(payloads))
    out: list[RawObservation] = []
    t0 = time.perf_counter()
    dec = FrameDecoder()
    for start in range(0, len(wire), 4096):
        for frame in dec.feed(wire[start:start + 4096]):
            rep = AdvReport.from_payload(frame.payload)
            mfr = manufacturer_data(rep.ad)
            assert mfr is not None
            out.append(RawObservation(time.time(), "rx-a", rep.rssi, mfr[0], mfr[1]))
    elapsed = time.perf_counter() - t0
    assert len(out) == len(payloads)
    return elapsed / len(payloads) * 1e6


def run_host(log: Path, n: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "tty"
        proc = subprocess.Popen([sys.executable, "-m", "devtools.firmware_sim", "scanner", "--log",
                                 str(log), "--link", str(link)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
        got = 0
        first: list[float] = []
        last: list[float] = [0.0, 0.0]

        def sink(obs: RawObservation) -> None:
            nonlocal got
            now = (time.perf_counter(), cpu_s())
            if not first:
                first.extend(now)  # adverts queued before the handshake are dropped by design
            got += 1
            last[:] = now

        src = SerialSource("rx-a", device=str(link), company_id=CID,
                           options=ScannerOptions(link=LinkOptions(read_timeout_s=0.02)))
        src.start(sink)
        deadline = time.monotonic() + seconds * 2 + 10
        seen = -1
        while time.monotonic() < deadline and (got == 0 or got != seen):
            seen = got
            time.sleep(1.0)  # finished when nothing new arrived for a second
        wall, cpu = last[0] - first[0], last[1] - first[1]
        stats = src.stats()
        src.stop()
        proc.terminate()
        proc.wait(10)
    return {"received": got, "wall_s": wall, "cpu_s": cpu, "frame_errors": stats["frame_errors"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=500.0, help="adverts per second the scanner reports")
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "obs.jsonl"
        payloads = make_log(log, n, args.rate)
        base = baseline_us(payloads)
        res = run_host(log, n, args.seconds)
    per_adv = res["cpu_s"] / max(res["received"], 1) * 1e6
    table = Table(title=f"Serial scanner host, {args.rate:.0f} adverts/s over a pty ({os.cpu_count()} CPUs)")
    for col in ("measure", "value"):
        table.add_column(col)
    rows = [
        ("adverts sent / received", f"{n} / {res['received']:.0f}"),
        ("frame errors", f"{res['frame_errors']:.0f}"),
        ("host throughput, adverts/s", f"{res['received'] / res['wall_s']:.0f}"),
        ("host CPU per advert (end to end), µs", f"{per_adv:.1f}"),
        ("baseline: in-memory decode per advert, µs", f"{base:.1f}"),
        ("ratio host / baseline", f"{per_adv / base:.1f}x"),
        ("one core at 500 adverts/s (this machine)", f"{500 * per_adv / 1e4:.1f} %"),
        (f"one Pi 4 core at 500 adverts/s (x{PI4_FACTOR})", f"{500 * per_adv * PI4_FACTOR / 1e4:.1f} %"),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
