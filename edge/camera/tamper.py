"""Camera tamper (lens covered, camera moved, defocused) for one camera (pure: frames in, changes out).

A slow reference of the scene *when nothing moves* is compared with the current picture every
few detect frames (and at once after a broad change): contrast collapse means covered; a
phase-correlation shift or uncorrelated structure on a different coarse picture means moved;
fine detail per contrast collapsing means defocused. A suspicion is held for `hold_s` before
`tamper_start`; `clear_s` of clear checks end it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

TAMPER_START = "tamper_start"
TAMPER_END = "tamper_end"
TAMPER_STRIDE = 5  # tamper metrics on every 5th detect frame (1 s at 5 fps)


@dataclass(frozen=True, slots=True)
class TamperChange:
    """A tamper event decided at one frame: `kind` is TAMPER_START or TAMPER_END."""

    kind: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class TamperMetrics:
    """What one check measured against the reference."""

    grad: np.ndarray
    img: np.ndarray
    std: float
    sharp: float
    corr: float
    coarse: float
    shift: float
    response: float


@dataclass(slots=True)
class TamperState:
    """The reference and the hold/clear timers."""

    ref_grad: np.ndarray | None = None
    ref_img: np.ndarray | None = None  # 80x45 float32 picture, for the shift estimate
    ref_std: float = 0.0
    ref_sharp: float = 0.0
    structure: float = 0.0  # running structure correlation while untampered; ~0 for a featureless view
    night_structure: float = 0.0  # the same, learnt also while things move (night views rarely rest)
    candidate_since: float | None = None
    pending: str | None = None  # reason of the suspected tamper
    misses: int = 0
    clear_since: float | None = None
    active: bool = False
    reason: str | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two same-size images (structure similarity)."""
    am, bm = a - float(cv2.mean(a)[0]), b - float(cv2.mean(b)[0])
    den = math.sqrt(float(np.dot(am.ravel(), am.ravel())) * float(np.dot(bm.ravel(), bm.ravel())))
    return float(np.dot(am.ravel(), bm.ravel())) / den if den > 1e-6 else 0.0


def _shift_img(small: np.ndarray) -> np.ndarray:
    return cv2.resize(small, (80, 45), interpolation=cv2.INTER_AREA).astype(np.float32)


def _structure(small_u8: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(gradient image, contrast, sharpness) of the statistics image and the detect frame."""
    small = small_u8.astype(np.float32)
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3)
    grad = np.abs(gx) + np.abs(gy)
    _, std_s = cv2.meanStdDev(small)
    std = float(std_s[0, 0])
    # Fine detail at detect resolution vs contrast: collapses when the lens is defocused.
    ex = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3))
    ey = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3))
    sharp = float(cv2.mean(ex)[0] + cv2.mean(ey)[0]) / (std + 1.0)
    return grad, std, sharp


class TamperDetector:
    """Tamper state machine for one camera; `step()` once per detect frame."""

    def __init__(self, *, fps: float, hold_s: float, clear_s: float, ref_tau_s: float,
                 counters: dict[str, int]) -> None:
        self.hold_s = hold_s
        self.clear_s = clear_s
        self.ref_alpha = min(1.0, TAMPER_STRIDE / (ref_tau_s * max(fps, 0.1)))
        self.counters = counters  # shared with the motion detector: tamper_events, tamper_frames
        self.state = TamperState()
        self._hann = cv2.createHanningWindow((80, 45), cv2.CV_32F)
        self.night = False  # set by the motion detector from its night mode

    @property
    def active(self) -> bool:
        """True while a tamper event is open."""
        return self.state.active

    def step(self, small: np.ndarray, gray: np.ndarray, ts: float, frame_count: int, broad_change: float,
             busy: bool) -> tuple[bool, TamperChange | None]:
        """(tampered or suspected, change decided now). `broad_change`: changed share last frame;
        `busy`: motion open or starting somewhere (the reference is not updated then)."""
        t = self.state
        # Checked every few frames, and at once after a broad change (defocus, a hand, a knock).
        if t.ref_grad is not None and frame_count % TAMPER_STRIDE and broad_change < 0.05:
            return t.active or t.candidate_since is not None, None
        if t.ref_grad is None:
            t.ref_grad, t.ref_std, t.ref_sharp = _structure(small, gray)
            t.ref_img = _shift_img(small)
            return False, None
        m = self._measure(small, gray)
        reason = self._judge(m)
        t.last_metrics = {"std": m.std, "corr": m.corr, "sharp": m.sharp, "ref_sharp": t.ref_sharp,
                          "shift": m.shift, "response": m.response, "coarse": m.coarse,
                          "structure": t.structure}
        if reason is None:
            change = self._clear(ts)
            if not t.active and not busy and broad_change <= 0.01:
                self._learn(m)
            if not t.active and t.night_structure <= 0.0:
                t.night_structure = max(m.corr, 1e-3)
            elif not t.active and m.corr > 0.75 * t.night_structure:
                # Not taught by a falling correlation (a slow turn must not drag it down).
                t.night_structure += 0.1 * (m.corr - t.night_structure)
            return t.active, change
        return True, self._suspect(ts, reason)

    def _measure(self, small: np.ndarray, gray: np.ndarray) -> TamperMetrics:
        t = self.state
        assert t.ref_grad is not None and t.ref_img is not None
        grad, std, sharp = _structure(small, gray)
        corr = _ncc(grad, t.ref_grad)
        img = _shift_img(small)
        dx = dy = response = 0.0
        if corr < 0.8:  # the structure changed: estimate how far the view shifted
            # Copies: OpenCV 5 applies the window to phaseCorrelate's inputs in place.
            (dx, dy), response = cv2.phaseCorrelate(t.ref_img.copy(), img.copy(), self._hann)
        return TamperMetrics(grad, img, std, sharp, corr, _ncc(img, t.ref_img), math.hypot(dx, dy), response)

    def _judge(self, m: TamperMetrics) -> str | None:
        """The tamper reason this check suggests, with the one-miss tolerance of a held suspicion."""
        t = self.state
        # Moved/defocused need a view with stable structure to compare; a featureless (flat, noisy)
        # view has none and must not look "moved" just because its noise decorrelates.
        textured = t.structure > 0.6
        shifted = textured and m.shift >= 4.0 and m.response > 0.15  # >= 5 % of the width
        # Structure gone AND the coarse picture differs: a new view. Rain or snow kill the fine
        # structure too, but the 80x45 picture stays the same.
        new_view = textured and m.corr < 0.35 and m.coarse < 0.8
        reason = None
        if m.std < 0.3 * t.ref_std or (m.std < 3.0 and t.ref_std > 10.0):  # a flat view stays flat
            reason = "covered"
        elif new_view or shifted:
            reason = "moved"
        elif textured and m.sharp < 0.66 * t.ref_sharp:
            reason = "defocused"
        elif self.night and t.night_structure >= 0.2 and m.corr < (0.7 if textured else 0.6) * t.night_structure:
            # An IR view is noisy and lit by the camera's own lamp: its structure never correlates
            # well and the lamp's hot spot stays put when the camera turns. What still holds is the
            # structure it had a moment ago: when that falls to 60 % (70 % of a well-structured
            # view), the view is gone (knocked, turned or blurred); noise, insects and rain leave it.
            reason = "moved" if m.shift >= 4.0 else "defocused"
        if reason is None and t.candidate_since is not None and not t.misses and m.corr < 0.5:
            # One borderline check inside a suspected tamper does not restart the hold.
            t.misses, reason = 1, t.pending or "moved"
        elif reason is not None:
            t.misses, t.pending = 0, t.pending if t.candidate_since is not None else reason
        return reason

    def _clear(self, ts: float) -> TamperChange | None:
        t = self.state
        t.candidate_since, t.misses, t.pending = None, 0, None
        if not t.active:
            return None
        t.clear_since = ts if t.clear_since is None else t.clear_since
        if ts - t.clear_since < self.clear_s:
            return None
        t.active, t.clear_since = False, None
        self.counters["tamper_events"] += 1
        return TamperChange(TAMPER_END, t.reason)

    def _learn(self, m: TamperMetrics) -> None:
        # The reference is the scene when nothing happens: a big object passing through must not
        # teach it a contrast that "covered" is then measured against.
        t = self.state
        assert t.ref_grad is not None and t.ref_img is not None
        a = self.ref_alpha
        cv2.accumulateWeighted(m.grad, t.ref_grad, a)
        cv2.accumulateWeighted(m.img, t.ref_img, a)
        t.ref_std += a * (m.std - t.ref_std)
        t.ref_sharp += a * (m.sharp - t.ref_sharp)
        t.structure += 0.3 * (m.corr - t.structure)

    def _suspect(self, ts: float, reason: str) -> TamperChange | None:
        t = self.state
        t.clear_since = None
        self.counters["tamper_frames"] += 1
        if t.active:
            return None
        t.candidate_since = ts if t.candidate_since is None else t.candidate_since
        if ts - t.candidate_since < self.hold_s:
            return None
        t.active, t.reason = True, reason
        self.counters["tamper_events"] += 1
        return TamperChange(TAMPER_START, reason)
