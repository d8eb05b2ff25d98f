"""One test per scene type, with ground truth, through the real `qwatch-edge camera-test` CLI.

Clips are rendered by `devtools.video_synth` and encoded with ffmpeg/libx264 (real compression),
320x180 at 10 fps, decoded by OpenCV's FFmpeg backend. Events are checked against the
scene's ground truth: when the blob is in the fence zone, when tampering happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocols.payloads import CameraEvent

CLI = [sys.executable, "-m", "edge.cli", "camera-test"]
KEYS = ["schema", "camera", "zone", "kind", "ts", "frame", "bbox", "score"]
HOLD = 3.0  # tamper hold of the detector (DetectorSpec.tamper_hold_s)


def run_camera_test(config: Path, *extra: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the CLI; return (events, stats). Every stdout line must be an exact §6 event."""
    proc = subprocess.run([*CLI, "--config", str(config), "--camera", "cam-synth", *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = []
    for line in proc.stdout.splitlines():
        obj = json.loads(line)
        assert list(obj) == KEYS, line
        CameraEvent.model_validate(obj)
        events.append(obj)
    stats_line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("camera-test stats: "))
    return events, json.loads(stats_line.removeprefix("camera-test stats: "))


def zone_events(events: list[dict[str, Any]], zone: str | None = "fence-north") -> list[dict[str, Any]]:
    return [e for e in events if e["zone"] == zone and e["kind"].startswith("motion")]


def test_blob_crossing_fence_zone(make_clip: Callable[..., Any], site_yaml: Callable[[str], Path]) -> None:
    clip, gt = make_clip("crossing")
    events, stats = run_camera_test(site_yaml(str(clip)))
    (_, t_in, t_out), = gt.zone_intervals
    starts = [e for e in zone_events(events) if e["kind"] == "motion_start"]
    ends = [e for e in zone_events(events) if e["kind"] == "motion_end"]
    assert len(starts) == 1 and len(ends) == 1, events
    # ts is media time; decided after dwell_frames (3 at 5 fps) of motion in the zone.
    assert t_in - 0.2 <= starts[0]["ts"] <= t_in + 1.5
    assert starts[0]["frame"] == round(starts[0]["ts"] * 5)
    assert ends[0]["ts"] >= t_out
    x, y, w, h = starts[0]["bbox"]
    assert 0.2 < x + w / 2 < 0.8 and 0.3 < y + h / 2 < 0.75  # around the blob, inside the zone band
    assert starts[0]["score"] >= 0.01  # the zone's min_area
    assert stats["skipped"] >= stats["processed"] > 0  # 10 fps stream, 5 fps detect: half only grabbed


def test_blob_outside_zones_gives_only_zone_null_motion(
    make_clip: Callable[..., Any], site_yaml: Callable[[str], Path]
) -> None:
    clip, gt = make_clip("outside")
    events, _ = run_camera_test(site_yaml(str(clip)))
    assert zone_events(events) == []
    outside = [e for e in zone_events(events, None) if e["kind"] == "motion_start"]
    assert outside, events
    (t0, t1), = gt.outside_intervals
    assert t0 <= outside[0]["ts"] <= t1


@pytest.mark.parametrize("kind", ["ramp", "ir_switch", "clouds", "noise", "rain", "quiet"])
def test_lighting_noise_and_rain_fire_no_zone_motion(
    kind: str, make_clip: Callable[..., Any], site_yaml: Callable[[str], Path]
) -> None:
    clip, _ = make_clip(kind)
    events, stats = run_camera_test(site_yaml(str(clip)))
    assert [e for e in events if e["kind"].startswith("motion")] == []
    assert [e for e in events if e["kind"].startswith("tamper")] == []
    if kind == "ir_switch":
        assert stats["detector"]["global_changes"] >= 1  # re-learnt and counted, not fired


@pytest.mark.parametrize("kind", ["covered", "defocus"])
def test_lens_covered_or_defocused_gives_tamper_start_and_end(
    kind: str, make_clip: Callable[..., Any], site_yaml: Callable[[str], Path]
) -> None:
    clip, gt = make_clip(kind, seconds=17.0)
    events, _ = run_camera_test(site_yaml(str(clip)))
    (t0, t1), = gt.tamper_intervals
    tamper = [e for e in events if e["kind"].startswith("tamper")]
    assert [e["kind"] for e in tamper] == ["tamper_start", "tamper_end"], events
    assert t0 + HOLD - 0.5 <= tamper[0]["ts"] <= t0 + HOLD + 1.5
    assert tamper[1]["ts"] >= t1
    assert zone_events(events) == []


@pytest.mark.parametrize("kind", ["turned", "rolled"])  # panned 15° / knocked 15° round the lens axis
def test_camera_turned_15_degrees_is_tamper(
    kind: str, make_clip: Callable[..., Any], site_yaml: Callable[[str], Path]
) -> None:
    clip, gt = make_clip(kind)
    events, _ = run_camera_test(site_yaml(str(clip)))
    (t0, _), = gt.tamper_intervals
    tamper = [e for e in events if e["kind"].startswith("tamper")]
    assert [e["kind"] for e in tamper] == ["tamper_start"], events
    assert t0 + HOLD - 0.5 <= tamper[0]["ts"] <= t0 + HOLD + 1.5
    assert zone_events(events) == []


def test_max_seconds_limits_media_time(make_clip: Callable[..., Any], site_yaml: Callable[[str], Path]) -> None:
    clip, _ = make_clip("crossing")
    events, stats = run_camera_test(site_yaml(str(clip)), "--max-seconds", "5")
    assert stats["processed"] <= 26 and stats["media_s"] < 5.0
    assert zone_events(events) == []  # the blob reaches the zone after 8 s


def test_bad_camera_id_is_a_config_error(make_clip: Callable[..., Any], site_yaml: Callable[[str], Path]) -> None:
    clip, _ = make_clip("quiet")
    proc = subprocess.run([*CLI, "--config", str(site_yaml(str(clip))), "--camera", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cam-synth" in proc.stderr and proc.stdout == ""


def test_other_video_model_flat_noisy_view_with_a_box(tmp_path: Path) -> None:
    """Not our renderer: ffmpeg lavfi, flat grey + temporal noise, a dark box crossing at 90 px/s.

    A featureless view must not look "moved" or "covered", and the box must not be corrected away
    by the illumination field.
    """
    clip = tmp_path / "flat.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=0x808080:s=640x360:r=25:d=12",
         "-f", "lavfi", "-i", "color=c=0x303030:s=48x96:r=25:d=12", "-filter_complex",
         "[0:v]noise=alls=12:allf=t[bg];[bg][1:v]overlay=x='if(between(t,3,9),(t-3)*90,-100)':y=130[v]",
         "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-pix_fmt", "yuv420p", str(clip)],
        check=True, timeout=120)
    cfg = tmp_path / "flat.yaml"
    cfg.write_text(
        "site: {id: s1}\nzones:\n  - {id: a, kind: permitted, polygon: [[0,0],[1,0],[1,1],[0,1]]}\n"
        "cameras:\n  - id: cam-synth\n    url: flat.mp4\n    detect: {width: 320, height: 180, fps: 5}\n"
        "    zones:\n      - {id: fence-north, polygon: [[0.3,0.3],[0.7,0.3],[0.7,0.7],[0.3,0.7]],"
        " min_area: 0.02, dwell_frames: 3, alert: true}\n", encoding="utf-8")
    events, _ = run_camera_test(cfg, "--source", str(clip))
    assert [e for e in events if e["kind"].startswith("tamper")] == []
    starts = [e for e in zone_events(events) if e["kind"] == "motion_start"]
    ends = [e for e in zone_events(events) if e["kind"] == "motion_end"]
    # The box's right edge enters the zone (x >= 192 px) at t = 3 + 144/90 = 4.6 s and leaves at ~8 s.
    assert len(starts) == 1 and 4.6 <= starts[0]["ts"] <= 6.0, events
    assert len(ends) == 1 and 8.0 <= ends[0]["ts"] <= 11.0


def test_unreadable_file_exits_1_without_looping(tmp_path: Path, site_yaml: Callable[[str], Path]) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    proc = subprocess.run([*CLI, "--config", str(site_yaml(str(bad))), "--camera", "cam-synth"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert '"open_failed": 1' in proc.stderr
