"""Coherence along the path (stacking.py): a faint walker is one object over its frames; a chain of
rain streaks and an insect zig-zagging near the lens are not. The check in the detector
(`TrackParams.min_coherence_night`, off by default) drops an erratic insect that the other rules
pass and keeps a faint walker. Pure: synthetic IR differences and frames into the real code."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.camera.motion import MOTION_START, DetectorSpec, MotionDetector
from edge.camera.stacking import DiffHistory, path_coherence
from edge.camera.tracks import Perspective, TrackParams
from tests.camera.test_camera_night_unit import ZONE, _ir_frames
from tests.camera.test_camera_walks_unit import _insect_frames

W, H, FPS = 320, 180, 5.0
PERSP = Perspective.fit([(0.46, 0.147), (0.9, 0.397)])
SIGMA = 8.0  # per-pixel IR noise of the raw difference (grey levels)


def _hh(row: float) -> float:
    return PERSP.height(row / H) * H


def _noise(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, SIGMA, (H, W)).astype(np.float32)


Track = list[tuple[float, float, float, int, int]]


def _walker(seed: int, contrast: float = 12.0, jitter: float = 0.0) -> tuple[list[tuple[float, np.ndarray]], Track]:
    """Five raw differences of a faint walker (1.5 sigma) at 0.9 person heights/s, and its track's boxes;
    `jitter`: the box's foot point jumps by up to this share of the height (seen in fragments)."""
    rng = np.random.default_rng(seed)
    foot, hh = 130.0, _hh(130.0)
    frames, track = [], []
    for i in range(5):
        t = i / FPS
        d = np.zeros((H, W), np.float32)
        x = 40 + 0.9 * hh * t
        cv2.rectangle(d, (int(x), int(foot - hh)), (int(x + 0.35 * hh), int(foot)), contrast, -1)
        d += _noise(rng)
        cut = float(rng.uniform(0, jitter)) * hh  # only the upper part was seen this frame
        frames.append((t, d))
        track.append((t, x + 0.175 * hh, foot - cut, int(0.35 * hh) + 1, int(hh - cut)))
    return frames, track


def test_a_faint_walker_is_coherent_along_its_path() -> None:
    for seed in range(6):
        frames, track = _walker(seed)
        c = path_coherence(frames, track, SIGMA)
        assert c is not None and c > 0.85, (seed, c)
        frames, track = _walker(seed, jitter=0.4)  # fragments: the box's foot jumps by up to 0.4 h
        c = path_coherence(frames, track, SIGMA)
        assert c is not None and c > 0.8, (seed, c)


def test_a_chain_of_rain_streaks_is_not_one_object() -> None:
    # Each frame a new streak (one exposure), thin and bright, near the last one: the tracker's gate
    # chains them into a "walk" of person-sized boxes (the night box makes each streak 5 px wide).
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        x, y = 100.0, 60.0
        frames, track = [], []
        for i in range(5):
            t = i / FPS
            d = np.zeros((H, W), np.float32)
            x += float(rng.uniform(-6, 14))
            y += float(rng.uniform(-4, 4))
            ln = float(rng.uniform(20, 30))
            cv2.line(d, (int(x), int(y)), (int(x + 0.15 * ln), int(y + ln)), 60.0, 1)
            d += _noise(rng)
            frames.append((t, d))
            track.append((t, x + 0.075 * ln, y + ln, 5, int(ln)))
        c = path_coherence(frames, track, SIGMA)
        assert c is not None and c < 0.3, (seed, c)


def test_an_insect_zigzagging_at_the_lens_is_mostly_not_one_object_on_a_path() -> None:
    # Blurred, 20 px wide, ~100 px/s, turning up to ±2.5 rad per frame. When its zig-zag happens to
    # stay on a line, or its steps overlap its own disk, it is coherent (a known limit: seeds 0 and 3).
    low = 0
    for seed in range(6):
        rng = np.random.default_rng(200 + seed)
        x, y, ang = 160.0, 90.0, float(rng.uniform(0, 2 * math.pi))
        frames, track = [], []
        for i in range(5):
            t = i / FPS
            d = _noise(rng)
            ang += float(rng.uniform(-2.5, 2.5))
            x, y = x + 18 * math.cos(ang), y + 18 * math.sin(ang)
            blob = np.zeros((H, W), np.float32)
            cv2.circle(blob, (int(x), int(y)), 7, 40.0, -1)
            d += cv2.GaussianBlur(blob, (0, 0), 2.5)  # far out of focus
            frames.append((t, d))
            track.append((t, x, y + 9, 18, 18))
        c = path_coherence(frames, track, SIGMA)
        assert c is not None
        low += c < 0.35
    assert low >= 4, low


def test_cannot_judge_with_too_few_frames_or_outside_the_picture() -> None:
    frames, track = _walker(0)
    assert path_coherence(frames[:2], track[:2], SIGMA) is None
    off = [(t, x + 400, y, w, h) for t, x, y, w, h in track]  # the patches fall outside the picture
    assert path_coherence(frames, off, SIGMA) is None
    hist = DiffHistory(3)
    for t, d in frames:
        hist.push(t, d)
    assert hist.at(frames[0][0]) is None and hist.at(frames[-1][0]) is frames[-1][1]
    hist.reset()
    assert hist.at(frames[-1][0]) is None


def _starts(frames: list[np.ndarray], **tp: float) -> list[float]:
    det = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, outside_events=False,
                                      track_params=TrackParams(**tp)))  # type: ignore[arg-type]
    return [e.ts for i, f in enumerate(frames) for e in det.process(f, i / FPS, i, 0.0) if e.kind == MOTION_START]


def test_detector_check_drops_erratic_insects_and_keeps_faint_walkers() -> None:
    assert TrackParams().min_coherence_night == 0.0  # off by default (measured, docs/camera.md)
    # The walks test's insect (person-sized, sharp, 30 levels, random walk at ~3 h/s, steps shorter
    # than itself): with the walk gate off every other rule passes it in all 8 seeds; the coherence
    # check alone drops it in half of them (1, 5, 6, 8 here: as on the held-out model, where it halves
    # the night stream's false events; an insect whose steps overlap its own blob stays coherent).
    dropped = 0
    for seed in range(1, 9):
        frames = _insect_frames(seed)
        assert len(_starts(frames, min_walk_night=0.0)) >= 1, seed
        dropped += not _starts(frames, min_walk_night=0.0, min_coherence_night=0.3)
    assert dropped >= 4, dropped
    # A faint walker (12 grey levels under sigma 8 noise) is found, at the same time as without it.
    for seed in range(1, 5):
        frames = _ir_frames(contrast=12.0, sigma=8.0, seed=seed)
        base = _starts(frames)
        assert base and _starts(frames, min_coherence_night=0.3) == base, seed


def test_coherence_limit_is_bounded() -> None:
    with pytest.raises(ValueError, match="min_coherence_night"):
        TrackParams(min_coherence_night=1.5)
