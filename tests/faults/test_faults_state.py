"""Fault scenarios for edge state and delivery that the first suite could not see (issue 9, items 1-3).

Real processes only: a fresh Mosquitto per test, `qwatch-cloud serve`, `qwatch-edge run` agents
(storm or simulated radio), real SIGKILLs. Each scenario appends one JSON line of measurements to
$QWATCH_FAULTS_REPORT (if set), for the reliability table in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.services import ServiceProcess, free_port
from edge.sim.keys import demo_keys
from protocols.site_config import parse_site_config, write_band_keys
from tests.faults.edge_harness import (
    DEV_AGENT,
    Child,
    TopicRecorder,
    check_invariants,
    cloud_events,
    cloud_ingest,
    expected_storm,
    last_node_telemetry,
    stop_all,
    storm_agent,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SIM_SITE = """\
site: {id: state-site, name: "edge state"}
zones:
  - {id: block-a, kind: permitted, polygon: [[0,0],[30,0],[30,20],[0,20]]}
  - {id: gate, kind: restricted, polygon: [[13,-3],[17,-3],[17,0],[13,0]]}
receivers:
  - {id: rx-in, position: [15, 10], source: sim}
  - {id: rx-s, position: [15, -12], source: sim}
  - {id: rx-w, position: [-12, 10], source: sim}
  - {id: rx-e, position: [52, 10], source: sim}  # 22 m out: the escapee stands 25 m out
bands:
  - {id: 1001, person: "P-1", allowed_zones: [block-a]}
  - {id: 1002, person: "P-2", allowed_zones: [block-a]}
  - {id: 1003, person: "P-3", allowed_zones: [block-a]}
rules: {breach_dwell_s: 4, restricted_dwell_s: 2, clear_dwell_s: 4, missing_after_s: 30}
"""


def _report(notes: dict[str, Any]) -> None:
    line = json.dumps(notes, default=str)
    print("FAULT-REPORT", line)
    out = os.environ.get("QWATCH_FAULTS_REPORT")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _alerts(api: str, **params: str) -> list[dict[str, Any]]:
    try:
        resp = httpx.get(f"{api}/api/v1/alerts", params={"site": "state-site", "limit": "1000", **params}, timeout=5)
    except httpx.HTTPError:
        return []
    return list(resp.json()) if resp.status_code == 200 else []


def _serve(tmp: Path, mq: ServiceProcess, vm: ServiceProcess) -> tuple[Child, str]:
    port = free_port()
    cloud = cloud_ingest(tmp / "cloud.db", mq.address, vm.url, tmp, serve_port=port).start()
    api = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{api}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 40, "cloud /healthz ok")
    return cloud, api


def _sim_agent(tmp: Path, mq: ServiceProcess, *extra: str) -> Child:
    site, keys = tmp / "site.yaml", tmp / "keys.json"
    if not site.exists():
        site.write_text(SIM_SITE)
        write_band_keys(keys, demo_keys(b.id for b in parse_site_config(SIM_SITE).bands))
    argv = [*DEV_AGENT, "run", "--config", str(site), "--keys", str(keys), "--node", "edge-st",
            "--broker", mq.address, "--data-dir", str(tmp / "edge-data"), "--node-telemetry-s", "1",
            "--keepalive", "2", "--reconnect-max", "1", *extra]
    return Child("edge", argv, tmp / "edge.log")


def test_no_ingest_session_at_first(mosquitto: ServiceProcess, victoria_metrics: ServiceProcess,
                                    tmp_path: Path) -> None:
    """Item 1: alerts published before the cloud's session exists get PUBACK 0x10; none may be lost."""
    total = 20
    # Telemetry only: a recorder on qwatch/v1/# would itself be the "matching subscriber".
    rec = TopicRecorder(mosquitto.address, topic="qwatch/v1/+/+/telemetry/node", client_id="tel-only")
    agent = storm_agent("n1", mosquitto.address, tmp_path, total=total, rate=20.0)
    cloud = Child("cloud", [], tmp_path / "cloud.log")
    try:
        agent.start()

        def refused() -> bool:
            tel = last_node_telemetry(rec, "n1") or {}
            return (int(tel.get("watchdogs", {}).get("mqtt", {}).get("puback_refused", 0)) >= 1
                    and any(e.startswith("mqtt_puback_refused") for e in tel.get("health_errors", [])))

        wait_until(refused, 30, "node reports refused PUBACKs (no ingest session yet)")
        tel = last_node_telemetry(rec, "n1") or {}
        depth_before = tel.get("outbox_depth")
        assert depth_before and depth_before > 0, f"rows must stay in the outbox while refused: {tel}"
        t0 = time.monotonic()
        cloud, _api = _serve(tmp_path, mosquitto, victoria_metrics)
        took = wait_until(lambda: len(cloud_events(tmp_path / "cloud.db")) >= total, 60,
                          f"all {total} alert events stored once the cloud came")
        check_invariants(cloud_events(tmp_path / "cloud.db"), {"n1": expected_storm("storm", "n1", total)})
        wait_until(lambda: not any(e.startswith("mqtt_puback_refused")
                                   for e in (last_node_telemetry(rec, "n1") or {}).get("health_errors", ["x"])),
                   30, "the refusal health error clears")
        m = (last_node_telemetry(rec, "n1") or {})["watchdogs"]["mqtt"]
        _report({"scenario": "no ingest session until the cloud starts", "alert_events": total,
                 "stored": len(cloud_events(tmp_path / "cloud.db")), "outbox_depth_while_refused": depth_before,
                 "puback_refused": m.get("puback_refused"),
                 "stored_after_cloud_start_s": round(time.monotonic() - t0, 1), "wait_s": round(took, 1)})
    finally:
        stop_all([agent, cloud])
        rec.close()


def test_kill9_with_active_breach_clears_after_restart(mosquitto: ServiceProcess,
                                                       victoria_metrics: ServiceProcess, tmp_path: Path) -> None:
    """Item 2: a breach raised before a kill -9 is cleared (same alert_id) once the band is back inside."""
    cloud, api = _serve(tmp_path, mosquitto, victoria_metrics)
    agent = _sim_agent(tmp_path, mosquitto, "--escape-at=1", "--escape-band", "1001").start()
    try:
        def breach() -> list[dict[str, Any]]:
            return [a for a in _alerts(api, type="geofence_breach") if a["subject"] == {"band": 1001}]

        wait_until(lambda: bool(breach()), 90, "breach of band 1001 raised")
        alert_id = breach()[0]["alert_id"]
        agent.kill9()
        t_restart = time.monotonic()
        # Restarted without the escape scenario: everybody is inside again.
        agent = _sim_agent(tmp_path, mosquitto).start()

        def cleared() -> bool:
            return any(a["alert_id"] == alert_id and a["cleared_ts"] is not None for a in breach())

        took = wait_until(cleared, 60, f"breach {alert_id} cleared after the restart")
        still_open = [a["alert_id"] for a in breach() if a["cleared_ts"] is None]
        assert not still_open, f"breaches still open after the restart: {still_open}"
        _report({"scenario": "kill -9 with an active breach, restart with the band inside",
                 "alert_id": alert_id, "cleared_after_restart_s": round(time.monotonic() - t_restart, 1),
                 "wait_s": round(took, 1)})
    finally:
        stop_all([agent, cloud])


def test_replay_after_restart_rejected(mosquitto: ServiceProcess, victoria_metrics: ServiceProcess,
                                       tmp_path: Path) -> None:
    """Item 3: after a kill -9, the same adverts heard again (a replayer) are rejected, not accepted."""
    cloud, api = _serve(tmp_path, mosquitto, victoria_metrics)
    start_ts = f"{time.time():.3f}"
    # The same seed and start time regenerate the very same adverts: a perfect replay of run 1.
    sim = ("--sim-seed", "11", "--sim-start-ts", start_ts)
    agent = _sim_agent(tmp_path, mosquitto, *sim).start()
    rec = TopicRecorder(mosquitto.address, topic="qwatch/v1/+/+/telemetry/node", client_id="tel-replay")
    try:
        wait_until(lambda: last_node_telemetry(rec, "edge-st") is not None, 60, "agent online")
        time.sleep(7)  # > COUNTER_SAVE_S (5 s): at least one periodic save happened before the crash
        agent.kill9()
        agent = _sim_agent(tmp_path, mosquitto, *sim).start()
        took = wait_until(lambda: bool(_alerts(api, type="advert_replay")), 60, "advert_replay raised after restart")
        replays = _alerts(api, type="advert_replay")
        bands = sorted({a["subject"]["band"] for a in replays})
        assert set(bands) <= {1001, 1002, 1003}
        _report({"scenario": "kill -9, then run 1's adverts heard again", "advert_replay_alerts": len(replays),
                 "bands": bands, "detected_after_restart_s": round(took, 1)})
    finally:
        stop_all([agent, cloud])
        rec.close()
