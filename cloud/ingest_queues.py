"""The ingest's two queues and the order it serves them: alerts first, telemetry in between.

paho's network thread hands every message over here; the ingest's store thread takes work out.
Messages that need a durable write and a PUBACK (alerts, statuses, camera events, QoS 1 anything)
wait in an unbounded FIFO: nothing of them may be dropped, and the broker's Receive Maximum bounds
how many are in flight. QoS 0 band and node telemetry waits in its own bounded queue and is served
only while no alert waits, a slice at a time; past the bound new telemetry is shed and counted.
Before, one FIFO held both, and at 500 sites alerts waited up to 31 s behind positions
(bench.cloud_load, docs/benchmarks.md).

No sockets and no store here: the clock is a parameter, so the order is testable on its own.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence

from protocols import topics as T

TELEMETRY_SUFFIXES = ("/" + T.TELEMETRY_BANDS, "/" + T.TELEMETRY_NODE)
TELEMETRY_SLICE_S = 0.02  # telemetry handled between two looks at the alert queue
IDLE_WAIT_S = 0.02  # nothing queued: wait this long for an alert, then look at telemetry again

Message = tuple[str, bytes, int, int]  # topic, payload, MQTT message id, QoS
# How to handle a telemetry message: everything ("full"), only its VictoriaMetrics lines ("lines": a copy of
# the shared subscription whose positions come by the direct one) or only its live positions ("positions").
Telemetry = tuple[str, bytes, str]


SHARED_SUB_ID, POSITIONS_SUB_ID = 1, 2  # MQTT 5 subscription identifiers when relaying every node's positions


def subscriptions(main: str, relay_positions: bool) -> list[tuple[str, int, int | None]]:
    """(topic filter, QoS, subscription identifier) to subscribe: the ingest's one subscription, or with
    ``relay_positions`` that one plus every node's band telemetry, not shared (``serve --shared``)."""
    if not relay_positions:
        return [(main, 1, None)]
    return [(main, 1, SHARED_SUB_ID), (T.ALL_BAND_TELEMETRY, 0, POSITIONS_SUB_ID)]


def delivery_mode(topic: str, sub_ids: Sequence[int] | None) -> str:
    """With both subscriptions: how to handle a delivery, by the subscription identifiers it came with.
    Only by the direct one: "positions" (the live map only); band telemetry only by the shared one:
    "lines" (its positions come by the direct copy); anything else, or both identifiers on one copy: "full"."""
    ids = sub_ids or []
    if SHARED_SUB_ID not in ids:
        return "positions"
    if POSITIONS_SUB_ID not in ids and topic.endswith("/" + T.TELEMETRY_BANDS):
        return "lines"
    return "full"


class IngestQueues:
    """Alert queue (unbounded, FIFO) and telemetry queue (bounded, shed when full)."""

    def __init__(self, *, telemetry_max: int, max_batch: int) -> None:
        self.max_batch = max_batch
        self._alerts: queue.Queue[Message] = queue.Queue()
        self._telemetry: queue.Queue[Telemetry] = queue.Queue(maxsize=telemetry_max)

    def offer(self, topic: str, payload: bytes, mid: int, qos: int, mode: str = "full") -> bool:
        """Queue one message (paho's thread). False: telemetry shed because its queue is full."""
        if qos == 0 and topic.endswith(TELEMETRY_SUFFIXES):
            try:
                self._telemetry.put_nowait((topic, payload, mode))
            except queue.Full:
                return False
            return True
        self._alerts.put((topic, payload, mid, qos))
        return True

    def alert_batch(self, wait_s: float = 0.0) -> list[Message]:
        """Up to ``max_batch`` waiting alert-queue messages, oldest first; waits up to ``wait_s`` for the first."""
        try:
            first = self._alerts.get(timeout=wait_s) if wait_s > 0 else self._alerts.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                batch.append(self._alerts.get_nowait())
            except queue.Empty:
                break
        return batch

    def telemetry_slice(self, clock: Callable[[], float], slice_s: float = TELEMETRY_SLICE_S
                        ) -> Iterator[Telemetry]:
        """Telemetry messages, oldest first, until ``slice_s`` has passed on ``clock`` or an alert waits."""
        deadline = clock() + slice_s
        while self._alerts.empty() and clock() < deadline:
            try:
                yield self._telemetry.get_nowait()
            except queue.Empty:
                return

    def discard_alerts(self) -> int:
        """Drop the queued alert-queue messages (their connection is gone: the broker resends them)."""
        n = 0
        while True:
            try:
                self._alerts.get_nowait()
            except queue.Empty:
                return n
            n += 1

    def depths(self) -> tuple[int, int]:
        """(alert queue, telemetry queue) lengths, for /healthz."""
        return self._alerts.qsize(), self._telemetry.qsize()
