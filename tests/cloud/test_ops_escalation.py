"""Escalation that reaches people: `serve --notify` against a real Mosquitto, a real local HTTP server
(webhooks, one of them failing twice) and a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import connect as ws_connect

from devtools.services import ServiceProcess
from tests.cloud.cloud_harness import Publisher, alert_json, wait_for
from tests.cloud.ops_harness import SmtpServer, WebhookServer, serve

pytestmark = pytest.mark.integration

SITE_YAML = """
site: {id: site-e, name: "Khu cách ly Rạch Giá"}
zones: [{id: yard, kind: permitted, polygon: [[0, 0], [30, 0], [30, 16], [0, 16]]}]
receivers: [{id: rx-1, position: [15, 8], source: sim}]
bands:
  - {id: 1005, person: "Nguyễn Văn Lan", allowed_zones: [yard]}
  - {id: 1006, allowed_zones: [yard]}
"""


class Escalations:
    """A plain MQTT subscriber on qwatch/v1/cloud/escalation."""

    def __init__(self, broker: ServiceProcess) -> None:
        self.got: list[dict[str, Any]] = []
        self.qos: list[int] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="esc-watch", protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.subscribe("qwatch/v1/cloud/escalation", qos=1)
        self.c.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        self.got.append(json.loads(m.payload))
        self.qos.append(m.qos)


def test_escalation_goes_to_mqtt_history_live_webhook_and_email(
        tmp_path: Path, mosquitto: ServiceProcess, shared_victoria_metrics: ServiceProcess) -> None:
    site_cfg = tmp_path / "site-e.yaml"
    site_cfg.write_text(SITE_YAML, encoding="utf-8")
    watcher = Escalations(mosquitto)
    with WebhookServer(fail_first=2) as hooks, SmtpServer() as smtp:
        notify = tmp_path / "notify.yaml"
        notify.write_text(f"""
version: 1
retry: {{max_attempts: 6, backoff_s: 0.3, max_backoff_s: 1}}
sites:
  site-e:
    webhooks:
      - url: {hooks.url}/ok
        headers: {{Authorization: "Bearer s3cret-hook-token"}}
      - url: {hooks.url}/flaky
    email:
      smtp: {{host: 127.0.0.1, port: {smtp.port}, username: null, password: "smtp-pa55word"}}
      from: qwatch@example.org
      to: [trucban@example.org, "cc@example.org"]
""", encoding="utf-8")
        with serve(tmp_path, mosquitto, shared_victoria_metrics, "--site-config", str(site_cfg),
                   "--escalate-site", "site-e=1", "--notify", str(notify)) as s:
            live: list[dict[str, Any]] = []
            ws_ready = threading.Event()

            def listen() -> None:
                with ws_connect(s.url.replace("http", "ws") + "/api/v1/live") as ws:
                    ws_ready.set()
                    deadline = time.monotonic() + 25
                    while time.monotonic() < deadline:
                        try:
                            live.append(json.loads(ws.recv(timeout=1)))
                        except TimeoutError:
                            continue
                        if sum(m["kind"] == "escalation" for m in live) >= 2:
                            return

            t = threading.Thread(target=listen, daemon=True)
            t.start()
            ws_ready.wait(5)
            pub = Publisher(mosquitto).connect()
            a_id, a = alert_json(site="site-e", band=1005)  # person from the site config
            b_id, b = alert_json(site="site-e", band=1006,  # person from the edge's detail
                                 detail={"x": 40.0, "y": 8.0, "zone": None, "person": "Phòng 12",
                                         "outside_m": 7.5, "left_zone": "yard"})
            pub.publish("qwatch/v1/site-e/edge-01/alert", a)
            pub.publish("qwatch/v1/site-e/edge-01/alert", b)

            # MQTT: one QoS 1 message per alert, carrying the alert view with the person.
            wait_for(lambda: len(watcher.got) >= 2, 15, 0.1, "two escalations on MQTT")
            by_id = {m["alert_id"]: m for m in watcher.got}
            assert by_id[a_id]["person"] == "Nguyễn Văn Lan" and by_id[b_id]["person"] == "Phòng 12"
            assert all(m["escalated"] and m["escalated_at"] for m in watcher.got) and watcher.qos == [1, 1]

            # Webhook and e-mail, the failing webhook retried until it got through.
            wait_for(lambda: len(hooks.bodies("/ok")) == 2 and len(smtp.messages) == 2, 15, 0.1, "webhook + mail")
            wait_for(lambda: len(hooks.bodies("/flaky")) == 4, 15, 0.1, "flaky webhook: 2 failures, 2 successes")
            assert {h["alert"]["alert_id"] for h in hooks.bodies("/ok")} == {a_id, b_id}
            assert hooks.bodies("/ok")[0]["event"] == "qwatch.escalation/1"
            assert hooks.headers["/ok"][0]["Authorization"] == "Bearer s3cret-hook-token"
            subjects = sorted(str(m["Subject"]) for m in smtp.messages)
            assert any("Nguyễn Văn Lan (band 1005)" in x for x in subjects), subjects
            assert all("LEO THANG" in x for x in subjects)
            mail_b = next(m for m in smtp.messages if "Phòng 12" in str(m["Subject"]))
            body = mail_b.get_body().get_content()  # type: ignore[union-attr]
            assert "7.5 m" in body and "Rời khu / Left zone: yard" in body
            assert str(mail_b["To"]) == "trucban@example.org, cc@example.org"

            # History: raised, escalated, and every delivery attempt with its outcome.
            def history(alert_id: str) -> list[dict[str, Any]]:
                return list(s.get(f"/api/v1/alerts/{alert_id}").json()["history"])

            def deliveries_done() -> bool:
                ok = [e for aid in (a_id, b_id) for e in history(aid)
                      if e["event"] == "escalation_delivery" and e["ok"]]
                return len(ok) == 6
            wait_for(deliveries_done, 10, 0.2, "six delivered attempts recorded")
            events = [e for aid in (a_id, b_id) for e in history(aid) if e["event"] == "escalation_delivery"]
            failed = [e for e in events if not e["ok"]]
            assert len(failed) == 2 and {e["channel"] for e in failed} == {"webhook:1"}
            assert all(e["error"] == "HTTP 503" and e["state"] == "pending" for e in failed)
            h = history(a_id)
            assert [e["event"] for e in h][:2] == ["raised", "escalated"]
            assert all(x["ts"] <= y["ts"] for x, y in itertools.pairwise(h))

            # Counted in /healthz and per site in /api/v1/sites.
            notify_stats = s.get("/healthz").json()["notify"]
            assert notify_stats["counts"]["webhook_failed_attempts"] == 2
            assert notify_stats["counts"]["webhook_sent"] == 4 and notify_stats["counts"]["email_sent"] == 2
            assert notify_stats["last_error"] == {"webhook:1": "HTTP 503"}
            site = next(x for x in s.get("/api/v1/sites").json() if x["site"] == "site-e")
            assert site["escalation_deliveries"] == {"pending": 0, "ok": 6, "failed": 0}

            # The live feed carried kind "escalation" with the alert view.
            t.join(10)
            esc = [m["data"] for m in live if m["kind"] == "escalation"]
            assert {m["alert_id"] for m in esc} == {a_id, b_id} and all(m["escalated_at"] for m in esc)

            # Once per alert: more ticks do not escalate again.
            time.sleep(2.5)
            assert len(watcher.got) == 2 and len(hooks.bodies("/ok")) == 2
            log = s.log.read_text()
            assert "event=escalation_delivery_failed" in log
            for secret in ("s3cret-hook-token", "smtp-pa55word"):
                assert secret not in log
    watcher.c.loop_stop()
    watcher.c.disconnect()
