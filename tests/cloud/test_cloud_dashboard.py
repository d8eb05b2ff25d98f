"""The dashboard in real headless Chromium: an alert arrives live, stands out, and a guard acks it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from cloud.site_geometry import SiteGeometry
from devtools.services import ServiceProcess, flush_victoria_metrics, require_binary
from protocols.site_config import parse_site_config
from tests.cloud.cloud_harness import Publisher, RunningCloud, alert_json, start_cloud, wait_for

pytestmark = pytest.mark.integration
# Two blocks and a restricted gate; bands 1001 (outside, east) and 1002 (in block-a) are drawn over it.
SITE_D = parse_site_config("""
site: {id: site-d, name: Site D}
zones:
  - {id: block-a, kind: permitted, polygon: [[0, 0], [30, 0], [30, 16], [0, 16]]}
  - {id: block-b, kind: permitted, polygon: [[0, 20], [30, 20], [30, 36], [0, 36]]}
  - {id: gate, kind: restricted, polygon: [[13, -6], [17, -6], [17, 0], [13, 0]]}
receivers:
  - {id: rx-a, position: [15, 8], source: sim}
  - {id: rx-b, position: [15, 28], source: "serial:/dev/ttyACM0"}
  - {id: rx-e, position: [39, 18], source: sim}
beacons:
  - {id: 9001, position: [4, 4]}
cameras:
  - {id: cam-1, url: "rtsp://admin:secret@10.0.0.9/stream"}
""")
# Pixels the canvas may only have from the geometry before any alert: restricted red, permitted green.
COUNT_COLOURS_JS = """(sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let red = 0, green = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] > 150 && d[i + 1] < 90 && d[i + 2] < 90) red++;
    if (d[i + 1] > 120 && d[i] < 90 && d[i + 2] < 150) green++;
  }
  return {red, green};
}"""
ENGLISH_JS = "localStorage.setItem('qwatch.lang', 'en')"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture
def cloud(tmp_path: Path, mosquitto: ServiceProcess, victoria_metrics: ServiceProcess) -> Iterator[RunningCloud]:
    c = start_cloud(tmp_path, mosquitto, victoria_metrics.url, silence_s=3600, escalate_after_s=3600,
                    sites={"site-d": SiteGeometry.from_config(SITE_D)})
    yield c
    c.stop()


def test_alert_arrives_live_and_is_acknowledged(cloud: RunningCloud, mosquitto: ServiceProcess) -> None:
    chromium = require_binary("chromium")
    pub = Publisher(mosquitto).connect()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.add_init_script(ENGLISH_JS)  # this test reads the English strings (test_dashboard_phone: Vietnamese)
            # Nothing may leave the machine: fail the test on any non-loopback request.
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(cloud.url) else outside.append(r.url))
            page.goto(cloud.url + "/")
            page.wait_for_selector("#conn.up", timeout=10_000)
            wait_for(lambda: cloud.hub.subscribers == 1, 5, what="dashboard subscribed")

            base = "qwatch/v1/site-d/edge-01"
            now = time.time()
            pub.publish(f"{base}/telemetry/bands", json.dumps({"schema": "qwatch.bands/1", "ts": now, "bands": [
                {"band": 1001, "ts": now, "x": 44.0, "y": 9.8, "err_m": 3.0, "zone": None, "rssi": -80.0,
                 "rx_count": 2, "battery": 70, "temp_c": None, "flags": 0},
                {"band": 1002, "ts": now, "x": 10.0, "y": 5.0, "err_m": 2.0, "zone": "block-a", "rssi": -60.0,
                 "rx_count": 3, "battery": 90, "temp_c": None, "flags": 0}]}), qos=0)
            page.wait_for_selector('.site[data-site="site-d"]', timeout=10_000)
            page.wait_for_function("document.querySelector('.site[data-site=\"site-d\"] .title')"
                                   ".textContent.includes('2 bands')", timeout=10_000)
            # The configured geometry is drawn under the bands: 3 zones, 3 receivers, 1 beacon, and the
            # restricted gate really is red on the canvas (no alert yet, so nothing else is red).
            canvas = '.site[data-site="site-d"] canvas'
            page.wait_for_selector(f'{canvas}[data-zones="3"]', timeout=10_000)
            assert page.get_attribute(canvas, "data-receivers") == "3"
            assert page.get_attribute(canvas, "data-beacons") == "1"
            colours = page.evaluate(COUNT_COLOURS_JS, canvas)
            assert colours["red"] > 50 and colours["green"] > 200, colours

            alert_id, raw = alert_json(site="site-d", band=1001)
            pub.publish(f"{base}/alert", raw)
            item = page.wait_for_selector(f'li[data-alert-id="{alert_id}"]', timeout=10_000)
            assert item is not None
            assert "critical" in (item.get_attribute("class") or "")
            assert "Geofence breach" in item.inner_text()
            assert page.is_visible("#banner") and "CRITICAL" in page.inner_text("#banner")
            assert page.get_attribute('.site[data-site="site-d"]', "class") == "site alarm"

            # Clicking the alert draws the band's track, read back from VictoriaMetrics.
            wait_for(lambda: cloud.writer.counts["lines_written"] >= 2, 10, what="telemetry in VM")
            flush_victoria_metrics(cloud.writer.vm_url)
            page.click(f'li[data-alert-id="{alert_id}"] .what')
            page.wait_for_function("state.track !== null && state.track.points.length === 1", timeout=10_000)
            assert page.evaluate("state.track.points[0].x") == 44.0

            page.fill("#guard-name", "Nguyen Van An")
            page.fill(f'li[data-alert-id="{alert_id}"] .note', "guard sent to the gate")
            page.click(f'li[data-alert-id="{alert_id}"] .ack-btn')
            wait_for(lambda: (cloud.store.get(alert_id) or {}).get("acked_at"), 10, what="ack stored")
            row = cloud.store.get(alert_id) or {}
            assert row["acked_by"] == "Nguyen Van An" and row["ack_note"] == "guard sent to the gate"
            # Acknowledged alerts leave the "needs attention" list, and the critical banner goes.
            page.wait_for_selector(f'li[data-alert-id="{alert_id}"]', state="detached", timeout=5_000)
            page.wait_for_selector("#banner", state="hidden", timeout=5_000)
            page.uncheck("#only-open")
            done = page.wait_for_selector(f'li[data-alert-id="{alert_id}"][data-state="acknowledged"]')
            assert done is not None and "Nguyen Van An" in done.inner_text()
            assert outside == []
        finally:
            browser.close()
            pub.close()
