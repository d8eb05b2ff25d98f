"""Walking skeleton, end to end: simulated site -> agent -> real Mosquitto -> cloud -> API + VictoriaMetrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.services import ServiceProcess, free_port
from edge.sim.keys import demo_keys
from protocols.observation import parse_observation_line
from protocols.site_config import parse_site_config, write_band_keys
from tests.faults.edge_harness import DEV_AGENT, Child, cloud_ingest, stop_all, wait_until

pytestmark = pytest.mark.integration

SMALL_SITE = """\
site: {id: it-site, name: "integration"}
zones:
  - {id: block-a, kind: permitted, polygon: [[0,0],[30,0],[30,20],[0,20]]}
  - {id: gate, kind: restricted, polygon: [[13,-3],[17,-3],[17,0],[13,0]]}
receivers:
  - {id: rx-in, position: [15, 10], source: sim}
  - {id: rx-s, position: [15, -12], source: sim}
  - {id: rx-w, position: [-12, 10], source: sim}
  - {id: rx-e, position: [52, 10], source: sim}  # 22 m out: the demo escapee stands 25 m out
bands:
  - {id: 1001, person: "P-1", allowed_zones: [block-a]}
  - {id: 1002, person: "P-2", allowed_zones: [block-a]}
  - {id: 1003, person: "P-3", allowed_zones: [block-a]}
# Reference beacons pin the receivers' gains. Without them an outside receiver's gain is known only to
# about 6 dB, and a person standing 25 m out next to rx-e scores a likelihood ratio of about 8: below
# the breach threshold (docs/bands.md, "Known weaknesses"). `qwatch-edge plan` rates such a layout weak.
beacons:
  - {id: 9001, position: [40, 5]}
  - {id: 9002, position: [15, -6]}
  - {id: 9003, position: [-6, 15]}
rules: {breach_dwell_s: 4, restricted_dwell_s: 2, clear_dwell_s: 4, missing_after_s: 30}
"""


def _breaches(api: str) -> list[dict[str, Any]]:
    try:
        resp = httpx.get(f"{api}/api/v1/alerts", params={"type": "geofence_breach", "site": "it-site"}, timeout=3)
    except httpx.HTTPError:
        return []
    return list(resp.json()) if resp.status_code == 200 else []


def _healthy(api: str, cloud: Child) -> bool:
    if not cloud.alive():
        pytest.fail(f"cloud exited: {cloud.log_tail()}")
    try:
        return httpx.get(f"{api}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _vm_points(vm: ServiceProcess, selector: str) -> int:
    resp = httpx.get(f"{vm.url}/api/v1/export", params={"match[]": selector}, timeout=5)
    resp.raise_for_status()
    return sum(len(json.loads(line)["timestamps"]) for line in resp.text.splitlines() if line.strip())


def test_simulated_breach_reaches_api_and_victoria_metrics(
    mosquitto: ServiceProcess, victoria_metrics: ServiceProcess, tmp_path: Path
) -> None:
    site_path, keys_path = tmp_path / "site.yaml", tmp_path / "keys.json"
    site_path.write_text(SMALL_SITE)
    site = parse_site_config(SMALL_SITE)
    write_band_keys(keys_path, demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons]))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    cloud = cloud_ingest(tmp_path / "cloud.db", mosquitto.address, victoria_metrics.url, tmp_path,
                         serve_port=port).start()
    agent = Child("edge", [*DEV_AGENT, "run", "--config", str(site_path), "--keys", str(keys_path),
                           "--node", "edge-it", "--broker", mosquitto.address, "--data-dir", str(tmp_path / "edge"),
                           "--escape-at=1", "--escape-band", "1001", "--node-telemetry-s", "1",
                           "--record", str(tmp_path / "obs.jsonl")],
                  tmp_path / "edge.log")
    try:
        wait_until(lambda: _healthy(api, cloud), 30, "cloud healthy")
        agent.start()
        wait_until(lambda: any(a["subject"] == {"band": 1001} for a in _breaches(api)), 60,
                   "a geofence_breach for band 1001 in GET /api/v1/alerts")
        alert = next(a for a in _breaches(api) if a["subject"] == {"band": 1001})
        assert alert["node"] == "edge-it" and alert["severity"] == "critical"
        # Band positions and node health were written to VictoriaMetrics (poll sparingly: VM caches
        # empty answers).
        wait_until(lambda: _vm_points(victoria_metrics, 'band_x{band="1001"}') > 0, 30, "band_x points", 2.0)
        wait_until(lambda: _vm_points(victoria_metrics, '{__name__=~"node_.*",node="edge-it"}') > 0, 30,
                   "node telemetry points", 2.0)
        assert agent.alive(), agent.log_tail()
    finally:
        code = agent.stop()
        stop_all([cloud])
    assert code == 0, agent.log_tail()
    # The observation log it recorded is valid replay input (docs/protocol.md §2).
    lines = (tmp_path / "obs.jsonl").read_text().splitlines()
    assert len(lines) > 20
    assert {parse_observation_line(line).rx for line in lines} <= {"rx-in", "rx-s", "rx-w", "rx-e"}
