"""Host side of the BLE scanner co-processor: keep the link up and turn ADV_REPORTs into adverts.

Open the port, identify the device (HELLO must say kind 1 = scanner, protocol 1), then read
the ADV_REPORT stream and parse each report's AD structures down to the manufacturer data.
An unplug surfaces as a serial error: the port is closed and reopened with exponential
backoff until the device is back. A device that stays silent is probed with HELLO; no
answer means it hung, and the link is reopened. Garbage and bad CRCs are dropped by the
frame decoder and counted. Nothing here blocks for long or raises into the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from firmware_interface.backoff import Backoff
from firmware_interface.link import KIND_SCANNER, DeviceLink, LinkError, LinkOptions
from protocols.advert import manufacturer_data
from protocols.errors import AdvertError, FrameError
from protocols.serial_frame import AdvReport, Frame, HelloReply, MsgType

log = logging.getLogger("qwatch.firmware_interface.scanner")

_BATCH_FRAMES = 16  # ~750 bytes of ADV_REPORTs


@dataclass(frozen=True, slots=True)
class ScannerOptions:
    """Reconnect and watchdog tuning."""

    link: LinkOptions = field(default_factory=LinkOptions)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    keepalive_s: float = 10.0  # silent this long: probe with HELLO; no answer means the device hung
    batch_s: float = 0.025  # after a read, wait this long so the next read takes several frames


@dataclass(frozen=True, slots=True)
class ScannedAdvert:
    """One advert from the scanner, reduced to what the observation stream needs (plus provenance)."""

    ts: float
    rssi: int
    company_id: int
    payload: bytes
    addr: bytes
    addr_type: int
    uptime_ms: int


class ScannerHost:
    """Keeps one scanner device connected in a background thread and reports its adverts."""

    def __init__(
        self,
        device: str,
        on_advert: Callable[[ScannedAdvert], None],
        *,
        options: ScannerOptions | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "",
    ) -> None:
        self.device = device
        self._on_advert = on_advert
        self._opt = options or ScannerOptions()
        self._clock = clock
        self._name = name or device
        self._backoff = Backoff(self._opt.backoff_initial_s, self._opt.backoff_max_s)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._link: DeviceLink | None = None
        self._closed_frame_errors: dict[str, int] = {}
        self._last_advert_mono = 0.0
        self.hello: HelloReply | None = None

    def start(self) -> None:
        """Start the connection thread."""
        if self._thread is not None:
            raise RuntimeError(f"scanner {self._name} already started")
        self._thread = threading.Thread(target=self._run, name=f"scanner-{self._name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the port. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def connected(self) -> bool:
        """True while a handshaken link is streaming."""
        return self._link is not None

    def stats(self) -> dict[str, int | float]:
        """Counters: connects, reopens, errors by reason, frames, frame errors by reason, adverts."""
        with self._lock:
            out: dict[str, int | float] = dict(self._counts)
            errors = dict(self._closed_frame_errors)
            link = self._link
        if link is not None:
            for reason, n in link.decoder.errors.items():
                errors[reason] = errors.get(reason, 0) + n
        for reason in ("crc", "cobs", "short", "too_long"):
            errors.setdefault(reason, 0)
        for reason, n in errors.items():
            out[f"frame_errors_{reason}"] = n
        out["frame_errors"] = sum(errors.values())
        for key in ("connects", "reopens", "adverts", "frames", "keepalives", "errors_open", "errors_disconnect",
                    "errors_handshake_timeout", "errors_wrong_device", "errors_stalled", "device_errors",
                    "unexpected_frames", "no_mfr_data", "callback_errors", "stale_frames"):
            out.setdefault(key, 0)
        out["connected"] = int(link is not None)
        out["last_advert_age_s"] = (
            round(time.monotonic() - self._last_advert_mono, 3) if self._last_advert_mono else -1.0
        )
        out["thread_alive"] = int(self._thread is not None and self._thread.is_alive())
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def _run(self) -> None:
        first = True
        while not self._stopping.is_set():
            if not first:
                self._count("reopens")
                self._stopping.wait(self._backoff.next_delay())
                if self._stopping.is_set():
                    break
            first = False
            try:
                self._session()
            except Exception:  # a bug in a session must not end the reconnect loop
                self._count("errors_internal")
                log.exception("device=%s event=session_crash", self._name)

    def _session(self) -> None:
        """One open → handshake → stream cycle. Returns when the link is lost or stop is requested."""
        try:
            link = DeviceLink.open(self.device, self._opt.link)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._count("errors_open")
            log.info("device=%s event=open_failed error=%r", self._name, str(exc)[:160])
            return
        streamed = False
        try:
            reply = link.hello(keep_others=False)
            self._count("stale_frames", link.discarded)
            if reply.kind != KIND_SCANNER:
                raise LinkError("wrong_device", f"device kind {reply.kind} is not a scanner (1)")
            self.hello = reply
            with self._lock:
                self._link = link
            self._count("connects")
            log.info("device=%s event=connected serial=%s fw=%r", self._name, reply.serial.hex(),
                     reply.fw_version)
            streamed = self._stream(link)
        except LinkError as exc:
            self._count(f"errors_{exc.reason}")
            log.warning("device=%s event=link_error reason=%s detail=%r", self._name, exc.reason, str(exc))
        except (serial.SerialException, OSError) as exc:
            # An unplugged USB CDC device shows up as EIO / "readiness to read but no data".
            self._count("errors_disconnect")
            log.warning("device=%s event=disconnected error=%r", self._name, str(exc)[:160])
        finally:
            with self._lock:
                self._link = None
                for reason, n in link.decoder.errors.items():
                    self._closed_frame_errors[reason] = self._closed_frame_errors.get(reason, 0) + n
            link.close()
        if streamed:
            self._backoff.reset()

    def _stream(self, link: DeviceLink) -> bool:
        """Read frames until stop or failure (raised). Returns True if any advert arrived."""
        got_any = False
        last_rx = time.monotonic()
        while not self._stopping.is_set():
            frames = link.read_frames()
            now = time.monotonic()
            if frames:
                last_rx = now
            for frame in frames:
                got_any |= self._handle(frame)
            if 0 < len(frames) < _BATCH_FRAMES and self._opt.batch_s > 0:
                # Let reports accumulate: per-wakeup overhead dominates at hundreds of adverts/s.
                # A full batch means a busy link: read on at once, the tty buffer is only ~4 KiB.
                self._stopping.wait(self._opt.batch_s)
            if now - last_rx > self._opt.keepalive_s:
                try:
                    link.hello()
                except LinkError as exc:
                    raise LinkError("stalled", f"silent for {self._opt.keepalive_s}s and {exc}") from None
                self._count("keepalives")
                last_rx = time.monotonic()
        return got_any

    def _handle(self, frame: Frame) -> bool:
        self._count("frames")
        if frame.type == MsgType.ADV_REPORT:
            return self._handle_report(frame)
        if frame.type == MsgType.ERROR:
            self._count("device_errors")
            code = frame.payload[0] if frame.payload else -1
            log.warning("device=%s event=device_error code=%d text=%r", self._name, code,
                        frame.payload[1:].decode("utf-8", "replace"))
        elif frame.type != MsgType.HELLO_REPLY:  # a late reply to a retried HELLO is harmless
            self._count("unexpected_frames")
        return False

    def _handle_report(self, frame: Frame) -> bool:
        try:
            report = AdvReport.from_payload(frame.payload)
            mfr = manufacturer_data(report.ad)
        except (FrameError, AdvertError) as exc:
            self._count(f"bad_report_{exc.reason}")
            return False
        if mfr is None:
            self._count("no_mfr_data")
            return False
        self._count("adverts")
        self._last_advert_mono = time.monotonic()
        adv = ScannedAdvert(self._clock(), report.rssi, mfr[0], mfr[1], report.addr, report.addr_type,
                            report.uptime_ms)
        try:
            self._on_advert(adv)
        except Exception:
            self._count("callback_errors")
            log.exception("device=%s event=callback_error", self._name)
        return True
