"""Fan-out of live events (alerts, band positions, node state) from the ingest thread to WebSockets.

The ingest runs on paho's network thread; WebSocket handlers run on the API's asyncio loop. Each
subscriber gets a bounded asyncio queue filled through ``call_soon_threadsafe``; a subscriber too
slow to keep up loses *position* updates (counted) but never alerts, which are small and rare.
A subscriber may be limited to some sites (a guard): it gets only messages whose ``data["site"]`` is one
of them, so nothing of another site is even queued for it. Independently it may *watch* only some sites'
band positions (the province view on a phone, docs/cloud.md "The live feed at province scale"): position
updates of other sites are not queued for it; alerts, escalations and node events always are.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

POSITION_QUEUE = 256
MAX_MESSAGE_CHARS = 1 << 20  # one live message; a hello of 200 alerts of bounded size is far below


def live_json(message: dict[str, Any]) -> str | None:
    """Strict JSON for the live feed: None (the caller counts and drops it) when the message holds a
    non-finite number or is oversized. Browsers' JSON.parse rejects a bare NaN, and one such message
    used to stop a dashboard's whole feed."""
    try:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        return None
    return text if len(text) <= MAX_MESSAGE_CHARS else None


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's queue and the loop that owns it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    sites: frozenset[str] | None = None  # None: every site
    # Whose band positions it gets (None: every site it may see). Replaced whole by the WebSocket handler
    # while the ingest thread reads it: a frozenset swap needs no lock.
    watch: frozenset[str] | None = None

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
        # When each (site, node)'s positions arrived (this machine's clock): stale counts for summaries.
        self.received: dict[tuple[str, str], float] = {}

    def subscribe(self, sites: frozenset[str] | None = None) -> Subscriber:
        """Register the calling coroutine's loop (only ``sites``' messages if given); pair with
        :meth:`unsubscribe`."""
        sub = Subscriber(asyncio.get_running_loop(), sites=sites)
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

    def publish(self, kind: str, data: dict[str, Any], *, droppable: bool = False, watched: bool = False) -> None:
        """Send ``{"kind": kind, "data": data, "sent_at": now}`` to every subscriber (``watched``: only to
        those watching ``data["site"]``)."""
        text = live_json({"kind": kind, "data": data, "sent_at": time.time()})
        if text is None:
            self.counts[f"unserialisable_{kind}"] += 1
            return
        self._send(kind, self._targets(kind, data.get("site"), watched), text, droppable)

    def _targets(self, kind: str, site: object, watched: bool) -> list[Subscriber]:
        with self._lock:
            subs = [s for s in self._subs if s.sites is None or site in s.sites]
        if watched:
            before = len(subs)
            subs = [s for s in subs if s.watch is None or site in s.watch]
            if before != len(subs):
                self.counts[f"unwatched_{kind}"] += before - len(subs)
        return subs

    def _send(self, kind: str, subs: list[Subscriber], text: str, droppable: bool) -> None:
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, text, droppable, self)
            except RuntimeError:  # the loop closed under us: that client is gone
                self.unsubscribe(sub)
        self.counts[f"sent_{kind}"] += len(subs)

    def publish_positions(self, site: str, node: str, data: dict[str, Any], *,
                          data_json: Callable[[], str] | None = None) -> None:
        """Remember and send the latest band positions of one node.

        ``data_json``: makes ``data`` as strict JSON (the ingest's fast path, cloud.ingest_telemetry), called
        only when someone watches this site; without it ``data`` is encoded here."""
        self.positions[(site, node)] = data
        self.received[(site, node)] = time.time()
        if data_json is None:
            self.publish("bands", data, droppable=True, watched=True)
            return
        subs = self._targets("bands", site, True)
        if not subs:
            return
        text = f'{{"kind":"bands","data":{data_json()},"sent_at":{json.dumps(time.time())}}}'
        if len(text) > MAX_MESSAGE_CHARS:
            self.counts["unserialisable_bands"] += 1
            return
        self._send("bands", subs, text, True)
