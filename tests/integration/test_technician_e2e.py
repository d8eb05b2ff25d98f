"""The technician's afternoon, end to end, against real Mosquitto with TLS and per-node credentials:

pki init → provision two nodes → doctor green on edge-01 → enrol a band at the dock simulator on a
pty (registered with the cloud) → config push brings its key to edge-02 (a real agent process) →
the band's SOS advert, heard by edge-02's serial scanner (firmware simulator on a pty), raises an
alert in the cloud with the person's label → an invalid push is refused and edge-02 keeps its
config → retire → after the next push the band's adverts raise nothing but a counter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cloud.auth import Authenticator
from cloud.band_registry import BandRegistry, RegistryPeople
from cloud.broker_conf import BrokerFiles
from cloud.cli import app as cloud_app
from cloud.config_push import Composed, push
from cloud.users import add_user
from devtools.services import ServiceProcess, free_port, require_binary, start_mosquitto_secure
from edge.cli import app as edge_app
from firmware_interface.device import DockDevice, DockedBand, Heard, ScannerDevice
from firmware_interface.simulator import PtyServer
from protocols.advert import FLAG_SOS, encode_status
from protocols.credentials import load_credentials
from protocols.site_config import write_band_keys
from tests.cloud.cloud_harness import RunningCloud, start_cloud
from tests.helpers import wait_for

SITE = "kg-01"
BAND = 1001
SITE_YAML = """site: {{id: {site}, name: Trường Tiểu học Vĩnh Thanh}}
zones:
  - {{id: ward, kind: permitted, polygon: [[0, 0], [40, 0], [40, 30], [0, 30]]}}
  - {{id: gate, kind: restricted, polygon: [[40, 0], [44, 0], [44, 30], [40, 30]]}}
receivers:
  - {{id: rx-1, position: [10, 10], source: "serial:{scanner}"}}
"""


class BandOnAir:
    """What the scanner hears: the enrolled band, pressing SOS, once its key is known."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.counter = 2000
        self.next = 0.0
        self.sent = 0

    def due(self, now: float) -> list[Heard]:
        if self.key is None or now < self.next:
            return []
        self.next = now + 0.25
        self.counter += 1
        self.sent += 1
        return [(-62, 0xFFFF, encode_status(band_id=BAND, counter=self.counter, key=self.key, flags=FLAG_SOS))]


def _cloud_cli(*args: str) -> str:
    res = CliRunner().invoke(cloud_app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def world(tmp_path: Path, shared_victoria_metrics: ServiceProcess) -> Iterator[dict[str, Any]]:
    require_binary("mosquitto")
    require_binary("mosquitto_passwd")
    prov = tmp_path / "province"
    port = free_port()
    # 1. pki init, 2. provision the nodes (the technician's commands).
    _cloud_cli("pki", "init", "--dir", str(prov), "--province", "kiengiang", "--broker-host", "127.0.0.1",
               "--broker-host", "localhost", "--port", str(port))
    for node in ("edge-01", "edge-02"):
        _cloud_cli("provision-node", "--dir", str(prov), "--site", SITE, "--node", node)
    # One-shot tools (config push) need a cloud user of their own: the broker makes the client ID the
    # username, so a second session of `qwatch-cloud` would take over the running ingest's.
    _cloud_cli("provision-cloud", "--dir", str(prov), "--worker", "tools")
    broker = start_mosquitto_secure(tmp_path / "broker", BrokerFiles.in_dir(prov), port=port)
    users = tmp_path / "users.yaml"
    admin = add_user(users, "tech-lan", "admin", []).token
    db = tmp_path / "cloud" / "cloud.db"
    db.parent.mkdir()
    registry = BandRegistry(db)
    cloud_creds = load_credentials(prov / "bundles" / "qwatch-cloud.json")
    cloud = start_cloud(db.parent, broker, shared_victoria_metrics.url, credentials=cloud_creds,
                        people=RegistryPeople(registry), bands=registry, auth=Authenticator(users))
    scanner_feed = BandOnAir()
    scanner = PtyServer(ScannerDevice(scanner_feed), link=tmp_path / "scanner")
    scanner.start()
    dock_device = DockDevice(DockedBand(band_id=0, counter=500))
    dock = PtyServer(dock_device, link=tmp_path / "dock")
    dock.start()
    site = tmp_path / "site.yaml"
    site.write_text(SITE_YAML.format(site=SITE, scanner=scanner.path), encoding="utf-8")
    procs: list[subprocess.Popen[str]] = []
    try:
        yield {"tmp": tmp_path, "prov": prov, "broker": broker, "cloud": cloud, "db": db, "admin": admin,
               "feed": scanner_feed, "dock": dock, "dock_device": dock_device, "site": site, "procs": procs,
               "registry": registry}
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        scanner.stop()
        dock.stop()
        cloud.stop()
        registry.close()
        broker.stop()


def _node_files(w: dict[str, Any], node: str) -> tuple[Path, Path]:
    keys = w["tmp"] / node / "keys.json"
    keys.parent.mkdir(exist_ok=True)
    write_band_keys(keys, {})
    return keys, w["prov"] / "bundles" / SITE / f"{node}.json"


class Api:
    """The cloud's API as the admin (auth is on)."""

    def __init__(self, cloud: RunningCloud, token: str) -> None:
        self.url, self.headers = cloud.url, {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        resp = httpx.get(self.url + path, params=params, headers=self.headers, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def sos(self) -> list[dict[str, Any]]:
        return [a for a in self.get("/api/v1/alerts", site=SITE, type="sos") if a["subject"] == {"band": BAND}]

    def node(self, node: str) -> dict[str, Any]:
        rows = [n for s in self.get("/api/v1/sites") if s["site"] == SITE for n in s["nodes"] if n["node"] == node]
        return rows[0] if rows else {}


def test_site_from_zero(world: dict[str, Any]) -> None:
    w = world
    cloud: RunningCloud = w["cloud"]
    api = Api(cloud, w["admin"])
    # 3. doctor is green on edge-01 (TLS, own namespace, foreign topic refused, ingest session, scanner, clock).
    keys1, bundle1 = _node_files(w, "edge-01")
    res = CliRunner().invoke(edge_app, ["doctor", "--json", "--config", str(w["site"]), "--keys", str(keys1),
                                        "--credentials", str(bundle1), "--data-dir", str(w["tmp"] / "edge-01" / "d"),
                                        "--cloud", cloud.url, "--timeout", "5"])
    body = json.loads(res.stdout)
    assert res.exit_code == 0, [c for c in body["checks"] if c["status"] == "fail"]
    assert {c["name"] for c in body["checks"] if c["status"] == "pass"} >= {
        "connect", "publish own", "foreign topic refused", "ingest session", "scanner rx-1", "clock offset"}
    time.sleep(0.5)
    assert api.node("edge-01") == {}  # the doctor's probe does not make the node look alive

    # 4. enrol the band at the dock on edge-01 and register it with the cloud.
    res = CliRunner().invoke(edge_app, ["enrol", "--dock", w["dock"].path, "--band", str(BAND), "--keys", str(keys1),
                                        "--config", str(w["site"]), "--cloud", cloud.url, "--token", w["admin"],
                                        "--person", "P-017", "--zones", "ward"])
    assert res.exit_code == 0, res.output
    key = w["dock_device"].band.key
    assert key.hex() not in res.output
    bands = api.get("/api/v1/bands")
    assert [(b["band"], b["person"], b["active"]) for b in bands] == [(BAND, "P-017", True)]
    assert key.hex() not in json.dumps(bands)

    # edge-02 runs with NO key for the band; its scanner hears the band from now on.
    keys2, bundle2 = _node_files(w, "edge-02")
    data2 = w["tmp"] / "edge-02" / "d"
    log2 = open(w["tmp"] / "edge-02.log", "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(w["site"]), "--keys", str(keys2), "--node",
         "edge-02", "--credentials", str(bundle2), "--data-dir", str(data2), "--no-cameras",
         "--node-telemetry-s", "1"], stdout=log2, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    w["procs"].append(agent)
    w["feed"].key = key
    wait_for(lambda: api.node("edge-02").get("online"), 60, what="edge-02 online in the cloud")
    time.sleep(1.5)
    assert api.sos() == []  # no key yet: the SOS adverts are unknown_band at edge-02

    # 5. config push: the key reaches edge-02 (and only edge-02's site gets it).
    out = _cloud_cli("config", "push", "--site", SITE, "--config", str(w["site"]), "--db", str(w["db"]),
                     "--credentials", str(w["prov"] / "bundles" / "qwatch-cloud-tools.json"), "--mqtt",
                     f"127.0.0.1:{w['broker'].port}", "--node", "edge-02", "--wait", "30")
    assert "edge-02" in out and "ok" in out, out

    # 6. the band's SOS through edge-02 raises an alert in the cloud, with the person's label.
    alerts = wait_for(lambda: [a for a in api.sos() if a["state"] != "cleared"], 45,
                      what="SOS alert of the enrolled band in the cloud")
    assert alerts[0]["node"] == "edge-02" and alerts[0]["person"] == "P-017"

    def node_row() -> dict[str, Any]:
        return api.node("edge-02")

    wait_for(lambda: node_row()["config_version"] == 1, 30, what="edge-02 reports config version 1")
    assert [s["config_latest"] for s in api.get("/api/v1/sites") if s["site"] == SITE] == [1]

    # An invalid config is refused by the node, which keeps running on version 1.
    bad = push(Composed(SITE, "zones: 3\n", {}, []), 99, ["edge-02"], host="127.0.0.1", port=w["broker"].port,
               creds=load_credentials(w["prov"] / "bundles" / "qwatch-cloud-tools.json"), wait_s=20)
    assert bad[0].result is not None and not bad[0].result.ok
    assert "cmd/config" in (bad[0].result.error or "") and bad[0].result.config_version == 1
    time.sleep(1.5)
    assert node_row()["config_version"] == 1

    # 7. retire the band, push: 8. its adverts raise nothing but a counter.
    _cloud_cli("band", "retire", str(BAND), "--db", str(w["db"]), "--by", "duty-officer")
    out = _cloud_cli("config", "push", "--site", SITE, "--db", str(w["db"]), "--credentials",
                     str(w["prov"] / "bundles" / "qwatch-cloud-tools.json"), "--mqtt", f"127.0.0.1:{w['broker'].port}",
                     "--node", "edge-02", "--wait", "30")
    assert "ok" in out, out
    wait_for(lambda: node_row()["config_version"] == 2, 30, what="edge-02 reports config version 2")
    wait_for(lambda: all(a["state"] == "cleared" for a in api.sos()), 30, what="the open SOS cleared")
    cleared = api.sos()
    assert len(cleared) == 1 and cleared[0]["cleared_ts"] is not None  # cleared by the node (cleared_by: config)
    sent_before = w["feed"].sent
    wait_for(lambda: w["feed"].sent >= sent_before + 8, 10, what="more adverts from the retired band")
    time.sleep(1.5)
    assert len(api.sos()) == 1 and api.sos()[0]["state"] == "cleared"
    counters = wait_for(lambda: (node_row().get("health") or {}).get("watchdogs", {}).get("agent") and
                        (node_row()["health"]["adverts_per_s"].get("unknown_band", 0) > 0) and node_row()["health"],
                        30, what="edge-02 counts the retired band's adverts as unknown_band")
    assert counters["config_version"] == 2
    log2.close()
