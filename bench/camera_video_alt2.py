"""Extended held-out video model of a fence camera: the hard conditions of issue #11, at any size.

Independent of the project's own generator (devtools/video_synth.py) and a sibling of the first
held-out model (bench/camera_video_alt.py, unchanged): a new renderer, written so that every
length is in metres, seconds or fractions of the picture, so it can render at the detect size
(320x180) and the detect rate straight into the detector (hours of false-event video in
minutes), or at 640x360 / 12 fps for H.264 encoding.

- Geometry: pinhole camera 3 m above flat ground, horizon at 20 % of the height, focal 1.3 H;
  a person 1.7 m tall at d metres is 1.3 * 1.7 / d of the picture tall (4 m: 0.55 H, i.e.
  ~40x100 px at 320x180; 20 m: 0.11 H, ~8x20 px). `PERSPECTIVE` is what a technician measures.
- Scene: textured ground, sky, a chain-link fence at 15 m, bushes at the fence zone's edge that
  sway in gusts, drifting cloud shadows.
- People: articulated (torso, head, swinging legs and arms; crawling: body horizontal), clothing
  a few grey levels from the local background (low contrast 6-10, normal 14-24), walking
  1.3 m/s, slow 0.5 m/s, crawling 0.35 m/s; walks along, towards or away from the camera.
- Camera: auto-exposure steps (a gain step of 12-25 % every few seconds), shake of the mount
  (1-3 px at 640), shot + read noise with gain, gamma; at night an IR picture (grey, lamp hot
  spot, lamp flicker, high gain).
- At the lens: insects lit by the IR lamp (large, blurred, fast, zig-zagging, gone in 1-3 s),
  raindrops that land and slide slowly down (soft, 3-8 s), rain streaks (thin, steep).
- Tamper: knock (new view, wobble), cover (hand), defocus, turn (slow pan) -- day or night.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

HORIZON = 0.20
CAM_H = 3.0
FOCAL_H = 1.3  # focal length in picture heights
FENCE_D = 15.0
# zone id -> (polygon, min_area, dwell_frames); the fence band holds people 8-22 m away, the
# approach zone people 4-8 m away.
ZONES: dict[str, tuple[tuple[tuple[float, float], ...], float, int]] = {
    "fence": (((0.02, 0.27), (0.98, 0.27), (0.98, 0.50), (0.02, 0.50)), 0.003, 3),
    "approach": (((0.15, 0.55), (0.85, 0.55), (0.95, 0.99), (0.05, 0.99)), 0.006, 3),
}
MASK_OSD = ((0.0, 0.0), (0.42, 0.0), (0.42, 0.07), (0.0, 0.07))
PERSPECTIVE = ((0.40, 0.113), (0.90, 0.397))  # person height / picture height at foot rows


def ground_row(d: float) -> float:
    """Relative image row of a ground point d metres away."""
    return HORIZON + FOCAL_H * CAM_H / d


@dataclass(frozen=True, slots=True)
class Person:
    """A straight ground path (x lateral, d distance, metres) over [t0, t1]."""

    t0: float
    t1: float
    x0: float
    d0: float
    x1: float
    d1: float
    gait: str = "walk"  # walk | slow | crawl
    contrast: float = 18.0  # grey levels (of 255) between clothing and the local background

    def at(self, t: float) -> tuple[float, float] | None:
        if not self.t0 <= t <= self.t1:
            return None
        u = (t - self.t0) / max(self.t1 - self.t0, 1e-6)
        return self.x0 + (self.x1 - self.x0) * u, self.d0 + (self.d1 - self.d0) * u


@dataclass(frozen=True, slots=True)
class Clip2:
    """One clip (or one long stream) of the extended model."""

    name: str
    seconds: float
    seed: int = 0
    night: bool = False
    people: tuple[Person, ...] = ()
    shake: float = 0.0  # mount shake amplitude, px at 640x360
    clouds: float = 0.0  # shadow depth 0..0.5
    bushes: float = 0.0  # sway amplitude, px at 640x360
    ae_steps: bool = False
    insects: float = 0.0  # mean number at the lens at once
    drops: float = 0.0  # raindrops landing on the lens per minute
    streaks: float = 0.0  # rain streak density (0..2)
    tamper: str | None = None  # knock | cover | defocus | turn
    tamper_at: float = 8.0
    tamper_len: float = 6.0
    bitrate_k: int = 200
    blocks: tuple[tuple[float, dict[str, float]], ...] = field(default=())  # (period s, overrides) for streams


def _noise_field(rng: np.random.Generator, h: int, w: int, scales: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Smooth random texture; scales as (cell size in picture heights, amplitude)."""
    out = np.zeros((h, w), np.float32)
    for cell, amp in scales:
        c = max(1.0, cell * h)
        g = rng.standard_normal((max(2, int(h / c) + 1), max(2, int(w / c) + 1))).astype(np.float32)
        out += cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * amp
    return out


class Render2:
    """Stateful renderer: call `frame(t)` with increasing t."""

    def __init__(self, clip: Clip2, width: int = 320, height: int = 180) -> None:
        self.c = clip
        self.w, self.h = width, height
        self.k = height / 360.0  # pixel lengths were chosen at 640x360
        self.rng = np.random.default_rng(clip.seed)
        rng = self.rng
        h, w = height, width
        ys = (np.arange(h, dtype=np.float32) / h)[:, None]
        sky = np.clip(0.75 - 0.3 * ys / HORIZON, 0.45, 0.8) * np.ones((1, w), np.float32)
        depth = np.clip((ys - HORIZON) / (1 - HORIZON), 0, 1)
        ground = 0.30 + _noise_field(rng, h, w, ((0.12, 0.05), (0.03, 0.04), (0.008, 0.04))) * (0.4 + 0.6 * depth)
        below = (ys > HORIZON).astype(np.float32)
        grey = sky * (1 - below) + ground * below
        tint = np.stack([1.1 - 0.25 * below, 0.98 + 0 * below, 0.85 + 0.2 * below], -1).astype(np.float32)
        # Chain-link fence at FENCE_D.
        fence = np.zeros((h, w), np.float32)
        top, bot = int((ground_row(FENCE_D) - FOCAL_H * 2.2 / FENCE_D) * h), int(ground_row(FENCE_D) * h)
        step = max(2, round(7 * self.k * 2))
        for x in range(-h, w + h, step):
            cv2.line(fence, (x, top), (x + (bot - top), bot), 0.35, 1, cv2.LINE_AA)
            cv2.line(fence, (x, bot), (x + (bot - top), top), 0.35, 1, cv2.LINE_AA)
        for x in range(0, w, max(4, int(70 * self.k * 2))):
            cv2.line(fence, (x, top - 2), (x, bot), 0.9, max(1, int(3 * self.k)), cv2.LINE_AA)
        self.fence = fence
        self.fence_rows = (top, bot)
        self.world = grey * (1 - fence) + 0.5 * fence
        self.local = cv2.blur(self.world, (max(3, w // 40) | 1, max(3, w // 40) | 1))
        self.tint = tint
        # Bushes along the lower edge of the fence zone (they sway into it).
        bush = np.zeros((h, w), np.float32)
        by = int(0.52 * h)
        for x in range(int(0.05 * w), int(0.95 * w), max(6, w // 9)):
            r = int(rng.uniform(0.03, 0.06) * h) + 1
            cv2.ellipse(bush, (x + int(rng.uniform(-8, 8) * self.k), by), (int(r * 1.4), r), 0, 180, 360, 1.0, -1)
        self.bush_alpha = cv2.GaussianBlur(bush, (0, 0), max(0.6, 1.2 * self.k))
        self.bush_col = (0.12 + np.abs(_noise_field(rng, h, w, ((0.02, 0.08), (0.006, 0.06))))).astype(np.float32)
        self.bush_rows = (max(0, by - int(0.08 * h)), min(h, by + 2))
        cl = _noise_field(rng, 12, 120, ((0.4, 1.0), (0.15, 0.35)))
        self.cloud = cv2.resize(cl, (6 * w, h), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        spot = 0.35 + 0.9 * np.exp(-(((xx - w / 2) / (0.5 * w)) ** 2 + ((yy - 0.75 * h) / (0.6 * h)) ** 2))
        self.ir_spot = (spot * np.clip((yy / h - HORIZON) / 0.2, 0.25, 1.0)).astype(np.float32)
        self.gain, self.next_ae = 1.0, 2.0
        self.bugs: list[list[float]] = []
        self.drops: list[list[float]] = []
        self.knock = float(rng.uniform(0.25, 0.4)) * (1 if rng.random() < 0.5 else -1)
        self.cloth = {p: self._colour(p) for p in clip.people}
        self.last_t = 0.0

    # ------------------------------------------------------------------ state for long streams
    def cond(self, t: float) -> dict[str, float]:
        """The clip's conditions at time t (streams cycle through blocks)."""
        c = self.c
        base = {"shake": c.shake, "clouds": c.clouds, "bushes": c.bushes, "insects": c.insects,
                "drops": c.drops, "streaks": c.streaks, "ae": 1.0 if c.ae_steps else 0.0}
        if c.blocks:
            total = sum(p for p, _ in c.blocks)
            u = t % total
            for period, over in c.blocks:
                if u < period:
                    return {**base, **over}
                u -= period
        return base

    def _colour(self, p: Person) -> float:
        mid = p.at((p.t0 + p.t1) / 2)
        assert mid is not None
        x = self.w / 2 + FOCAL_H * self.h * mid[0] / mid[1]
        y = (ground_row(mid[1]) - FOCAL_H * 0.9 / mid[1]) * self.h
        bg = float(self.local[int(np.clip(y, 0, self.h - 1)), int(np.clip(x, 0, self.w - 1))])
        sign = 1.0 if self.rng.random() < 0.5 else -1.0
        return max(0.03, bg + sign * p.contrast / 255.0)

    # ------------------------------------------------------------------ people
    def _draw_person(self, img: np.ndarray, p: Person, t: float) -> None:
        pos = p.at(t)
        if pos is None:
            return
        xm, d = pos
        s = FOCAL_H * self.h / d  # px per metre
        w2, h0 = self.w / 2, HORIZON * self.h

        def pt(dx: float, y: float) -> tuple[int, int]:
            return (round((w2 + s * (xm + dx)) * 4), round((h0 + s * (CAM_H - y)) * 4))

        m = np.zeros((self.h, self.w), np.float32)
        cad = {"walk": 0.9, "slow": 0.55, "crawl": 0.45}[p.gait]
        ph = 2 * math.pi * cad * t
        sw = 0.3 if p.gait == "crawl" else (0.45 if p.gait == "walk" else 0.3)

        def limb(a: tuple[int, int], b: tuple[int, int], th: float) -> None:
            cv2.line(m, a, b, 1.0, max(1, round(th * s)), cv2.LINE_AA, shift=2)
        if p.gait == "crawl":
            sgn = 1.0 if p.x1 >= p.x0 else -1.0
            limb(pt(-0.5 * sgn, 0.3), pt(0.35 * sgn, 0.38), 0.34)
            cv2.circle(m, pt(0.6 * sgn, 0.42), max(4, int(0.12 * s * 4)), 1.0, -1, cv2.LINE_AA, shift=2)
            for k, bx in ((0, -0.5), (1, 0.35)):
                a = sw * math.sin(ph + k * math.pi)
                limb(pt(bx * sgn, 0.32), pt(bx * sgn + 0.3 * math.sin(a) * sgn, 0.0), 0.13)
        else:
            limb(pt(0, 0.95), pt(0, 1.45), 0.36)
            cv2.circle(m, pt(0, 1.62), max(4, int(0.11 * s * 4)), 1.0, -1, cv2.LINE_AA, shift=2)
            for k in (0, 1):
                a = sw * math.sin(ph + k * math.pi)
                knee = (0.48 * math.sin(a), 0.95 - 0.48 * math.cos(a))
                limb(pt(0, 0.95), pt(*knee), 0.16)
                limb(pt(*knee), pt(knee[0] + 0.47 * math.sin(a * 0.5), 0.0), 0.13)
                arm = -0.8 * a
                limb(pt(0, 1.42), pt(0.55 * math.sin(arm), 1.42 - 0.55 * math.cos(arm)), 0.1)
        col = self.cloth[p]
        img[:] = img * (1 - m) + col * m
        if d > FENCE_D:
            img[:] = img * (1 - self.fence) + 0.5 * self.fence

    # ------------------------------------------------------------------ frame
    def frame(self, t: float) -> np.ndarray:
        """BGR uint8 frame at time t."""
        c, rng = self.c, self.rng
        dt = max(1e-3, t - self.last_t)
        self.last_t = t
        cd = self.cond(t)
        img = self.world.copy()
        if cd["bushes"] > 0:
            r0, r1 = self.bush_rows
            gust = 0.5 + 0.5 * math.sin(0.6 * t) + 0.3 * math.sin(2.1 * t + 1)
            xs = np.arange(self.w, dtype=np.float32)[None, :].repeat(r1 - r0, 0)
            yy = np.arange(r0, r1, dtype=np.float32)[:, None].repeat(self.w, 1)
            off = cd["bushes"] * self.k * gust * ((r1 - yy) / max(r1 - r0, 1)) * np.sin(2.7 * t + xs / (30 * self.k))
            mx = (xs + off).astype(np.float32)
            a = cv2.remap(self.bush_alpha, mx, yy, cv2.INTER_LINEAR)
            col = cv2.remap(self.bush_col, mx, yy, cv2.INTER_LINEAR)
            img[r0:r1] = img[r0:r1] * (1 - a) + col * a
        view = self._view(t)
        if view is not None:
            img = cv2.warpAffine(img, view, (self.w, self.h), borderMode=cv2.BORDER_REFLECT)
        else:
            for p in sorted(c.people, key=lambda q: -(q.at(t) or (0.0, 0.0))[1]):
                self._draw_person(img, p, t)
        if cd["clouds"] > 0:
            off = int(0.15 * self.w * t) % (5 * self.w)
            shade = 1.0 - cd["clouds"] * (0.5 + 0.5 * np.tanh(1.5 * self.cloud[:, off:off + self.w]))
            img *= shade
        if cd["shake"] > 0:
            amp = cd["shake"] * self.k
            sx = amp * (math.sin(2 * math.pi * 2.7 * t) + 0.5 * float(rng.standard_normal()))
            sy = amp * 0.6 * (math.sin(2 * math.pi * 1.9 * t + 1) + 0.5 * float(rng.standard_normal()))
            img = cv2.warpAffine(img, np.array([[1, 0, sx], [0, 1, sy]], np.float32), (self.w, self.h),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if c.night:
            flick = 1.0 + 0.03 * math.sin(2 * math.pi * 1.3 * t) + 0.01 * float(rng.standard_normal())
            img = (0.12 + 0.55 * img) * self.ir_spot * (0.5 * flick)
            bgr = cv2.merge([img, img, img])
        else:
            bgr = cv2.merge([img * self.tint[..., 0], img * self.tint[..., 1], img * self.tint[..., 2]])
        bgr = self._lens(bgr, t, dt, cd)
        return self._sensor(bgr, t, cd)

    def _view(self, t: float) -> np.ndarray | None:
        c = self.c
        if c.tamper == "knock" and t >= c.tamper_at:
            u = min(1.0, (t - c.tamper_at) / 0.4)
            wob = math.exp(-3 * (t - c.tamper_at)) * math.sin(25 * (t - c.tamper_at))
            pan, roll = u * self.knock * self.w + 6 * self.k * wob, u * 9.0 + 2 * wob
        elif c.tamper == "turn" and t >= c.tamper_at:
            pan, roll = min(1.0, (t - c.tamper_at) / 1.5) * 0.3 * self.w, 0.0
        else:
            return None
        m = cv2.getRotationMatrix2D((self.w / 2, self.h / 2), roll, 1.0)
        m[0, 2] -= pan
        return m

    def _lens(self, img: np.ndarray, t: float, dt: float, cd: dict[str, float]) -> np.ndarray:
        c, rng, h, w = self.c, self.rng, self.h, self.w
        if c.tamper == "defocus" and c.tamper_at <= t <= c.tamper_at + c.tamper_len + 1.0:
            u = min(1.0, (t - c.tamper_at) / 2.0)
            if t > c.tamper_at + c.tamper_len:
                u = max(0.0, 1.0 - (t - c.tamper_at - c.tamper_len))
            img = cv2.GaussianBlur(img, (0, 0), 0.3 + 6.0 * self.k * 2 * u)
        add: np.ndarray = np.zeros((h, w), np.float32)
        # Insects: Poisson arrivals keeping ~cd["insects"] in view, each 1-3 s.
        if cd["insects"] > 0 and rng.random() < cd["insects"] / 2.0 * dt:
            self.bugs.append([t + rng.uniform(1.0, 3.0), rng.uniform(0, w), rng.uniform(0, h),
                              rng.uniform(0.017, 0.045) * h, rng.uniform(0, 6.28), rng.uniform(0.25, 0.45)])
        live = []
        for b in self.bugs:
            if t > b[0]:
                continue
            b[4] += float(rng.normal(0, math.sqrt(4.3 * dt)))
            sp = 0.34 * w * dt
            b[1] += sp * math.cos(b[4])
            b[2] += sp * math.sin(b[4])
            cv2.circle(add, (int(b[1] * 4), int(b[2] * 4)), int(b[3] * 4), b[5], -1, cv2.LINE_AA, shift=2)
            live.append(b)
        self.bugs = live
        if live:
            add = cv2.GaussianBlur(add, (0, 0), 5 * self.k)
        # Raindrops: land (fade in 0.3 s), slide slowly down, soft; refraction brightens or darkens.
        if cd["drops"] > 0 and rng.random() < cd["drops"] / 60.0 * dt:
            self.drops.append([t, t + rng.uniform(3.0, 8.0), rng.uniform(0, w), rng.uniform(0, 0.8 * h),
                               rng.uniform(0.02, 0.05) * h, rng.uniform(0.01, 0.04) * h,
                               rng.uniform(0.05, 0.1) * (1 if rng.random() < 0.7 else -1)])
        dl = np.zeros((h, w), np.float32)
        keep = []
        for d in self.drops:
            if t > d[1]:
                continue
            amp = d[6] * min(1.0, (t - d[0]) / 0.3)
            cv2.circle(dl, (int(d[2] * 4), int((d[3] + d[5] * (t - d[0])) * 4)), int(d[4] * 4), amp, -1,
                       cv2.LINE_AA, shift=2)
            keep.append(d)
        self.drops = keep
        if keep:
            add += cv2.GaussianBlur(dl, (0, 0), 3 * self.k * 2)
        if cd["streaks"] > 0:
            st = np.zeros((h, w), np.float32)
            for _ in range(int(60 * cd["streaks"])):  # the drops crossing one exposure
                x, y, ln = rng.uniform(0, w), rng.uniform(-0.1 * h, h), rng.uniform(0.04, 0.12) * h
                cv2.line(st, (int(x), int(y)), (int(x + 0.15 * ln), int(y + ln)), 0.1, 1, cv2.LINE_AA)
            add += cv2.GaussianBlur(st, (0, 0), 0.6)
        if add.any():
            img = img + add[..., None]
        # A hand over the lens hides what is beyond it, rain and insects included.
        if c.tamper == "cover" and c.tamper_at <= t <= c.tamper_at + c.tamper_len + 0.6:
            g = min(1.0, (t - c.tamper_at) / 0.7)
            if t > c.tamper_at + c.tamper_len:
                g = max(0.0, 1.0 - (t - c.tamper_at - c.tamper_len) / 0.6)
            m = np.zeros((h, w), np.float32)
            cv2.ellipse(m, (int(w * 0.85), int(h * 1.2)), (int(w * 1.3 * g) + 1, int(h * 1.7 * g) + 1), 25, 0, 360,
                        1.0, -1)
            soft = cv2.GaussianBlur(m, (0, 0), 12 * self.k)[..., None]
            img = img * (1 - soft) + np.float32(0.06) * soft
        return img

    def _sensor(self, img: np.ndarray, t: float, cd: dict[str, float]) -> np.ndarray:
        rng = self.rng
        full_well = 600.0 if self.c.night else 3000.0
        if t >= self.next_ae:
            want = float(np.clip(0.42 / max(float(cv2.mean(img)[1]), 1e-4), 0.5, 12.0))
            if cd["ae"] > 0:  # a hunting AE loop: steps of 12-25 % now and then
                want *= 1.0 + float(rng.choice([-1, 1])) * float(rng.uniform(0.12, 0.25))
            if abs(want / self.gain - 1) > 0.1:
                self.gain = want
            self.next_ae = t + float(rng.uniform(2.0, 6.0))
        e = np.maximum(img.reshape(self.h, self.w * 3) * full_well, np.float32(0.0))
        noisy = e + cv2.sqrt(e + np.float32(25.0)) * rng.standard_normal(e.shape, dtype=np.float32)
        lin = np.clip(noisy * np.float32(self.gain / full_well), np.float32(1e-6), np.float32(1.0))
        return cv2.convertScaleAbs(cv2.pow(lin, 1 / 2.2), alpha=255.0).reshape(self.h, self.w, 3)


def frames(clip: Clip2, width: int = 320, height: int = 180, fps: float = 5.0) -> Iterator[tuple[float, np.ndarray]]:
    """(t, BGR frame) for the whole clip at the given size and rate."""
    r = Render2(clip, width, height)
    for i in range(round(clip.seconds * fps)):
        t = i / fps
        yield t, r.frame(t)


def person_mask(clip: Clip2, t: float, width: int, height: int) -> np.ndarray:
    """Where the people are at time t (uint8 0/1), for the ground truth (no scene rendered)."""
    r = _TruthRender(clip, width, height)
    img = np.zeros((height, width), np.float32)
    for p in clip.people:
        r.draw(img, p, t)
    return (img > 0.5).astype(np.uint8)


class _TruthRender(Render2):
    """Only the silhouette drawing of Render2 (colour 1 on 0)."""

    def __init__(self, clip: Clip2, width: int, height: int) -> None:  # no scene needed
        self.c, self.w, self.h = clip, width, height
        self.k = height / 360.0
        self.fence = np.zeros((height, width), np.float32)
        self.cloth = dict.fromkeys(clip.people, 1.0)

    def draw(self, img: np.ndarray, p: Person, t: float) -> None:
        self._draw_person(img, p, t)
