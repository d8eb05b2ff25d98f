"""Night: a faint person under IR noise is found (box-averaged difference); the optional person check
can veto a track; the zone state machine on its own. Pure: synthetic frames into the real parts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.camera import personcheck
from edge.camera.motion import MOTION_END, MOTION_START, DetectorSpec, MotionDetector, ZoneSpec
from edge.camera.tracks import Blob, Perspective, Tracker
from edge.camera.zones import ZoneFrame, Zones

W, H, FPS = 320, 180, 5.0
ZONE = ZoneSpec("fence", ((0.0, 0.3), (1.0, 0.3), (1.0, 0.95), (0.0, 0.95)), min_area=0.004, dwell_frames=3)
PERSP = Perspective.fit([(0.5, 0.15), (0.9, 0.38)])


def _ir_frames(contrast: float, sigma: float, seed: int) -> list[np.ndarray]:
    """Grey IR-like frames (mean ~150, per-pixel noise sigma) with a person-sized block walking
    across at 0.8 heights/s from t = 2 s, `contrast` grey levels from the ground."""
    rng = np.random.default_rng(seed)
    base = np.full((H, W), 150.0, np.float32)
    base += cv2.resize(rng.normal(0, 6, (H // 8, W // 8)).astype(np.float32), (W, H))
    row, hh = 0.6, PERSP.height(0.6) * H
    out = []
    for i in range(45):
        img = base.copy()
        t = i / FPS
        if t >= 2.0:
            x = 10 + 0.8 * hh * (t - 2.0)
            cv2.rectangle(img, (int(x), int(row * H - hh)), (int(x + 0.35 * hh), int(row * H)),
                          float(base.mean()) + contrast, -1)
        img += rng.normal(0, sigma, img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _starts(frames: list[np.ndarray], night_box: int) -> tuple[list[float], MotionDetector]:
    det = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, outside_events=False,
                                      night_box=night_box))
    ts = []
    for i, f in enumerate(frames):
        ts += [e.ts for e in det.process(f, i / FPS, i, 0.0) if e.kind == MOTION_START]  # chroma 0: IR
    return ts, det


def test_faint_person_under_ir_noise_is_found_only_with_the_night_box() -> None:
    # Contrast 12 under sigma 8 is 1.5 sigma per pixel: a per-pixel threshold (3.5 sigma) finds a few
    # of the person's pixels and the opening removes them; the 5x5 average divides the noise by ~5.
    frames = _ir_frames(contrast=12.0, sigma=8.0, seed=3)
    with_box, det = _starts(frames, 5)
    without, _ = _starts(frames, 1)
    assert det.counters["night_frames"] > 40
    assert len(with_box) == 1 and 2.0 < with_box[0] <= 4.5
    assert without == []


def test_noise_alone_at_night_raises_nothing_with_the_box() -> None:
    ts, det = _starts(_ir_frames(contrast=0.0, sigma=8.0, seed=4), 5)
    assert ts == []
    assert det.counters["tracks_confirmed"] == 0


def _walk(tracker: Tracker, gray: np.ndarray, w: int, h: int, frames: int = 12) -> None:
    for i in range(frames):
        x = 20 + 4 * i
        tracker.update([Blob(x, 100 - h, w, h, w * h, 1)], i / FPS, True, None, None, gray)


def test_person_check_vetoes_an_upright_track_at_night_but_not_a_crawler() -> None:
    gray = np.full((H, W), 120, np.uint8)
    calls: list[tuple[float, float, float]] = []

    def never(_g: np.ndarray, cx: float, foot: float, height: float) -> bool:
        calls.append((cx, foot, height))
        return False
    upright = Tracker(W, H, FPS, perspective=PERSP)
    upright.person_check = never
    _walk(upright, gray, 12, 30)
    assert calls and not upright.tracks[0].confirmed and upright.tracks[0].reason == "not_person"
    assert all(h >= 30 for _, _, h in calls)  # the window is at least the blob, here the expected height
    crawler = Tracker(W, H, FPS, perspective=PERSP)
    crawler.person_check = never
    _walk(crawler, gray, 30, 12)  # long and low: the upright-people detector is not asked
    assert crawler.tracks[0].confirmed
    by_day = Tracker(W, H, FPS, perspective=PERSP)
    by_day.person_check = never
    for i in range(12):
        by_day.update([Blob(20 + 4 * i, 70, 12, 30, 360, 1)], i / FPS, False, None, None, gray)
    assert by_day.tracks[0].confirmed  # "night" mode: not run by day


def test_person_check_needs_the_hog_detector_or_says_so() -> None:
    spec = DetectorSpec(W, H, FPS, zones=(ZONE,), person_check="night")
    if personcheck.available():
        det = MotionDetector(spec)
        assert det.tracker.person_check is not None
    else:
        with pytest.raises(RuntimeError, match="HOG people detector"):
            MotionDetector(spec)
    with pytest.raises(ValueError, match="person_check"):
        DetectorSpec(W, H, FPS, person_check="sometimes")


def test_zone_state_machine_dwell_gap_and_quiet_end() -> None:
    valid = np.full((H, W), 255, np.uint8)
    counters: dict[str, int] = {}
    zones = Zones((ZONE,), valid, quiet_frames=3, outside=None, counters=counters)
    on = np.zeros((H, W), np.uint8)
    cv2.rectangle(on, (100, 80), (120, 120), 255, -1)
    seq = [on, on, None, on, on, None, None, None, None]  # one gap inside the dwell run is tolerated
    kinds = []
    for i, m in enumerate(seq):
        zf = ZoneFrame(m, m, m)
        kinds += [(e.kind, i, e.path) for e in zones.step(zf, i / FPS, i, lambda _b: ((0.3, 0.6),))]
    assert kinds == [(MOTION_START, 3, ((0.3, 0.6),)), (MOTION_END, 7, ())]
    assert counters["motion_events"] == 2
    assert zones.states() == {"fence": False}


def test_camera_test_cli_refuses_a_person_check_it_cannot_run(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: s1, name: s}\nzones:\n  - {id: yard, kind: permitted, polygon: [[0,0],[9,0],[9,9]]}\n"
                    "cameras:\n  - {id: cam-1, url: x.mp4, person_check: night}\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "camera-test", "--config", str(site), "--camera", "cam-1",
                           "--source", str(tmp_path / "none.mp4")], capture_output=True, text=True, timeout=60)
    if personcheck.available():
        assert proc.returncode == 2 and "no such video file" in proc.stderr  # the flag itself was accepted
    else:
        assert proc.returncode == 2
        assert "cameras[cam-1].person_check" in proc.stderr and "HOG" in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.xfail(strict=True, reason="known limit (docs/camera.md): at night the outline is measured on the raw "
                   "difference along the box-averaged mask, ~2 px outside a sharp edge, so a bright in-focus "
                   "person scores 0.22 < min_edge_night 0.28 and is rejected as blurred")
def test_bright_in_focus_walker_at_night_fires() -> None:
    rng = np.random.default_rng(5)
    base = np.full((H, W), 150.0, np.float32)
    base += cv2.resize(rng.normal(0, 6, (H // 8, W // 8)).astype(np.float32), (W, H))
    row, hh = 0.6, PERSP.height(0.6) * H
    frames = []
    for i in range(45):
        img = base.copy()
        if i / FPS >= 2.0:  # an IR-bright (reflective) jacket: 45 grey levels, sharp, walking 0.8 h/s
            x = 10 + 0.8 * hh * (i / FPS - 2.0)
            cv2.rectangle(img, (int(x), int(row * H - hh)), (int(x + 0.35 * hh), int(row * H)), 195.0, -1)
        img += rng.normal(0, 8.0, img.shape).astype(np.float32)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    ts, det = _starts(frames, 5)
    assert det.counters["night_frames"] > 40
    assert len(ts) == 1
