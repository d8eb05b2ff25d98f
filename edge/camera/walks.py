"""Walk evidence: track-before-detect along straight walks at person speed (pure: arrays in, maps out).

At night under an IR lamp a person's contrast is ~1.5 sigma of the per-pixel noise: a single
frame cannot tell a faint person from a lamp-lit insect or a rain streak that the night box
turned into a person-shaped blob (docs/camera.md, "What the night false events are"). What
does tell them apart is *what happens over a second*: a person walks a straight-ish path at
0.3-1.2 person heights per second, so the difference they leave, shifted along their
velocity, adds up frame after frame; a streak lasts one exposure, and an insect near the lens
is fast and erratic, so neither stays on one straight path at walking speed.

`WalkEvidence` keeps, for a small set of velocities (person heights per second, scaled to
pixels per row by the perspective), a leaky sum of the clipped, signed, noise-normalised
difference shifted along that velocity every frame (velocity-matched stacking):

    E_v(t) = a * E_v(t-1) shifted by v*dt  +  clip(d(t) / sigma, -c, c)

The evidence of a region is the largest |E_v| in it over all v, in units of the sum's own
noise (sqrt(1 / (1 - a^2)) for independent frames). Clipping bounds what one bright frame
(a streak, an insect) can add; the sum then needs several frames *on one path*.
Computed on a half-size picture (160x90 for 320x180), only while the detector is in its
night box mode.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["WalkEvidence"]


class WalkEvidence:
    """Velocity-matched leaky sums of the night difference; `score(box)` for a track's box."""

    def __init__(self, width: int, height: int, fps: float, person_h: tuple[float, float],
                 speeds_h: tuple[float, ...] = (0.35, 0.7, 1.2), directions: int = 8,
                 memory_s: float = 1.0, clip: float = 3.0, scale: int = 2, blur: int = 1) -> None:
        """`person_h` = (a, b): a person with the feet at detect row y is a*y + b detect px tall
        (the perspective is a line, so every velocity's shift is an affine map of the picture)."""
        self.scale = scale
        self.w2, self.h2 = max(1, width // scale), max(1, height // scale)
        dt = 1.0 / max(fps, 0.1)
        self.decay = math.exp(-dt / memory_s)
        self.norm = math.sqrt(1.0 - self.decay * self.decay)  # sum of unit noise -> unit noise
        self.clip = clip
        self.blur = (blur, 2 * blur - 1)  # extra upright box (half-size px) before the sums; 1 = none
        a2, b2 = person_h[0], person_h[1] / scale  # half-size px of height per half-size row
        self._warps: list[np.ndarray] = []
        for s in speeds_h:
            for k in range(directions):
                ang = 2 * math.pi * k / directions
                cx, cy = s * dt * math.cos(ang), s * dt * math.sin(ang)
                # E_new(x, y) = E_old(x - cx*h(y), y - cy*h(y)), h(y) = a2*y + b2: where this
                # pixel's evidence was a frame ago (an inverse affine map).
                self._warps.append(np.array([[1.0, -cx * a2, -cx * b2], [0.0, 1.0 - cy * a2, -cy * b2]], np.float32))
        self._sums: list[np.ndarray] | None = None
        self.best: np.ndarray | None = None  # max over velocities of |E_v| * norm, half size

    def reset(self) -> None:
        """Forget the sums (the background was re-learnt, or the box mode ended)."""
        self._sums = None
        self.best = None

    def update(self, signed: np.ndarray, sigma: float) -> None:
        """One frame: `signed` is the boxed signed difference (detect size), `sigma` its noise."""
        d = cv2.resize(signed.astype(np.float32), (self.w2, self.h2), interpolation=cv2.INTER_AREA)
        if self.blur[0] > 1:
            d = cv2.blur(d, self.blur)
        # The half-size average lowers the noise further; measure it on the frame itself (robust).
        sample = np.abs(d[::2, ::2]).ravel()
        k = sample.size // 2
        s = max(1.2533 * float(np.partition(sample, k)[k]), 0.25 * max(sigma, 1e-3), 1e-3)
        z = np.clip(d * (1.0 / s), -self.clip, self.clip)
        if self._sums is None:
            self._sums = [z.copy() for _ in self._warps]
        else:
            size = (self.w2, self.h2)
            for i, m in enumerate(self._warps):
                moved = cv2.warpAffine(self._sums[i], m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_CONSTANT)
                self._sums[i] = cv2.scaleAdd(moved, self.decay, z)
        hi = self._sums[0].copy()
        lo = self._sums[0].copy()
        for e in self._sums[1:]:
            cv2.max(hi, e, dst=hi)
            cv2.min(lo, e, dst=lo)
        self.best = cv2.max(hi, -lo) * self.norm

    def score(self, x: int, y: int, w: int, h: int) -> float | None:
        """Largest walk evidence inside a detect-size box (sigma units); None while not running."""
        if self.best is None:
            return None
        sc = self.scale
        x0, y0 = max(0, x // sc), max(0, y // sc)
        x1, y1 = min(self.w2, (x + w + sc - 1) // sc), min(self.h2, (y + h + sc - 1) // sc)
        if x1 <= x0 or y1 <= y0:
            return 0.0
        return float(self.best[y0:y1, x0:x1].max())
