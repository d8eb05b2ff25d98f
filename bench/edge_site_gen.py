"""Generate a large simulated site (demo geometry, N bands) and its keys, for the edge benchmarks."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge.sim.keys import demo_keys
from protocols.site_config import parse_site_config, write_band_keys

REPO = Path(__file__).resolve().parents[1]


def big_site(dirpath: Path, n_bands: int, site_id: str = "bench-site") -> tuple[Path, Path]:
    """Write site.yaml (demo-site geometry and receivers, `n_bands` bands) and keys.json."""
    base = yaml.safe_load((REPO / "config" / "examples" / "demo-site.yaml").read_text())
    base["site"]["id"] = site_id
    homes = [["block-a", "yard"], ["block-b", "yard"]]
    base["bands"] = [{"id": 10_000 + i, "person": f"P-{i:05d}", "allowed_zones": homes[i % 2]}
                     for i in range(n_bands)]
    base.pop("cameras", None)
    text = yaml.safe_dump(base, sort_keys=False)
    site = parse_site_config(text, "generated")
    dirpath.mkdir(parents=True, exist_ok=True)
    site_path, keys_path = dirpath / "site.yaml", dirpath / "keys.json"
    site_path.write_text(text)
    write_band_keys(keys_path, demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons]))
    return site_path, keys_path
