"""Shared fixtures of the wristband tests: the example site and its demo keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.sim.keys import site_demo_keys
from protocols.site_config import SiteConfig, load_site_config

ROOT = Path(__file__).resolve().parents[2]
DEMO_SITE = ROOT / "config" / "examples" / "demo-site.yaml"
FENCE_SITE = ROOT / "config" / "examples" / "fenceline-site.yaml"


@pytest.fixture(scope="session")
def demo_site() -> SiteConfig:
    return load_site_config(DEMO_SITE)


@pytest.fixture(scope="session")
def demo_keys(demo_site: SiteConfig) -> dict[int, bytes]:
    return site_demo_keys(demo_site)
