"""Coherence of a candidate over its last frames: is it one object? (pure: arrays in, numbers out).

At night a faint person, a lamp-lit insect at the lens, a raindrop on the lens and a chain of
rain streaks all make person-sized blobs that can move like a walk for a second (docs/camera.md,
"What the night false events are"); one frame is too noisy to tell them apart, and the track
rules only trade people for false events. What a person is, and a streak chain or a zig-zagging
insect is not, is **one object**: their difference, moved along their path, is the same pattern
frame after frame (a walker moves ~0.15 of their height per frame at 5 fps and their outline
barely changes), while a streak lasts one exposure (the next frame's blob is another streak) and
an insect near the lens is fast and erratic (off any straight path within a frame or two).

The check takes the raw signed difference (not the night box's average, so a thin streak stays
thin) of the track's last frames, cuts a patch on a straight line fitted (robustly) to the track's foot
points (a faint person's box jumps between fragments; over a second a walk is straight), and
measures how alike the patches are: the products between *different* frames, over the patches'
signal energy (each patch's energy minus its expected noise energy, n sigma^2). Sensor noise is
independent from frame to frame, so it drops out of the products, and the energy correction
keeps a faint person from looking incoherent only because most of each patch is noise:

    coherence = sum_{i<j} <p_i, p_j> / sum_{i<j} sqrt(S_i S_j),   S_i = max(|p_i|^2 - n sigma^2, floor)

~1 for one object on the path, ~0 for unrelated patterns (a streak chain) or an object that left
the path (an insect), negative when a bright and a dark thing alternate. A person walking
straight at the camera barely moves in the picture while their fragments jump: the patches are
also cut at a still place (the median of the foot points), and the better of the two counts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

__all__ = ["DiffHistory", "path_coherence"]


class DiffHistory:
    """The last `n` frames' raw signed differences with their time stamps (night box mode only)."""

    def __init__(self, n: int = 5) -> None:
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=n)

    def push(self, ts: float, signed: np.ndarray) -> None:
        self.frames.append((ts, signed))

    def reset(self) -> None:
        self.frames.clear()

    def at(self, ts: float) -> np.ndarray | None:
        """The difference of the frame at `ts` (None when it is no longer kept)."""
        for t, d in self.frames:
            if abs(t - ts) < 1e-6:
                return d
        return None


def _median(vs: Sequence[float]) -> float:
    return float(np.median(vs))


def _fit_line(ts: Sequence[float], vs: Sequence[float]) -> tuple[float, float]:
    """Robust line v = a + b t (Theil-Sen: the median of the pairwise slopes, then the median intercept):
    a fragment's foot point that jumps (head and torso one frame, a merged insect the next) does not
    drag the line off the object as a least-squares fit would."""
    slopes = [(vs[j] - vs[i]) / (ts[j] - ts[i]) for i in range(len(ts)) for j in range(i + 1, len(ts))
              if abs(ts[j] - ts[i]) > 1e-9]
    b = _median(slopes) if slopes else 0.0
    return _median([v - b * t for t, v in zip(ts, vs, strict=True)]), b


def _coherence(frames: Sequence[tuple[float, np.ndarray]], track: Sequence[tuple[float, float, float, int, int]],
               line: tuple[float, float, float, float], sigma: float, margin: int) -> float | None:
    """Coherence of the patches cut along `line` = (ax, bx, ay, by): foot point (ax + bx t, ay + by t)."""
    ax, bx, ay, by = line
    # The patch, relative to the line's foot point: the union of the frames' boxes there (a faint person
    # is seen in fragments: torso one frame, head and legs the next).
    rx0 = ry0 = math.inf
    rx1 = ry1 = -math.inf
    for t, fx, fy, bw, bh in track:
        ox, oy = fx - (ax + bx * t), fy - (ay + by * t)
        rx0, rx1 = min(rx0, ox - bw / 2), max(rx1, ox + bw / 2)
        ry0, ry1 = min(ry0, oy - bh), max(ry1, oy)
    pw, ph = round(rx1 - rx0) + 2 * margin, round(ry1 - ry0) + 2 * margin
    patches: list[np.ndarray] = []
    for t, d in frames:
        x0 = round(ax + bx * t + rx0) - margin
        y0 = round(ay + by * t + ry0) - margin
        if x0 < 0 or y0 < 0 or x0 + pw > d.shape[1] or y0 + ph > d.shape[0]:
            continue  # not inside the picture
        patches.append(d[y0:y0 + ph, x0:x0 + pw].astype(np.float32).ravel())
    n = len(patches)
    if n < 3:
        return None
    noise = sigma * sigma * patches[0].size
    floor = 0.05 * noise + 1e-6
    signal = [max(float(np.dot(p, p)) - noise, floor) for p in patches]
    cross = norm = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            cross += float(np.dot(patches[i], patches[j]))
            norm += math.sqrt(signal[i] * signal[j])
    return cross / norm


def path_coherence(frames: Sequence[tuple[float, np.ndarray]], track: Sequence[tuple[float, float, float, int, int]],
                   sigma: float, margin: int = 2, still: bool = True) -> float | None:
    """How much the object of `track` is one object over `frames` (module docstring); None: cannot judge.

    `frames`: (ts, raw signed difference of the whole picture) of the frames to use; `track`: the
    track's (ts, foot x, foot row, box w, box h) in those frames (the same time stamps); `sigma`: the
    per-pixel noise of the raw difference. Patches are cut on the line fitted to the foot points and,
    with `still`, at the foot points' median; the larger coherence counts. None when fewer than three
    frames have their patch inside the picture.
    """
    if len(frames) < 3 or len(track) < 3:
        return None
    ts = [f[0] for f in track]
    ax, bx = _fit_line(ts, [f[1] for f in track])
    ay, by = _fit_line(ts, [f[2] for f in track])
    best = _coherence(frames, track, (ax, bx, ay, by), sigma, margin)
    if still:
        mx = _median([f[1] for f in track])
        my = _median([f[2] for f in track])
        c = _coherence(frames, track, (mx, 0.0, my, 0.0), sigma, margin)
        if c is not None and (best is None or c > best):
            best = c
    return best
