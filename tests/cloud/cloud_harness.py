"""Helpers for the cloud tests: run the cloud in-process on a free port, publish raw MQTT payloads."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from cloud.alert_store import AlertStore
from cloud.api import CloudContext, create_app
from cloud.ingest import Ingest, IngestConfig
from cloud.live import LiveHub
from cloud.timeseries import TelemetryWriter
from devtools.services import ServiceProcess, free_port
from protocols.payloads import new_alert
from protocols.ulid import new_ulid
from tests.helpers import wait_for

__all__ = ["Publisher", "RunningCloud", "alert_json", "cleared_json", "start_cloud", "wait_for"]


@dataclass
class RunningCloud:
    """Ingest + API in this process, against real services."""

    store: AlertStore
    writer: TelemetryWriter
    ingest: Ingest
    hub: LiveHub
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, timeout=10)

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        resp = self.get("/api/v1/alerts", **params)
        resp.raise_for_status()
        return list(resp.json())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.ingest.stop()
        self.writer.stop()
        self.store.close()


def start_cloud(workdir: Path, broker: ServiceProcess, vm_url: str, **cfg: Any) -> RunningCloud:
    """Start store, writer, ingest and the API server; wait until /healthz says ok."""
    store = AlertStore(workdir / "cloud.db")
    writer = TelemetryWriter(vm_url, workdir / "spool", retry_s=cfg.pop("retry_s", 0.5))
    hub = LiveHub()
    sites = cfg.pop("sites", {})
    auth = cfg.pop("auth", None)  # a cloud.auth.Authenticator: the API then needs bearer tokens
    bands = cfg.pop("bands", None)  # a cloud.band_registry.BandRegistry: the band routes answer
    ingest = Ingest(IngestConfig(host=broker.host, port=broker.port, **cfg), store, writer, hub)
    writer.start()
    ingest.start()
    port = free_port()
    app = create_app(CloudContext(store=store, hub=hub, ingest=ingest, writer=writer, vm_url=vm_url, sites=sites,
                                  auth=auth, bands=bands))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    cloud = RunningCloud(store, writer, ingest, hub, f"http://127.0.0.1:{port}", server, thread)

    def healthy() -> bool:
        try:
            return cloud.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 15, what="cloud /healthz ok")
    # The subscription is sent right after CONNACK; give the SUBACK a moment to come back.
    wait_for(lambda: ingest.counts["connects"] >= 1, 5, what="ingest connected")
    time.sleep(0.3)
    return cloud


class Publisher:
    """A plain paho MQTT 5 client for raw payloads (garbage included)."""

    def __init__(self, broker: ServiceProcess, client_id: str = "") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or new_ulid(),
                                  protocol=mqtt.MQTTv5)
        self.broker = broker

    def connect(self) -> Publisher:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        wait_for(self.client.is_connected, 5, what="publisher connected")
        return self

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def alert_json(site: str = "site-a", node: str = "edge-01", band: int = 1001, **kw: Any) -> tuple[str, str]:
    """A fresh raised alert: (alert_id, JSON)."""
    a = new_alert(site=site, node=node, type=kw.pop("type", "geofence_breach"), subject={"band": band},
                  ts=kw.pop("ts", time.time()), detail=kw.pop("detail", {"x": 44.1, "y": 9.8, "zone": None}))
    return a.alert_id, a.to_json()


def cleared_json(raised: str, ts: float | None = None) -> str:
    """The cleared message for a raised alert's JSON."""
    from protocols.payloads import Alert

    return Alert.model_validate_json(raised).cleared(ts or time.time()).to_json()
