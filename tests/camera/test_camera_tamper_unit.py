"""Unit tests of the tamper state machine (edge.camera.tamper) on generated frames, no I/O."""

from __future__ import annotations

import cv2
import numpy as np

from edge.camera.tamper import TAMPER_END, TAMPER_START, TamperChange, TamperDetector

W, H, FPS = 320, 180, 5.0


def world(seed: int = 1) -> np.ndarray:
    """A wide textured panorama (blocks of random grey, softened) to crop views from."""
    rng = np.random.default_rng(seed)
    tex = rng.normal(120, 40, (H // 6, 2 * W // 6)).astype(np.float32)
    return cv2.GaussianBlur(cv2.resize(tex, (2 * W, H), interpolation=cv2.INTER_NEAREST), (3, 3), 0)


def view(pano: np.ndarray, rng: np.random.Generator, x0: int = 0, blur: float = 0.0) -> np.ndarray:
    img: np.ndarray = pano[:, x0 : x0 + W] + rng.normal(0, 2.0, (H, W))
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return np.clip(img, 0, 255).astype(np.uint8)


def run(frames: list[np.ndarray]) -> list[tuple[int, TamperChange]]:
    det = TamperDetector(fps=FPS, hold_s=3.0, clear_s=2.0, ref_tau_s=10.0,
                         counters={"tamper_events": 0, "tamper_frames": 0})
    out = []
    for i, g in enumerate(frames):
        small = cv2.resize(g, (160, 90), interpolation=cv2.INTER_AREA)
        _, change = det.step(small, g, i / FPS, i + 1, 0.0, False)
        if change is not None:
            out.append((i, change))
    return out


def test_steady_textured_view_is_never_tamper() -> None:
    rng = np.random.default_rng(2)
    pano = world()
    assert run([view(pano, rng) for _ in range(80)]) == []


def test_covered_then_uncovered() -> None:
    rng = np.random.default_rng(3)
    pano = world()
    frames = [view(pano, rng) for _ in range(30)] + [np.full((H, W), 14, np.uint8)] * 30
    frames += [view(pano, rng) for _ in range(30)]
    got = run(frames)
    assert [(c.kind, c.reason) for _, c in got] == [(TAMPER_START, "covered"), (TAMPER_END, "covered")]
    assert 30 + 3 * FPS <= got[0][0] <= 30 + 4.2 * FPS  # held ~3 s (+ the 1 s check stride)
    assert got[1][0] >= 60 + 2 * FPS - 1


def test_turned_camera_is_moved_and_stays() -> None:
    rng = np.random.default_rng(4)
    pano = world()
    frames = [view(pano, rng) for _ in range(30)] + [view(pano, rng, x0=W // 2) for _ in range(40)]
    got = run(frames)
    assert [(c.kind, c.reason) for _, c in got] == [(TAMPER_START, "moved")]


def test_defocus_is_defocused() -> None:
    rng = np.random.default_rng(5)
    pano = world()
    frames = [view(pano, rng) for _ in range(30)] + [view(pano, rng, blur=4.0) for _ in range(30)]
    got = run(frames)
    assert [(c.kind, c.reason) for _, c in got] == [(TAMPER_START, "defocused")]
