"""The dashboard's sign-in in real headless Chromium: a guard signs in with a token, sees only their site,
acknowledges under their own name, and is sent back to sign-in when the token is revoked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from cloud import api_live
from cloud.auth import Authenticator
from cloud.users import add_user, revoke_user
from devtools.services import ServiceProcess, require_binary
from tests.cloud.cloud_harness import Publisher, RunningCloud, alert_json, start_cloud, wait_for
from tests.cloud.test_cloud_dashboard import CHROMIUM_ARGS, ENGLISH_JS

pytestmark = pytest.mark.integration


@dataclass
class Signed:
    cloud: RunningCloud
    users: Path
    guard: str
    command: str


@pytest.fixture
def signed(tmp_path: Path, mosquitto: ServiceProcess, shared_victoria_metrics: ServiceProcess,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Signed]:
    monkeypatch.setattr(api_live, "RECHECK_S", 0.5)  # how soon an open dashboard notices a revocation
    users = tmp_path / "users.yaml"
    guard = add_user(users, "lan.nguyen", "guard", ["site-d"]).token
    command = add_user(users, "cc-duty", "command", []).token
    c = start_cloud(tmp_path, mosquitto, shared_victoria_metrics.url, silence_s=3600, escalate_after_s=3600,
                    auth=Authenticator(users))
    yield Signed(c, users, guard, command)
    c.stop()


def _sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#signin-form button")


def test_guard_signs_in_sees_own_site_and_acks_as_themselves(signed: Signed, mosquitto: ServiceProcess) -> None:
    chromium = require_binary("chromium")
    cloud = signed.cloud
    pub = Publisher(mosquitto).connect()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.add_init_script(ENGLISH_JS)
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(cloud.url) else outside.append(r.url))
            page.goto(cloud.url + "/")
            page.wait_for_selector("#signin-form", state="visible", timeout=10_000)
            assert page.is_hidden("#app")
            _sign_in(page, signed.guard[:-3] + "xyz")  # a near miss is refused
            page.wait_for_function("document.querySelector('#signin-error').textContent.includes('not accepted')",
                                   timeout=10_000)
            assert page.evaluate("sessionStorage.getItem('qwatch.token')") is None

            _sign_in(page, signed.guard)
            page.wait_for_selector("#conn.up", timeout=10_000)
            assert page.get_attribute("#who", "data-name") == "lan.nguyen"
            assert "guard" in page.inner_text("#who") and "site-d" in page.inner_text("#who")
            assert page.is_hidden("#guard-label")  # no name to type: the server knows who this is
            wait_for(lambda: cloud.hub.subscribers == 1, 5, what="dashboard subscribed")

            # Site X's alert goes first on the same connection: had it been delivered, it would be there
            # before site D's.
            other_id, other = alert_json(site="site-x", band=3001, ts=time.time())
            pub.publish("qwatch/v1/site-x/edge-01/alert", other)
            alert_id, raw = alert_json(site="site-d", band=1001)
            pub.publish("qwatch/v1/site-d/edge-01/alert", raw)
            item = page.wait_for_selector(f'li[data-alert-id="{alert_id}"]', timeout=10_000)
            assert item is not None
            wait_for(lambda: cloud.store.get(other_id), 5, what="site X alert stored")
            assert page.query_selector(f'li[data-alert-id="{other_id}"]') is None
            assert page.query_selector('.site[data-site="site-x"]') is None

            page.fill(f'li[data-alert-id="{alert_id}"] .note', "guard sent to the gate")
            page.click(f'li[data-alert-id="{alert_id}"] .ack-btn')
            wait_for(lambda: (cloud.store.get(alert_id) or {}).get("acked_at"), 10, what="ack stored")
            row = cloud.store.get(alert_id) or {}
            assert (row["acked_by"], row["ack_note"]) == ("lan.nguyen", "guard sent to the gate")

            # Revoked while watching: the live socket is closed with 4401 and the tab is back at sign-in,
            # with the token and what it showed gone.
            revoke_user(signed.users, "lan.nguyen")
            page.wait_for_selector("#signin-form", state="visible", timeout=10_000)
            assert "token revoked" in page.inner_text("#signin-error")
            assert page.evaluate("sessionStorage.getItem('qwatch.token')") is None
            assert page.query_selector(f'li[data-alert-id="{alert_id}"]') is None

            # A sign-in link (what `make demo` prints), opened in a new tab: the fragment never reaches the
            # server, and is wiped from the address bar.
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.add_init_script(ENGLISH_JS)
            page.on("request", lambda r: None if r.url.startswith(cloud.url) else outside.append(r.url))
            page.goto(f"{cloud.url}/#token={signed.command}")
            page.wait_for_selector("#conn.up", timeout=10_000)
            assert page.get_attribute("#who", "data-role") == "command"
            assert page.evaluate("location.hash") == ""
            page.uncheck("#only-open")
            page.wait_for_selector(f'li[data-alert-id="{other_id}"]', timeout=10_000)  # command sees site X
            assert outside == []
        finally:
            browser.close()
            pub.close()
