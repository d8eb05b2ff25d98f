"""The ingest's string-built band line protocol is byte for byte what influxdb-client's Point builds."""

from __future__ import annotations

import random

from cloud.timeseries import band_lines, band_lines_point, node_lines, node_lines_point
from protocols.payloads import BandTelemetry, NodeTelemetry


def _telemetry(rng: random.Random, n: int) -> BandTelemetry:
    def maybe(value: float) -> float | None:
        return None if rng.random() < 0.2 else value

    # Whole numbers, -0.0 and tiny values: the fast path's ".0" trimming must match Point's exactly.
    odd = [3.0, -0.0, 0.0, 10.0, 1e-7, 5e-324, 99999.0, 12.5]
    bands = [{"band": rng.randint(1, 0xFFFFFFFF), "ts": rng.uniform(1e9, 2e9),
              "x": maybe(rng.choice([rng.uniform(-500, 500), *odd])),
              "y": maybe(float(rng.randint(-50, 50))), "err_m": maybe(rng.choice([rng.uniform(0, 30), *odd[2:]])),
              "zone": rng.choice([None, "block-a", "yard_2", "Z.9-x"]), "rssi": maybe(float(rng.randint(-100, -30))),
              "rx_count": rng.randint(0, 9), "battery": rng.choice([None, 0, 55, 100]),
              "temp_c": maybe(round(rng.uniform(30, 42), 2)), "flags": rng.randint(0, 31)} for _ in range(n)]
    return BandTelemetry.model_validate({"schema": "qwatch.bands/1", "ts": 1.5, "bands": bands})


def test_band_lines_match_point_byte_for_byte() -> None:
    rng = random.Random(13)
    for _ in range(200):
        tel = _telemetry(rng, rng.randint(1, 20))
        site, node = rng.choice([("s1", "n1"), ("kg-rachgia.01", "edge_07")])
        assert band_lines(site, node, tel) == band_lines_point(site, node, tel)


def _node_telemetry(rng: random.Random) -> NodeTelemetry:
    def maybe(value: float) -> float | None:
        return None if rng.random() < 0.3 else value

    odd = ["accepted", "bad tag", "a,b=c", "x\\", "", "tab\there"]
    return NodeTelemetry.model_validate({
        "schema": "qwatch.node/1", "ts": rng.uniform(1e9, 2e9), "boot_id": "b1", "uptime_s": rng.uniform(0, 1e6),
        "cpu_pct": float(rng.randint(0, 100)), "mem_rss_mb": rng.uniform(0, 500), "mem_pct": maybe(rng.uniform(0, 100)),
        "disk_free_mb": maybe(1e12), "temp_c": maybe(55.0), "outbox_depth": rng.randint(0, 9),
        "adverts_per_s": {rng.choice(odd): rng.uniform(0, 300) for _ in range(rng.randint(0, 4))},
        "health_errors": ["x"] * rng.randint(0, 3),
        "cameras": {f"cam-{i}": {"online": rng.random() < 0.5, "fps_in": rng.uniform(0, 30), "fps_proc": 5.0,
                                 "skipped": rng.randint(0, 9), "reconnects": 0} for i in range(rng.randint(0, 3))},
        "watchdogs": {rng.choice(odd): {rng.choice(odd): rng.choice([1, 2.5, True, "text", 10**6])
                                        for _ in range(rng.randint(0, 3))} for _ in range(rng.randint(0, 3))},
    })


def test_node_lines_match_point_byte_for_byte() -> None:
    rng = random.Random(5)
    for _ in range(200):
        tel = _node_telemetry(rng)
        assert node_lines("kg-01", "edge_07", tel) == node_lines_point("kg-01", "edge_07", tel)
