"""Fan-out of live events (alerts, band positions, node state) from the ingest thread to WebSockets.

The ingest runs on paho's network thread; WebSocket handlers run on the API's asyncio loop. Each
subscriber gets a bounded asyncio queue filled through ``call_soon_threadsafe``; a subscriber too
slow to keep up loses *position* updates (counted) but never alerts, which are small and rare.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

POSITION_QUEUE = 256


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's queue and the loop that owns it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def offer(self, text: str, droppable: bool, hub: LiveHub) -> None:
        """Called on the subscriber's loop: enqueue, shedding positions when backed up."""
        if droppable and self.queue.qsize() >= POSITION_QUEUE:
            hub.counts["positions_shed"] += 1
            return
        self.queue.put_nowait(text)


class LiveHub:
    """Thread-safe publish, asyncio subscribe."""

    def __init__(self) -> None:
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        # Last band positions per (site, node): a new dashboard gets a full picture at once.
        self.positions: dict[tuple[str, str], dict[str, Any]] = {}

    def subscribe(self) -> Subscriber:
        """Register the calling coroutine's loop; pair with :meth:`unsubscribe`."""
        sub = Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber."""
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        """Connected subscribers."""
        return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any], *, droppable: bool = False) -> None:
        """Send ``{"kind": kind, "data": data, "sent_at": now}`` to every subscriber."""
        text = json.dumps({"kind": kind, "data": data, "sent_at": time.time()}, separators=(",", ":"))
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, text, droppable, self)
            except RuntimeError:  # the loop closed under us: that client is gone
                self.unsubscribe(sub)
        self.counts[f"sent_{kind}"] += len(subs)

    def publish_positions(self, site: str, node: str, data: dict[str, Any]) -> None:
        """Remember and send the latest band positions of one node."""
        self.positions[(site, node)] = data
        self.publish("bands", data, droppable=True)
