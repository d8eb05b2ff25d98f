"""Tracks of moving regions, scored on what a person does (pure: masks in, decisions out).

The motion detector's cleaned change mask is cut into blobs every detect frame; blobs are
followed over frames as tracks, and a track is *confirmed* as a person only when it behaves
like one:

- it persists (day ~0.8 s, night ~1.2 s, seen in most frames of its life);
- it moves coherently at walking to running speed *for its place in the picture*: speed is
  measured in person heights per second (a person walks at ~0.8 h/s and runs at ~2 h/s
  whatever the distance), so the same rule holds for a person 40 m away and one at 5 m;
- its path is straight enough (an insect near the lens zig-zags);
- it really moves (a raindrop on the lens or a swaying bush stays where it is);
- its size fits its image row (with a configured perspective): a person at that row is
  `h_exp` tall; the blob's larger side must be 0.3-2.2 h_exp (a crawler is long and low).

Without a perspective the blob's own height is the yardstick (size is then not checked).
A confirmed track stays confirmed while it lives (a person who stops is still a person).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from protocols.bounds import Range, check_bounds

__all__ = ["Blob", "PersonCheck", "Perspective", "StackScore", "Track", "TrackParams", "Tracker", "find_blobs"]

# (grey picture, foot x, foot row, expected person height px) -> looks like a person
PersonCheck = Callable[[np.ndarray, float, float, float], bool]

MAX_BLOBS = 48  # per frame; more means noise everywhere (the global-change test handles it)

_TRACK_BOUNDS = {"walk_hold_frames": Range(ge=1, le=25), "min_coherence_night": Range(ge=-1, le=1)}

# (track) -> coherence of its last frames' patches along its path (stacking.py), None: cannot judge
StackScore = Callable[["Track"], "float | None"]


@dataclass(frozen=True, slots=True)
class Perspective:
    """Expected person height (fraction of the picture height) at a foot row (fraction): a*row + b."""

    a: float
    b: float

    @classmethod
    def fit(cls, points: Sequence[tuple[float, float]]) -> Perspective:
        """Least-squares line through (row, person_h) points; two or more distinct rows."""
        rows = np.array([p[0] for p in points], np.float64)
        hs = np.array([p[1] for p in points], np.float64)
        if len(points) < 2 or float(np.ptp(rows)) < 1e-3:
            raise ValueError("perspective needs at least two points at different rows")
        a, b = np.polyfit(rows, hs, 1)
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError("perspective fit is not finite")
        return cls(float(a), float(b))

    def height(self, row: float) -> float:
        """Person height (fraction of the picture height) with the feet at `row`; at least 2 %."""
        return max(0.02, self.a * row + self.b)

    def describe(self, points: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> str:
        """What the detector assumes, for `camera-test`."""
        return ", ".join(f"row {r:.2f}: {self.height(r):.3f}" for r in points)


@dataclass(frozen=True, slots=True)
class TrackParams:
    """Scoring limits; `night` variants apply while the detector is in night mode."""

    min_age_s: float = 0.6
    min_age_night_s: float = 0.8
    min_seen: float = 0.6  # share of its frames in which the track had a blob
    max_speed_h: float = 4.0  # person heights per second (a sprint ~2.5; fragments move faster)
    max_speed_night_h: float = 3.5
    max_path_speed_h: float = 5.0  # along the path, person heights per second
    max_path_speed_night_h: float = 2.6
    round_lo: float = 0.7  # night: blob height / width in this range (and smaller than a person) is round
    round_hi: float = 1.4
    min_straight: float = 0.55  # net / path length over the last ~1.5 s
    min_move_h: float = 0.2  # net displacement over the life, person heights
    min_move_px: float = 2.5
    size_lo: float = 0.3  # larger blob side / expected person height
    size_hi: float = 1.8
    growth_free: float = 1.3  # expected size change (by perspective) below which growth is not checked
    confirmed_first: bool = True  # by day confirmed tracks take their blobs before unconfirmed ones
    rigid_grow_day: bool = True  # by day `rigid` rejects only too little growth (see _grows_like_a_person)
    max_misses: int = 5  # frames without a blob before the track ends
    # By day, with a perspective, a box edge at the picture border is the picture's edge: `static` then
    # judges that axis by the other edge (a person coming in from the side). Not at night: there it
    # found 1 more of 56 crossings for 2 more false events on the extended held-out model; not without
    # a perspective: a cloud shadow sweeping in gave an event (docs/camera.md).
    border_cut: bool = True
    min_edge: float = 0.28  # edge sharpness of the change (see `edge_ratio`); lens-near things are blurred
    min_edge_night: float = 0.28
    # Night: walk evidence (walks.py, sigma units) a track's box must hold to be confirmed; 0 = off.
    # Measured on the extended held-out model (docs/camera.md, "Walk evidence"): persons 5.9-9.4
    # (median 8.5) when confirmed, insects median 5.3, rain-streak chains median 5.0.
    min_walk_night: float = 7.0
    # While the walk evidence runs it does the rejecting, so a fragmented faint person whose box
    # jumps is not lost as `fast` (measured: +2 of 28 crossings, ~+2 false events/h).
    max_speed_walk_h: float = 5.0
    max_path_speed_walk_h: float = 4.0
    # Night: the walk evidence must have held at the gate in this many of the track's last frames
    # with a blob (1 = only the frame that confirms). The rules are re-tried every frame, so a track
    # that lingers for seconds (an insect, a drop) gets many chances to cross the gate once by
    # chance; a walking person's evidence builds up and stays (docs/camera.md, "Walk hold").
    walk_hold_frames: int = 1
    # Night, night box mode: the track's last frames, cut along its fitted path, must show the same
    # pattern (stacking.py: correlation of the raw difference patches over their noise-corrected
    # energy; 0 = off). A chain of rain
    # streaks is a new streak every frame; an insect zig-zags off any straight path (docs/camera.md,
    # "Coherence along the path"). Measured, off by default.
    min_coherence_night: float = 0.0

    def __post_init__(self) -> None:
        check_bounds(self, _TRACK_BOUNDS)


@dataclass(frozen=True, slots=True)
class Blob:
    """A connected changed region in detect pixels; (fx, fy) is its foot point (bottom centre)."""

    x: int
    y: int
    w: int
    h: int
    area: int
    label: int

    @property
    def fx(self) -> float:
        return self.x + self.w / 2

    @property
    def fy(self) -> float:
        return float(self.y + self.h)

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class Track:
    """One followed region: its recent history and its verdict."""

    id: int
    first_ts: float
    hist: deque[tuple[float, float, float, int, int]] = field(default_factory=lambda: deque(maxlen=40))
    frames: int = 0  # frames since the track started
    seen: int = 0  # frames with a blob
    misses: int = 0
    confirmed: bool = False
    reason: str = "new"  # why it is not (yet) confirmed
    walk: float = -1.0  # walk evidence in the box when last scored at night (walks.py)
    walks: list[float] = field(default_factory=list)  # the last frames' walk evidence (walk_hold_frames)
    edge: float = -1.0  # median edge sharpness of the recent frames (see `edge_ratio`)
    edges: list[float] = field(default_factory=list)
    blob: Blob | None = None  # this frame's blob (None when missed)
    path: list[tuple[float, float]] = field(default_factory=list)  # foot points, for the snapshot

    @property
    def last(self) -> tuple[float, float, float, int, int]:
        return self.hist[-1]


def edge_ratio(diff: np.ndarray, fg: np.ndarray, b: Blob) -> float:
    """How sharp a blob's outline is: mean gradient of |picture - background| on the outline of its
    changed pixels over the mean difference inside them (per pixel; ~0.5 for an in-focus edge).

    An insect or a drop at the lens is far out of focus: its difference rises over several pixels,
    so where the threshold cuts it the slope is shallow. A person at 3 m or more is in focus.
    """
    y0, y1 = max(0, b.y - 1), min(diff.shape[0], b.y + b.h + 1)
    x0, x1 = max(0, b.x - 1), min(diff.shape[1], b.x + b.w + 1)
    d = diff[y0:y1, x0:x1].astype(np.float32)
    m = fg[y0:y1, x0:x1]
    inside = float(cv2.mean(d, mask=m)[0])
    if inside <= 0.0:
        return 1.0
    gx = cv2.Sobel(d, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(d, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    edge = cv2.subtract(m, cv2.erode(m, np.ones((3, 3), np.uint8)))
    if not cv2.countNonZero(edge):
        return 1.0
    return float(cv2.mean(cv2.magnitude(gx, gy), mask=edge)[0]) / inside


def find_blobs(fg: np.ndarray, kernel: np.ndarray, min_px: int,
               min_px_at: Callable[[float], float] | None = None) -> tuple[list[Blob], np.ndarray]:
    """Blobs of a change mask; parts of one person (head, torso, legs) are joined by `kernel`.

    A blob's changed pixels are estimated as its joined area minus the dilation margin. With
    `min_px_at` (foot row -> changed pixels a blob there needs), a blob that estimate drops is
    counted exactly and kept when it has that many.
    Returns the blobs and the label image (labels of the joined regions, 0 outside the mask).
    """
    joined = cv2.dilate(fg, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8, ltype=cv2.CV_16U)
    kx, ky = kernel.shape[1] // 2, kernel.shape[0] // 2
    exact: np.ndarray | None = None  # changed pixels per joined region, counted when first needed
    blobs: list[Blob] = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        bx, by, bw, bh = x + kx, y + ky, max(1, w - 2 * kx), max(1, h - 2 * ky)
        # The joined area overstates the change by the dilation margin; take it off the box. This
        # under-counts a small blob (~32 px for the 5x9 join), so with a perspective a far person's
        # few changed pixels are counted exactly and judged against a person's size at that row
        # (near the camera the same share is many pixels: there the estimate decides, as without).
        core = area - (w * 2 * ky + h * 2 * kx)
        if core < min_px and min_px_at is not None:
            if exact is None:
                exact = np.bincount(labels[fg > 0], minlength=n)
            core = int(exact[i])
            if core < max(min_px, min_px_at(float(by + bh))):
                continue
        elif core < min_px:
            continue
        blobs.append(Blob(bx, by, bw, bh, core, i))
    if len(blobs) > MAX_BLOBS:
        blobs = sorted(blobs, key=lambda b: -b.area)[:MAX_BLOBS]
    return blobs, labels


def _rigid_shift(a: tuple[float, float, float, int, int], b: tuple[float, float, float, int, int],
                 size: tuple[int, int] | None = None, margin: float = 3.0) -> float:
    """How far a box moved as a whole: per axis, both edges must move the same way, and the smaller
    move counts. A blob that grows or merges with a neighbour (drops on the lens running together)
    moves one edge only; a walking or crawling person moves both.

    With the picture `size` (w, h): an edge within `margin` px of the picture border (in either box)
    is where the picture ends, not where the object ends, so that axis is judged by its other edge
    alone (a person coming in from the side shows only the edge that leads)."""
    def axis(lo0: float, hi0: float, lo1: float, hi1: float, end: int | None) -> float:
        d0, d1 = lo1 - lo0, hi1 - hi0
        if end is not None:
            lo_cut, hi_cut = min(lo0, lo1) <= margin, max(hi0, hi1) >= end - margin
            if lo_cut != hi_cut:
                return abs(d1) if lo_cut else abs(d0)
        return min(abs(d0), abs(d1)) if d0 * d1 > 0 else 0.0
    ex, ey = (size[0], size[1]) if size is not None else (None, None)
    dx = axis(a[1] - a[3] / 2, a[1] + a[3] / 2, b[1] - b[3] / 2, b[1] + b[3] / 2, ex)
    dy = axis(a[2] - a[4], a[2], b[2] - b[4], b[2], ey)
    return math.hypot(dx, dy)


class Tracker:
    """Associates blobs with tracks frame by frame and scores each track."""

    def __init__(self, width: int, height: int, fps: float, params: TrackParams | None = None,
                 perspective: Perspective | None = None, counters: dict[str, int] | None = None) -> None:
        self.w, self.h = width, height
        self.dt = 1.0 / max(fps, 0.1)
        self.p = params or TrackParams()
        self.perspective = perspective
        self.tracks: list[Track] = []
        self._next_id = 1
        # Shared with the detector (camera telemetry): tracks started, confirmed, and the tracks
        # that ended unconfirmed by their last reason (track_reject_fast, _static, _erratic, ...).
        self.counters = counters if counters is not None else {}
        self.counters.setdefault("tracks", 0)
        self.counters.setdefault("tracks_confirmed", 0)
        # Optional person confirmation (personcheck.py), run only on a track about to be confirmed.
        self.person_check: PersonCheck | None = None
        self.check_by_day = False  # False: only at night
        # Walk evidence of a blob's box (walks.py), set by the detector when it has a perspective.
        self.walk_score: Callable[[int, int, int, int], float | None] | None = None
        self.walks_active = False  # the detector says the walk evidence is running this frame
        # Coherence of a track's last frames along its path (stacking.py), set by the detector at night.
        self.stack_score: StackScore | None = None

    def expected_h(self, foot_y: float, blob_h: float) -> float:
        """Person height in detect px at this foot row (perspective), else the blob's own height."""
        if self.perspective is None:
            return max(blob_h, 4.0)
        return self.perspective.height(foot_y / self.h) * self.h

    def reset(self) -> None:
        """Forget every track (the scene was re-learnt)."""
        self.tracks.clear()

    def update(self, blobs: list[Blob], ts: float, night: bool, diff: np.ndarray | None = None,
               fg: np.ndarray | None = None, gray: np.ndarray | None = None) -> list[Track]:
        """Match this frame's blobs to tracks, start new tracks, end lost ones, score all.

        `diff` and `fg` (the difference image and the change mask) let a track about to be
        confirmed be checked for a sharp outline."""
        for t in self.tracks:
            t.blob = None
        pairs = self._candidates(blobs, ts, night)
        pairs.sort()  # best (relative) matches first
        used_t: set[int] = set()
        used_b: set[int] = set()
        for _, ti, bi in pairs:
            if ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            self._extend(self.tracks[ti], blobs[bi], ts)
        for bi, b in enumerate(blobs):
            if bi not in used_b:
                t = Track(self._next_id, ts)
                self._next_id += 1
                self.counters["tracks"] += 1
                self._extend(t, b, ts)
                self.tracks.append(t)
        alive: list[Track] = []
        for t in self.tracks:
            if t.blob is None:
                t.misses += 1
                t.frames += 1
                if t.misses > self.p.max_misses:
                    if not t.confirmed:
                        key = f"track_reject_{t.reason}"
                        self.counters[key] = self.counters.get(key, 0) + 1
                    continue
            alive.append(t)
        self.tracks = alive
        for t in alive:
            if not t.confirmed and t.blob is not None:
                if diff is not None and fg is not None and len(t.hist) >= 2:
                    # Measured every frame until confirmed; the median of the last five decides, so one
                    # noisy frame cannot make an insect look sharp.
                    t.edges.append(edge_ratio(diff, fg, t.blob))
                    del t.edges[:-5]
                    t.edge = sorted(t.edges)[len(t.edges) // 2]
                self._score(t, night)
                if t.confirmed and t.edges and t.edge < (self.p.min_edge_night if night else self.p.min_edge):
                    t.confirmed, t.reason = False, "blurred"
                    self.counters["tracks_confirmed"] -= 1
                walk = self._walk(t, night)
                if t.confirmed and walk is not None and walk < self.p.min_walk_night:
                    # Not (yet) on a straight walk at person speed: a streak chain or an insect.
                    t.confirmed, t.reason = False, "no_walk"
                    self.counters["tracks_confirmed"] -= 1
                if t.confirmed and night and self.p.min_coherence_night > 0 and self.stack_score is not None:
                    coh = self.stack_score(t)
                    if coh is not None and coh < self.p.min_coherence_night:
                        t.confirmed, t.reason = False, "incoherent"
                        self.counters["tracks_confirmed"] -= 1
                if t.confirmed and gray is not None and not self._checked_person(t, gray, night):
                    t.confirmed, t.reason = False, "not_person"
                    self.counters["tracks_confirmed"] -= 1
        return alive

    def _candidates(self, blobs: list[Blob], ts: float, night: bool) -> list[tuple[float, int, int]]:
        """(rank, track index, blob index) of every blob within a track's gate; lower ranks first."""
        pairs: list[tuple[float, int, int]] = []
        for ti, t in enumerate(self.tracks):
            t_last, fx, fy, bw, bh = t.last
            href = self.expected_h(fy, bh)
            vx, vy = self._velocity(t)
            el = max(ts - t_last, 1e-3)
            # Predicted box; the distance is the gap between boxes (0 when they overlap): a partly
            # seen person's box (only the torso one frame, head to feet the next) moves its foot
            # point by half a height without moving at all.
            px0, py1 = fx - bw / 2 + vx * el, fy + vy * el
            px1, py0 = px0 + bw, py1 - bh
            # Around the predicted foot point: a person's pace changes little in a fraction of a
            # second. A new track (no velocity yet) may move at up to a runner's speed. A wide gate
            # would chain unrelated static things (drops on the lens) into a "walk".
            rate = 1.0 if len(t.hist) >= 2 else 0.9 * self.p.max_speed_h
            gate = (0.25 + rate * el) * href + 2.0
            for bi, b in enumerate(blobs):
                gx = max(0.0, b.x - px1, px0 - (b.x + b.w))
                gy = max(0.0, b.y - py1, py0 - (b.y + b.h))
                d = math.hypot(gx, gy) + 0.1 * math.hypot(b.fx - (px0 + px1) / 2, b.fy - py1)
                if d <= gate:
                    # By day confirmed people choose first (`confirmed_first`): a blob in a confirmed
                    # track's gate is most likely that person, not the piece of them a new track started
                    # on. Not at night, where most confirmed tracks are insects and streak chains that
                    # would then keep their blobs (measured: 15 -> 21 false zone events in night clips).
                    first = 0.0 if t.confirmed or night or not self.p.confirmed_first else 1.0
                    pairs.append((first + d / gate, ti, bi))
        return pairs

    def _walk(self, t: Track, night: bool) -> float | None:
        """Walk evidence that gates this track at night (None: no gate): the smallest of the last
        `walk_hold_frames` frames' evidence in its box, so one lucky frame does not confirm it."""
        if not night or self.walk_score is None or t.blob is None:
            return None
        hold = self.p.walk_hold_frames
        if hold == 1 and t.reason not in ("person", "blurred"):
            return None  # only the confirming frame counts: nothing to keep (the default's cost)
        b = t.blob
        walk = self.walk_score(b.x, b.y, b.w, b.h)
        t.walk = -1.0 if walk is None else walk
        if walk is None:
            t.walks.clear()
            return None
        t.walks.append(walk)
        del t.walks[:-hold]
        return min(t.walks) if len(t.walks) == hold else 0.0

    def _checked_person(self, t: Track, gray: np.ndarray, night: bool) -> bool:
        """The optional person check on a track that passed every rule (False: not a person)."""
        if self.person_check is None or not (night or self.check_by_day) or t.blob is None:
            return True
        aspects = sorted(bh / max(bw, 1) for _, _, _, bw, bh in t.hist)
        if aspects[len(aspects) // 2] < 0.8:
            return True  # long and low (a crawler): an upright-people detector cannot judge it
        b = t.blob
        return self.person_check(gray, b.fx, b.fy, max(float(b.h), self.expected_h(b.fy, b.h)))

    def _extend(self, t: Track, b: Blob, ts: float) -> None:
        t.blob = b
        t.hist.append((ts, b.fx, b.fy, b.w, b.h))
        t.frames += 1
        t.seen += 1
        t.misses = 0
        if len(t.path) < 200:
            t.path.append((b.fx / self.w, b.fy / self.h))

    def _grows_like_a_person(self, hist: list[tuple[float, float, float, int, int]], night: bool = True) -> bool:
        """A person who moves up or down the picture moves nearer or farther and changes size with
        the perspective; an insect or a drop at the lens keeps its size wherever it goes."""
        if len(hist) < 6:
            return True
        first, last = hist[:3], hist[-3:]
        row0 = sorted(y for _, _, y, _, _ in first)[1]
        row1 = sorted(y for _, _, y, _, _ in last)[1]
        expect = self.expected_h(row1, 1.0) / self.expected_h(row0, 1.0)
        if 1 / self.p.growth_free < expect < self.p.growth_free:
            return True
        size0 = sorted(max(w, h) for _, _, _, w, h in first)[1]
        size1 = sorted(max(w, h) for _, _, _, w, h in last)[1]
        seen = size1 / max(size0, 1)
        if not night and self.p.rigid_grow_day:
            # By day a track can start on a fragment (a far person's head, a person coming out from
            # behind a post) that fills out as it comes nearer: more growth than the move explains
            # is something coming into view, not a lens object keeping its size.
            return seen / expect > 0.6
        return 0.6 < seen / expect < 1.7

    def _velocity(self, t: Track) -> tuple[float, float]:
        if len(t.hist) < 2:
            return 0.0, 0.0
        k = min(len(t.hist) - 1, 3)
        t0, x0, y0, _, _ = t.hist[-1 - k]
        t1, x1, y1, _, _ = t.hist[-1]
        span = max(t1 - t0, 1e-3)
        return (x1 - x0) / span, (y1 - y0) / span

    def _score(self, t: Track, night: bool) -> None:
        p = self.p
        ts, _fx, fy, _, _ = t.last
        hist = list(t.hist)
        hs = sorted(h for *_, h in hist)
        med_h = float(hs[len(hs) // 2])
        href = self.expected_h(fy, med_h)
        age = ts - t.first_ts
        if self.perspective is not None:
            # Size against the expected person size *at each frame's row*: a blob that keeps its size
            # while it crosses rows (an insect or drop at the lens) does not fit anywhere for long.
            ratios = sorted(max(bw, bh) / self.expected_h(y, bh) for _, _, y, bw, bh in hist)
            size = ratios[len(ratios) // 2]
            if size < p.size_lo:
                t.reason = "small"
                return
            if size > p.size_hi:
                t.reason = "large"
                return
            if not self._grows_like_a_person(hist, night):
                t.reason = "rigid"
                return
        # Speed over the last second (robust to a jittery outline: end points of a window).
        recent = [hh for hh in hist if hh[0] >= ts - 1.0 - 1e-6]
        if len(recent) >= 2:
            dt = recent[-1][0] - recent[0][0]
            v = math.hypot(recent[-1][1] - recent[0][1], recent[-1][2] - recent[0][2]) / max(dt, self.dt)
            walking = night and self.walks_active
            lim = p.max_speed_walk_h if walking else p.max_speed_night_h if night else p.max_speed_h
            if v / href > lim:
                t.reason = "fast"
                return
        if len(recent) >= 3:
            # Path speed (every step counts): an insect zig-zags fast but gets nowhere, so its
            # endpoint speed can look like a walk while its path speed is a sprint's.
            steps = sum(math.hypot(b[1] - a[1], b[2] - a[2]) for a, b in itertools.pairwise(recent))
            pv = steps / max(recent[-1][0] - recent[0][0], self.dt) / href
            walking = night and self.walks_active
            lim = p.max_path_speed_walk_h if walking else p.max_path_speed_night_h if night else p.max_path_speed_h
            if pv > lim:
                t.reason = "fast"
                return
        if night and self.perspective is not None:
            # At night the lamp lights insects near the lens: round, smaller than a person there.
            # A person is tall (walking) or long (crawling), rarely round.
            aspects = sorted(bh / max(bw, 1) for _, _, _, bw, bh in hist)
            if p.round_lo < aspects[len(aspects) // 2] < p.round_hi and size < 1.0:
                t.reason = "round"
                return
        win = [hh for hh in hist if hh[0] >= ts - 1.5 - 1e-6]
        path = sum(math.hypot(b[1] - a[1], b[2] - a[2]) for a, b in itertools.pairwise(win))
        net_w = math.hypot(win[-1][1] - win[0][1], win[-1][2] - win[0][2])
        if path > 0.5 * href and net_w < p.min_straight * path:
            t.reason = "erratic"
            return
        if age < (p.min_age_night_s if night else p.min_age_s):
            t.reason = "young"
            return
        if t.seen < p.min_seen * t.frames:
            t.reason = "intermittent"
            return
        if len(hist) >= 6:
            # A raindrop slides straight down the lens keeping its size; a person coming down the
            # picture is coming nearer and grows.
            dx, dy = t.last[1] - hist[0][1], t.last[2] - hist[0][2]
            size0 = sorted(max(w, h) for *_, w, h in hist[:3])[1]
            grow = sorted(max(w, h) for *_, w, h in hist[-3:])[1] / max(1, size0)
            if dy > 0 and abs(dx) < 0.25 * dy and grow < 1.05:
                t.reason = "slide"
                return
        # Only with a perspective: the size rule above then bounds what comes in from the border, so
        # a shadow or light front sweeping in from the side is `large`; without one nothing does.
        picture = (self.w, self.h) if p.border_cut and not night and self.perspective is not None else None
        net = _rigid_shift(hist[0], t.last, picture)
        net_recent = _rigid_shift(recent[0], t.last, picture)
        if net < max(p.min_move_px, p.min_move_h * href) or net_recent < max(2.0, 0.1 * href):
            t.reason = "static"
            return
        t.confirmed = True
        t.reason = "person"
        self.counters["tracks_confirmed"] += 1
