"""Generated site configurations for benchmarks and tests (the example YAMLs live in config/examples)."""

from __future__ import annotations

from protocols.site_config import SiteConfig


def blocks_site(n_bands: int = 500, site_id: str = "bench-500") -> SiteConfig:
    """Ten 30 × 16 m blocks in a 5 × 2 layout (4 m yards), one receiver inside each, six far outside.

    Four beacons stand in the southern row. Bands are spread over the blocks round-robin. It is
    the 500-band site of the speed benchmarks, and a hard one for calibration: most links are only
    10-20 dB above the reception floor.
    """
    zones, receivers = [], []
    for i in range(10):
        x0, y0 = (i % 5) * 34.0, (i // 5) * 20.0
        zones.append({"id": f"block-{i}", "kind": "permitted",
                      "polygon": [[x0, y0], [x0 + 30, y0], [x0 + 30, y0 + 16], [x0, y0 + 16]]})
        receivers.append({"id": f"rx-{i}", "position": [x0 + 15, y0 + 8], "source": "sim"})
    for j, (x, y) in enumerate([(0, -10), (85, -10), (170, -10), (0, 46), (85, 46), (170, 46)]):
        receivers.append({"id": f"rx-o{j}", "position": [x, y], "source": "sim"})
    bands = [{"id": 1000 + b, "allowed_zones": [f"block-{b % 10}"]} for b in range(n_bands)]
    beacons = [{"id": 9000 + i, "position": [(i % 5) * 34.0 + 3, (i // 5) * 20.0 + 3]} for i in range(4)]
    return SiteConfig.model_validate({"site": {"id": site_id}, "zones": zones, "receivers": receivers,
                                      "bands": bands, "beacons": beacons})
