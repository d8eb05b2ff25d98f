"""Dashboard page weight and first render, on a fast desktop and on an emulated old phone on site Wi-Fi.

Everything real and local: Mosquitto as a child process, the cloud's ingest + API in this process (no
VictoriaMetrics: the page does not need it to render), headless Chromium through Playwright. A province of
``--sites`` sites is published over MQTT first (node births, node health, ``--bands`` band positions per
site, a few alerts, one node dead so its bands are stale), then each run opens the dashboard in a fresh
browser context (empty cache) and records from the page itself:

- bytes: the page and its static files as transferred (HTTP headers included), the live WebSocket hello, and
  everything the live feed sent until the first screen was drawn;
- first contentful paint, DOMContentLoaded, the hello's arrival, the badge turning "live", the first screen
  (a site map with bands, or a large province's per-site summaries), the first map drawn, and, where the
  province opens as summaries, how long one tap on a site takes to draw its map ("open site").

Each profile opens the page one way: ``?watch=all`` is every band of the province live (what every
dashboard did before the province view: the baseline of the same run), ``/`` is the default (per-site
summaries once the province has more than ``live_all_bands`` bands, else as before), ``?site=`` one site.

The phone profile is Chromium's CPU throttling (``--cpu-slowdown``, default 4x: a low-end Android on this
machine's cores) and network emulation (100 ms round trip, 2 Mbit/s down, 1 Mbit/s up: a busy site Wi-Fi).
``--screens DIR`` also writes the screenshots used in docs/screens/ (phone 390x844 and desktop 1400x850).

Run: ``.venv/bin/python -m bench.dashboard_weight [--runs 5] [--sites 3] [--bands 200] [--screens docs/screens]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from cloud.alert_store import AlertStore
from cloud.api import STATIC_DIR, CloudContext, create_app
from cloud.auth import Authenticator
from cloud.ingest import Ingest, IngestConfig
from cloud.live import LiveHub
from cloud.site_geometry import SiteGeometry
from cloud.users import add_user
from devtools.services import free_port, require_binary, start_mosquitto
from protocols.payloads import new_alert
from protocols.site_config import load_site_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config" / "examples" / "demo-site.yaml"
# --lang: the browser's own widgets (date pickers) as on a Vietnamese phone.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--lang=vi-VN", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Marks taken by the page itself (performance.now(), ms since navigation start).
MARKS_JS = """
window.__marks = { wsBytes: 0 };
const NativeWS = window.WebSocket;
window.WebSocket = function (...args) {
  const ws = new NativeWS(...args);
  ws.addEventListener("message", (e) => {
    window.__marks.wsBytes += e.data.length;
    window.__marks.lastMsg = performance.now();
    if (!window.__marks.hello) { window.__marks.hello = performance.now(); window.__marks.helloBytes = e.data.length; }
  });
  return ws;
};
window.WebSocket.prototype = NativeWS.prototype;
const MAP = '.site:not(.brief-only) canvas[data-bands]:not([data-bands="0"])';
new MutationObserver(() => {
  const m = window.__marks;
  const c = document.getElementById("conn");
  if (c && c.dataset.state === "up" && !m.live) m.live = performance.now();
  if (!m.map && document.querySelector(MAP)) m.map = performance.now();
  if (!m.screen && (m.map || document.querySelector(".site.brief-only .brief div"))) {
    m.screen = performance.now(); m.screenBytes = m.wsBytes;
  }
  if (m.openStart && !m.opened && document.querySelector(`.site[data-site="${m.openSite}"]${MAP.slice(5)}`)) {
    m.opened = performance.now() - m.openStart;
  }
}).observe(document, { subtree: true, attributes: true, childList: true });
"""
# One tap on a site's "show the map" button (a province shown as summaries); the observer times its map.
OPEN_JS = """(site) => {
  const b = document.querySelector(`.site.brief-only[data-site="${site}"] .open-site`);
  if (!b) return false;
  window.__marks.openSite = site; window.__marks.openStart = performance.now(); b.click();
  return true;
}"""
COLLECT_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  return { transfer: nav.transferSize + res.reduce((s, r) => s + r.transferSize, 0),
           body: nav.decodedBodySize + res.reduce((s, r) => s + r.decodedBodySize, 0),
           requests: 1 + res.length, fcp: fcp ? fcp.startTime : null, dcl: nav.domContentLoadedEventEnd,
           ...window.__marks };
}"""
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True,
                         "device_scale_factor": 2, "throttle": True}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1400, "height": 850}}
# The baseline of the same run: every band live (?watch=all), what every dashboard was sent before.
PROFILES: dict[str, dict[str, Any]] = {
    "desktop 1400x850, loopback, every band (?watch=all)": {**DESKTOP, "path": "/?watch=all"},
    "desktop 1400x850, loopback, default": {**DESKTOP, "path": "/"},
    "phone 390x844, CPU /{slow}, site Wi-Fi, every band (?watch=all)": {**PHONE, "path": "/?watch=all"},
    "phone 390x844, CPU /{slow}, site Wi-Fi, default": {**PHONE, "path": "/"},
    "phone 390x844, CPU /{slow}, site Wi-Fi, one site (?site=)": {**PHONE, "path": "/?site={site}"},
}


class Cloud:
    """Ingest + API in this process against a real Mosquitto (what `serve` runs, without time series)."""

    def __init__(self, tmp: Path, geometry: dict[str, SiteGeometry], users: Path) -> None:
        self.broker = start_mosquitto(tmp / "mosquitto")
        self.store = AlertStore(tmp / "cloud.db")
        self.hub = LiveHub()
        self.ingest = Ingest(IngestConfig(host=self.broker.host, port=self.broker.port, silence_s=3600,
                                          escalate_after_s=3600), self.store, None, self.hub)
        self.ingest.start()
        port = free_port()
        app = create_app(CloudContext(store=self.store, hub=self.hub, ingest=self.ingest, sites=geometry,
                                      auth=Authenticator(users)))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while not (self.ingest.connected and self.server.started):
            if time.monotonic() > deadline:
                raise SystemExit("cloud did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.ingest.stop()
        self.store.close()
        self.broker.stop()


def publisher(cloud: Cloud) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-dashboard", protocol=mqtt.MQTTv5)
    c.connect(cloud.broker.host, cloud.broker.port)
    c.loop_start()
    return c


def node_health(now: float, depth: int, temp: float, rx: dict[str, float], cams: dict[str, bool]) -> dict[str, Any]:
    return {"schema": "qwatch.node/1", "ts": now, "boot_id": "b", "uptime_s": 8000.0, "cpu_pct": 31.0,
            "mem_rss_mb": 140.0, "temp_c": temp, "outbox_depth": depth, "health_errors": [],
            "cameras": {k: {"online": v, "fps_in": 5.0 if v else 0.0, "fps_proc": 5.0 if v else 0.0, "skipped": 0,
                            "reconnects": 0 if v else 4} for k, v in cams.items()},
            "watchdogs": {"mqtt": {"connected": 1}, "outbox": {"depth": depth, "oldest_age_s": 40.0 if depth else 0.0},
                          **{f"source:{k}": {"last_advert_age_s": v} for k, v in rx.items()}}}


def bands_msg(now: float, bands: list[tuple[int, float, float]]) -> str:
    return json.dumps({"schema": "qwatch.bands/1", "ts": now, "bands": [
        {"band": b, "ts": now, "x": x, "y": y, "err_m": 2.5, "zone": None, "rssi": -70.0, "rx_count": 3,
         "battery": 80, "temp_c": None, "flags": 0} for b, x, y in bands]})


def publish_province(c: mqtt.Client, sites: list[str], n_bands: int) -> dict[str, str]:
    """Births, health, positions and alerts for every site; returns the breach alert ID per site."""
    now = time.time()
    breaches: dict[str, str] = {}
    persons = ["P-0005", "Phòng 12", "P-0131", "Phòng 7B"]
    for i, site in enumerate(sites):
        nodes = ["edge-01", "edge-02"]
        for node in nodes:
            birth = {"schema": "qwatch.status/1", "state": "online", "ts": now, "version": "1.4.0",
                     "boot_id": f"{site}-{node}"}
            c.publish(f"qwatch/v1/{site}/{node}/status", json.dumps(birth), qos=1, retain=True).wait_for_publish()
        c.publish(f"qwatch/v1/{site}/edge-01/telemetry/node", json.dumps(node_health(
            now, 0, 52.0 + i, {"rx-a": 0.3, "rx-b": 0.8, "rx-e": 1.1}, {"cam-gate": True})), qos=0)
        c.publish(f"qwatch/v1/{site}/edge-02/telemetry/node", json.dumps(node_health(
            now, 12, 76.5, {"rx-n": 0.5, "rx-w": 200.0}, {"cam-yard": False})), qos=0)
        half = n_bands // 2
        live = [(1100 + k, 2 + (k * 7.3) % 26, 2 + (k * 3.1) % 12) for k in range(half)]
        stale = [(1100 + half + k, 2 + (k * 5.9) % 26, 22 + (k * 2.3) % 12) for k in range(n_bands - half)]
        c.publish(f"qwatch/v1/{site}/edge-02/telemetry/bands", bands_msg(now - 60, stale), qos=0).wait_for_publish()
        c.publish(f"qwatch/v1/{site}/edge-01/telemetry/bands", bands_msg(now, [*live, (1005, 41.0, 7.5)]),
                  qos=0).wait_for_publish()
        breach = new_alert(site=site, node="edge-01", type="geofence_breach", subject={"band": 1005}, ts=now - 20 + i,
                           detail={"x": 41.0, "y": 7.5, "zone": None, "person": persons[i % len(persons)],
                                   "outside_m": 11.0 + i, "left_zone": "block-a"})
        breaches[site] = breach.alert_id
        c.publish(f"qwatch/v1/{site}/edge-01/alert", breach.to_json(), qos=1).wait_for_publish()
        if i == 0:
            low = new_alert(site=site, node="edge-01", type="low_battery", subject={"band": 1012}, ts=now - 300,
                            detail={"battery": 9, "person": "P-0012"})
            c.publish(f"qwatch/v1/{site}/edge-01/alert", low.to_json(), qos=1).wait_for_publish()
        # edge-02 dies: its Last Will; its bands stay on the map, grey, with the time of their last fix.
        c.publish(f"qwatch/v1/{site}/edge-02/status", json.dumps({"schema": "qwatch.status/1", "state": "offline",
                  "ts": now, "version": "1.4.0", "boot_id": f"{site}-edge-02"}), qos=1, retain=True).wait_for_publish()
    return breaches


def refresh_live(c: mqtt.Client, sites: list[str], n_bands: int) -> None:
    now = time.time()
    half = n_bands // 2
    for site in sites:
        live = [(1100 + k, 2 + (k * 7.3) % 26, 2 + (k * 3.1) % 12) for k in range(half)]
        c.publish(f"qwatch/v1/{site}/edge-01/telemetry/bands", bands_msg(now, [*live, (1005, 41.0, 7.5)]),
                  qos=0).wait_for_publish()


def measure(browser: Any, url: str, profile: dict[str, Any], slowdown: float, token: str,
            open_site: str) -> dict[str, Any]:
    opts = {k: v for k, v in profile.items() if k not in ("throttle", "path")}
    ctx = browser.new_context(**opts)
    try:
        page = ctx.new_page()
        page.add_init_script(MARKS_JS)
        if profile.get("throttle"):
            cdp = ctx.new_cdp_session(page)
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": slowdown})
            cdp.send("Network.enable")
            cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 100,
                                                          "downloadThroughput": 2e6 / 8, "uploadThroughput": 1e6 / 8})
        page.goto(f"{url}{profile['path'].format(site=open_site)}#token={token}")
        page.wait_for_function("window.__marks.screen && window.__marks.live", timeout=120_000)
        if page.evaluate(OPEN_JS, open_site):
            page.wait_for_function("window.__marks.opened", timeout=60_000)
        else:
            page.wait_for_function("window.__marks.map", timeout=120_000)
        # Everything the feed had to send (every band with ?watch=all) has arrived: 1.5 s without a message.
        page.wait_for_function("performance.now() - window.__marks.lastMsg > 1500", timeout=120_000, polling=250)
        out: dict[str, Any] = page.evaluate(COLLECT_JS)
        return out
    finally:
        ctx.close()


def static_sizes() -> tuple[int, int]:
    files = [p for p in STATIC_DIR.iterdir() if p.suffix in (".html", ".js", ".css", ".svg")]
    raw = sum(p.stat().st_size for p in files)
    gz = sum(len(gzip.compress(p.read_bytes(), 6)) for p in files)
    return raw, gz


def screenshots(browser: Any, url: str, out: Path, breach: str, tokens: dict[str, str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    phone: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
    desktop: dict[str, Any] = {"viewport": {"width": 1400, "height": 850}}
    # The guard's phone, the command centre's desktop and wall, and the command centre on a phone (with a
    # large province: per-site summaries).
    views: list[tuple[str, dict[str, Any], str, str]] = [
        ("phone-live", phone, "live", "guard"), ("desktop-live", desktop, "live", "command"),
        ("desktop-wall", desktop, "wall", "command"), ("phone-health", phone, "health", "guard"),
        ("phone-history", phone, "history", "guard"), ("phone-province", phone, "live", "command")]
    for name, opts, view, who in views:
        ctx = browser.new_context(**opts, reduced_motion="reduce", locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh")
        page = ctx.new_page()
        page.goto(f"{url}/?view={view}#token={tokens[who]}")
        page.wait_for_selector("#conn.up", timeout=10_000)
        if view == "live":
            page.wait_for_selector(f'li[data-alert-id="{breach}"]', timeout=10_000)
            if opts.get("has_touch"):   # the first touch arms the alarm sound (and hides its hint)
                page.tap("#alert-panel h2")
            else:
                page.mouse.click(5, 5)
        elif view == "history":
            page.wait_for_selector("#history tbody tr", timeout=10_000)
        if name == "phone-province":   # below the alerts: the sites (summaries in a large province)
            page.wait_for_selector(".site", timeout=10_000)
            page.evaluate("document.querySelector('#map-panel').scrollIntoView()")
        time.sleep(0.6)   # one more animation frame of every map
        path = out / f"{name}.png"
        page.screenshot(path=str(path))
        shots.append(path)
        ctx.close()
    return shots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="0: only the --screens")
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--bands", type=int, default=200, help="band positions per site")
    ap.add_argument("--cpu-slowdown", type=float, default=4.0)
    ap.add_argument("--screens", type=Path, default=None, help="write screenshots to this directory")
    args = ap.parse_args()
    chromium = require_binary("chromium")
    from playwright.sync_api import sync_playwright

    demo = load_site_config(DEMO)
    names = ["demo-site", *[f"kg-site-{i:02d}" for i in range(1, args.sites)]]
    geometry = {"demo-site": SiteGeometry.from_config(demo)}
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="qwatch-dash-bench-") as tmp:
        users = Path(tmp) / "users.yaml"
        tokens = {"guard": add_user(users, "Trần Thị Hoa", "guard", ["demo-site"]).token,
                  "command": add_user(users, "cc-duty", "command", []).token}
        cloud = Cloud(Path(tmp), geometry, users)
        try:
            pub = publisher(cloud)
            breaches = publish_province(pub, names, args.bands)
            deadline = time.monotonic() + 15
            while len(cloud.hub.positions) < 2 * len(names) or cloud.store.get(breaches[names[-1]]) is None:
                if time.monotonic() > deadline:
                    raise SystemExit("the province did not arrive")
                time.sleep(0.1)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
                results: dict[str, list[dict[str, Any]]] = {}
                tok, last = tokens["command"], names[-1]
                for label, profile in PROFILES.items() if args.runs > 0 else ():
                    # warm the server, not the browser
                    measure(browser, cloud.url, profile, args.cpu_slowdown, tok, last)
                    results[label] = [measure(browser, cloud.url, profile, args.cpu_slowdown, tok, last)
                                      for _ in range(args.runs)]
                if args.screens:
                    # The living nodes report again (once a second in the field): their bands are fresh.
                    refresh_live(pub, names, args.bands)
                    for p in screenshots(browser, cloud.url, args.screens, breaches["demo-site"], tokens):
                        console.print(f"wrote {p}")
                browser.close()
            pub.loop_stop()
        finally:
            cloud.stop()
    if args.runs == 0:   # screenshots only
        return 0
    raw, gz = static_sizes()
    table = Table(title=f"dashboard: {args.sites} sites x {args.bands} bands, median (max) of {args.runs} runs, "
                        "fresh context each")
    for col in ("profile", "page KB", "hello KB", "feed KB to 1st screen", "feed KB in all", "first paint ms",
                "hello ms", "first screen ms", "first map ms", "open site ms", "feed done ms"):
        table.add_column(col, justify="right" if col != "profile" else "left")

    def cell(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> str:
        vals = [r[key] / scale for r in rows if r.get(key) is not None]
        return f"{statistics.median(vals):.0f} ({max(vals):.0f})" if vals else "-"

    for label, rows in results.items():
        table.add_row(label.format(slow=f"{args.cpu_slowdown:g}"),
                      f"{statistics.median(r['transfer'] for r in rows) / 1024:.1f}",
                      f"{statistics.median(r['helloBytes'] for r in rows) / 1024:.1f}",
                      f"{statistics.median(r['screenBytes'] for r in rows) / 1024:.1f}",
                      f"{statistics.median(r['wsBytes'] for r in rows) / 1024:.1f}",
                      cell(rows, "fcp"), cell(rows, "hello"), cell(rows, "screen"), cell(rows, "map"),
                      cell(rows, "opened"), cell(rows, "lastMsg"))
    console.print(table)
    console.print(f"static files (html, js, css, svg): {raw / 1024:.1f} KB raw, {gz / 1024:.1f} KB gzip -6; "
                  "hello KB: the WebSocket hello's JSON as the page received it (before any per-message deflate); "
                  "feed KB: live messages until the first screen, and in all (done: the last one's arrival); "
                  "first screen: a map with bands or the province's summaries; open site: one tap on the last "
                  "site's button until its map is drawn")
    console.print(f"machine: {platform.machine()} {platform.python_version()}, shared with other jobs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
