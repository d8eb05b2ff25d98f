"""The cross-process live feed relays another process's alert even while this process's store is busy."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from cloud.alert_store import AlertStore
from cloud.live import LiveHub
from cloud.live_pg import AlertListener
from protocols.payloads import new_alert


def test_relay_does_not_wait_for_the_local_store(pg_database: str) -> None:
    here, other = AlertStore(pg_database), AlertStore(pg_database)  # two processes' stores
    hub = LiveHub()
    listener = AlertListener(here, hub).start()
    release = threading.Event()
    holding = threading.Event()

    def local_batch() -> None:  # the local ingest in the middle of a long batch: holds `here`'s connection
        with here.batch():
            holding.set()
            release.wait(10)

    busy = threading.Thread(target=local_batch)

    async def run() -> tuple[dict[str, object], float]:
        sub = hub.subscribe()
        assert listener.wait_listening(10)
        busy.start()
        assert holding.wait(5)
        a = new_alert(site="s1", node="n1", type="sos", subject={"band": 7}, ts=time.time())
        t0 = time.monotonic()
        other.upsert(a)
        text = await asyncio.wait_for(sub.queue.get(), 5)
        return json.loads(text), time.monotonic() - t0

    try:
        msg, waited = asyncio.run(run())
        assert msg["kind"] == "alert" and msg["data"]["type"] == "sos"  # type: ignore[index]
        assert waited < 3.0  # relayed while the local batch is still open (it is released below)
    finally:
        release.set()
        busy.join(5)
        listener.stop()
        here.close()
        other.close()
