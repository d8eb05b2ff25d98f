"""Deterministic band keys for demos and simulations.

Real deployments make a random 16-byte key per band at enrolment. The demo and the benchmarks
need reproducible keys instead, derived here from a label with SHA-256. Never use these for a
real site: anyone with this source can compute them.

Usage: ``python -m edge.sim.keys SITE.yaml KEYS.json`` writes a key file (mode 0600) for every
band and beacon of the site.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable

from protocols.site_config import SiteConfig, load_site_config, write_band_keys

DEMO_LABEL = "qwatch-demo"


def demo_key(band_id: int, label: str = DEMO_LABEL) -> bytes:
    """The demo key of one band: SHA-256(label ':' band_id)[:16]."""
    return hashlib.sha256(f"{label}:{band_id}".encode()).digest()[:16]


def demo_keys(band_ids: Iterable[int], label: str = DEMO_LABEL) -> dict[int, bytes]:
    """Demo keys for many bands."""
    return {b: demo_key(b, label) for b in band_ids}


def site_demo_keys(site: SiteConfig, label: str = DEMO_LABEL) -> dict[int, bytes]:
    """Demo keys for every band and beacon of a site."""
    return demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons], label)


def main(argv: list[str] | None = None) -> int:
    """Write the demo key file of a site."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m edge.sim.keys SITE.yaml KEYS.json", file=sys.stderr)
        return 2
    site = load_site_config(args[0])
    write_band_keys(args[1], site_demo_keys(site))
    return 0


if __name__ == "__main__":
    sys.exit(main())
