"""Serial scanner co-processor as an observation source (`source: "serial:/dev/ttyACM0"`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.sources.base import Sink
from firmware_interface.scanner import ScannedAdvert, ScannerHost, ScannerOptions
from protocols.observation import RawObservation

log = logging.getLogger("qwatch.edge.sources.serial")


class SerialSource:
    """An `ObservationSource` for one scanner device; the host keeps it connected across unplugs."""

    def __init__(
        self,
        receiver_id: str,
        *,
        device: str,
        company_id: int,
        options: ScannerOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rx = receiver_id
        self._company_id = company_id
        self._sink: Sink | None = None
        self._lock = threading.Lock()
        self._counts = {"foreign": 0, "sink_errors": 0}
        self._host = ScannerHost(device, self._on_advert, options=options, clock=clock, name=receiver_id)

    @property
    def receiver_id(self) -> str:
        """The receiver ID from the site config."""
        return self._rx

    def start(self, sink: Sink) -> None:
        """Connect (and keep reconnecting) in the scanner host's thread."""
        self._sink = sink
        self._host.start()

    def stop(self) -> None:
        """Stop the host thread and close the port. Idempotent."""
        self._host.stop()

    def stats(self) -> dict[str, int | float]:
        """The host's link counters plus adverts dropped here for a foreign company ID."""
        out = self._host.stats()
        with self._lock:
            out.update(self._counts)
        return out

    def _on_advert(self, adv: ScannedAdvert) -> None:
        if adv.company_id != self._company_id:
            with self._lock:
                self._counts["foreign"] += 1
            return
        assert self._sink is not None
        try:
            self._sink(RawObservation(adv.ts, self._rx, adv.rssi, adv.company_id, adv.payload))
        except Exception:
            with self._lock:
                self._counts["sink_errors"] += 1
            log.exception("rx=%s event=sink_error", self._rx)
