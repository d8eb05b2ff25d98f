"""`qwatch-edge doctor` against a real secured Mosquitto, the firmware simulator on a pty, and a
real HTTP Date header: green on a good node, and each failure with the fix a technician needs."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from typer.testing import CliRunner

from cloud.pki import cert_pem, create_ca
from devtools.services import free_port
from edge.cli import app
from edge.doctor_checks import judge_clock, judge_throttled
from firmware_interface.device import Heard, ScannerDevice
from firmware_interface.simulator import PtyServer
from protocols.credentials import apply_credentials, write_credentials
from protocols.site_config import write_band_keys
from tests.cloud.provision_harness import SITE, SecureBroker, start_secure_broker

SITE_YAML = """site: {{id: {site}}}
zones:
  - {{id: ward, kind: permitted, polygon: [[0, 0], [20, 0], [20, 20], [0, 20]]}}
receivers:
  - {{id: rx-1, position: [0, 0], source: "serial:{scanner}"}}
bands:
  - {{id: 1001, person: P-1, allowed_zones: [ward]}}
{cameras}"""


class _Silent:
    def due(self, now: float) -> list[Heard]:
        return []


class _DateHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)  # adds the Date header
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_a: Any) -> None:
        pass


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    sb = start_secure_broker(tmp_path_factory.mktemp("prov"), nodes=("edge-01",))
    # The cloud ingest's persistent session, as far as the broker can tell: a subscriber of qwatch/v1/#.
    ingest = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="doctor-test-ingest", protocol=mqtt.MQTTv5)
    apply_credentials(ingest, sb.creds("cloud"))
    subscribed = threading.Event()
    ingest.on_subscribe = lambda *_a: subscribed.set()
    ingest.on_connect = lambda c, *_a: c.subscribe("qwatch/v1/#", qos=1)
    ingest.connect(sb.broker.host, sb.broker.port)
    ingest.loop_start()
    assert subscribed.wait(10)
    yield sb
    ingest.disconnect()
    ingest.loop_stop()
    sb.stop()


@pytest.fixture(scope="module")
def cloud_clock() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _DateHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def node(tmp_path: Path, province: SecureBroker) -> Iterator[dict[str, Path]]:
    scanner = PtyServer(ScannerDevice(_Silent()), link=tmp_path / "scanner")
    scanner.start()
    site = tmp_path / "site.yaml"
    site.write_text(SITE_YAML.format(site=SITE, scanner=scanner.path, cameras=""))
    keys = tmp_path / "keys.json"
    write_band_keys(keys, {1001: bytes(range(16))})
    creds = tmp_path / "mqtt.json"
    write_credentials(creds, province.creds("edge-01"))
    yield {"site": site, "keys": keys, "creds": creds, "data": tmp_path / "data", "scanner": tmp_path / "scanner"}
    scanner.stop()


def _doctor(files: dict[str, Path], cloud: str, *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    res = CliRunner().invoke(app, ["doctor", "--json", "--config", str(files["site"]), "--keys", str(files["keys"]),
                                   "--credentials", str(files["creds"]), "--data-dir", str(files["data"]),
                                   "--cloud", cloud, "--timeout", "3", *extra])
    assert "Traceback" not in res.output
    body = json.loads(res.stdout)
    checks = {f"{c['group']}/{c['name']}": c for c in body["checks"]}
    assert body["ok"] == (res.exit_code == 0)
    return res.exit_code, checks


def _failed(checks: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {k: c for k, c in checks.items() if c["status"] == "fail"}


def test_doctor_green_on_a_good_node(node: dict[str, Path], cloud_clock: str) -> None:
    code, checks = _doctor(node, cloud_clock)
    assert code == 0, _failed(checks)
    assert checks["broker/connect"]["status"] == "pass" and "over TLS" in checks["broker/connect"]["detail"]
    assert checks["broker/foreign topic refused"]["status"] == "pass"
    assert "0x87" in checks["broker/foreign topic refused"]["detail"]
    assert checks["broker/ingest session"]["status"] == "pass"
    assert checks["radios/scanner rx-1"]["status"] == "pass"
    assert checks["clock/clock offset"]["status"] == "pass"


def test_wrong_password(node: dict[str, Path], province: SecureBroker, cloud_clock: str) -> None:
    bad = province.creds("edge-01").model_copy(update={"password": SecretStr("x" * 32)})
    write_credentials(node["creds"], bad)
    code, checks = _doctor(node, cloud_clock)
    assert code == 1
    c = checks["broker/connect"]
    assert c["status"] == "fail" and "refused" in c["detail"]
    assert "provision-node --rotate" in c["fix"]


def test_foreign_ca(node: dict[str, Path], province: SecureBroker, cloud_clock: str) -> None:
    other = cert_pem(create_ca("elsewhere").cert)
    write_credentials(node["creds"], province.creds("edge-01").model_copy(update={"ca_pem": other}))
    code, checks = _doctor(node, cloud_clock)
    c = checks["broker/connect"]
    assert code == 1 and c["status"] == "fail" and "not trusted" in c["detail"]
    assert "re-provision the node from the right province directory" in c["fix"]


def test_dead_camera_url(node: dict[str, Path], cloud_clock: str) -> None:
    cams = (f"cameras:\n  - {{id: cam-gate, url: \"rtsp://viewer:secret@127.0.0.1:{free_port()}/live\"}}\n")
    node["site"].write_text(SITE_YAML.format(site=SITE, scanner=node["scanner"], cameras=cams))
    code, checks = _doctor(node, cloud_clock)
    c = checks["cameras/camera cam-gate"]
    assert code == 1 and c["status"] == "fail"
    assert "cannot open" in c["detail"] and "secret" not in c["detail"]
    assert "power and network" in c["fix"] and "cameras[cam-gate].url" in c["fix"]


def test_scanner_that_does_not_answer_hello(node: dict[str, Path], cloud_clock: str, tmp_path: Path) -> None:
    master, slave = os.openpty()  # a tty nobody answers on: a hung scanner
    try:
        node["site"].write_text(SITE_YAML.format(site=SITE, scanner=os.ttyname(slave), cameras=""))
        code, checks = _doctor(node, cloud_clock)
    finally:
        os.close(master)
        os.close(slave)
    c = checks["radios/scanner rx-1"]
    assert code == 1 and c["status"] == "fail" and "did not answer HELLO" in c["detail"]
    assert "unplug and replug" in c["fix"]


def test_key_file_mode_0644(node: dict[str, Path], cloud_clock: str) -> None:
    node["keys"].chmod(0o644)
    code, checks = _doctor(node, cloud_clock)
    c = checks["files/band keys"]
    assert code == 1 and c["status"] == "fail" and "0644" in c["detail"]
    assert c["fix"].startswith(f"chmod 600 {node['keys']}")


def test_clock_five_minutes_off(node: dict[str, Path], cloud_clock: str) -> None:
    code, checks = _doctor(node, cloud_clock, "--clock-skew-s", "300")
    c = checks["clock/clock offset"]
    assert code == 1 and c["status"] == "fail" and "+300" in c["detail"].replace("+299", "+300")
    assert "timedatectl set-ntp true" in c["fix"]


def test_pure_judges() -> None:
    assert judge_clock(-2.0, "ref").status == "pass"
    assert judge_clock(10.0, "ref").status == "warn"
    assert judge_clock(-300.0, "ref").status == "fail"
    assert judge_throttled(0x0, 50.0)[0].status == "pass"
    assert judge_throttled(0x50000, 50.0)[0].status == "warn"  # under-voltage since boot
    now = judge_throttled(0x5, 82.0)[0]
    assert now.status == "fail" and "under-voltage" in now.detail and "throttled" in now.detail


def test_no_ingest_session_is_a_failure(tmp_path: Path, cloud_clock: str) -> None:
    """On a broker where nobody subscribes to the node's topics, the PUBACK is 0x10: alerts would be lost."""
    sb = start_secure_broker(tmp_path / "lonely", nodes=("edge-01",))
    try:
        site, keys, creds = tmp_path / "site.yaml", tmp_path / "keys.json", tmp_path / "mqtt.json"
        site.write_text(f"site: {{id: {SITE}}}\nzones:\n  - {{id: a, kind: permitted, polygon: [[0,0],[9,0],[9,9]]}}\n")
        write_band_keys(keys, {})
        write_credentials(creds, sb.creds("edge-01"))
        code, checks = _doctor({"site": site, "keys": keys, "creds": creds, "data": tmp_path / "d"}, cloud_clock)
    finally:
        sb.stop()
    c = checks["broker/ingest session"]
    assert code == 1 and c["status"] == "fail" and "0x10" in c["detail"]
    assert "qwatch-cloud serve" in c["fix"]
    assert checks["broker/publish own"]["status"] == "pass"


def test_camera_check_reads_a_real_stream_and_judges_zones(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from edge.doctor_devices import check_ble_adapter, check_camera
    from protocols.site_config import parse_site_config

    clip = tmp_path / "cam.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(10):
        out.write(np.full((240, 320, 3), 20 * i, dtype=np.uint8))
    out.release()
    base = (f"site: {{id: s1}}\nzones:\n  - {{id: a, kind: permitted, polygon: [[0,0],[9,0],[9,9]]}}\n"
            f"cameras:\n  - {{id: cam-1, url: \"{clip}\", detect: {{width: W, height: H}}, zones: "
            "[{id: door, polygon: [[0.1,0.1],[0.5,0.1],[0.5,0.5]]}]}\n")
    good = check_camera(parse_site_config(base.replace("W", "320").replace("H", "240")).cameras[0])
    assert good.status == "pass" and "320x240" in good.detail and "10.0 fps" in good.detail
    wide = check_camera(parse_site_config(base.replace("W", "320").replace("H", "180")).cameras[0])
    assert wide.status == "warn" and "aspect ratio" in wide.detail and "detect width/height" in wide.fix
    rx = parse_site_config(GOOD_BLE).receivers[0]
    missing = check_ble_adapter(rx, sys_bluetooth=tmp_path)
    assert missing.status == "fail" and "no adapter hci7" in missing.detail and "bluetoothctl" in missing.fix


GOOD_BLE = ("site: {id: s1}\nzones:\n  - {id: a, kind: permitted, polygon: [[0,0],[9,0],[9,9]]}\n"
            "receivers:\n  - {id: rx-b, position: [1, 1], source: \"bluez:hci7\"}\n")


def test_cold_kernel_cache_and_pi_without_vcgencmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.bands import jit
    from edge.doctor_checks import check_kernel_cache, check_pi

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))
    cold, aot = check_kernel_cache(warm=False)
    assert cold.status == "warn" and "first tick waits" in cold.detail and "--warm-kernels" in cold.fix
    assert aot.status == "warn" and "none built" in aot.detail and "numba JIT" in aot.detail
    assert "--warm-kernels" in aot.fix and "python3-dev" in aot.fix
    stale = tmp_path / "empty-cache" / "aot" / f"{jit.AOT_PREFIX}{'0' * 16}.so"
    stale.parent.mkdir()
    stale.write_bytes(b"")
    aot = check_kernel_cache(warm=False)[1]
    assert aot.status == "warn" and "only stale ones" in aot.detail and stale.name in aot.detail
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    monkeypatch.setenv("PATH", str(tmp_path))  # no vcgencmd
    pi = check_pi(model_file=model)[0]
    assert pi.status == "warn" and "libraspberrypi-bin" in pi.fix
    model.write_bytes(b"QEMU Virtual Machine\x00")
    assert "not a Pi" in check_pi(model_file=model)[0].detail


def test_doctor_shows_a_deaf_and_a_miscalibrated_receiver_from_the_agents_telemetry(
        node: dict[str, Path], cloud_clock: str) -> None:
    from tests.edge.receiver_files import save_health

    _code, checks = _doctor(node, cloud_clock)
    assert checks["bands/receiver health"]["status"] == "pass"  # the agent has not run here
    save_health(node["data"], ["rx-1", "rx-2", "rx-3", "rx-4"], deaf="rx-2", low="rx-3", ts=time.time() - 30)
    code, checks = _doctor(node, cloud_clock)
    deaf, low = checks["bands/receiver rx-2"], checks["bands/receiver rx-3"]
    assert deaf["status"] == "warn" and "-84 dBm" in deaf["detail"] and "antenna" in deaf["fix"]
    assert low["status"] == "warn" and re.search(r"reads 6\.[0-9] dB low", low["detail"])
    assert re.search(r"add \+6\.[0-9] to its rssi_offset", low["fix"])
    assert "bands/receiver rx-1" not in checks and "bands/receiver health" not in checks
    assert checks["bands/breach model"]["status"] == "pass"  # this telemetry has no breach_null yet
    assert code == 0 or _failed(checks).keys() - {"bands/receiver rx-2", "bands/receiver rx-3"}  # warnings only


def test_breach_model_row_warns_when_the_sites_bands_do_not_fit_the_model(tmp_path: Path) -> None:
    """The row reads a real empirical null's state: a χ²-like tail passes, a flat one (the alt L-wing's
    kind) warns with what to check; a missing or broken file never fails the doctor."""
    import numpy as np

    from edge.bands.empirical_null import EmpiricalNull
    from edge.breach_model_health import check_breach_model
    from tests.edge.receiver_files import save_breach_null

    assert check_breach_model(tmp_path / "none")[0].status == "pass"
    rng, rows = np.random.default_rng(0), np.arange(100, dtype=np.int64)
    fits, flat = EmpiricalNull(100, 13.0), EmpiricalNull(100, 13.0)
    for s in range(0, 600, 3):
        fits.add(float(s), rows, rng.exponential(2.0, 100) * (rng.random(100) < 0.3) - 1.0)
        flat.add(float(s), rows, rng.uniform(0.0, 6.5, 100))
    now = time.time()
    save_breach_null(tmp_path / "a", fits.state(), ts=now - 20)
    row = check_breach_model(tmp_path / "a", now)[0]
    assert row.status == "pass" and row.detail.startswith("fits") and "as of 20 s ago" in row.detail
    save_breach_null(tmp_path / "b", flat.state(), ts=now - 20)
    row = check_breach_model(tmp_path / "b", now)[0]
    assert row.status == "warn" and "does not fit" in row.detail and "plan --receivers" in row.fix
    from edge.bands.miss_bursts import BurstLearner
    bursty = BurstLearner(1, 12.0)  # a receiver losing adverts in blocks: every strong link's 56 s all or nothing
    kb = np.tile(np.array([8.0, 0.0, 8.0, 8.0, 0.0, 8.0, 8.0]), (10, 1, 1))
    for s in range(0, 600, 20):
        bursty.add(float(s), kb, np.full((10, 1), -60.0), np.full((10, 7), 8.0), np.full(1, -95.0), np.ones(1, bool))
    save_breach_null(tmp_path / "c", {**fits.state(), **bursty.state()}, ts=now - 20)
    row = check_breach_model(tmp_path / "c", now)[0]
    assert row.status == "pass" and "lost in bursts" in row.detail
    assert "lost in bursts" not in check_breach_model(tmp_path / "a", now)[0].detail
    save_breach_null(tmp_path / "e", {**fits.state(), "band_gains_learned": 37, "band_gain_looks_deferred": 0,
                                      "band_gains_used": 1}, ts=now - 20)
    assert "37 bands' own gains learned" in check_breach_model(tmp_path / "e", now)[0].detail
    save_breach_null(tmp_path / "e", {**fits.state(), "band_gains_learned": 37, "band_gain_looks_deferred": 0,
                                      "band_gains_used": 0}, ts=now - 20)
    row = check_breach_model(tmp_path / "e", now)[0]
    assert row.status == "pass" and "not used" in row.detail and "learned" not in row.detail
    save_breach_null(tmp_path / "d", {**fits.state(), **BurstLearner(1, 12.0).state()}, ts=now - 20)
    row = check_breach_model(tmp_path / "d", now)[0]  # a node just started: D is its start-up value, not a finding
    assert row.status == "pass" and "not measured yet" in row.detail and "lost in bursts" not in row.detail
    (tmp_path / "b" / "node-telemetry.json").write_text("{not json")
    assert check_breach_model(tmp_path / "b", now)[0].status == "warn"
