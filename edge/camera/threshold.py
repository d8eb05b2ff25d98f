"""The change threshold, following the measured noise of the difference (pure).

threshold = max(min_threshold, noise_k * sigma, relative_threshold * background), capped at 45,
with sigma from the median |difference| (sensor and compression noise; rain raises it on purpose:
its streaks then fall under the threshold, while the cap keeps solid movers detectable). By day an
optional floor follows each pixel's own running mean |difference| (swaying bushes).
"""

from __future__ import annotations

import cv2
import numpy as np

_MEDIAN_TO_SIGMA = 1.2533  # median |x| of a normal distribution is 0.798 sigma
_MAX_THRESHOLD = 45.0


class NoiseThreshold:
    """Noise estimates of the difference and the per-pixel threshold map built from them."""

    def __init__(self, valid: np.ndarray, *, min_threshold: float, noise_k: float, relative_threshold: float,
                 warmup_frames: int, dynamic_k: float, dynamic_rate: float) -> None:
        self._sampled = (valid > 0)[::4, ::4]  # every 16th pixel is enough for a median
        self._min_threshold = min_threshold
        self._noise_k = noise_k
        self._relative = relative_threshold
        self._warmup_frames = warmup_frames
        self._dynamic_k = dynamic_k
        self._dynamic_rate = dynamic_rate
        self.sigma = 2.0  # noise of the difference the threshold is applied to
        self.sigma_px = 2.0  # noise of one pixel's difference (night-mode decision)
        self.sigma_fresh = False  # take the next noise measurement as it is
        self.map: np.ndarray | None = None  # threshold per pixel (uint8)
        self.dyn: np.ndarray | None = None  # running mean |difference| per pixel (dynamic_k)

    def reset(self) -> None:
        """The background was re-learnt: the map is built again at the next frame."""
        self.map = None

    def rescaled(self) -> None:
        """The difference changed scale (the night box): the next measurement is taken as it is."""
        self.sigma_fresh, self.map = True, None

    def measure_pixel_noise(self, signed: np.ndarray) -> None:
        """Per-pixel noise from the raw signed difference, when the threshold sees a boxed one."""
        raw = np.abs(signed[::4, ::4][self._sampled])
        if raw.size:
            k = raw.size // 2
            self.sigma_px = 0.8 * self.sigma_px + 0.2 * _MEDIAN_TO_SIGMA * float(np.partition(raw, k)[k])

    def update(self, diff: np.ndarray, bg: np.ndarray, n_learn: int, frame: int, box: int) -> np.ndarray:
        """Noise estimate from `diff`; the threshold map max(floor, k*sigma, Weber term of `bg`).

        `n_learn`: frames since the background was re-learnt; `frame`: the detector's frame count
        (the estimate is refreshed every 2nd frame, the map every 4th); `box`: the night box (1 = off).
        """
        sample = diff[::4, ::4][self._sampled]
        early = n_learn <= 2 * self._warmup_frames
        if sample.size and (early or frame % 2 == 0 or self.map is None):
            # Noise scale from the median |diff|. Rain and snow raise it on purpose: their streaks
            # then fall under the threshold, while the cap below keeps solid movers detectable.
            k = sample.size // 2
            sigma = _MEDIAN_TO_SIGMA * float(np.partition(sample, k)[k])
            # While the background converges, follow the measurement: the start value may be far
            # below a rainy night's, and a one-frame background's excess noise fades within frames.
            self.sigma = sigma if early or self.sigma_fresh else 0.8 * self.sigma + 0.2 * sigma
            self.sigma_fresh = False
            if box == 1:
                self.sigma_px = self.sigma
        thr = min(max(self._min_threshold, self._noise_k * self.sigma), _MAX_THRESHOLD)
        if self.map is None or frame % 4 == 0:
            # Weber term: a residual lighting error scales with brightness, so bright sky needs more.
            # Background and noise drift slowly, so the map is refreshed every 4th frame.
            weber = cv2.convertScaleAbs(bg, alpha=self._relative)
            self.map = np.maximum(weber, np.uint8(round(thr)))
        return self.map

    def dynamic(self, diff: np.ndarray, thr_map: np.ndarray, n_learn: int, person: np.ndarray | None,
                cap: float = 0.0) -> np.ndarray:
        """Raise `thr_map` where the background itself keeps moving (swaying bushes).

        A running mean of |difference| per pixel (not fed where `person` is: the confirmed people,
        or with the guard every track): on still ground it is ~0.8 sigma and dynamic_k times it stays
        under the global threshold; where a bush sways back and forth it is the sway's own contrast.

        `cap` > 0 (the guard, docs/camera.md, "Dynamic threshold guard"): the mean counts up to
        `cap` x sigma, so this raises the threshold to at most dynamic_k x cap x sigma. A fine mesh
        under sub-pixel shake, or the first difference after a re-learn (a one-frame background, a
        person already there), keeps a large mean that would otherwise hide a person for tau.
        """
        if self.dyn is None or n_learn <= 1:
            self.dyn = diff.astype(np.float32)
        else:
            free = None if person is None else cv2.bitwise_not(person)
            cv2.accumulateWeighted(diff, self.dyn, self._dynamic_rate, mask=free)
        mean = np.minimum(self.dyn, float(cap * self.sigma)) if cap > 0 else self.dyn
        dyn = cv2.convertScaleAbs(mean, alpha=self._dynamic_k)
        out: np.ndarray = np.maximum(thr_map, dyn)
        return out
