"""Site config (§3): the spec's example loads; every kind of mistake names file, key and what is allowed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocols.errors import ConfigError
from protocols.site_config import load_band_keys, load_site_config, parse_site_config, write_band_keys

EXAMPLE = """
site: {id: kg-rachgia-01, name: "Khu cách ly tập trung Rạch Giá", origin: {lat: 10.0125, lon: 105.0809}}
company_id: 65535
zones:
  - {id: block-a, kind: permitted, polygon: [[0,0],[40,0],[40,20],[0,20]]}
  - {id: gate, kind: restricted, polygon: [[18,-3],[22,-3],[22,0],[18,0]]}
receivers:
  - {id: rx-a1, position: [2, 2], source: "bluez:hci0", rssi_offset: 0}
bands:
  - {id: 1001, person: "P-0001", allowed_zones: [block-a]}
beacons:
  - {id: 9001, position: [15, 0.5]}
radio: {path_loss_exponent: 2.7, shadowing_db: 6.0}
rules: {breach_dwell_s: 20, restricted_dwell_s: 5, clear_dwell_s: 10, missing_after_s: 60, fever_c: 37.8,
        low_battery_pct: 15, no_motion_s: 1800}
cameras:
  - id: cam-gate
    url: rtsp://192.0.2.10:554/stream2
    detect: {width: 320, height: 180, fps: 5}
    masks: [[[0,0],[1,0],[1,0.08],[0,0.08]]]
    zones:
      - {id: fence-north, polygon: [[0.05,0.30],[0.95,0.30],[0.95,0.45],[0.05,0.45]], min_area: 0.002,
         dwell_frames: 3, alert: true}
"""


def test_protocol_example_loads(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    p.write_text(EXAMPLE, encoding="utf-8")
    site = load_site_config(p)
    assert site.site.id == "kg-rachgia-01" and site.zones[1].kind == "restricted"
    assert site.camera("cam-gate").zones[0].dwell_frames == 3
    assert site.receivers[0].source_kind == "bluez" and site.receivers[0].source_arg == "hci0"


@pytest.mark.parametrize(("old", "new", "key", "hint"), [
    ("kind: restricted", "kind: forbidden", "zones[1].kind", "allowed: 'permitted' or 'restricted'"),
    ("fever_c: 37.8", "fevr_c: 37.8", "rules.fevr_c", "unknown key"),
    ("allowed_zones: [block-a]", "allowed_zones: [gate]", "", "allowed: block-a"),
    ('source: "bluez:hci0"', 'source: "usb0"', "receivers[0].source", '"serial:<device>"'),
    ("[0.95,0.45]", "[1.95,0.45]", "cameras[0].zones[0].polygon", "within 0..1"),
    ("path_loss_exponent: 2.7", "path_loss_exponent: 9", "radio.path_loss_exponent", "less than or equal"),
    ("{id: 9001,", "{id: 1001,", "", "also enrolled as bands"),
])
def test_errors_name_file_key_and_allowed(old: str, new: str, key: str, hint: str) -> None:
    assert old in EXAMPLE
    with pytest.raises(ConfigError) as err:
        parse_site_config(EXAMPLE.replace(old, new, 1), "sites/kg.yaml")
    msg = str(err.value)
    assert msg.startswith("sites/kg.yaml: ") and hint in msg
    if key:
        assert err.value.key == key


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("site: {id: x\nzones: [", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_site_config(p)
    assert str(p) in str(err.value) and "line" in str(err.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_site_config(tmp_path / "nope.yaml")


def test_key_file_written_private_and_checked(tmp_path: Path) -> None:
    p = tmp_path / "keys.json"
    write_band_keys(p, {1001: bytes(range(16))})
    assert os.stat(p).st_mode & 0o777 == 0o600
    assert load_band_keys(p, require_private=True) == {1001: bytes(range(16))}
    p.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_band_keys(p, require_private=True)


@pytest.mark.parametrize("text", ['{"1001": "00"}', '{"x": "' + "0" * 32 + '"}', "[]", '{"1": "' + "g" * 32 + '"}'])
def test_bad_key_files_never_echo_key_material(tmp_path: Path, text: str) -> None:
    p = tmp_path / "keys.json"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_band_keys(p)
    assert "g" * 32 not in str(err.value)
