"""Generated site configurations for benchmarks and tests (the example YAMLs live in config/examples)."""

from __future__ import annotations

from pathlib import Path

from protocols.site_config import SiteConfig, load_site_config


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


EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
# The breach benchmark's layouts (bench/bands_breach.py): name -> example site file.
BREACH_LAYOUTS: dict[str, Path] = {
    "demo": EXAMPLES / "demo-site.yaml",  # one receiver per block, four 9 m outside the fence, 2 beacons
    "perimeter": EXAMPLES / "perimeter-site.yaml",  # two inside, eight on a ring ~15 m out, 4 beacons
    "compound": EXAMPLES / "compound-site.yaml",  # four blocks, one receiver each, six 5 m out, 4 beacons
    "lwing": EXAMPLES / "lwing-site.yaml",  # L-shaped wing, three inside, six 5 m out (two in the notch)
    # The demo with the five more beacons `plan` suggests (every receiver pinned); not in the default set.
    "demo9": EXAMPLES / "demo-site-9-beacons.yaml",
}
# The layouts the issue names, which the benchmarks run unless told otherwise.
DEFAULT_BREACH_LAYOUTS: tuple[str, ...] = ("demo", "perimeter", "compound", "lwing")


def layout_site(name: str, n_bands: int, *, shadowing_db: float | None = None, first_id: int = 1001) -> SiteConfig:
    """A breach-benchmark layout with `n_bands` bands, all allowed where the file's first band is.

    The geometry, receivers, beacons and rules are the example file's (validated by the site-config
    model as any site file is); only the band list is replaced, and optionally the σ the site claims.
    """
    path = BREACH_LAYOUTS.get(name)
    if path is None:
        raise ValueError(f"unknown layout {name!r}; allowed: {', '.join(BREACH_LAYOUTS)}")
    site = load_site_config(path)
    if not site.bands:
        raise ValueError(f"{path}: the layout needs at least one band to copy the allowed zones from")
    allowed = list(site.bands[0].allowed_zones)
    bands = [{"id": first_id + i, "person": f"P-{i + 1:04d}", "allowed_zones": allowed} for i in range(n_bands)]
    data = site.model_dump(mode="json")
    data["bands"] = bands
    if shadowing_db is not None:
        data["radio"]["shadowing_db"] = shadowing_db
    return SiteConfig.model_validate(data)
