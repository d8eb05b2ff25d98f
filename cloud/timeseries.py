"""Band and node telemetry into VictoriaMetrics: line protocol, a writer thread, an on-disk spool.

Telemetry is written through ``influxdb-client`` to VictoriaMetrics' InfluxDB v2 endpoint
(``/api/v2/write``). VictoriaMetrics stores a string *field* as 0, so every string (site, node,
band, zone, outcome, camera) is a *tag*, and only numbers are fields. VictoriaMetrics names a
series ``{measurement}_{field}``: ``band_x{band="1001",site=…,node=…,zone=…}``.

When VictoriaMetrics is down or slow, batches go to an on-disk spool (one file per batch, named
by sequence number) with a cap on the number of batches; past the cap the oldest batch is
dropped and the loss counted. While the spool is non-empty every new batch is spooled too, so
batches reach VictoriaMetrics in the order they arrived.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections import Counter
from pathlib import Path

# Imported from their defining modules: the package's __init__ re-exports them implicitly only.
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from protocols.payloads import BandTelemetry, NodeTelemetry

log = logging.getLogger("qwatch.cloud.timeseries")

BAND_FIELDS = ("x", "y", "err_m", "rssi", "rx_count", "battery", "temp_c", "flags")
NODE_FIELDS = ("uptime_s", "cpu_pct", "mem_rss_mb", "mem_pct", "disk_free_mb", "temp_c", "outbox_depth",
               "telemetry_dropped")


def _ms(ts: float) -> int:
    return round(ts * 1000)


_ESCAPE_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})




def _tag(value: str) -> str:
    """A tag value escaped as influxdb-client does (IDs never need it: their pattern has no , = or space)."""
    out = value.translate(_ESCAPE_TAG)
    return out + " " if out.endswith("\\") else out


def _num(value: float) -> str | None:
    """A float field value as influxdb-client writes it (``3`` for 3.0), or None when not finite."""
    if not math.isfinite(value):
        return None
    s = str(value)
    return s[:-2] if s.endswith(".0") else s


def _float(value: float) -> str | None:
    """_num for a value already known to be a float (the hot path skips the conversion)."""
    s = repr(value)
    if s[-2:] == ".0":
        return s[:-2]
    return None if s in ("nan", "inf", "-inf") else s


def band_lines(site: str, node: str, tel: BandTelemetry) -> list[str]:
    """Line protocol for one band telemetry message (one line per band).

    The hot path of the ingest's VictoriaMetrics writes (every band, every second), so the lines are
    built as strings, byte for byte what influxdb-client's ``Point`` builds (tests compare the two),
    at several times its speed (bench/timeseries_lines.py). Fields are written in name order, as
    ``Point`` does; the integer fields (battery, flags, rx_count) print as Point prints their float.
    """
    out: list[str] = []
    append = out.append
    tail = f",node={_tag(node)},site={_tag(site)}"
    f = _float
    for b in tel.bands:
        head = f"band,band={b.band}{tail}" if b.zone is None else f"band,band={b.band}{tail},zone={_tag(b.zone)}"
        if not (b.battery is None or b.err_m is None or b.rssi is None or b.temp_c is None or b.x is None
                or b.y is None):
            # The common case, every field present: one f-string, and Point's "3.0" -> "3" done by one replace
            # (repr never ends a float's digits in 0 otherwise; a trailing comma makes every field end in ",").
            fields = (f"battery={b.battery},err_m={b.err_m!r},flags={b.flags},rssi={b.rssi!r},"
                      f"rx_count={b.rx_count},temp_c={b.temp_c!r},x={b.x!r},y={b.y!r},").replace(".0,", ",")
            if "nan" not in fields and "inf" not in fields:  # validated telemetry never has them: else below
                append(f"{head} {fields[:-1]} {round(b.ts * 1000)}")
                continue
        parts = [] if b.battery is None else [f"battery={b.battery}"]
        if b.err_m is not None and (s := f(b.err_m)) is not None:
            parts.append("err_m=" + s)
        parts.append(f"flags={b.flags}")
        if b.rssi is not None and (s := f(b.rssi)) is not None:
            parts.append("rssi=" + s)
        parts.append(f"rx_count={b.rx_count}")
        if b.temp_c is not None and (s := f(b.temp_c)) is not None:
            parts.append("temp_c=" + s)
        if b.x is not None and (s := f(b.x)) is not None:
            parts.append("x=" + s)
        if b.y is not None and (s := f(b.y)) is not None:
            parts.append("y=" + s)
        append(f"{head} {','.join(parts)} {round(b.ts * 1000)}")
    return out


def band_lines_point(site: str, node: str, tel: BandTelemetry) -> list[str]:
    """The same lines through influxdb-client's ``Point``: the reference of tests and the benchmark."""
    out = []
    for b in tel.bands:
        p = Point("band").tag("site", site).tag("node", node).tag("band", str(b.band))
        if b.zone is not None:
            p = p.tag("zone", b.zone)
        for name in BAND_FIELDS:
            value = getattr(b, name)
            if value is not None:
                p = p.field(name, float(value))
        line = p.time(_ms(b.ts), WritePrecision.MS).to_line_protocol()
        if line:
            out.append(line)
    return out


_ESCAPE_KEY = _ESCAPE_TAG  # influxdb-client escapes field keys as tag values (without the trailing-\ rule)


def _line(measurement: str, tags: list[tuple[str, str]], fields: dict[str, float], t_ms: int) -> str:
    """One line as influxdb-client's ``Point`` writes it: tags and fields in name order, empty tag values
    and non-finite fields left out, and no line at all without a field."""
    head = measurement + "".join(f",{k}={_tag(v)}" for k, v in sorted(tags) if v != "")
    body = ",".join(f"{k.translate(_ESCAPE_KEY)}={text}" for k, v in sorted(fields.items())
                    if (text := _num(v)) is not None)
    return f"{head} {body} {t_ms}" if body else ""


def node_lines(site: str, node: str, tel: NodeTelemetry) -> list[str]:
    """Line protocol for one node health message: health, adverts by outcome, cameras, watchdogs.

    Strings, byte for byte what ``node_lines_point`` builds with influxdb-client's ``Point`` (tested)."""
    t = _ms(tel.ts)
    base = [("node", node), ("site", site)]
    fields = {name: float(v) for name in NODE_FIELDS if (v := getattr(tel, name)) is not None}
    fields["health_errors"] = float(len(tel.health_errors))
    lines = [_line("node", base, fields, t)]
    for outcome, rate in tel.adverts_per_s.items():
        lines.append(_line("adverts", [*base, ("outcome", outcome)], {"per_s": float(rate)}, t))
    for cam, h in tel.cameras.items():
        lines.append(_line("camera", [*base, ("camera", cam)],
                           {"online": float(h.online), "fps_in": h.fps_in, "fps_proc": h.fps_proc,
                            "skipped": float(h.skipped), "reconnects": float(h.reconnects)}, t))
    for loop, counters in tel.watchdogs.items():
        numeric = {k: float(v) for k, v in counters.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if numeric:
            lines.append(_line("watchdog", [*base, ("loop", loop)], numeric, t))
    return [line for line in lines if line]


def node_lines_point(site: str, node: str, tel: NodeTelemetry) -> list[str]:
    """The same lines through influxdb-client's ``Point``: the reference of tests."""
    t = _ms(tel.ts)
    base = Point("node").tag("site", site).tag("node", node)
    for name in NODE_FIELDS:
        value = getattr(tel, name)
        if value is not None:
            base = base.field(name, float(value))
    base = base.field("health_errors", float(len(tel.health_errors)))
    lines = [base.time(t, WritePrecision.MS).to_line_protocol()]
    for outcome, rate in tel.adverts_per_s.items():
        lines.append(Point("adverts").tag("site", site).tag("node", node).tag("outcome", outcome)
                     .field("per_s", float(rate)).time(t, WritePrecision.MS).to_line_protocol())
    for cam, h in tel.cameras.items():
        lines.append(Point("camera").tag("site", site).tag("node", node).tag("camera", cam)
                     .field("online", float(h.online)).field("fps_in", h.fps_in).field("fps_proc", h.fps_proc)
                     .field("skipped", float(h.skipped)).field("reconnects", float(h.reconnects))
                     .time(t, WritePrecision.MS).to_line_protocol())
    for loop, counters in tel.watchdogs.items():
        p = Point("watchdog").tag("site", site).tag("node", node).tag("loop", loop)
        numeric = {k: v for k, v in counters.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for k, v in numeric.items():
            p = p.field(k, float(v))
        if numeric:
            lines.append(p.time(t, WritePrecision.MS).to_line_protocol())
    return [line for line in lines if line]


class Spool:
    """Batches of line protocol on disk, oldest first, at most ``max_batches`` (oldest dropped)."""

    def __init__(self, directory: Path, *, max_batches: int = 5000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_batches = max_batches
        self.dropped_batches = 0
        self.dropped_lines = 0
        self._files = sorted(self.dir.glob("*.lp"))
        self._next = int(self._files[-1].stem) + 1 if self._files else 0
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._files)

    def push(self, lines: list[str]) -> None:
        """Append one batch durably (write, fsync, rename)."""
        path = self.dir / f"{self._next:012d}.lp"
        self._next += 1
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(lines))
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
        self._files.append(path)
        while len(self._files) > self.max_batches:
            victim = self._files.pop(0)
            self.dropped_batches += 1
            self.dropped_lines += self._count_lines(victim)
            victim.unlink(missing_ok=True)

    @staticmethod
    def _count_lines(path: Path) -> int:
        try:
            return path.read_text().count("\n") + 1
        except OSError:
            return 0

    def peek(self) -> list[str] | None:
        """The oldest batch, or None when empty."""
        while self._files:
            try:
                return self._files[0].read_text().split("\n")
            except OSError:
                self._files.pop(0)
        return None

    def pop(self) -> None:
        """Remove the oldest batch (after it was written)."""
        if self._files:
            self._files.pop(0).unlink(missing_ok=True)


class TelemetryWriter:
    """A thread that batches telemetry lines into VictoriaMetrics, spooling while it is away."""

    def __init__(
        self,
        vm_url: str,
        spool_dir: Path,
        *,
        max_spool_batches: int = 5000,
        queue_lines: int = 200_000,
        batch_lines: int = 5000,
        flush_s: float = 0.5,
        timeout_ms: int = 3000,
        retry_s: float = 1.0,
    ) -> None:
        self.vm_url = vm_url.rstrip("/")
        self.spool = Spool(spool_dir, max_batches=max_spool_batches)
        self.batch_lines = batch_lines
        self.flush_s = flush_s
        self.retry_s = retry_s
        self.counts: Counter[str] = Counter({k: 0 for k in (
            "lines_queued", "lines_written", "lines_spooled", "lines_replayed", "lines_shed_queue_full",
            "lines_rejected", "lines_lost_spool_error", "write_errors", "batches_written")})
        self.last_error: str | None = None
        self.vm_up: bool | None = None
        self.last_loop = time.monotonic()
        self._q: queue.Queue[list[str]] = queue.Queue(maxsize=max(1, queue_lines // 50))
        self._stop = threading.Event()
        self._client = InfluxDBClient(url=self.vm_url, token="unused", org="qwatch", timeout=timeout_ms)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._thread = threading.Thread(target=self._run, name="vm-writer", daemon=True)
        self._next_retry = 0.0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued (to VM or to the spool) and stop."""
        self._stop.set()
        self._thread.join(timeout)
        self._client.close()

    def submit(self, lines: list[str]) -> bool:
        """Queue lines from one message; False (and counted) if the in-memory queue is full."""
        if not lines:
            return True
        try:
            self._q.put_nowait(lines)
            self.counts["lines_queued"] += len(lines)
            return True
        except queue.Full:
            self.counts["lines_shed_queue_full"] += len(lines)
            return False

    def stats(self) -> dict[str, int | float | str | bool | None]:
        """Counters for /healthz and node of the cloud's own watchdog."""
        return {
            **self.counts,
            "spool_batches": len(self.spool),
            "spool_dropped_batches": self.spool.dropped_batches,
            "spool_dropped_lines": self.spool.dropped_lines,
            "queue_depth": self._q.qsize(),
            "vm_up": self.vm_up,
            "last_error": self.last_error,
            "loop_age_s": round(time.monotonic() - self.last_loop, 3),
        }

    def _collect(self) -> list[str]:
        batch: list[str] = []
        deadline = time.monotonic() + self.flush_s
        while len(batch) < self.batch_lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.extend(self._q.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            self.last_loop = time.monotonic()
            stopping = self._stop.is_set()
            batch = self._collect() if not stopping else self._drain_queue()
            if batch and (len(self.spool) or not self._send(batch)):
                self._spool(batch)
            self._replay_spool()
            if stopping:
                return

    def _drain_queue(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                out.extend(self._q.get_nowait())
            except queue.Empty:
                return out

    def _spool(self, batch: list[str]) -> None:
        try:
            self.spool.push(batch)
            self.counts["lines_spooled"] += len(batch)
        except OSError as exc:
            self.counts["lines_lost_spool_error"] += len(batch)
            log.error("event=spool_error error=%s lines=%d", exc, len(batch))

    def _replay_spool(self) -> None:
        while len(self.spool) and time.monotonic() >= self._next_retry:
            self.last_loop = time.monotonic()
            batch = self.spool.peek()
            if batch is None:
                return
            if not self._send(batch):
                return
            self.counts["lines_replayed"] += len(batch)
            self.spool.pop()

    def _send(self, batch: list[str]) -> bool:
        if time.monotonic() < self._next_retry:
            return False
        try:
            # influxdb-client annotates write_precision as str, but documents and accepts the enum.
            self._write.write(bucket="qwatch", org="qwatch", record="\n".join(batch),
                              write_precision=WritePrecision.MS)  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                # VM refused the data itself: retrying would block the spool forever.
                self.counts["lines_rejected"] += len(batch)
                log.error("event=vm_rejected status=%s lines=%d body=%s", exc.status, len(batch),
                          str(exc.body)[:200])
                return True
            return self._failed(exc)
        except Exception as exc:  # any failure (refused, timeout, 5xx) means "spool and retry"
            return self._failed(exc)
        if self.vm_up is False:
            log.info("event=vm_up url=%s spool_batches=%d", self.vm_url, len(self.spool))
        self.vm_up = True
        self.counts["lines_written"] += len(batch)
        self.counts["batches_written"] += 1
        return True

    def _failed(self, exc: Exception) -> bool:
        self._next_retry = time.monotonic() + self.retry_s
        self.counts["write_errors"] += 1
        if self.vm_up is not False:
            log.warning("event=vm_down url=%s error=%s", self.vm_url, str(exc)[:200])
        self.vm_up = False
        self.last_error = str(exc)[:200]
        return False
