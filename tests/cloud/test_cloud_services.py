"""The service launchers: real processes, free ports, readiness, restart, no orphans."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devtools.services import ServiceProcess, free_port, mosquitto_conf, start_mosquitto

pytestmark = pytest.mark.integration


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _wait(cond: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_mosquitto_conf_raises_limits(tmp_path: Path) -> None:
    conf = mosquitto_conf(1883, tmp_path, extra_conf="max_keepalive 30")
    assert "listener 1883 127.0.0.1" in conf
    assert "max_queued_messages 1000000" in conf
    assert "persistence true" in conf
    assert conf.rstrip().endswith("max_keepalive 30")


def test_mosquitto_roundtrip_and_restart(mosquitto: ServiceProcess) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    try:
        c.subscribe("t/#", qos=1)
        assert _wait(lambda: c.is_connected())
        time.sleep(0.2)
        c.publish("t/1", b"hello", qos=1, retain=True).wait_for_publish(5)
        assert _wait(lambda: got == [b"hello"])
    finally:
        c.loop_stop()
        c.disconnect()
    old_pid = mosquitto.pid
    mosquitto.restart()
    assert mosquitto.pid != old_pid
    # Persistence: the retained message survives the restart.
    got.clear()
    c2 = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c2.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    c2.connect(mosquitto.host, mosquitto.port)
    c2.loop_start()
    try:
        c2.subscribe("t/#", qos=1)
        assert _wait(lambda: got == [b"hello"])
    finally:
        c2.loop_stop()
        c2.disconnect()


def test_victoria_metrics_health(victoria_metrics: ServiceProcess) -> None:
    with urllib.request.urlopen(victoria_metrics.url + "/health", timeout=2) as resp:
        assert resp.read().strip() == b"OK"
    victoria_metrics.pause()
    with pytest.raises(OSError):
        urllib.request.urlopen(victoria_metrics.url + "/health", timeout=0.5)
    victoria_metrics.resume()
    with urllib.request.urlopen(victoria_metrics.url + "/health", timeout=2) as resp:
        assert resp.status == 200


def test_stop_frees_port(tmp_path: Path) -> None:
    svc = start_mosquitto(tmp_path)
    pid = svc.pid
    assert pid is not None
    svc.stop()
    assert not _pid_alive(pid)
    # Nothing listens any more...
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", svc.port))
    # ...and a restarted server can bind the port. SO_REUSEADDR, as every server sets it: without it a
    # TIME_WAIT socket, or another process's outgoing connection that drew this number from the
    # ephemeral range, would make a plain bind fail although the broker is gone.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", svc.port))
        s.listen()


def test_no_orphan_when_parent_is_killed(tmp_path: Path) -> None:
    """A parent that dies by SIGKILL takes its broker with it (PR_SET_PDEATHSIG)."""
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from devtools.services import start_mosquitto
        svc = start_mosquitto(Path({str(tmp_path / "svc")!r}))
        Path({str(pidfile)!r}).write_text(str(svc.pid))
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        assert _wait(lambda: pidfile.exists() and pidfile.read_text() != "", timeout=15)
        child = int(pidfile.read_text())
        assert _pid_alive(child)
    finally:
        parent.kill()
        parent.wait()
    assert _wait(lambda: not _pid_alive(child), timeout=10), "mosquitto outlived its parent"


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_missing_binary_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools import services

    monkeypatch.setattr("devtools.services.shutil.which", lambda *_a, **_k: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        services.require_binary("mosquitto")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        services.require_binary("mosquitto")
