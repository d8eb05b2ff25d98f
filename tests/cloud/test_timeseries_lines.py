"""The ingest's string-built band line protocol is byte for byte what influxdb-client's Point builds."""

from __future__ import annotations

import random

from cloud.timeseries import band_lines, band_lines_point
from protocols.payloads import BandTelemetry


def _telemetry(rng: random.Random, n: int) -> BandTelemetry:
    def maybe(value: float) -> float | None:
        return None if rng.random() < 0.2 else value

    bands = [{"band": rng.randint(1, 0xFFFFFFFF), "ts": rng.uniform(1e9, 2e9), "x": maybe(rng.uniform(-500, 500)),
              "y": maybe(float(rng.randint(-50, 50))), "err_m": maybe(rng.uniform(0, 30)),
              "zone": rng.choice([None, "block-a", "yard_2", "Z.9-x"]), "rssi": maybe(float(rng.randint(-100, -30))),
              "rx_count": rng.randint(0, 9), "battery": rng.choice([None, 0, 55, 100]),
              "temp_c": maybe(round(rng.uniform(30, 42), 2)), "flags": rng.randint(0, 31)} for _ in range(n)]
    return BandTelemetry.model_validate({"schema": "qwatch.bands/1", "ts": 1.5, "bands": bands})


def test_band_lines_match_point_byte_for_byte() -> None:
    rng = random.Random(13)
    for _ in range(50):
        tel = _telemetry(rng, rng.randint(1, 20))
        site, node = rng.choice([("s1", "n1"), ("kg-rachgia.01", "edge_07")])
        assert band_lines(site, node, tel) == band_lines_point(site, node, tel)
