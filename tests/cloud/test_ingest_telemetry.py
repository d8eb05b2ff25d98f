"""The ingest's band telemetry fast path gives the live feed and the API what the plain encoding gives."""

from __future__ import annotations

import asyncio
import json
import random

from cloud.ingest_telemetry import positions, positions_json
from cloud.live import LiveHub, live_json
from protocols.payloads import BandTelemetry


def _telemetry(rng: random.Random) -> BandTelemetry:
    bands = [{"band": rng.randint(1, 0xFFFFFFFF), "ts": rng.uniform(1e9, 2e9),
              "x": rng.choice([None, rng.uniform(-500, 500), 3.0]), "y": rng.choice([None, -0.0, 1e-7]),
              "err_m": rng.choice([None, rng.uniform(0, 30)]), "zone": rng.choice([None, "block-a", "Z.9-x"]),
              "rssi": rng.choice([None, -70.5]), "rx_count": rng.randint(0, 9), "battery": rng.choice([None, 0, 100]),
              "temp_c": rng.choice([None, 36.61]), "flags": rng.randint(0, 31)} for _ in range(rng.randint(0, 30))]
    return BandTelemetry.model_validate({"schema": "qwatch.bands/1", "ts": rng.uniform(1e9, 2e9), "bands": bands})


def test_positions_equal_the_plain_encoding() -> None:
    rng = random.Random(3)
    for _ in range(100):
        tel = _telemetry(rng)
        plain = {"site": "kg-01", "node": "edge-01", "ts": tel.ts, "bands": [b.model_dump() for b in tel.bands]}
        assert positions("kg-01", "edge-01", tel) == plain
        assert json.loads(positions_json("kg-01", "edge-01", tel)) == json.loads(live_json(plain) or "null")


def test_hub_sends_the_pre_encoded_positions() -> None:
    tel = _telemetry(random.Random(9))

    async def run() -> str:
        hub = LiveHub()
        sub = hub.subscribe()
        hub.publish_positions("kg-01", "edge-01", positions("kg-01", "edge-01", tel),
                              data_json=lambda: positions_json("kg-01", "edge-01", tel))
        return await asyncio.wait_for(sub.queue.get(), 2)

    msg = json.loads(asyncio.run(run()))
    assert msg["kind"] == "bands" and msg["data"]["site"] == "kg-01"
    assert len(msg["data"]["bands"]) == len(tel.bands)
