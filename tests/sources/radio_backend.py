"""A bleak scanner backend with a simulated radio, for driving the real `bleak.BleakScanner`.

`BleakScanner(..., backend=RadioBackend)` constructs this class exactly as it would the
BlueZ backend, with the same arguments. Each adapter name maps to a `SimRadio` that a
test controls from its own thread: queue start errors (as BlueZ raises them), make
passive scanning unsupported, inject adverts, hang a start, or silently stop delivering.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, ClassVar

from bleak.args.bluez import BlueZScannerArgs
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError

PASSIVE_UNSUPPORTED = (
    "passive scanning on Linux requires BlueZ >= 5.56 with --experimental enabled and Linux kernel >= 5.10"
)


class SimRadio:
    """What one adapter does. Thread-safe: tests call it from the test thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start_errors: list[BaseException] = []
        self.passive_supported = True
        self.hang_next_start = False
        self.silent = False  # adverts are swallowed until the next successful start
        self.start_attempts: list[tuple[float, str, dict[str, Any]]] = []
        self.stops = 0
        self.active: RadioBackend | None = None

    def fail_next_starts(self, *errors: BaseException) -> None:
        """Queue exceptions that the next start() calls raise, in order."""
        with self.lock:
            self.start_errors.extend(errors)

    def go_silent(self) -> None:
        """The scan keeps 'running' but no advert arrives any more (a known BlueZ failure)."""
        with self.lock:
            self.silent = True

    def advertise(
        self, address: str, manufacturer_data: dict[int, bytes], rssi: int = -60
    ) -> bool:
        """Put one advert on the air. Returns True if a running, non-silent scan will get it."""
        with self.lock:
            scanner = self.active
            if scanner is None or self.silent:
                return False
        scanner.loop.call_soon_threadsafe(scanner.deliver, address, dict(manufacturer_data), rssi)
        return True

    def on_start(self, scanner: RadioBackend) -> None:
        with self.lock:
            self.start_attempts.append((time.monotonic(), scanner.mode, dict(scanner.bluez)))
            if scanner.mode == "passive" and not self.passive_supported:
                raise BleakError(PASSIVE_UNSUPPORTED)
            if self.start_errors:
                raise self.start_errors.pop(0)
            self.silent = False
            self.active = scanner

    def on_stop(self, scanner: RadioBackend) -> None:
        with self.lock:
            self.stops += 1
            if self.active is scanner:
                self.active = None


class RadioBackend(BaseBleakScanner):
    """`BaseBleakScanner` whose radio is a `SimRadio` chosen by the `bluez.adapter` argument."""

    radios: ClassVar[dict[str, SimRadio]] = {}

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str,
        *,
        bluez: BlueZScannerArgs,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.mode = scanning_mode
        self.bluez = bluez
        self.radio = self.radios[bluez.get("adapter", "hci0")]
        # Same precondition as bleak's BlueZ backend.
        if scanning_mode == "passive" and not bluez.get("or_patterns"):
            raise BleakError("passive scanning mode requires bluez or_patterns")
        self.loop: asyncio.AbstractEventLoop  # set by start(); adverts are only delivered after it

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.seen_devices = {}
        if self.radio.hang_next_start:
            self.radio.hang_next_start = False
            await asyncio.sleep(3600)  # a D-Bus call that never returns
        self.radio.on_start(self)

    async def stop(self) -> None:
        self.radio.on_stop(self)

    def deliver(self, address: str, manufacturer_data: dict[int, bytes], rssi: int) -> None:
        """Runs on the scanner's loop, like BlueZ's PropertiesChanged handler does."""
        if self.radio.active is not self:
            return
        if self.mode == "passive" and not self._matches_or_patterns(manufacturer_data):
            return  # BlueZ's advertisement monitor filters these in the controller/daemon
        adv = AdvertisementData(
            local_name=None,
            manufacturer_data=manufacturer_data,
            service_data={},
            service_uuids=[],
            tx_power=None,
            rssi=rssi,
            platform_data=(address, {}),
        )
        device = self.create_or_update_device(address, address, None, {"path": address}, adv)
        self.call_detection_callbacks(device, adv)

    def _matches_or_patterns(self, manufacturer_data: dict[int, bytes]) -> bool:
        for start, ad_type, content in self.bluez.get("or_patterns", []):
            if ad_type != 0xFF:
                continue
            for cid, payload in manufacturer_data.items():
                ad = cid.to_bytes(2, "little") + payload
                if ad[start : start + len(content)] == content:
                    return True
        return False
