"""Shake by day (`shake_register="day"`, off by default): the picture is registered to the background
(the mount's rest position), so the background stays sharp and a faint person is still found on a
wind-shaken mount. Pure: synthetic detect frames into the real detector."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.camera.motion import MOTION_START, DetectorSpec, MotionDetector, ZoneSpec
from edge.camera.tracks import Perspective

W, H, FPS = 320, 180, 5.0
ZONE = ZoneSpec("fence", ((0.0, 0.3), (1.0, 0.3), (1.0, 0.95), (0.0, 0.95)), min_area=0.004, dwell_frames=3)
PERSP = Perspective.fit([(0.5, 0.15), (0.9, 0.38)])


def _scene(rng: np.random.Generator) -> np.ndarray:
    """Gravel-like texture plus a fine mesh: what a shaking mount turns into difference."""
    base = np.tile(np.linspace(70, 150, W, dtype=np.float32), (H, 1))
    base += cv2.resize(rng.normal(0, 14, (H // 3, W // 3)).astype(np.float32), (W, H))
    for x in range(-H, W + H, 7):
        cv2.line(base, (x, 40), (x + 60, 100), 35.0, 1, cv2.LINE_AA)
    return base


def _shaken(n: int, seed: int, person_contrast: float | None) -> list[np.ndarray]:
    """A mount shaking by up to ~1.5 px (a sway plus jitter), optionally a faint walker."""
    rng = np.random.default_rng(seed)
    base = _scene(rng)
    hh = PERSP.height(0.6) * H
    out = []
    for i in range(n):
        t = i / FPS
        img = base.copy()
        if person_contrast is not None and t >= 3.0:
            x = 30 + 0.8 * hh * (t - 3.0)
            cv2.rectangle(img, (int(x), int(0.6 * H - hh)), (int(x + 0.35 * hh), int(0.6 * H)),
                          float(np.mean(img)) + person_contrast, -1)
        sx = math.sin(2 * math.pi * 1.3 * t) + 0.4 * float(rng.standard_normal())
        sy = 0.6 * math.sin(2 * math.pi * 0.9 * t + 1) + 0.3 * float(rng.standard_normal())
        img = cv2.warpAffine(img, np.array([[1, 0, sx], [0, 1, sy]], np.float32), (W, H),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img += rng.normal(0, 2.0, img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _run(frames: list[np.ndarray], register: str, dynamic_k: float = 0.0) -> tuple[MotionDetector, list[float], float]:
    det = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, outside_events=False,
                                      shake_register=register, dynamic_k=dynamic_k))
    starts: list[float] = []
    sig = []
    for i, f in enumerate(frames):
        starts += [e.ts for e in det.process(f, i / FPS, i, 20.0) if e.kind == MOTION_START]
        if i / FPS >= 4.0:
            sig.append(det.noise.sigma)
    return det, starts, float(np.median(sig))


def test_shaken_empty_scene_keeps_the_still_noise_and_fires_nothing() -> None:
    frames = _shaken(80, 1, None)
    det, starts, sigma = _run(frames, "day")
    _, starts_off, sigma_off = _run(frames, "off")
    assert starts == [] and starts_off == []
    assert det.counters.get("shake_frames", 0) > 40  # the shake was measured, frame after frame
    # The background learnt the registered pictures, so it is sharp: the noise estimate is not
    # raised by the mesh and the texture (a background moved to the picture is their blur).
    assert sigma < 0.75 * sigma_off, (sigma, sigma_off)
    assert sigma < 4.0


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_faint_walker_on_a_shaking_mount_fires(seed: int) -> None:
    _, starts, _ = _run(_shaken(50, seed, -22.0), "day")
    assert starts
    assert 3.0 < starts[0] <= 3.0 + 4.5


def test_night_keeps_the_old_shake_path() -> None:
    """At night (a grey picture) 'day' registration is not used: the same events and noise as 'off'."""
    frames = _shaken(40, 5, -22.0)
    a = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, shake_register="day", dynamic_k=2.5))
    b = MotionDetector(DetectorSpec(W, H, FPS, zones=(ZONE,), perspective=PERSP, shake_register="off"))
    for i, f in enumerate(frames):
        ea = [(e.kind, e.ts) for e in a.process(f, i / FPS, i, 0.5)]
        eb = [(e.kind, e.ts) for e in b.process(f, i / FPS, i, 0.5)]
        assert ea == eb
        assert a.noise.sigma == b.noise.sigma


def test_register_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="shake_register"):
        DetectorSpec(W, H, FPS, shake_register="sometimes")
