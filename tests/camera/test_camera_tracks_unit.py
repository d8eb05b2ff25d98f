"""Tracks scored as people: what a person does is followed to an event, what insects, drops on the
lens, rain streaks and shake do is not. Pure: synthetic detect frames into the real detector."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.camera.motion import MOTION_START, DetectorSpec, MotionDetector, ZoneSpec
from edge.camera.nightmode import NightMode
from edge.camera.tracks import Perspective, Tracker, TrackParams, _rigid_shift
from protocols.site_config import Camera

W, H, FPS = 320, 180, 5.0
ZONE = ZoneSpec("fence", ((0.0, 0.3), (1.0, 0.3), (1.0, 0.95), (0.0, 0.95)), min_area=0.004, dwell_frames=3)
# A person with the feet at row 0.5 is 0.15 of the picture tall, at row 0.9 0.38.
PERSP = Perspective.fit([(0.5, 0.15), (0.9, 0.38)])


def _scene(rng: np.random.Generator) -> np.ndarray:
    base = np.tile(np.linspace(70, 150, W, dtype=np.float32), (H, 1))
    base += cv2.resize(rng.normal(0, 14, (H // 6, W // 6)).astype(np.float32), (W, H))
    return base


def _frames(n: int, rng: np.random.Generator, draw: object, noise: float = 2.0) -> list[np.ndarray]:
    base = _scene(rng)
    out = []
    for i in range(n):
        img = base.copy()
        if callable(draw):
            img = draw(img, i / FPS) if i >= 10 else img  # 2 s of empty scene first
        img += rng.normal(0, noise, img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _run(frames: list[np.ndarray], chroma: float | None = None) -> tuple[MotionDetector, list[tuple[str, float]]]:
    det = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, outside_events=False))
    ev = []
    for i, f in enumerate(frames):
        ev += [(e.kind, e.ts) for e in det.process(f, i / FPS, i, chroma) if e.kind == MOTION_START]
    return det, ev


def _walker(speed_h: float, row: float = 0.55, contrast: float = -45.0):
    """A person-shaped block (its height from the perspective) walking at speed_h heights/s."""
    hh = PERSP.height(row) * H
    ww = 0.35 * hh

    def draw(img: np.ndarray, t: float) -> np.ndarray:
        x = 20 + speed_h * hh * (t - 2.0)
        y1 = row * H
        cv2.rectangle(img, (int(x), int(y1 - hh)), (int(x + ww), int(y1)), float(np.mean(img)) + contrast, -1)
        return img
    return draw


def test_walking_person_of_the_right_size_fires_with_its_path() -> None:
    rng = np.random.default_rng(1)
    det = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, outside_events=False))
    starts = []
    for i, f in enumerate(_frames(40, rng, _walker(0.8))):
        starts += [e for e in det.process(f, i / FPS, i) if e.kind == MOTION_START]
    assert len(starts) == 1
    assert 2.0 < starts[0].ts <= 2.0 + 2.0  # within 2 s of appearing
    assert len(starts[0].path) >= 3  # the track's foot points, for the snapshot
    xs = [p[0] for p in starts[0].path]
    assert xs == sorted(xs)  # walking right


def test_slow_crawler_along_the_fence_fires() -> None:
    rng = np.random.default_rng(2)
    hh = PERSP.height(0.55) * H

    def crawl(img: np.ndarray, t: float) -> np.ndarray:
        x = 60 + 0.3 * hh * (t - 2.0)  # 0.3 person heights per second (~0.5 m/s)
        cv2.rectangle(img, (int(x), int(0.55 * H - 0.3 * hh)), (int(x + 0.8 * hh), int(0.55 * H)), 40.0, -1)
        return img
    _, ev = _run(_frames(40, rng, crawl))
    assert ev and ev[0][1] <= 2.0 + 3.0


def test_insect_at_the_lens_at_night_is_rejected() -> None:
    rng = np.random.default_rng(3)
    state = {"x": 100.0, "y": 90.0, "a": 0.0}

    def insect(img: np.ndarray, t: float) -> np.ndarray:  # bright, blurred, fast, zig-zagging
        state["a"] += float(rng.normal(0, 1.0))
        state["x"] = float(np.clip(state["x"] + 22 * math.cos(state["a"]), 20, W - 20))
        state["y"] = float(np.clip(state["y"] + 22 * math.sin(state["a"]), 60, H - 20))
        spot = np.zeros_like(img)
        cv2.circle(spot, (int(state["x"]), int(state["y"])), 7, 90.0, -1)
        return img + cv2.GaussianBlur(spot, (0, 0), 3.0)
    det, ev = _run(_frames(60, rng, insect, noise=4.0), chroma=0.5)
    assert ev == []
    assert det.night.night  # an IR (grey) picture
    assert det.counters["tracks"] > 0 and det.counters["tracks_confirmed"] == 0


def test_raindrop_sliding_on_the_lens_is_rejected() -> None:
    rng = np.random.default_rng(4)

    def drop(img: np.ndarray, t: float) -> np.ndarray:  # soft, slow, straight down
        spot = np.zeros_like(img)
        cv2.circle(spot, (150, int(70 + 4 * (t - 2.0))), 9, 35.0, -1)
        return img + cv2.GaussianBlur(spot, (0, 0), 3.5)
    _, ev = _run(_frames(50, rng, drop))
    assert ev == []


def test_rain_streaks_are_rejected() -> None:
    rng = np.random.default_rng(5)

    def streaks(img: np.ndarray, t: float) -> np.ndarray:  # thin, steep, new every frame
        for _ in range(40):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            cv2.line(img, (int(x), int(y)), (int(x + 3), int(y + 20)), 255.0, 1)
        return img
    _, ev = _run(_frames(50, rng, streaks))
    assert ev == []


def test_camera_shake_is_rejected() -> None:
    rng = np.random.default_rng(6)
    shift = {"v": (0.0, 0.0)}

    def shake(img: np.ndarray, t: float) -> np.ndarray:
        shift["v"] = (float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)))
        m = np.array([[1, 0, shift["v"][0]], [0, 1, shift["v"][1]]], np.float32)
        return cv2.warpAffine(img, m, (W, H), borderMode=cv2.BORDER_REFLECT)
    _, ev = _run(_frames(60, rng, shake))
    assert ev == []


def test_blob_too_large_for_its_row_is_rejected() -> None:
    rng = np.random.default_rng(7)
    hh = 3.0 * PERSP.height(0.45) * H  # three times a person's height at that row

    def big(img: np.ndarray, t: float) -> np.ndarray:
        x = 20 + 0.8 * hh / 3 * (t - 2.0)
        cv2.rectangle(img, (int(x), int(0.45 * H - hh)), (int(x + 0.4 * hh), int(0.45 * H)), 30.0, -1)
        return img
    det, ev = _run(_frames(40, rng, big))
    assert ev == []
    assert any(t.reason == "large" for t in det.tracker.tracks)


def test_night_mode_hysteresis() -> None:
    nm = NightMode(5.0)
    assert nm.update(120.0, 2.0, 20.0) is False  # a colour picture: day at once
    for _ in range(10):  # 2 s of grey picture: not yet (enter after 4 s)
        assert nm.update(90.0, 3.0, 0.5) is False
    nm.update(90.0, 3.0, 12.0)  # one colour frame (headlights?) restarts the count
    for _ in range(19):
        assert nm.update(90.0, 3.0, 0.5) is False
    assert nm.update(90.0, 3.0, 0.5) is True  # 20 frames = 4 s
    for _ in range(39):  # leaving needs 8 s of day
        assert nm.update(120.0, 2.0, 20.0) is True
    assert nm.update(120.0, 2.0, 20.0) is False
    assert nm.counters["night_switches"] == 2
    assert nm.counters["night_frames"] == 40
    assert nm.update(float("nan"), 2.0, 20.0) is False  # non-finite statistics change nothing


def _cam(**kw: object) -> Camera:
    return Camera.model_validate({"id": "c", "url": "rtsp://x/s", **kw})


def test_perspective_config_is_validated() -> None:
    cam = _cam(perspective=[{"row": 0.3, "person_h": 0.06}, {"row": 0.9, "person_h": 0.4}])
    assert cam.perspective is not None and len(cam.perspective) == 2
    bad: list[object] = [
        [{"row": 0.3, "person_h": 0.06}],  # one point
        [{"row": 0.3, "person_h": 0.06}, {"row": 0.32, "person_h": 0.4}],  # rows too close
        [{"row": 0.3, "person_h": 0.4}, {"row": 0.9, "person_h": 0.1}],  # smaller when nearer
        [{"row": 0.3, "person_h": float("nan")}, {"row": 0.9, "person_h": 0.4}],
        [{"row": float("inf"), "person_h": 0.1}, {"row": 0.9, "person_h": 0.4}],
        [{"row": 1.3, "person_h": 0.1}, {"row": 0.9, "person_h": 0.4}],
        [{"row": 0.3, "person_h": 0.0}, {"row": 0.9, "person_h": 0.4}],
        [{"row": 0.3, "person_h": 0.1, "px": 3}, {"row": 0.9, "person_h": 0.4}],  # extra key
        [{"row": 0.1 * i, "person_h": 0.05 * (i + 1)} for i in range(5)],  # more than 4
    ]
    for p in bad:
        with pytest.raises(ValidationError):
            _cam(perspective=p)
    fit = Perspective.fit([(0.3, 0.06), (0.6, 0.2), (0.9, 0.4)])
    assert fit.height(0.6) == pytest.approx(0.2, abs=0.03)  # least squares through 3 points
    assert fit.height(0.0) == 0.02  # never below 2 % of the picture


def test_snapshot_draws_the_track_path() -> None:
    from edge.camera.worker import render_snapshot

    img = np.full((180, 320, 3), 60, np.uint8)
    path = ((0.1, 0.8), (0.3, 0.7), (0.5, 0.6))
    plain = cv2.imdecode(np.frombuffer(render_snapshot(img, (0.45, 0.3, 0.1, 0.3), "fence"), np.uint8), 1)
    drawn = cv2.imdecode(np.frombuffer(render_snapshot(img, (0.45, 0.3, 0.1, 0.3), "fence", path), np.uint8), 1)
    assert plain is not None and drawn is not None
    # Along the path (between its first two points) the picture changed; the box is drawn in both.
    y, x = int(0.75 * 180), int(0.2 * 320)
    assert int(np.abs(drawn[y - 2:y + 3, x - 2:x + 3].astype(int) - plain[y - 2:y + 3, x - 2:x + 3]).max()) > 60


def _first_start(frames: list[np.ndarray], params: TrackParams) -> float | None:
    det = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, outside_events=False,
                                      track_params=params))
    for i, f in enumerate(frames):
        for e in det.process(f, i / FPS, i):
            if e.kind == MOTION_START:
                return e.ts
    return None


def test_crawler_coming_in_from_the_picture_border_fires_by_day() -> None:
    # A crawler that comes into the picture from its left edge shows only its leading edge: the box's
    # left side stays at the border while it comes in, so it must not count as "not moving".
    rng = np.random.default_rng(4)
    hh = PERSP.height(0.55) * H

    def crawl(img: np.ndarray, t: float) -> np.ndarray:
        x1 = 0.3 * hh * (t - 2.0)  # the head's end, coming in at 0.3 heights per second
        cv2.rectangle(img, (int(x1 - 1.3 * hh), int(0.55 * H - 0.4 * hh)), (int(x1), int(0.55 * H)),
                      float(np.mean(img)) - 45.0, -1)
        return img
    frames = _frames(40, rng, crawl)
    with_border = _first_start(frames, TrackParams())
    without = _first_start(frames, TrackParams(border_cut=False))
    assert with_border is not None and with_border <= 2.0 + 2.0
    # The old rule waited until the whole body was in the picture (the box then moves as a whole).
    assert without is None or without > with_border + 1.0


def test_rigid_shift_reads_the_free_edge_of_a_box_at_the_border() -> None:
    a = (0.0, 5.0, 50.0, 10, 20)  # (ts, foot x, foot y, w, h): left edge at x = 0
    b = (1.0, 8.0, 50.0, 16, 20)  # left edge still at 0, right edge 6 px further in
    assert _rigid_shift(a, b) == 0.0  # one edge only: a growing blob, not a mover
    assert _rigid_shift(a, b, (W, H)) == pytest.approx(6.0)
    c, d = (0.0, 100.0, 50.0, 10, 20), (1.0, 103.0, 50.0, 16, 20)  # inside the picture: still growth
    assert _rigid_shift(c, d, (W, H)) == 0.0


def test_size_that_fills_out_as_it_comes_nearer_is_not_rigid_by_day() -> None:
    # (ts, foot x, foot y, w, h) over 2 s, feet from row 90 (a person is 27 px tall there) to row 150
    # (61 px): the perspective expects 2.3x growth.
    rows = np.linspace(90.0, 150.0, 10)
    tracker = Tracker(W, H, FPS, TrackParams(), PERSP)

    def hist(sizes: list[float]) -> list[tuple[float, float, float, int, int]]:
        pairs = enumerate(zip(rows, sizes, strict=True))
        return [(i / FPS, 160.0, float(r), max(1, int(s * 0.4)), int(s)) for i, (r, s) in pairs]
    fills_out = hist([10.0] * 3 + [20.0, 30.0, 40.0, 50.0] + [60.0] * 3)  # a fragment at first, then the person
    follows = hist([float(PERSP.height(r / H) * H) for r in rows])  # a whole person all along
    keeps = hist([20.0] * 10)  # an insect or a drop at the lens: the same size wherever it goes
    assert tracker._grows_like_a_person(fills_out, night=False)
    assert tracker._grows_like_a_person(follows, night=False)
    assert not tracker._grows_like_a_person(keeps, night=False)
    # At night, and with the rule off, growth beyond the perspective's is still `rigid` (a lamp-lit
    # insect flying towards the lens grows far faster than any walker).
    assert not tracker._grows_like_a_person(fills_out, night=True)
    off = Tracker(W, H, FPS, TrackParams(rigid_grow_day=False), PERSP)
    assert not off._grows_like_a_person(fills_out, night=False)
