"""`qwatch-edge enrol` against the dock simulator on a pty."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from firmware_interface.device import DockDevice, DockedBand
from firmware_interface.simulator import PtyServer
from protocols.site_config import load_band_keys

DEMO = Path(__file__).resolve().parents[2] / "config" / "examples" / "demo-site.yaml"


@pytest.fixture
def dock(tmp_path: Path) -> Iterator[tuple[PtyServer, DockDevice]]:
    device = DockDevice(DockedBand(band_id=0, counter=500))
    server = PtyServer(device, link=tmp_path / "dock")
    server.start()
    yield server, device
    server.stop()


def test_enrol_programs_band_and_writes_private_key(dock: tuple[PtyServer, DockDevice], tmp_path: Path) -> None:
    server, device = dock
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"1002": "00" * 16}))
    keys.chmod(0o644)
    result = CliRunner().invoke(app, ["enrol", "--dock", server.path, "--band", "1001", "--keys", str(keys),
                                      "--config", str(DEMO)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    stored = load_band_keys(keys, require_private=True)
    assert device.band is not None
    assert stored == {1001: device.band.key, 1002: bytes(16)}
    assert (device.band.band_id, device.band.counter, device.band.company_id) == (1001, 500, 0xFFFF)
    assert device.band.key.hex() not in result.output


def test_enrol_refuses_existing_band_without_force(dock: tuple[PtyServer, DockDevice], tmp_path: Path) -> None:
    server, device = dock
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"1001": "11" * 16}))
    args = ["enrol", "--dock", server.path, "--band", "1001", "--keys", str(keys)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and device.programs == 0
    result = CliRunner().invoke(app, [*args, "--force", "--counter-start", "9000"])
    assert result.exit_code == 0, result.output
    assert device.band is not None and device.band.counter == 9000
    assert load_band_keys(keys)[1001] == device.band.key != bytes.fromhex("11" * 16)


def test_enrol_failure_leaves_key_file_untouched(dock: tuple[PtyServer, DockDevice], tmp_path: Path) -> None:
    server, device = dock
    device.band = None  # nobody put a band in the dock
    keys = tmp_path / "keys.json"
    result = CliRunner().invoke(app, ["enrol", "--dock", server.path, "--band", "1001", "--keys", str(keys)])
    assert result.exit_code == 1
    assert "no band" in result.output
    assert not keys.exists()


def test_enrol_rejects_band_not_in_site(dock: tuple[PtyServer, DockDevice], tmp_path: Path) -> None:
    server, _ = dock
    result = CliRunner().invoke(app, ["enrol", "--dock", server.path, "--band", "4242",
                                      "--keys", str(tmp_path / "k.json"), "--config", str(DEMO)])
    assert result.exit_code == 2
    assert "4242" in result.output and "bands" in result.output


def test_cloud_unreachable_keeps_the_key_and_says_how_to_register_later(
        dock: tuple[PtyServer, DockDevice], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edge.enrol
    from devtools.services import free_port

    monkeypatch.setattr(edge.enrol, "RETRY_DELAYS_S", (0.05,))
    server, device = dock
    keys = tmp_path / "keys.json"
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["enrol", "--dock", server.path, "--band", "1001", "--keys", str(keys),
                                      "--config", str(DEMO), "--cloud", url, "--token", "t"])
    assert result.exit_code == 1, result.output
    assert "cannot reach" in result.output and "--register-only" in result.output
    assert device.band is not None and load_band_keys(keys) == {1001: device.band.key}
    bad = CliRunner().invoke(app, ["enrol", "--band", "1001", "--keys", str(keys), "--config", str(DEMO),
                                   "--cloud", url, "--zones", "nowhere", "--register-only"])
    assert bad.exit_code == 2 and "nowhere" in bad.output and "block-a" in bad.output
