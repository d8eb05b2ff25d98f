"""A hostile node against the real thing (issue 9, items 4-8): secured Mosquitto, `qwatch-cloud serve`,
and the dashboard in headless Chromium, which must still show every honest alert.

The hostile node has real, provisioned credentials of another site (a stolen or subverted node), so the
broker's ACL lets it publish under its own prefix only; everything it sends there is hostile: NaN and
huge numbers, a 1 MB and a 60 MB `detail`, a clear for another site's alert_id, and a loop of
connections with the honest node's client ID.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import sync_playwright

from devtools.services import ServiceProcess, free_port, require_binary
from protocols.credentials import MqttCredentials, apply_credentials, node_username
from protocols.payloads import new_alert
from protocols.topics import NodeTopics
from tests.cloud.provision_harness import SITE, start_secure_broker
from tests.faults.edge_harness import BIN, Child
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
HOSTILE_SITE, HOSTILE_NODE = "kg-02", "edge-09"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _client(creds: MqttCredentials, port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    apply_credentials(c, creds)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    wait_for(c.is_connected, 10, what=f"{client_id} connected")
    return c


def _honest_alert(pub: mqtt.Client, band: int) -> str:
    a = new_alert(site=SITE, node="edge-01", type="geofence_breach", subject={"band": band}, ts=time.time(),
                  detail={"x": 44.1, "y": 9.8, "zone": None})
    pub.publish(NodeTopics(SITE, "edge-01").alert, a.to_json(), qos=1).wait_for_publish(5)
    return a.alert_id


def _hostile_alert_text(detail_json: str, **over: Any) -> str:
    base = json.loads(new_alert(site=HOSTILE_SITE, node=HOSTILE_NODE, type="sos", subject={"band": 5},
                                ts=time.time()).to_json())
    base.update(over)
    base.pop("detail")
    return json.dumps(base)[:-1] + f', "detail": {detail_json}}}'


def _bands_text(x: str) -> str:
    now = f"{time.time():.3f}"
    return ('{"schema":"qwatch.bands/1","ts":' + now + ',"bands":[{"band":5,"ts":' + now + ',"x":' + x +
            ',"y":1.0,"err_m":1.0,"zone":null,"rssi":-70.0,"rx_count":3,"flags":0}]}')


def test_hostile_node_cannot_blind_the_dashboard_or_touch_other_sites(
        tmp_path: Path, victoria_metrics: ServiceProcess) -> None:
    chromium = require_binary("chromium")
    secure = start_secure_broker(tmp_path, nodes=("edge-01",))
    secure.bundles["hostile"] = secure.province.provision_node(HOSTILE_SITE, HOSTILE_NODE)
    secure.broker.reload()
    time.sleep(0.3)
    port = secure.broker.port
    cloud_bundle = tmp_path / "cloud.json"
    bundle = json.loads(secure.bundles["cloud"].read_text())
    bundle["broker_port"] = port
    cloud_bundle.write_text(json.dumps(bundle))
    cloud_bundle.chmod(0o600)
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    serve = Child("cloud", [str(BIN / "qwatch-cloud"), "serve", "--db", str(tmp_path / "cloud.db"),
                            "--mqtt", f"127.0.0.1:{port}", "--credentials", str(cloud_bundle),
                            "--vm", victoria_metrics.url, "--port", str(api_port), "--silence-s", "3600"],
                  tmp_path / "serve.log").start()
    honest = hostile = None
    stop = threading.Event()
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 40, what=f"serve healthy: {serve.log_tail()}")
        honest = _client(secure.creds("edge-01"), port, node_username(SITE, "edge-01"))
        hostile = _client(secure.creds("hostile"), port, node_username(HOSTILE_SITE, HOSTILE_NODE))
        first = _honest_alert(honest, 1001)
        htopics = NodeTopics(HOSTILE_SITE, HOSTILE_NODE)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 850})
                page.goto(api + "/")
                page.wait_for_selector("#conn.up", timeout=15_000)
                page.wait_for_selector(f'li[data-alert-id="{first}"]', timeout=15_000)

                # --- NaN and huge numbers (items 4, 5)
                for detail in ('{"v": NaN}', '{"v": Infinity}', '{"x": 1e400}'):
                    hostile.publish(htopics.alert, _hostile_alert_text(detail), qos=1).wait_for_publish(5)
                for x in ("NaN", "1e12", "-Infinity"):
                    hostile.publish(htopics.telemetry_bands, _bands_text(x), qos=0)
                # --- sizes (item 6): 1 MB passes the broker and is refused by the ingest; 60 MB the broker drops
                big = '{"blob": "' + "A" * (1 << 20) + '"}'
                hostile.publish(htopics.alert, _hostile_alert_text(big), qos=1).wait_for_publish(10)
                huge = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="huge", protocol=mqtt.MQTTv5)
                apply_credentials(huge, secure.creds("hostile"))
                huge.connect("127.0.0.1", port)
                huge.loop_start()
                huge.publish(htopics.alert, _hostile_alert_text('{"blob": "' + "B" * (60 << 20) + '"}'), qos=1)
                time.sleep(2.0)
                huge.disconnect()
                huge.loop_stop()
                # The broker forces client ID = username, so `huge` (same credentials) took the hostile
                # client's session over; paho reconnects it after its reconnect delay.
                wait_for(hostile.is_connected, 15, interval=0.1, what="the hostile client to reconnect")
                # --- cross-site alert_id (item 7): a clear for the honest site's alert, on the hostile prefix
                forged = _hostile_alert_text("{}", alert_id=first, state="cleared", type="geofence_breach",
                                             severity="critical", subject={"band": 1001})
                hostile.publish(htopics.alert, forged, qos=1).wait_for_publish(5)

                # --- client-ID takeover (item 8) while the honest node keeps raising
                takeovers = 0

                def attack() -> None:
                    nonlocal takeovers
                    while not stop.is_set():
                        a = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_username(SITE, "edge-01"),
                                        protocol=mqtt.MQTTv5)
                        apply_credentials(a, secure.creds("hostile"))
                        try:
                            a.connect("127.0.0.1", port, keepalive=30)
                            a.loop(0.05)
                            a.disconnect()
                            takeovers += 1
                        except OSError:
                            time.sleep(0.05)

                attacker = threading.Thread(target=attack, daemon=True)
                attacker.start()
                during = []
                for i in range(5):
                    during.append(_honest_alert(honest, 1002 + i))
                    time.sleep(0.4)
                stop.set()
                attacker.join(5)
                assert takeovers >= 5
                last = _honest_alert(honest, 1010)
                honest_ids = [first, *during, last]

                # The live dashboard shows every honest alert, and is still live.
                for aid in honest_ids:
                    page.wait_for_selector(f'li[data-alert-id="{aid}"]', timeout=15_000)
                assert page.is_visible("#conn.up")
                # A fresh dashboard too (the hello carries the alert list).
                page.reload()
                page.wait_for_selector("#conn.up", timeout=15_000)
                for aid in honest_ids:
                    page.wait_for_selector(f'li[data-alert-id="{aid}"]', timeout=15_000)
            finally:
                browser.close()

        alerts = httpx.get(f"{api}/api/v1/alerts", params={"limit": 100}, timeout=10).json()
        by_id = {a["alert_id"]: a for a in alerts}
        assert set(honest_ids) <= set(by_id)
        assert by_id[first]["state"] == "raised" and by_id[first]["site"] == SITE, "forged clear applied"
        assert not [a for a in alerts if a["site"] == HOSTILE_SITE], "a hostile alert was stored"
        health = httpx.get(f"{api}/healthz", timeout=5).json()
        ingest = health["ingest"]
        assert ingest["security"].get("alert_id_conflict") == 1, ingest
        assert ingest["malformed"].get("alert:too_large", 0) >= 1, ingest["malformed"]
        assert ingest["malformed"].get("alert:schema", 0) >= 2, ingest["malformed"]
        assert ingest["malformed"].get("telemetry/bands:schema", 0) + ingest["malformed"].get(
            "telemetry/bands:json", 0) >= 3, ingest["malformed"]
        assert honest.is_connected()
        print("HOSTILE-REPORT", json.dumps({"honest_alerts": len(honest_ids), "shown": len(honest_ids),
                                            "takeover_attempts": takeovers, "malformed": ingest["malformed"],
                                            "security": ingest["security"]}))
    finally:
        stop.set()
        for c in (honest, hostile):
            if c is not None:
                c.disconnect()
                c.loop_stop()
        serve.stop()
        secure.stop()
