"""BlueZ receiver through bleak: one adapter = one receiver, kept scanning no matter what BlueZ does.

Passive scanning with an advertisement-monitor or-pattern on our company ID is preferred:
the radio never sends scan requests and BlueZ filters foreign adverts. BlueZ only offers
it with `--experimental` (>= 5.56, kernel >= 5.10); elsewhere the first start fails and we
fall back, for the life of the source, to active scanning with `DuplicateData` so that
every advert (not just changed ones) reaches us.

Known BlueZ failure modes this survives: adapter missing (unplugged), `InProgress`,
`NotReady`, D-Bus or bluetoothd gone, and a scan that silently stops delivering adverts.
Start failures are retried with exponential backoff; silence longer than
`silence_restart_s` restarts the scan. Every restart and error is counted by reason in
`stats()`, which the agent publishes in node telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError

from edge.sources.base import Sink
from firmware_interface.backoff import Backoff
from protocols.observation import RawObservation

log = logging.getLogger("qwatch.edge.sources.bleak")

ScanMode = Literal["auto", "passive", "active"]

_DBUS_REASONS = {
    "org.bluez.Error.InProgress": "in_progress",
    "org.bluez.Error.NotReady": "not_ready",
    "org.bluez.Error.NotSupported": "passive_unsupported",
    "org.freedesktop.DBus.Error.UnknownMethod": "passive_unsupported",
    "org.freedesktop.DBus.Error.UnknownObject": "adapter_missing",
    "org.freedesktop.DBus.Error.ServiceUnknown": "dbus_gone",
    "org.freedesktop.DBus.Error.NameHasNoOwner": "dbus_gone",
    "org.freedesktop.DBus.Error.NoReply": "dbus_gone",
    "org.freedesktop.DBus.Error.Disconnected": "dbus_gone",
}
ERROR_REASONS = (
    "adapter_missing", "in_progress", "not_ready", "dbus_gone", "passive_unsupported",
    "bt_unavailable", "timeout", "other",
)


@dataclass(frozen=True, slots=True)
class BleakOptions:
    """Tuning of the scan watchdog. Defaults are for the field; tests shrink the times."""

    mode: ScanMode = "auto"
    silence_restart_s: float = 90.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    watchdog_period_s: float = 1.0
    start_timeout_s: float = 20.0
    stop_timeout_s: float = 5.0
    # BlueZ re-emits a device's cached ManufacturerData when only its RSSI property changes.
    # An identical payload from one address this long after we first saw it is such a
    # re-emit, not a new advert; forwarding it would look like a replay to the verifier.
    stale_repeat_s: float = 1.5


def classify_error(exc: BaseException) -> str:
    """Map an exception from starting a scan to a stable counter reason."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, BleakDBusError):
        return _DBUS_REASONS.get(exc.dbus_error, "other")
    if isinstance(exc, BleakBluetoothNotAvailableError):
        return "adapter_missing" if "No Bluetooth adapters" in str(exc) else "bt_unavailable"
    if isinstance(exc, BleakError):
        text = str(exc)
        if "passive scanning" in text:
            return "passive_unsupported"
        if "adapter" in text and "not found" in text:
            return "adapter_missing"
        return "other"
    if isinstance(exc, EOFError | ConnectionError | FileNotFoundError | BrokenPipeError):
        return "dbus_gone"
    return "other"


def or_pattern_for(company_id: int) -> OrPattern:
    """The advertisement-monitor pattern matching manufacturer data that starts with our company ID."""
    return OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, company_id.to_bytes(2, "little"))


class BleakSource:
    """An `ObservationSource` for one BlueZ adapter (`source: "bluez:hci0"`)."""

    def __init__(
        self,
        receiver_id: str,
        *,
        adapter: str,
        company_id: int,
        options: BleakOptions | None = None,
        backend: type[BaseBleakScanner] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rx = receiver_id
        self._adapter = adapter
        self._company_id = company_id
        self._opt = options or BleakOptions()
        self._backend = backend
        self._clock = clock
        self._passive = self._opt.mode != "active"
        self._backoff = Backoff(self._opt.backoff_initial_s, self._opt.backoff_max_s)
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._scanning = False
        self._last_advert_mono = time.monotonic()
        self._advert_seen_in_scan = False
        self._recent: dict[str, tuple[bytes, float]] = {}

    @property
    def receiver_id(self) -> str:
        """The receiver ID from the site config."""
        return self._rx

    def start(self, sink: Sink) -> None:
        """Start scanning in a dedicated thread with its own asyncio loop."""
        if self._thread is not None:
            raise RuntimeError(f"source {self._rx} already started")
        self._sink = sink
        self._thread = threading.Thread(target=self._thread_main, name=f"bleak-{self._rx}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the scan and join the thread. Idempotent."""
        self._stopping.set()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, int | float]:
        """Counters: adverts, restarts and errors by reason, scanning state, last-advert age."""
        with self._lock:
            out: dict[str, int | float] = dict(self._counts)
        for reason in ERROR_REASONS:
            out.setdefault(f"errors_{reason}", 0)
        for key in ("adverts", "foreign", "no_mfr_data", "stale_repeats", "sink_errors", "scan_starts",
                    "restarts", "restarts_silence", "restarts_error"):
            out.setdefault(key, 0)
        out["scanning"] = int(self._scanning)
        out["passive"] = int(self._passive)
        out["last_advert_age_s"] = round(time.monotonic() - self._last_advert_mono, 3)
        out["thread_alive"] = int(self._thread is not None and self._thread.is_alive())
        return out

    # -- internals -------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:  # a bug here must be visible, but must not take the agent down
            self._count("loop_crashes")
            log.exception("rx=%s adapter=%s event=loop_crash", self._rx, self._adapter)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stopping.is_set():
            return
        first = True
        while not self._stop_event.is_set():
            if not first:
                self._count("restarts")
            first = False
            outcome = await self._scan_once()
            if outcome == "stop":
                break
            self._count(f"restarts_{outcome}")
            # A silent scan is restarted at once (the 90 s wait was the delay); failed starts back off.
            await self._sleep(0.0 if outcome == "silence" else self._backoff.next_delay())
        self._scanning = False

    async def _scan_once(self) -> str:
        """Run one scan until silence or stop. Returns "silence", "error" or "stop"."""
        scanner = None
        try:
            scanner = self._make_scanner()
            await asyncio.wait_for(scanner.start(), self._opt.start_timeout_s)
        except Exception as exc:
            reason = classify_error(exc)
            self._count(f"errors_{reason}")
            log.warning("rx=%s adapter=%s event=scan_start_failed reason=%s passive=%d error=%r",
                        self._rx, self._adapter, reason, self._passive, str(exc)[:200])
            if reason == "passive_unsupported" and self._passive and self._opt.mode == "auto":
                self._passive = False  # fall back once, for the life of the source
                self._backoff.reset()
            if scanner is not None:
                await self._stop_scanner(scanner)
            return "error"
        self._count("scan_starts")
        self._scanning = True
        self._advert_seen_in_scan = False
        self._last_advert_mono = time.monotonic()
        log.info("rx=%s adapter=%s event=scan_started passive=%d", self._rx, self._adapter, self._passive)
        outcome = await self._watch()
        self._scanning = False
        if self._advert_seen_in_scan:
            self._backoff.reset()  # the stack proved healthy; the next failure retries quickly
        await self._stop_scanner(scanner)
        if outcome == "silence":
            log.warning("rx=%s adapter=%s event=scan_silent seconds=%.1f action=restart",
                        self._rx, self._adapter, self._opt.silence_restart_s)
        return outcome

    def _make_scanner(self) -> BleakScanner:
        bluez: BlueZScannerArgs = {"adapter": self._adapter}
        if self._passive:
            bluez["or_patterns"] = [or_pattern_for(self._company_id)]
            return BleakScanner(self._on_advert, scanning_mode="passive", bluez=bluez, backend=self._backend)
        bluez["filters"] = {"DuplicateData": True}
        return BleakScanner(self._on_advert, scanning_mode="active", bluez=bluez, backend=self._backend)

    async def _watch(self) -> str:
        assert self._stop_event is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), self._opt.watchdog_period_s)
            if self._stop_event.is_set():
                return "stop"
            if time.monotonic() - self._last_advert_mono > self._opt.silence_restart_s:
                return "silence"
            self._prune_recent()

    async def _stop_scanner(self, scanner: BleakScanner) -> None:
        try:
            await asyncio.wait_for(scanner.stop(), self._opt.stop_timeout_s)
        except Exception as exc:  # the scan is abandoned either way; a fresh scanner comes next
            self._count("errors_stop")
            log.info("rx=%s adapter=%s event=scan_stop_failed reason=%s",
                     self._rx, self._adapter, classify_error(exc))

    async def _sleep(self, seconds: float) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    def _prune_recent(self) -> None:
        horizon = time.monotonic() - 60.0
        if len(self._recent) > 256:
            self._recent = {a: v for a, v in self._recent.items() if v[1] >= horizon}

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """Detection callback, on the scan loop's thread. Must never raise into bleak."""
        now_mono = time.monotonic()
        self._last_advert_mono = now_mono
        self._advert_seen_in_scan = True
        payload = adv.manufacturer_data.get(self._company_id)
        if payload is None:
            self._count("foreign" if adv.manufacturer_data else "no_mfr_data")
            return
        payload = bytes(payload)
        prev = self._recent.get(device.address)
        if prev is not None and prev[0] == payload:
            if now_mono - prev[1] > self._opt.stale_repeat_s:
                self._count("stale_repeats")
                return
        else:
            self._recent[device.address] = (payload, now_mono)
        self._emit(RawObservation(self._clock(), self._rx, int(adv.rssi), self._company_id, payload))

    def _emit(self, obs: RawObservation) -> None:
        self._count("adverts")
        try:
            assert self._sink is not None
            self._sink(obs)
        except Exception:
            self._count("sink_errors")
            log.exception("rx=%s event=sink_error", self._rx)

