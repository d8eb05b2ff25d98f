"""Synthetic fence-camera clips with ground truth, for tests, benchmarks and on-site demos.

Each scene renders a textured outdoor view (sky, ground, a fence, trees, a timestamp overlay
in the masked strip) and applies one disturbance: a person-sized blob crossing the fence zone,
a blob outside the zones, lighting ramps, an IR switch to grey, clouds, sensor noise, rain,
a covered lens, a camera turned 15°, or a defocus. Frames are encoded to H.264 by the ffmpeg
CLI so the detector sees real compression. The ground truth says when the blob is in each
zone (at the detector's resolution) and when tampering happens.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Zone and mask layout of the synthetic camera (relative coordinates), also in `site_yaml()`.
FENCE_ZONE = ((0.05, 0.42), (0.95, 0.42), (0.95, 0.62), (0.05, 0.62))
MASK_TOP = ((0.0, 0.0), (1.0, 0.0), (1.0, 0.08), (0.0, 0.08))
ZONE_MIN_AREA = 0.01
ZONE_DWELL = 3

KINDS = (
    "crossing", "outside", "ramp", "ir_switch", "clouds", "noise", "rain", "covered", "turned", "rolled",
    "defocus", "quiet",
)


@dataclass(frozen=True, slots=True)
class SceneSpec:
    """What to render. `kind` is one of KINDS; times are media seconds."""

    kind: str
    seconds: float = 20.0
    width: int = 640
    height: int = 360
    fps: int = 25
    seed: int = 0
    noise_sigma: float = 2.5
    event_at: float = 6.0  # when the disturbance starts
    event_len: float = 6.0  # how long it lasts (covered, defocus); crossing walk time
    crf: int = 26
    blob_contrast: float = 1.0  # scales how far the blob's colour is from the scene
    rain: float = 0.0  # rain on any scene: 0 none, 1 steady, 3 downpour (denser, thicker streaks)
    blob_scale: float = 1.0  # person size (1.0: ~16 % of the picture height)


@dataclass(slots=True)
class GroundTruth:
    """Expected zone motion intervals (detector resolution) and tamper intervals."""

    spec: dict[str, object]
    zone_intervals: list[tuple[str, float, float]] = field(default_factory=list)
    outside_intervals: list[tuple[float, float]] = field(default_factory=list)
    tamper_intervals: list[tuple[float, float | None]] = field(default_factory=list)
    global_change_at: list[float] = field(default_factory=list)

    def to_json(self) -> str:
        """JSON for a `.truth.json` file next to the clip."""
        return json.dumps(asdict(self), indent=1)


def site_yaml(camera_id: str = "cam-synth", url: str = "synthetic.mp4", *, fps: float = 5) -> str:
    """A minimal site config whose camera matches the synthetic scene layout."""
    zone = [list(p) for p in FENCE_ZONE]
    mask = [list(p) for p in MASK_TOP]
    return (
        "site: {id: synth-site, name: synthetic}\n"
        "zones:\n  - {id: block-a, kind: permitted, polygon: [[0,0],[40,0],[40,20],[0,20]]}\n"
        "cameras:\n"
        f"  - id: {camera_id}\n    url: {json.dumps(url)}\n"
        f"    detect: {{width: 320, height: 180, fps: {fps}}}\n"
        f"    masks: [{json.dumps(mask)}]\n"
        f"    zones:\n      - {{id: fence-north, polygon: {json.dumps(zone)}, min_area: {ZONE_MIN_AREA},"
        f" dwell_frames: {ZONE_DWELL}, alert: true}}\n"
    )


class _World:
    """A static panorama 1.5x the view width; the camera looks at a crop of it."""

    def __init__(self, w: int, h: int, rng: np.random.Generator) -> None:
        pw = int(w * 1.5)
        img = np.zeros((h, pw, 3), np.float32)
        horizon = int(h * 0.35)
        sky = np.linspace(200, 150, horizon, dtype=np.float32)[:, None]
        img[:horizon] = np.stack([sky + 30, sky + 10, sky - 20], axis=-1)
        ground = self._texture(h - horizon, pw, rng)
        img[horizon:] = np.stack([ground * 0.8, ground, ground * 0.7], axis=-1)
        for _ in range(7):  # trees and buildings give the scene structure
            cx, cy = int(rng.uniform(0, pw)), int(rng.uniform(horizon * 0.6, horizon * 1.1))
            if rng.random() < 0.5:
                ax = (int(rng.uniform(0.03, 0.07) * w), int(rng.uniform(0.06, 0.12) * h))
                cv2.ellipse(img, (cx, cy), ax, 0, 0, 360, (40.0, 90.0, 50.0), -1)
            else:
                bw, bh = int(rng.uniform(0.06, 0.14) * w), int(rng.uniform(0.08, 0.16) * h)
                shade = float(rng.uniform(90, 170))
                cv2.rectangle(img, (cx, cy - bh), (cx + bw, cy), (shade, shade, shade * 0.9), -1)
        top, bot = int(h * 0.45), int(h * 0.58)
        for x in range(0, pw, max(8, w // 16)):  # fence posts
            cv2.line(img, (x, top - int(0.05 * h)), (x, bot), (60.0, 60.0, 70.0), max(1, w // 200))
        for y in np.linspace(top - 0.04 * h, bot, 4):  # wires
            cv2.line(img, (0, int(y)), (pw, int(y)), (90.0, 90.0, 95.0), 1)
        self.img = cv2.GaussianBlur(img, (3, 3), 0)
        self.w, self.h = w, h

    @staticmethod
    def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        tex = np.zeros((h, w), np.float32)
        for scale, amp in ((64, 30.0), (16, 18.0), (4, 10.0)):
            small = rng.standard_normal((max(2, h // scale), max(2, w // scale))).astype(np.float32)
            tex += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * amp
        return np.clip(110 + tex, 20, 230)

    def view(self, pan: float, roll_deg: float) -> np.ndarray:
        """The camera's view: `pan` in view widths from the panorama's left third."""
        x0 = self.w * 0.25 + pan * self.w
        m = cv2.getRotationMatrix2D((self.w / 2, self.h / 2), roll_deg, 1.0)
        m[0, 2] -= x0
        return cv2.warpAffine(self.img, m, (self.w, self.h), borderMode=cv2.BORDER_REFLECT)


def _person_mask(w: int, h: int, cx: float, cy: float, scale: float = 1.0) -> np.ndarray:
    """A person-ish silhouette (body + head) centred at relative (cx, cy), as a 0/1 float mask."""
    m = np.zeros((h, w), np.float32)
    bh, bw = 0.16 * h * scale, 0.035 * w * scale
    px, py = int(cx * w), int(cy * h)
    cv2.ellipse(m, (px, py), (max(1, int(bw)), max(1, int(bh * 0.5))), 0, 0, 360, 1.0, -1)
    cv2.circle(m, (px, int(py - bh * 0.62)), max(1, int(bw * 0.6)), 1.0, -1)
    return m


def _blob_path(spec: SceneSpec, t: float) -> tuple[float, float] | None:
    """Relative centre of the blob at media time t, or None when it is not in the picture."""
    t0, dur = spec.event_at, spec.event_len
    if spec.kind not in ("crossing", "outside") or not t0 <= t <= t0 + dur:
        return None
    u = (t - t0) / dur
    if spec.kind == "crossing":  # walks from the near ground, through the fence band, to the far side
        return 0.3 + 0.4 * u, 0.95 - 0.7 * u
    return 0.05 + 0.9 * u, 0.84  # walks along the near ground, below the fence zone


def _lighting(spec: SceneSpec, t: float) -> float:
    if spec.kind == "ramp":  # dusk: 55 % darker over event_len seconds, then back up
        t0, d = spec.event_at, spec.event_len
        if t < t0:
            return 1.0
        if t < t0 + d:
            return 1.0 - 0.55 * (t - t0) / d
        return 0.45 + 0.55 * min(1.0, (t - t0 - d) / d)
    return 1.0


def _ir(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Night mode: monochrome, an IR lamp hot spot in the middle, lifted shadows."""
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    spot = 1.25 - 0.6 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    g = np.clip((g / 255.0) ** 0.7 * 255.0 * 0.8 * spot + 25, 0, 255)
    return cv2.merge([g, g, g])


def _cloud(spec: SceneSpec, t: float, w: int, h: int) -> np.ndarray | None:
    if spec.kind != "clouds" or t < spec.event_at:
        return None
    speed = 0.12  # view widths per second
    cx = -0.6 + speed * (t - spec.event_at)
    yy, xx = np.mgrid[0:h:4, 0:w:4].astype(np.float32)
    d = ((xx / w - cx) / 0.45) ** 2 + ((yy / h - 0.5) / 0.9) ** 2
    shade = 1.0 - 0.45 * np.exp(-d)
    return cv2.resize(shade, (w, h), interpolation=cv2.INTER_LINEAR)


def _hand(spec: SceneSpec, t: float, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t0, d = spec.event_at, spec.event_len
    if spec.kind != "covered" or not t0 <= t <= t0 + d + 0.5:
        return img
    h, w = img.shape[:2]
    grow = min(1.0, (t - t0) / 0.5) if t <= t0 + d else max(0.0, 1.0 - (t - t0 - d) / 0.5)
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, (int(w * 0.9), int(h * 1.1)), (int(w * 1.4 * grow) + 1, int(h * 1.6 * grow) + 1),
                30, 0, 360, 1.0, -1)
    soft = cv2.GaussianBlur(m, (0, 0), 8)[:, :, None]
    skin = np.array([40.0, 45.0, 60.0], np.float32) + rng.normal(0, 1.5, (h, w, 1)).astype(np.float32)
    return img * (1 - soft) + skin * soft


def _rain(img: np.ndarray, rng: np.random.Generator, amount: float) -> None:
    h, w = img.shape[:2]
    n = int(w * h / 1200 * amount)
    thick = max(1, round(amount * w / 640))
    xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
    lens = rng.integers(max(4, h // 25), max(6, h // 10), n)
    overlay = np.zeros((h, w), np.float32)
    for x, y, ln in zip(xs, ys, lens, strict=True):
        cv2.line(overlay, (int(x), int(y)), (int(x + ln * 0.25), int(y + ln)), 1.0, thick)
    img += overlay[:, :, None] * 55.0


def _pan(spec: SceneSpec, t: float) -> tuple[float, float]:
    if spec.kind not in ("turned", "rolled") or t < spec.event_at:
        return 0.0, 0.0
    u = min(1.0, (t - spec.event_at) / 0.8)
    if spec.kind == "rolled":
        return 0.0, 15.0 * u  # the mount knocked round the lens axis
    return 0.2 * u, 2.0 * u  # 15° of a ~75° lens is 0.2 widths; a little roll as the mount twists


def render(spec: SceneSpec) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (media time, BGR uint8 frame) for the whole scene."""
    rng = np.random.default_rng(spec.seed)
    w, h = spec.width, spec.height
    world = _World(w, h, rng)
    tone = rng.uniform(20, 60) * (1 if rng.random() < 0.5 else -1)
    color = np.array([70.0, 60.0, 110.0], np.float32) + tone
    for i in range(int(spec.seconds * spec.fps)):
        t = i / spec.fps
        img = world.view(*_pan(spec, t))
        pos = _blob_path(spec, t)
        if pos is not None:
            m = _person_mask(w, h, *pos, spec.blob_scale)[:, :, None]
            blob = img.mean(axis=(0, 1)) + (color - img.mean(axis=(0, 1))) * spec.blob_contrast
            img = img * (1 - m) + blob * m
        img *= _lighting(spec, t)
        shade = _cloud(spec, t, w, h)
        if shade is not None:
            img *= shade[:, :, None]
        if spec.kind == "ir_switch" and t >= spec.event_at:
            img = _ir(img, w, h)
        img = _hand(spec, t, img, rng)
        if spec.kind == "rain" or spec.rain > 0:
            _rain(img, rng, max(spec.rain, 1.0))
        if spec.kind == "defocus" and spec.event_at <= t <= spec.event_at + spec.event_len:
            img = cv2.GaussianBlur(img, (0, 0), max(2.0, w / 100))
        sigma = spec.noise_sigma * (4.0 if spec.kind == "noise" and t >= spec.event_at else 1.0)
        img += rng.standard_normal((h, w, 1), dtype=np.float32) * sigma
        out = np.clip(img, 0, 255).astype(np.uint8)
        cv2.putText(out, f"2026-11-28 03:{i // spec.fps // 60 % 60:02d}:{i // spec.fps % 60:02d} CAM1",
                    (4, max(10, int(h * 0.06))), cv2.FONT_HERSHEY_SIMPLEX, h / 900, (255, 255, 255), 1)
        yield t, out


def ground_truth(spec: SceneSpec, det_w: int = 320, det_h: int = 180) -> GroundTruth:
    """Zone intervals where the blob covers >= min_area of the fence zone (detector resolution)."""
    gt = GroundTruth(spec=asdict(spec))
    zone = np.zeros((det_h, det_w), np.uint8)
    pts = np.array([[round(x * (det_w - 1)), round(y * (det_h - 1))] for x, y in FENCE_ZONE], np.int32)
    cv2.fillPoly(zone, [pts], 1)
    zone_px = int(zone.sum())
    inside: float | None = None
    outside: float | None = None
    step = 1.0 / spec.fps
    n = int(spec.seconds * spec.fps)
    for i in range(n + 1):
        t = i * step
        pos = _blob_path(spec, t) if i < n else None
        frac, out = 0.0, False
        if pos is not None:
            m = _person_mask(det_w, det_h, *pos, spec.blob_scale) > 0
            frac = float((m & (zone > 0)).sum()) / zone_px
            out = bool((m & (zone == 0)).sum() > 0.004 * det_w * det_h)
        if frac >= ZONE_MIN_AREA and inside is None:
            inside = t
        elif frac < ZONE_MIN_AREA and inside is not None:
            gt.zone_intervals.append(("fence-north", round(inside, 3), round(t, 3)))
            inside = None
        if out and outside is None:
            outside = t
        elif not out and outside is not None:
            gt.outside_intervals.append((round(outside, 3), round(t, 3)))
            outside = None
    if spec.kind in ("covered", "defocus"):
        gt.tamper_intervals.append((spec.event_at, spec.event_at + spec.event_len))
    elif spec.kind in ("turned", "rolled"):
        gt.tamper_intervals.append((spec.event_at, None))
    if spec.kind == "ir_switch":
        gt.global_change_at.append(spec.event_at)
    return gt


def encode(spec: SceneSpec, path: Path) -> GroundTruth:
    """Render the scene to an H.264 file (and `<path>.truth.json`); returns the ground truth."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("ffmpeg not found on PATH (Debian package: ffmpeg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
           "-s", f"{spec.width}x{spec.height}", "-r", str(spec.fps), "-i", "-",
           "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-crf", str(spec.crf),
           "-g", str(spec.fps * 2), "-bf", "0", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for _, frame in render(spec):
            proc.stdin.write(frame.tobytes())
    finally:
        proc.stdin.close()
        rc = proc.wait(timeout=120)
    if rc != 0:
        raise RuntimeError(f"ffmpeg failed with status {rc} writing {path}")
    gt = ground_truth(spec)
    path.with_suffix(".truth.json").write_text(gt.to_json(), encoding="utf-8")
    return gt
