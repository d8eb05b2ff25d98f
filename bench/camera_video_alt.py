"""A second, independent video model of a fence camera, for held-out robustness tests.

Nothing here comes from `devtools.video_synth`. The model is built from the physics of a cheap
outdoor IP camera looking along a fence:

- Geometry: a pinhole camera 3 m above flat ground; people are placed on the ground plane in
  metres and projected, so their size follows their distance (a person 40 m away is ~10 px
  tall at 320x180). The site has three zones: the fence face, the strip beyond the fence (far,
  small people) and the approach path near the camera.
- Scene: gravel with depth-scaled texture, a tree line whose foliage sways in gusts, a
  chain-link fence (diagonal mesh and posts) that people behind it are seen through, sky.
- Light: scene radiance x daylight level x cloud shadows (a drifting smooth field); at night
  an IR lamp (grey, hot spot, low contrast) with lamp flicker; headlights sweeping the ground.
- Sensor: shot noise from a small full well (noise rises as the light falls and the gain rises),
  read noise, an auto-exposure loop that corrects in steps, auto white balance that steps,
  gamma, 1-2 px camera shake.
- Near the lens: insects (IR-lit, blurred) and rain streaks/drops.
- People: articulated silhouettes (torso, head, swinging arms and legs) whose clothing is close
  to the local background, walking, running or crawling along the fence, entering and leaving.
- Tamper: a hand or a cloth over the lens, paint spray (veil + blur that stays), the camera
  knocked to a new view, defocus.
- Encoding: ffmpeg libx264 at a low constant bitrate with a short GOP (block artefacts and
  keyframe pumping), 12 fps (not a multiple of the 5 fps detect rate).

The held-out clip set, its ground truth and the encoder are in bench/camera_video_alt_set.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

W, H, FPS = 640, 360, 12
HORIZON = 0.20  # image y of the horizon, fraction of the height
CAM_H = 3.0  # camera height above ground, m
FOCAL = 1.3 * H  # px
FENCE_D = 15.0  # fence distance, m
FENCE_HEIGHT = 2.2
MASK_OSD = ((0.0, 0.0), (0.42, 0.0), (0.42, 0.07), (0.0, 0.07))
# zone id -> (polygon in relative coordinates, min_area, dwell_frames)
ZONES: dict[str, tuple[tuple[tuple[float, float], ...], float, int]] = {
    "fence": (((0.02, 0.30), (0.98, 0.30), (0.98, 0.50), (0.02, 0.50)), 0.004, 3),
    "far": (((0.02, 0.24), (0.98, 0.24), (0.98, 0.30), (0.02, 0.30)), 0.002, 3),
    "approach": (((0.30, 0.66), (0.70, 0.66), (0.78, 0.99), (0.22, 0.99)), 0.01, 3),
}


def ground_y(d: float) -> float:
    """Image row (px) of a ground point d metres away."""
    return HORIZON * H + FOCAL * CAM_H / d


def project(x_m: float, y_m: float, d: float) -> tuple[float, float]:
    """Image point of a world point x_m lateral, y_m above ground, d metres away."""
    return W / 2 + FOCAL * x_m / d, HORIZON * H + FOCAL * (CAM_H - y_m) / d


@dataclass(frozen=True, slots=True)
class Walker:
    """A person moving on a straight ground path from (x0, d0) to (x1, d1) metres."""

    t0: float
    t1: float
    x0: float
    d0: float
    x1: float
    d1: float
    gait: str = "walk"  # walk | run | crawl | stand
    contrast: float = 22.0  # grey levels between clothing and the local background
    seed: int = 0

    def at(self, t: float) -> tuple[float, float] | None:
        """(x, d) at time t, or None when not in the scene."""
        if not self.t0 <= t <= self.t1:
            return None
        u = (t - self.t0) / max(self.t1 - self.t0, 1e-6)
        return self.x0 + (self.x1 - self.x0) * u, self.d0 + (self.d1 - self.d0) * u


@dataclass(frozen=True, slots=True)
class AltClip:
    """One clip of the held-out set."""

    name: str
    seconds: float = 20.0
    seed: int = 0
    light: str = "day"  # day | dusk (ramp to 8 %) | night (IR)
    people: tuple[Walker, ...] = ()
    wind: float = 1.0  # foliage sway amplitude, px at 640x360
    shake: float = 0.0  # camera shake amplitude, px
    clouds: float = 0.0  # cloud-shadow depth (0..0.5)
    rain: float = 0.0  # streaks and drops near the lens
    insects: int = 0
    headlights: int = 0  # number of sweeps
    wb_step: bool = False
    tamper: str | None = None  # hand | cloth | spray | knock | defocus
    tamper_at: float = 8.0
    tamper_len: float = 7.0  # hand/cloth/defocus; spray and knock stay
    bitrate_k: int = 300


# ---------------------------------------------------------------------------- static scene
def _fractal(rng: np.random.Generator, h: int, w: int, octaves: tuple[tuple[int, float], ...]) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for cell, amp in octaves:
        g = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
        out += cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR) * amp
    return out


class Scene:
    """Static radiance layers (linear, 0..1) of a wide view; the camera crops it."""

    def __init__(self, rng: np.random.Generator, width: int = int(W * 1.6)) -> None:
        self.pw = width
        h, w = H, width
        ys = np.arange(h, dtype=np.float32)[:, None]
        hz = HORIZON * H
        rad: np.ndarray = np.zeros((h, w, 3), np.float32)
        sky = np.clip(0.75 - 0.25 * ys / max(hz, 1), 0.4, 0.8)
        rad[:] = np.stack([sky * 1.05, sky * 0.95, sky * 0.8], -1)  # BGR, bluish sky
        # Gravel: texture frequency grows with distance (perspective), so the far ground is finer.
        gravel = 0.30 + _fractal(rng, h, w, ((48, 0.05), (12, 0.04), (3, 0.06), (1, 0.05)))
        depth = np.clip((ys - hz) / (h - hz), 0, 1)
        gravel = 0.30 + (gravel - 0.30) * (0.5 + 0.5 * depth)
        ground = np.stack([gravel * 0.85, gravel * 0.95, gravel * 1.0], -1)
        below = (ys > hz).astype(np.float32)[..., None]
        rad = rad * (1 - below) + ground * below
        # A path of packed earth towards the camera (the approach zone).
        path: np.ndarray = np.zeros((h, w), np.float32)
        cx = w / 2
        pts = np.array([[cx - 8, hz + 30], [cx + 8, hz + 30], [cx + 0.3 * W, h], [cx - 0.3 * W, h]], np.int32)
        cv2.fillPoly(path, [pts], 1.0)
        path = cv2.GaussianBlur(path, (0, 0), 4)[..., None]
        rad = rad * (1 - path) + np.array([0.36, 0.40, 0.45], np.float32) * path * (
            1 + 0.15 * _fractal(rng, h, w, ((8, 0.5), (2, 0.5)))[..., None])
        self.base = rad
        # Tree line: its own layer so it can sway.
        fol = 0.10 + np.abs(_fractal(rng, h, w, ((24, 0.06), (6, 0.06), (2, 0.05))))
        crown = np.zeros((h, w), np.float32)
        for x in range(0, w, 14):
            top = hz - rng.uniform(0.02, 0.13) * H
            cv2.ellipse(crown, (int(x), int(hz)), (int(rng.uniform(10, 26)), int(hz - top) + 1), 0, 180, 360, 1.0, -1)
        self.fol_alpha = cv2.GaussianBlur(crown, (0, 0), 1.2)
        self.fol = np.stack([fol * 0.7, fol * 1.2, fol * 0.8], -1)
        self.fol_rows = (int(hz - 0.16 * H), int(hz) + 2)
        # Chain-link fence at FENCE_D: posts and a diagonal mesh, opaque where drawn.
        fence = np.zeros((h, w), np.float32)
        top, bot = int(ground_y(FENCE_D) - FOCAL * FENCE_HEIGHT / FENCE_D), int(ground_y(FENCE_D))
        step = 7
        for x in range(-h, w + h, step):
            cv2.line(fence, (x, top), (x + (bot - top), bot), 0.55, 1, cv2.LINE_AA)
            cv2.line(fence, (x, bot), (x + (bot - top), top), 0.55, 1, cv2.LINE_AA)
        for x in range(0, w, 70):
            cv2.line(fence, (x, top - 3), (x, bot), 1.0, 3, cv2.LINE_AA)
        cv2.line(fence, (0, top), (w, top), 1.0, 2, cv2.LINE_AA)
        fence[:top - 4] = 0
        fence[bot + 1:] = 0
        self.fence_alpha = fence
        self.fence_col = np.array([0.52, 0.52, 0.55], np.float32)
        self.local_mean = cv2.blur(cv2.cvtColor(self.base, cv2.COLOR_BGR2GRAY), (15, 15))


# ---------------------------------------------------------------------------- people
@dataclass(frozen=True, slots=True)
class Person:
    """One person's silhouette at one instant: masks over a small box at render size."""

    top: np.ndarray  # float32 0..1, upper body, head, arms
    low: np.ndarray  # trousers, legs
    x0: int
    y0: int
    d: float

    def union(self) -> np.ndarray:
        """Both masks, binarised (uint8 0/1)."""
        return ((self.top + self.low) > 0.5).astype(np.uint8)


def _limb(img: np.ndarray, a: tuple[float, float], b: tuple[float, float], thick: float, val: float) -> None:
    cv2.line(img, (int(a[0] * 4), int(a[1] * 4)), (int(b[0] * 4), int(b[1] * 4)), val,
             max(1, int(thick)), cv2.LINE_AA, shift=2)


def person_at(wk: Walker, t: float) -> Person | None:
    """The articulated silhouette of a walker at time t (render coordinates), or None."""
    pos = wk.at(t)
    if pos is None:
        return None
    xm, d = pos
    s = FOCAL / d  # px per metre
    fx, fy = project(xm, 0.0, d)
    x0, y0 = int(fx - 1.3 * s) - 2, int(fy - 1.9 * s) - 2
    bw, bh = int(2.6 * s) + 5, int(2.2 * s) + 5
    top = np.zeros((bh, bw), np.float32)
    low = np.zeros((bh, bw), np.float32)

    def p(dx: float, y: float) -> tuple[float, float]:
        u, v = project(xm + dx, y, d)
        return u - x0, v - y0

    cadence = {"walk": 0.9, "run": 1.4, "crawl": 0.45, "stand": 0.0}[wk.gait]
    ph = 2 * math.pi * cadence * t + wk.seed
    sw = {"walk": 0.45, "run": 0.8, "crawl": 0.3, "stand": 0.03}[wk.gait]
    if wk.gait == "crawl":  # body horizontal at 0.35 m, head forward, limbs paddling
        direction = 1.0 if wk.x1 >= wk.x0 else -1.0
        hip, sh = p(-0.45 * direction, 0.3), p(0.35 * direction, 0.38)
        _limb(top, hip, sh, 0.34 * s, 1.0)
        head = p(0.6 * direction, 0.42)
        cv2.circle(top, (int(head[0]), int(head[1])), max(1, int(0.12 * s)), 1.0, -1, cv2.LINE_AA)
        for k, base in ((0, hip), (1, sh)):
            a = sw * math.sin(ph + k * math.pi)
            foot = (base[0] + direction * 0.35 * s * math.sin(a) - 0.1 * s * direction, base[1] + 0.28 * s)
            _limb(low if k == 0 else top, base, foot, 0.14 * s, 1.0)
        return Person(top, low, x0, y0, d)
    lean = 0.15 if wk.gait == "run" else 0.0
    hip, neck = p(0, 0.95), p(lean, 1.45)
    _limb(top, hip, neck, 0.36 * s, 1.0)
    head = p(lean * 1.1, 1.62)
    cv2.circle(top, (int(head[0]), int(head[1])), max(1, int(0.11 * s)), 1.0, -1, cv2.LINE_AA)
    for k in (0, 1):
        a = sw * math.sin(ph + k * math.pi)
        knee = (hip[0] + 0.48 * s * math.sin(a), hip[1] + 0.48 * s * math.cos(a))
        b = a - (0.5 * sw * (1 + math.sin(ph + k * math.pi + 1.2)) if wk.gait != "stand" else 0)
        foot = (knee[0] + 0.47 * s * math.sin(b), knee[1] + 0.47 * s * math.cos(b))
        _limb(low, hip, knee, 0.16 * s, 1.0)
        _limb(low, knee, foot, 0.13 * s, 1.0)
        arm = -0.8 * a
        elbow = (neck[0] + 0.3 * s * math.sin(arm), neck[1] + 0.3 * s * math.cos(arm))
        hand = (elbow[0] + 0.28 * s * math.sin(arm * 1.4), elbow[1] + 0.28 * s * math.cos(arm * 1.4))
        _limb(top, neck, elbow, 0.1 * s, 1.0)
        _limb(top, elbow, hand, 0.09 * s, 1.0)
    return Person(top, low, x0, y0, d)


def _roi(img: np.ndarray, p: Person) -> tuple[np.ndarray, slice, slice, slice, slice] | None:
    """The image box under a person's masks (clipped), with the matching mask slices."""
    h, w = p.top.shape
    ya, yb, xa, xb = max(0, p.y0), min(img.shape[0], p.y0 + h), max(0, p.x0), min(img.shape[1], p.x0 + w)
    if ya >= yb or xa >= xb:
        return None
    return img[ya:yb, xa:xb], slice(ya, yb), slice(xa, xb), slice(ya - p.y0, yb - p.y0), slice(xa - p.x0, xb - p.x0)


# ---------------------------------------------------------------------------- per-frame effects
class Render:
    """Renders one AltClip frame by frame (BGR uint8) and keeps the camera's state."""

    def __init__(self, clip: AltClip) -> None:
        self.c = clip
        self.rng = np.random.default_rng(clip.seed)
        sc = Scene(self.rng)
        self.scene = sc
        # Static world with the fence drawn in (people are composited into the view, and the
        # fence is drawn again over anyone behind it).
        fa = sc.fence_alpha[..., None]
        self.world = sc.base * (1 - fa) + sc.fence_col * fa
        self.gain = 1.0
        self.gain_target = 1.0
        self.next_ae = 0.0
        self.wb = np.ones(3, np.float32)
        # Cloud shadows have penumbrae of ~10 m (sun's 0.5 deg x cloud height): smooth at image scale.
        cl = _fractal(self.rng, 12, 100, ((8, 1.0), (4, 0.35)))
        self.cloud = cv2.resize(cl, (5 * W, H), interpolation=cv2.INTER_CUBIC)
        self.bugs = [self._new_bug(0.0) for _ in range(clip.insects)]
        self.drops: list[tuple[float, float, float, float]] = []
        self.knock = float(self.rng.uniform(0.25, 0.4)) * (1 if self.rng.random() < 0.5 else -1)
        self.colours = {wk: self._colours(wk) for wk in clip.people}
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        spot = 0.35 + 0.9 * np.exp(-(((xx - W / 2) / (0.5 * W)) ** 2 + ((yy - 0.75 * H) / (0.6 * H)) ** 2))
        self.ir_spot = (spot * np.clip((yy - HORIZON * H) / (0.2 * H), 0.25, 1.0)).astype(np.float32)
        self.view_offset = int(W * 0.3)

    def _colours(self, wk: Walker) -> tuple[np.ndarray, np.ndarray]:
        """Clothing radiance close to the background where the person walks (camouflage)."""
        mid = wk.at((wk.t0 + wk.t1) / 2)
        assert mid is not None
        fx, fy = project(mid[0], 0.9, mid[1])
        bgv = float(self.scene.local_mean[int(np.clip(fy, 0, H - 1)), int(np.clip(fx + W * 0.3, 0, self.scene.pw - 1))])
        out = []
        for _ in range(2):
            sign = 1.0 if self.rng.random() < 0.5 else -1.0
            v = max(0.03, bgv + sign * wk.contrast / 255.0 * 0.9)
            out.append(np.array([v * 0.95, v, v * 1.03], np.float32))
        return out[0], out[1]

    def _new_bug(self, t: float) -> list[float]:
        r = self.rng
        return [t + r.uniform(0.5, 6.0), r.uniform(0, W), r.uniform(0, H), r.uniform(6, 16), r.uniform(0, 6.28)]

    def daylight(self, t: float) -> float:
        """Scene illumination relative to full day."""
        c = self.c
        if c.light == "dusk":
            return float(0.08 ** min(1.0, t / c.seconds))
        return 1.0

    def view(self, t: float) -> tuple[float, float]:
        """(pan in px, roll in degrees) of the camera view."""
        c = self.c
        if c.tamper == "knock" and t >= c.tamper_at:
            u = min(1.0, (t - c.tamper_at) / 0.4)
            wob = math.exp(-3 * (t - c.tamper_at)) * math.sin(25 * (t - c.tamper_at))
            return u * self.knock * W + 6 * wob, u * 9.0 + 2 * wob
        return 0.0, 0.0

    def frame_radiance(self, t: float) -> np.ndarray:
        """Linear radiance in the camera's view at time t: world, sway, people, shadows, shake."""
        c, sc = self.c, self.scene
        world = self.world
        if c.wind > 0:  # foliage sways: gusts modulate a travelling wave; only the tree rows
            r0, r1 = sc.fol_rows
            world = world.copy()
            gust = 0.6 + 0.4 * math.sin(0.7 * t) + 0.3 * math.sin(2.3 * t + 1)
            xs = np.arange(sc.pw, dtype=np.float32)[None, :].repeat(r1 - r0, 0)
            yy = np.arange(r0, r1, dtype=np.float32)[:, None].repeat(sc.pw, 1)
            mx = xs + c.wind * gust * (r1 - yy) / max(r1 - r0, 1) * np.sin(3.1 * t + xs / 23.0)
            alpha = cv2.remap(sc.fol_alpha, mx, yy, cv2.INTER_LINEAR)[..., None]
            fol = cv2.remap(sc.fol, mx, yy, cv2.INTER_LINEAR)
            world[r0:r1] = world[r0:r1] * (1 - alpha) + fol * alpha
        pan, roll = self.view(t)
        sx = c.shake * (math.sin(2 * math.pi * 3.3 * t) + 0.5 * float(self.rng.standard_normal()))
        sy = c.shake * (math.sin(2 * math.pi * 2.1 * t + 1) + 0.5 * float(self.rng.standard_normal()))
        m = cv2.getRotationMatrix2D((W / 2, H / 2), roll, 1.0)
        m[0, 2] -= self.view_offset + pan
        img = cv2.warpAffine(world, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if pan == 0.0 and roll == 0.0:  # after a knock the people are out of view
            self._people(img, t)
        if c.clouds > 0:  # cloud shadows drift across the ground (and the people on it)
            off = int(90.0 * t) % (4 * W)  # drifting with the wind, ~3 m/s at the fence
            shade = 1.0 - c.clouds * (0.5 + 0.5 * np.tanh(1.5 * self.cloud[:, off:off + W]))
            img *= shade[..., None]
        if sx or sy:  # shake: sub-pixel translation of the whole picture
            img = cv2.warpAffine(img, np.array([[1, 0, sx], [0, 1, sy]], np.float32), (W, H), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        return img

    def _people(self, img: np.ndarray, t: float) -> None:
        people = [(wk, p) for wk in self.c.people if (p := person_at(wk, t)) is not None]
        for wk, p in sorted(people, key=lambda wp: -wp[1].d):
            box = _roi(img, p)
            if box is None:
                continue
            sub, ys, xs, my, mx = box
            ctop, clow = self.colours[wk]
            for m, col in ((p.low[my, mx], clow), (p.top[my, mx], ctop)):
                m3 = m[..., None]
                sub[:] = sub * (1 - m3) + col * m3
            if p.d > FENCE_D:  # seen through the chain-link mesh
                fa = self.scene.fence_alpha[ys, xs.start + self.view_offset:xs.stop + self.view_offset][..., None]
                sub[:] = sub * (1 - fa) + self.scene.fence_col * fa


def _night(img: np.ndarray, r: Render, t: float) -> np.ndarray:
    """IR lamp: grey, lifted and flattened, a hot spot that falls off, flicker of the lamp."""
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    flick = 1.0 + 0.03 * math.sin(2 * math.pi * 1.7 * t) + 0.015 * float(r.rng.standard_normal())
    g = (0.12 + 0.55 * g) * r.ir_spot * (0.55 * flick)
    return cv2.merge([g, g, g])


def render_frames(clip: AltClip) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t, BGR uint8 frame) for the whole clip."""
    r = Render(clip)
    c = clip
    full_well = 3000.0
    for i in range(round(c.seconds * FPS)):
        t = i / FPS
        img = r.frame_radiance(t)
        if c.light == "night":
            img = _night(img, r, t)
        if c.headlights:
            img = _headlights(img, c, t)
        img = _lens(img, r, t)
        light = r.daylight(t)
        # Auto exposure: meters the picture, corrects in steps every 0.8 s (real AE loops hunt).
        if t >= r.next_ae:
            want = float(np.clip(0.42 / max(float(cv2.mean(img)[1]) * light, 1e-4), 0.5, 12.0))
            if abs(want / r.gain - 1) > 0.12:
                r.gain_target = want
            r.next_ae = t + 0.8
        r.gain += 0.5 * (r.gain_target - r.gain)
        if c.wb_step and abs(t - c.seconds * 0.55) < 0.5 / FPS:
            r.wb = np.array([0.9, 1.0, 1.12], np.float32)
        # Shot noise (Poisson ~ Gaussian with variance = electrons) + read noise, then gain, AWB, gamma.
        # (one channel of H x 3W, so that OpenCV's scalar arithmetic applies to every colour)
        electrons = np.maximum(img.reshape(H, W * 3) * (light * full_well), np.float32(0.0))
        noise = r.rng.standard_normal(electrons.shape, dtype=np.float32)
        noisy = electrons + cv2.sqrt(electrons + 25.0) * noise
        gains = np.tile(r.wb * (r.gain / full_well), W)[None, :].astype(np.float32)
        lin = np.clip(noisy * gains, np.float32(1e-6), np.float32(1.0))
        out = cv2.convertScaleAbs(cv2.pow(lin, 1 / 2.2), alpha=255.0).reshape(H, W, 3)
        _osd(out, t)
        yield t, out


def _headlights(img: np.ndarray, c: AltClip, t: float) -> np.ndarray:
    """A car turning behind the site: a bright cone sweeping across the ground, ~3 s a sweep."""
    period = c.seconds / max(c.headlights, 1)
    u = (t % period) / 3.0
    if u > 1.0:
        return img
    cx = (-0.2 + 1.4 * u) * W
    yy, xx = np.mgrid[0:H:4, 0:W:4].astype(np.float32)
    cone = np.exp(-(((xx - cx) / (0.12 * W)) ** 2 + ((yy - 0.55 * H) / (0.25 * H)) ** 2))
    cone *= (yy > HORIZON * H).astype(np.float32)
    cone = cv2.resize(cone, (W, H), interpolation=cv2.INTER_LINEAR)[..., None]
    return img * (1.0 + 2.5 * cone) + 0.05 * cone


def _lens(img: np.ndarray, r: Render, t: float) -> np.ndarray:
    """Things at or on the lens: tamper, insects, rain."""
    c = r.c
    k = c.tamper
    if k in ("defocus", "spray") and t >= c.tamper_at:
        u = min(1.0, (t - c.tamper_at) / (2.0 if k == "defocus" else 3.5))
        if k == "defocus" and t > c.tamper_at + c.tamper_len:
            u = max(0.0, 1.0 - (t - c.tamper_at - c.tamper_len) / 1.0)
        sig = 0.3 + 6.0 * u
        img = cv2.GaussianBlur(img, (0, 0), sig)
        if k == "spray":  # paint mist: a veil of its colour over the blur, with spots
            veil = u * (0.75 + 0.15 * np.sin(np.arange(W, dtype=np.float32) / 37.0))[None, :, None]
            img = img * (1 - veil) + np.array([0.15, 0.25, 0.35], np.float32) * veil
    if k in ("hand", "cloth") and c.tamper_at <= t <= c.tamper_at + c.tamper_len + 0.6:
        grow = min(1.0, (t - c.tamper_at) / 0.7)
        if t > c.tamper_at + c.tamper_len:
            grow = max(0.0, 1.0 - (t - c.tamper_at - c.tamper_len) / 0.6)
        m = np.zeros((H, W), np.float32)
        jit = 4 * math.sin(9 * t)
        cv2.ellipse(m, (int(W * 0.85 + jit), int(H * 1.2)), (int(W * 1.3 * grow) + 1, int(H * 1.7 * grow) + 1),
                    25, 0, 360, 1.0, -1)
        soft = cv2.GaussianBlur(m, (0, 0), 12)[..., None]
        if k == "hand":  # skin right at the lens: dark, a little light leaking through the fingers
            cover = np.array([0.05, 0.07, 0.11], np.float32) * (1 + 0.3 * np.linspace(0, 1, W, dtype=np.float32))[
                None, :, None]
        else:  # out-of-focus woven cloth, some residual texture
            cols = np.arange(W, dtype=np.float32)[None, :]
            weave = 0.12 + 0.02 * np.sin(cols / 3.0 + t) * np.ones((H, 1), np.float32)
            cover = cv2.merge([weave * 0.8, weave, weave * 1.2])
        img = img * (1 - soft) + cover * soft
    if c.insects:
        img = _insects(img, r, t)
    if c.rain > 0:
        img = _rain(img, r, c.rain)
    return img


def _insects(img: np.ndarray, r: Render, t: float) -> np.ndarray:
    add: np.ndarray = np.zeros((H, W), np.float32)
    for b in r.bugs:
        if t < b[0]:
            continue
        if t > b[0] + 2.0:
            b[:] = r._new_bug(t)
            continue
        b[4] += r.rng.normal(0, 0.6)
        b[1] += 18 * math.cos(b[4])
        b[2] += 18 * math.sin(b[4])
        cv2.circle(add, (int(b[1]), int(b[2])), int(b[3]), 0.35, -1, cv2.LINE_AA)
    if add.any():
        add = cv2.GaussianBlur(add, (0, 0), 5)
        img = img + add[..., None]
    return img


def _rain(img: np.ndarray, r: Render, amount: float) -> np.ndarray:
    """Streaks (drops falling through the exposure, near the lens: blurred, bright) and a few blobs."""
    add: np.ndarray = np.zeros((H, W), np.float32)
    n = int(120 * amount)
    xs = r.rng.uniform(0, W, n)
    ys = r.rng.uniform(-30, H, n)
    ln = r.rng.uniform(15, 45, n)
    for x, y, length in zip(xs, ys, ln, strict=True):
        cv2.line(add, (int(x), int(y)), (int(x + 0.15 * length), int(y + length)), 0.10, 1, cv2.LINE_AA)
    if r.rng.random() < 0.15 * amount:
        r.drops.append((r.rng.uniform(0, W), r.rng.uniform(0, H), r.rng.uniform(8, 20), 1.5))
    r.drops = [(x, y, rad, life - 1 / FPS) for x, y, rad, life in r.drops if life > 0]
    for x, y, rad, _ in r.drops:
        cv2.circle(add, (int(x), int(y)), int(rad), 0.08, -1, cv2.LINE_AA)
    add = cv2.GaussianBlur(add, (0, 0), 1.2)
    return img + add[..., None]


def _osd(out: np.ndarray, t: float) -> None:
    """The camera's own date/time overlay (inside the configured mask)."""
    s = int(t)
    cv2.putText(out, f"2026-11-28 03:{s // 60:02d}:{s % 60:02d} CAM-07", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (235, 235, 235), 1, cv2.LINE_AA)
