"""The guard's phone and the command centre's wall, in real headless Chromium against a real cloud (`serve`'s
ingest + API in process, real Mosquitto and VictoriaMetrics, sign-in on): a breach appears within 2 s with
the alarm sounding, the guard acknowledges it with one thumb, the command centre sees who and when, the page is
Vietnamese, a stale node's bands are marked, escalation rises, node health and the province overview show, and
bad live messages are skipped and counted. One broker, cloud and browser for the module (fast)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cloud.api_context import CloudContext
from cloud.auth import Authenticator, SignInSettings
from cloud.site_geometry import SiteGeometry
from cloud.users import add_user
from devtools.services import ServiceProcess, require_binary, start_mosquitto
from tests.cloud.cloud_harness import Publisher, RunningCloud, alert_json, start_cloud, wait_for
from tests.cloud.test_cloud_dashboard import CHROMIUM_ARGS, SITE_D

pytestmark = pytest.mark.integration

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True,
                         "device_scale_factor": 2}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1400, "height": 850}}
WIDTHS = {"phone": PHONE, "desktop": DESKTOP}
# Count the real Web Audio and vibration calls the alarm makes (the page cannot tell).
INSTRUMENT_JS = """
window.__alarm = { oscillators: 0, vibrate: [] };
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) { window.__alarm.oscillators++; return start.apply(this, args); };
Object.defineProperty(Navigator.prototype, "vibrate", { configurable: true,
  value: (pattern) => { window.__alarm.vibrate.push(pattern); return true; } });
"""
DATE_TIME = re.compile(r"\d{1,2}:\d{2}:\d{2}.*\d{1,2}/\d{1,2}/\d{4}|\d{1,2}/\d{1,2}/\d{4}.*\d{1,2}:\d{2}:\d{2}")


@dataclass
class World:
    cloud: RunningCloud
    pub: Publisher
    browser: Browser
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, shared_victoria_metrics: ServiceProcess) -> Iterator[World]:
    require_binary("mosquitto")
    chromium = require_binary("chromium")
    tmp = tmp_path_factory.mktemp("dash-phone")
    broker = start_mosquitto(tmp / "mosquitto")
    users = tmp / "users.yaml"
    tokens = {
        "guard": add_user(users, "lan.nguyen", "guard", ["site-d", "site-esc"]).token,
        "command": add_user(users, "cc-duty", "command", []).token,
        "typo": add_user(users, "hoa.tran", "guard", ["site-dd"]).token,
        "admin": add_user(users, "Quản trị viên", "admin", []).token,
    }
    cloud = start_cloud(tmp, broker, shared_victoria_metrics.url, silence_s=3600, escalate_after_s=3600,
                        escalate_per_site={"site-esc": 1.0}, sites={"site-d": SiteGeometry.from_config(SITE_D)},
                        auth=Authenticator(users))
    pub = Publisher(broker).connect()
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
    try:
        yield World(cloud, pub, browser, tokens)
    finally:
        browser.close()
        pw.stop()
        pub.close()
        cloud.stop()
        broker.stop()


def open_page(w: World, who: str, size: dict[str, Any], path: str = "/") -> tuple[BrowserContext, Page]:
    ctx = w.browser.new_context(**size)
    ctx.add_init_script(INSTRUMENT_JS)
    page = ctx.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(w.cloud.url) else outside.append(r.url))
    page.on("pageerror", lambda e: outside.append(f"pageerror: {e}"))
    page.goto(f"{w.cloud.url}{path}#token={w.tokens[who]}")
    try:
        page.wait_for_selector("#conn.up", timeout=10_000)
    except PlaywrightTimeout:
        seen = page.evaluate("[document.querySelector('#conn').outerHTML, document.querySelector('#signin-error')"
                             ".textContent]")
        raise AssertionError(f"dashboard never went live: {seen} {outside}") from None
    page._qwatch_outside = outside  # type: ignore[attr-defined]
    return ctx, page


def wall_diagnosis(w: World, page: Page, site: str) -> dict[str, Any]:
    """What the server and the page each believed when a wall tile did not show what it should."""
    keys = ["open", "unacknowledged", "critical_open", "escalated", "nodes_online"]
    api = httpx.get(f"{w.cloud.url}/api/v1/sites", headers={"Authorization": f"Bearer {w.tokens['command']}"},
                    timeout=10)
    server = ([{k: s.get(k) for k in keys} for s in api.json() if s.get("site") == site] if api.status_code == 200
              else api.status_code)
    shown = page.evaluate("([site, keys]) => { const s = state.sites.get(site);"
                          " return {view: state.view, ws: state.conn.ws, asked: sitesAsked, shown: sitesShown,"
                          " counts: s ? keys.map((k) => s[k]) : null,"
                          " worst: document.querySelector(`.tile[data-site='${site}']`)?.dataset.worst ?? null}; }",
                          [site, keys])
    return {"server": server, "page": shown, "errors": page_errors(page)}


def page_errors(page: Page) -> list[str]:
    return list(page._qwatch_outside)  # type: ignore[attr-defined]


def bands_json(now: float, bands: list[tuple[int, float, float]]) -> str:
    return json.dumps({"schema": "qwatch.bands/1", "ts": now, "bands": [
        {"band": b, "ts": now, "x": x, "y": y, "err_m": 2.0, "zone": None, "rssi": -70.0, "rx_count": 2,
         "battery": 80, "temp_c": None, "flags": 0} for b, x, y in bands]})


def status_json(state: str, boot_id: str, ts: float) -> str:
    return json.dumps({"schema": "qwatch.status/1", "state": state, "ts": ts, "version": "1.4.0", "boot_id": boot_id})


def arm_sound(page: Page, phone: bool) -> None:
    """The guard's first touch of the page (browsers allow sound only after one)."""
    if phone:
        page.tap("#alert-panel h2")
    else:
        page.click("#alert-panel h2")
    page.wait_for_function("sound.armed === true && document.querySelector('#sound-hint').hidden", timeout=5_000)


@pytest.mark.parametrize("width", ["phone", "desktop"])
def test_breach_sounds_guard_acks_with_thumb_command_sees_who_and_when(world: World, width: str) -> None:
    size = WIDTHS[width]
    vw, vh = size["viewport"]["width"], size["viewport"]["height"]
    guard_ctx, guard = open_page(world, "guard", size)
    cmd_ctx, command = open_page(world, "command", size)
    try:
        # Vietnamese by default, with its diacritics; nothing wider than the screen.
        assert guard.evaluate("document.documentElement.lang") == "vi"
        assert guard.inner_text("#views") .split() [:2] == ["Trực", "tiếp"]
        assert guard.get_attribute("#conn", "data-state") == "up" and guard.inner_text("#conn") == "trực tiếp"
        arm_sound(guard, width == "phone")
        wait_for(lambda: world.cloud.hub.subscribers >= 2, 5, what="both dashboards subscribed")

        alert_id, raw = alert_json(site="site-d", band=1001, detail={
            "x": 44.0, "y": 9.8, "zone": None, "person": "Nguyễn Văn Lan", "outside_m": 14.2, "left_zone": "block-a"})
        t0 = time.monotonic()
        world.pub.publish("qwatch/v1/site-d/edge-01/alert", raw)
        item = guard.wait_for_selector(f'li[data-alert-id="{alert_id}"]', timeout=2_000)
        elapsed = time.monotonic() - t0
        assert item is not None and elapsed < 2.0, elapsed
        # The alarm really sounded: Web Audio oscillators started and a vibration pattern was asked for.
        guard.wait_for_function("window.__alarm.oscillators >= 3", timeout=2_000)
        assert guard.evaluate("window.__alarm.vibrate.length") >= 1
        assert guard.evaluate("sound.log.at(-1).level") == "alert" and guard.evaluate("sound.log.at(-1).played")
        text = item.inner_text()
        assert "Ra khỏi khu cách ly" in text and "Nguyễn Văn Lan" in text, text
        assert "rời block-a" in text and "ngoài hàng rào 14,2 m" in text, text
        assert DATE_TIME.search(text), text   # times carry their date
        assert "KHẨN" in guard.inner_text("#banner")
        # No live position of band 1001 here: the map shows it where the alert put it, as an old fix.
        guard.wait_for_selector('.site[data-site="site-d"] canvas[data-alert-fixes="1"]', timeout=2_000)

        # The newest alert needing attention is the first one, its button fully on screen and not covered.
        assert guard.evaluate("document.querySelector('#alerts li').dataset.alertId") == alert_id
        button = f'li[data-alert-id="{alert_id}"] .ack-btn'
        box = guard.locator(button).bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= vw and box["y"] >= 0 and box["y"] + box["height"] <= vh, box
        assert box["height"] >= (44 if width == "phone" else 20), box
        on_top = guard.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('.ack-btn') !== null",
                                [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert on_top
        assert guard.evaluate("document.documentElement.scrollWidth") <= vw
        assert guard.inner_text(button) == "Xác nhận"

        guard.fill(f'li[data-alert-id="{alert_id}"] .note', "đã đưa về phòng")
        if width == "phone":
            guard.tap(button)
        else:
            guard.click(button)
        wait_for(lambda: (world.cloud.store.get(alert_id) or {}).get("acked_at"), 10, what="ack stored")
        row = world.cloud.store.get(alert_id) or {}
        assert (row["acked_by"], row["ack_note"]) == ("lan.nguyen", "đã đưa về phòng")

        # The command centre sees who acknowledged it, when (with the date), and how long it took.
        command.uncheck("#only-open")
        done = command.wait_for_selector(f'li[data-alert-id="{alert_id}"][data-state="acknowledged"] .acked',
                                         timeout=5_000)
        assert done is not None
        acked = done.inner_text()
        assert acked.startswith("Đã xác nhận bởi lan.nguyen lúc") and DATE_TIME.search(acked), acked
        assert "đã đưa về phòng" in acked and "sau " in acked, acked
        assert command.evaluate("document.documentElement.scrollWidth") <= vw
        assert page_errors(guard) == [] and page_errors(command) == []
    finally:
        guard_ctx.close()
        cmd_ctx.close()


def test_stale_node_bands_are_marked(world: World) -> None:
    ctx, page = open_page(world, "command", DESKTOP)
    try:
        now = time.time()
        for node, boot in (("edge-02", "boot-2"), ("edge-03", "boot-3")):
            world.pub.publish(f"qwatch/v1/site-s/{node}/status", status_json("online", boot, now), retain=True)
        base = "qwatch/v1/site-s"
        world.pub.publish(f"{base}/edge-02/telemetry/bands", bands_json(now, [(2001, 3, 4), (2002, 8, 9)]), qos=0)
        world.pub.publish(f"{base}/edge-03/telemetry/bands", bands_json(now, [(3001, 20, 4)]), qos=0)
        card = '.site[data-site="site-s"]'
        page.wait_for_selector(f'{card} canvas[data-bands="3"][data-stale="0"]', timeout=10_000)
        # edge-02 dies (its Last Will): its two bands turn grey, labelled with their last fix.
        world.pub.publish("qwatch/v1/site-s/edge-02/status", status_json("offline", "boot-2", now), retain=True)
        page.wait_for_selector(f'{card}[data-stale="2"] canvas[data-stale="2"]', timeout=10_000)
        assert "2 vòng đeo có vị trí cũ" in page.inner_text(f"{card} .stale-note")
        assert "1/2 trạm trực tuyến" in page.inner_text(f"{card} .title")
        grey = page.evaluate("""(sel) => {
          const c = document.querySelector(sel);
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 0; i < d.length; i += 4) if (d[i] === 0x59 && d[i + 1] === 0x62 && d[i + 2] === 0x6c) n++;
          return n; }""", f"{card} canvas")
        assert grey > 20, grey   # the stale fill colour is really on the canvas
        # The health view names the offline node.
        page.click('#views button[data-view="health"]')
        page.wait_for_selector('.health-site[data-site="site-s"] .node[data-node="edge-02"][data-online="false"]',
                               timeout=5_000)
        assert "mất kết nối" in page.inner_text('.health-site[data-site="site-s"] .node[data-node="edge-02"]')
        assert page_errors(page) == []
    finally:
        ctx.close()


def node_health(now: float) -> str:
    return json.dumps({
        "schema": "qwatch.node/1", "ts": now, "boot_id": "boot-h", "uptime_s": 100.0, "cpu_pct": 23.0,
        "mem_rss_mb": 120.0, "temp_c": 71.5, "outbox_depth": 7, "health_errors": [], "config_version": 3,
        "cameras": {"cam-1": {"online": False, "fps_in": 0.0, "fps_proc": 0.0, "skipped": 0, "reconnects": 3}},
        "watchdogs": {"mqtt": {"connected": 1}, "outbox": {"depth": 7, "oldest_age_s": 95.0},
                      "source:rx-a": {"last_advert_age_s": 0.4}, "source:rx-b": {"last_advert_age_s": 140.0},
                      "breach_null": {"scale": 1.33, "beta": 120.0, "samples": 900, "tail": 400, "above_cut": 300,
                                      "misfit": 1}},
        "receivers": {"rx-a": {"floor_dbm": -98.0, "gain_dev_db": 0.4, "gain_links": 200, "state": "ok"},
                      "rx-b": {"floor_dbm": -84.0, "gain_dev_db": 0.0, "gain_links": 0, "state": "deaf"}},
    })


@pytest.mark.parametrize("width", ["phone", "desktop"])
def test_node_health_and_province_overview(world: World, width: str) -> None:
    now = time.time()
    site = f"site-h{width[0]}"   # one site per width: the wall's counts are the site's own
    world.pub.publish(f"qwatch/v1/{site}/edge-09/status", status_json("online", "boot-h", now), retain=True)
    world.pub.publish(f"qwatch/v1/{site}/edge-09/telemetry/node", node_health(now), qos=0)
    ctx, page = open_page(world, "command", WIDTHS[width], "/?view=health")
    try:
        node = f'.health-site[data-site="{site}"] .node[data-node="edge-09"]'
        page.wait_for_selector(f'{node} dd[data-k="outbox"]', timeout=10_000)
        assert page.inner_text(f'{node} dd[data-k="outbox"]').startswith("7 (cũ nhất 1 phút 35 giây)")
        assert page.inner_text(f'{node} dd[data-k="temp"]') == "71,5 °C"
        assert page.inner_text(f'{node} dd[data-k="receivers"]') == "1/2; im lặng: rx-b"
        assert page.inner_text(f'{node} dd[data-k="cameras"]') == "0/1 trực tuyến; mất: cam-1"
        assert page.inner_text(f'{node} dd[data-k="config"]') == "bản 3"
        # What the wristband pipeline learned: the deaf receiver and a model that does not fit, as a warning.
        breach = page.inner_text(f'{node} dd[data-k="breach"]')
        assert breach.startswith("đầu thu cần kiểm tra: rx-b (nghe kém); mô hình sóng không khớp"), breach
        assert "rx-a" not in breach
        assert page.get_attribute(f'{node} dd[data-k="breach"]', "class") == "warn"
        assert "giây trước" in page.inner_text(node) or "bây giờ" in page.inner_text(node)
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["viewport"]["width"]

        # The wall: one tile per site, worst state first in colour; a critical open alert makes it "Khẩn cấp".
        alert_id, raw = alert_json(site=site, node="edge-09", band=4001)
        world.pub.publish(f"qwatch/v1/{site}/edge-09/alert", raw)
        wait_for(lambda: world.cloud.store.get(alert_id), 10, what="alert stored")
        page.click('#views button[data-view="wall"]')
        try:
            page.wait_for_selector(f'.tile[data-site="{site}"][data-worst="crit"]', timeout=10_000)
        except PlaywrightTimeout:
            raise AssertionError(f"wall tile not critical: {wall_diagnosis(world, page, site)}") from None
        assert page.inner_text(f'.tile[data-site="{site}"] .num[data-k="critical"] .n') == "1"
        assert page.inner_text(f'.tile[data-site="{site}"] .worst') == "Khẩn cấp"
        assert page.inner_text(f'.tile[data-site="{site}"] .num[data-k="nodes"] .n') == "1/1"
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["viewport"]["width"]
        # A tile opens that site's live view.
        page.click(f'.tile[data-site="{site}"]')
        page.wait_for_selector(f'#alerts li[data-alert-id="{alert_id}"]', timeout=5_000)
        assert page.evaluate("new URL(location.href).searchParams.get('site')") == site
        assert page_errors(page) == []
    finally:
        ctx.close()


def test_escalation_rises_banner_and_sound(world: World) -> None:
    ctx, page = open_page(world, "guard", PHONE)
    try:
        arm_sound(page, True)
        before = page.evaluate("window.__alarm.oscillators")
        alert_id, raw = alert_json(site="site-esc", band=5001, detail={"x": 1.0, "y": 2.0, "zone": None,
                                                                       "person": "Phòng 12"})
        world.pub.publish("qwatch/v1/site-esc/edge-01/alert", raw)
        page.wait_for_selector(f'li[data-alert-id="{alert_id}"]', timeout=2_000)
        # site-esc escalates after 1 s without acknowledgement.
        page.wait_for_selector(f'li[data-alert-id="{alert_id}"].escalated', timeout=6_000)
        page.wait_for_selector("#banner.escalated", timeout=2_000)
        assert page.inner_text("#banner").startswith("ĐÃ BÁO CẤP TRÊN")
        assert page.inner_text(f'li[data-alert-id="{alert_id}"] .esc-at').startswith("Đã báo cấp trên lúc")
        assert page.evaluate("sound.log.some((e) => e.level === 'escalation' && e.played)")
        # Louder and longer: the escalation pattern is 6 tones after the alert's 3.
        assert page.evaluate("window.__alarm.oscillators") - before >= 9
        assert page.evaluate("sound.repeatTimer !== null")
        page.tap(f'li[data-alert-id="{alert_id}"] .ack-btn')
        page.wait_for_selector("#banner", state="hidden", timeout=5_000)
        assert page_errors(page) == []
    finally:
        ctx.close()


def test_guard_with_an_unknown_site_gets_a_hint(world: World) -> None:
    ctx, page = open_page(world, "typo", PHONE)
    try:
        page.wait_for_selector("#site-hint:not([hidden])", timeout=10_000)
        assert "“site-dd”" in page.inner_text("#site-hint")
    finally:
        ctx.close()
    ctx, page = open_page(world, "command", DESKTOP, "/?site=site-x1")
    try:
        page.wait_for_selector("#site-hint:not([hidden])", timeout=10_000)
        hint = page.inner_text("#site-hint")
        assert "“site-x1”" in hint and "Có phải ý bạn là:" in hint and "site-d" in hint, hint
    finally:
        ctx.close()


def test_bad_live_messages_are_skipped_counted_and_clamped(world: World) -> None:
    ctx, page = open_page(world, "command", DESKTOP)
    try:
        now = time.time()
        good_id, good = alert_json(site="site-b", band=6001)
        nan_id, nan = alert_json(site="site-b", band=6002)
        # What a lax server emits for float('nan') in an alert's detail, a message that is not JSON, an alert
        # with a bad ID, and a band at x = 1e12 (which once hung the tab in the grid loop).
        nan_msg = '{"kind":"alert","data":' + json.dumps(_view(nan)).replace('"y": 9.8', '"y": NaN') + "}"
        assert "NaN" in nan_msg
        far = {"site": "site-b", "node": "edge-01", "ts": now, "bands": [
            {"band": 6003, "ts": now, "x": 1e12, "y": 5.0, "err_m": 1e9},
            {"band": 6004, "ts": now, "x": 3.0, "y": 4.0}]}
        t0 = time.monotonic()
        page.evaluate("""(msgs) => { for (const m of msgs) onMessage({ data: m }); }""",
                      [nan_msg, "{not json", json.dumps({"kind": "alert", "data": {"alert_id": "x", "site": "s"}}),
                       json.dumps({"kind": "bands", "data": far}), json.dumps({"kind": "bands", "data": None})])
        page.wait_for_selector('.site[data-site="site-b"] canvas[data-bands="2"]', timeout=5_000)
        assert time.monotonic() - t0 < 3.0
        assert page.get_attribute('.site[data-site="site-b"] canvas', "data-clamped") == "1"
        page.wait_for_selector(f'li[data-alert-id="{nan_id}"]', timeout=5_000)   # read, NaN as "unknown"
        assert page.get_attribute("#bad-count", "data-count") == "4"   # non-finite, json, alert:id, shape
        assert page.is_visible("#bad-count") and "Đã bỏ qua 4 tin lỗi" in page.inner_text("#bad-count")
        # The page still works: an honest alert arrives and shows, the badge is still live.
        world.pub.publish("qwatch/v1/site-b/edge-01/alert", good)
        page.wait_for_selector(f'li[data-alert-id="{good_id}"]', timeout=5_000)
        assert page.get_attribute("#conn", "data-state") == "up"
        assert page_errors(page) == []
    finally:
        ctx.close()


def _view(raw: str) -> dict[str, Any]:
    """An alert view as the API shows it, built from an alert's JSON."""
    a = json.loads(raw)
    return {**a, "raised_ts": a["ts"], "cleared_ts": None, "received_at": a["ts"], "updated_at": a["ts"],
            "acknowledged": False, "ack": None, "escalated": False, "escalated_at": None}


def test_signin_page_favicon_and_badge(world: World, tmp_path: Path) -> None:
    ctx = world.browser.new_context(**PHONE)
    page = ctx.new_page()
    try:
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status) if "favicon" in r.url else None)
        page.goto(world.cloud.url + "/")
        page.wait_for_selector("#signin-form", state="visible", timeout=10_000)
        # No red "offline" before anything was tried; the form is in Vietnamese.
        assert page.is_hidden("#conn")
        assert page.inner_text("#signin-form h2") == "Đăng nhập"
        assert world.cloud.get("/favicon.ico").status_code == 200
        assert world.cloud.get("/favicon.ico").headers["content-type"] == "image/x-icon"
        # A mistyped code is explained, not sent.
        page.fill("#token", "ab-12")
        page.click("#signin-form button")
        page.wait_for_function("document.querySelector('#signin-error').textContent.includes('8 chữ và số')",
                               timeout=5_000)
        # English is one tap away, and remembered.
        page.click("#lang")
        assert page.evaluate("document.documentElement.lang") == "en"
        assert page.inner_text("#signin-form h2") == "Sign in"
        page.reload()
        page.wait_for_selector("#signin-form", state="visible", timeout=10_000)
        assert page.inner_text("#signin-form h2") == "Sign in"
        assert all(s == 200 for s in statuses)
    finally:
        ctx.close()


def test_guard_signs_in_with_a_qr_code_and_the_session_renews(world: World) -> None:
    made = httpx.post(f"{world.cloud.url}/api/v1/auth/codes", json={"user": "lan.nguyen"}, timeout=10,
                      headers={"Authorization": f"Bearer {world.tokens['admin']}"})
    assert made.status_code == 200, made.text
    ctx = world.browser.new_context(**PHONE)
    page = ctx.new_page()
    try:
        # The QR code's URL, opened on the guard's phone: signed in, the code wiped from the address bar.
        page.goto(world.cloud.url + made.json()["url"])
        page.wait_for_selector("#conn.up", timeout=10_000)
        assert page.get_attribute("#who", "data-name") == "lan.nguyen"
        assert page.evaluate("location.search") == ""
        stored = page.evaluate("JSON.parse(localStorage.getItem('qwatch.session'))")
        assert stored["token"].startswith("qs.") and stored["expires_at"] > time.time() + 3600
        assert page.evaluate("sessionStorage.getItem('qwatch.token')") is None
        renew_at = page.evaluate("auth.renewAt")
        assert time.time() < renew_at < stored["expires_at"]
        # Renewal (run now rather than waiting hours): a new session, stored, the live feed still on.
        time.sleep(1.1)
        page.evaluate("renewToken()")
        page.wait_for_function(f"auth.expiresAt > {stored['expires_at']}", timeout=5_000)
        renewed = page.evaluate("JSON.parse(localStorage.getItem('qwatch.session'))")
        assert renewed["token"] != stored["token"]
        page.wait_for_selector("#conn.up", timeout=10_000)
        # Sound is on by default; turned off, it stays off. The phone stays signed in across a reload (a
        # closed tab), with no code.
        assert page.get_attribute("#sound", "aria-pressed") == "true"
        page.tap("#sound")
        assert page.get_attribute("#sound", "aria-pressed") == "false"
        page.reload()
        page.wait_for_selector("#conn.up", timeout=10_000)
        assert page.get_attribute("#who", "data-name") == "lan.nguyen"
        assert page.get_attribute("#sound", "aria-pressed") == "false" and page.inner_text("#sound") == "Âm thanh: tắt"
        # The code was single use.
        page2 = ctx.new_page()
        page2.goto(world.cloud.url + made.json()["url"])
        page2.wait_for_function("document.querySelector('#signin-error').textContent.includes('đã dùng')",
                                timeout=10_000)
    finally:
        ctx.close()


def test_rate_limited_sign_in_says_how_long_to_wait(world: World, tmp_path: Path, mosquitto: ServiceProcess,
                                                     shared_victoria_metrics: ServiceProcess) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "lan.nguyen", "guard", ["site-d"])
    cloud = start_cloud(tmp_path, mosquitto, shared_victoria_metrics.url, silence_s=3600, escalate_after_s=3600,
                        auth=Authenticator(users, SignInSettings(fail_limit=3, fail_window_s=120)))
    ctx = world.browser.new_context(**PHONE)
    page = ctx.new_page()
    try:
        page.goto(cloud.url + "/")
        page.wait_for_selector("#signin-form", state="visible", timeout=10_000)
        for _ in range(3):
            page.fill("#token", "2222-3333")
            page.click("#signin-form button")
            page.wait_for_function("!document.querySelector('#signin-form button').disabled", timeout=5_000)
        assert "không đúng" in page.inner_text("#signin-error")
        page.fill("#token", "2222 3333")
        page.click("#signin-form button")
        page.wait_for_function("document.querySelector('#signin-error').textContent.includes('quá nhiều lần')",
                               timeout=5_000)
        assert re.search(r"đợi \d+ giây", page.inner_text("#signin-error"))
        assert page.is_hidden("#conn")
    finally:
        ctx.close()
        cloud.stop()


@pytest.mark.parametrize("width", ["phone", "desktop"])
def test_history_filters_time_to_ack_csv_and_daily_report(world: World, width: str) -> None:
    alert_id, raw = alert_json(site="site-d", band=1007, detail={"x": 44.0, "y": 9.8, "zone": None,
                                                                 "person": f"Lê Thị Mai {width}", "outside_m": 6.0})
    world.pub.publish("qwatch/v1/site-d/edge-01/alert", raw)
    wait_for(lambda: world.cloud.store.get(alert_id), 5, what="alert stored")
    time.sleep(1.2)
    acked = httpx.post(f"{world.cloud.url}/api/v1/alerts/{alert_id}/ack", json={"note": "ok"}, timeout=10,
                       headers={"Authorization": f"Bearer {world.tokens['guard']}"})
    assert acked.status_code == 200, acked.text
    ctx, page = open_page(world, "command", WIDTHS[width], "/?view=history")
    try:
        page.wait_for_selector("#history tbody tr", timeout=10_000)
        page.fill('#history-form input[name="person"]', f"Mai {width}")
        page.select_option('#history-form select[name="site"]', "site-d")
        page.click('#history-form button[type="submit"]')
        row = f'#history tbody tr[data-alert-id="{alert_id}"]'
        page.wait_for_function("document.querySelectorAll('#history tbody tr').length === 1", timeout=10_000)
        text = page.inner_text(row)
        assert f"Lê Thị Mai {width}" in text and "ngoài hàng rào 6 m" in text and "lan.nguyen" in text, text
        ack_s = page.inner_text(f'{row} td[data-k="ack_s"]')
        assert re.fullmatch(r"(?:Thời gian xác nhận\s*)?\d+ giây", ack_s.strip()), ack_s
        assert page.inner_text("#history-status") == "1 cảnh báo"
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["viewport"]["width"]
        # The same filters as a CSV file (fetched with the token, saved by the browser).
        with page.expect_download() as dl:
            page.click("#history-csv")
        csv = Path(dl.value.path()).read_text(encoding="utf-8-sig")
        assert f"Lê Thị Mai {width}" in csv and alert_id in csv and len(csv.strip().splitlines()) == 2, csv
        # The daily report for today, as CSV.
        page.fill('#report-form input[name="date"]', time.strftime("%Y-%m-%d"))
        with page.expect_download() as rep:
            page.click('#report-form button[type="submit"]')
        assert "site-d" in Path(rep.value.path()).read_text(encoding="utf-8-sig")
        assert page_errors(page) == []
    finally:
        ctx.close()


def test_live_badge_reflects_a_broker_outage(world: World, tmp_path: Path, mosquitto: ServiceProcess,
                                             shared_victoria_metrics: ServiceProcess) -> None:
    users = tmp_path / "users.yaml"
    token = add_user(users, "cc-duty", "command", []).token
    cloud = start_cloud(tmp_path, mosquitto, shared_victoria_metrics.url, silence_s=3600, escalate_after_s=3600,
                        auth=Authenticator(users))
    ctx = world.browser.new_context(**DESKTOP)
    page = ctx.new_page()
    try:
        page.goto(f"{cloud.url}/#token={token}")
        page.wait_for_selector("#conn.up", timeout=10_000)
        # The broker goes away: the page's socket to the API stays open, but the data behind it has stopped.
        mosquitto.stop()
        wait_for(lambda: not cloud.ingest.connected, 10, what="ingest noticed the outage")
        page.evaluate("checkHealth()")   # what the page does every 10 s, run now
        page.wait_for_selector('#conn[data-state="degraded"]', timeout=5_000)
        assert page.inner_text("#conn") == "máy chủ có sự cố"
        assert "MQTT" in (page.get_attribute("#conn", "title") or "")
    finally:
        ctx.close()
        cloud.stop()


def test_escalation_notifications_are_shown_on_the_card(world: World) -> None:
    """The alert view's history carries each webhook/e-mail try (ops' notifier); the card shows the last of
    each channel. The view is handed to the page as the live feed would."""
    ctx, page = open_page(world, "command", DESKTOP)
    try:
        alert_id, raw = alert_json(site="site-n", band=7001, detail={"x": 1.0, "y": 1.0, "zone": None})
        view = _view(raw)
        now = view["ts"] + 130
        view.update(escalated=True, escalated_at=now, history=[
            {"event": "raised", "ts": view["ts"]}, {"event": "escalated", "ts": now},
            {"event": "escalation_delivery", "ts": now + 1, "channel": "webhook", "ok": False, "error": "HTTP 503",
             "attempt": 1, "state": "pending", "next_at": now + 30},
            {"event": "escalation_delivery", "ts": now + 31, "channel": "webhook", "ok": False, "error": "HTTP 503",
             "attempt": 2, "state": "pending", "next_at": now + 90},
            {"event": "escalation_delivery", "ts": now + 2, "channel": "email", "ok": True, "error": None,
             "attempt": 1, "state": "ok", "next_at": None}])
        page.evaluate("(m) => onMessage({ data: m })", json.dumps({"kind": "escalation", "data": view}))
        esc = page.inner_text(f'li[data-alert-id="{alert_id}"] .esc-at')
        assert esc.startswith("Đã báo cấp trên lúc") and "webhook ✗ đang thử lại (lần 2)" in esc, esc
        assert "email ✓" in esc, esc
        assert page.evaluate("sound.log.some((e) => e.level === 'escalation')")
    finally:
        ctx.close()


def test_large_province_on_a_phone_opens_as_summaries_and_one_site_at_a_time(world: World) -> None:
    """Over the live feed's band budget the command centre's phone gets per-site counts and no positions; one
    tap opens a site's map (that site's positions only); an alert of a site not opened still arrives at once;
    the guard's own sites stay live. Vietnamese first, English switchable."""
    app = world.cloud.server.config.app
    assert isinstance(app, FastAPI)
    app_ctx: CloudContext = app.state.ctx
    budget = app_ctx.live_all_bands
    app_ctx.live_all_bands = 5   # the module's sites already hold more bands than this
    now = time.time()
    for site, bands in (("site-pa", [(4100 + k, 2.0 + k, 3.0) for k in range(6)]), ("site-pb", [(4200, 5.0, 5.0)]),
                        ("site-d", [(4300, 10.0, 10.0)])):
        world.pub.publish(f"qwatch/v1/{site}/edge-01/status", status_json("online", f"boot-{site}", now), retain=True)
        world.pub.publish(f"qwatch/v1/{site}/edge-01/telemetry/bands", bands_json(now, bands), qos=0)
    wait_for(lambda: ("site-pb", "edge-01") in world.cloud.hub.positions, 5, what="positions in the hub")
    ctx, page = open_page(world, "command", PHONE)
    gctx, guard = open_page(world, "guard", PHONE)
    try:
        pa = '.site[data-site="site-pa"]'
        page.wait_for_selector(f"{pa}.brief-only .brief div", timeout=5_000)
        assert "6 vòng đeo · 0 có vị trí cũ" in page.inner_text(f"{pa} .brief")
        assert page.evaluate("state.watching !== null && state.watching.size === 0 && state.positions.size === 0")
        assert page.is_visible("#province-note") and page.inner_text(f"{pa} .open-site") == "Xem bản đồ khu này"
        assert page.evaluate("document.querySelectorAll('.site:not(.brief-only)').length") == 0
        # An alert of a site nobody opened arrives at once, sounds, and marks that site's card.
        arm_sound(page, True)
        alert_id, raw = alert_json(site="site-pb", band=4200, detail={"x": 5.0, "y": 5.0, "zone": None})
        world.pub.publish("qwatch/v1/site-pb/edge-01/alert", raw)
        page.wait_for_selector(f'li[data-alert-id="{alert_id}"]', timeout=2_000)
        page.wait_for_function("window.__alarm.oscillators >= 1", timeout=2_000)
        page.wait_for_selector('.site.brief-only.alarm[data-site="site-pb"]', timeout=2_000)
        # Sites needing someone come first (site-pb's critical breach; site-pa has no alert).
        page.wait_for_function("""() => { const ids = [...document.querySelectorAll('#sites .site')]
          .map((c) => c.dataset.site); return ids.indexOf('site-pb') < ids.indexOf('site-pa'); }""", timeout=8_000)
        # One tap opens site-pa: its map, its positions only, then its live updates.
        box = page.locator(f"{pa} .open-site").bounding_box()
        assert box is not None and box["height"] >= 44
        page.tap(f"{pa} .open-site")
        page.wait_for_selector(f'{pa}:not(.brief-only) canvas[data-bands="6"]', timeout=5_000)
        assert page.evaluate("[...state.positions.keys()]") == ["site-pa"]
        world.pub.publish("qwatch/v1/site-pa/edge-01/telemetry/bands",
                          bands_json(time.time(), [(4100 + k, 2.0 + k, 4.0) for k in range(7)]), qos=0)
        page.wait_for_selector(f'{pa} canvas[data-bands="7"]', timeout=5_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # Back to the province: summaries again; English on request.
        page.click("#site-filter")
        page.wait_for_selector(f"{pa}.brief-only", timeout=5_000)
        page.click("#lang")
        page.wait_for_function("document.querySelector('.site[data-site=\"site-pa\"] .brief').innerText"
                               ".includes('7 bands')", timeout=8_000)
        assert page.inner_text(f"{pa} .open-site") == "Show this site's map"
        # The guard's own sites are live whatever the province's size: site-d's map is drawn.
        guard.wait_for_selector('.site[data-site="site-d"]:not(.brief-only) canvas[data-bands]:not([data-bands="0"])',
                                timeout=5_000)
        assert guard.evaluate("state.watching === null && document.querySelectorAll('.brief-only').length === 0")
        assert page_errors(page) == [] and page_errors(guard) == []
    finally:
        app_ctx.live_all_bands = budget
        ctx.close()
        gctx.close()
