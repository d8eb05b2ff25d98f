"""The background the picture is compared with, and the lighting correction against it (pure).

A running average of the detect picture (moving pixels learn 4x slower, so a person is not
absorbed while walking, but a parked object or a ghost fades). After a (re)learn from one frame
it is a cumulative mean until that reaches the running average's memory, so its own noise falls
as 1/sqrt(n) within a second or two. The illumination field (background / picture at 32x18)
multiplied into the picture cancels auto-exposure, dusk, cloud shadows and lamp fall-off.
"""

from __future__ import annotations

import cv2
import numpy as np

LOW = (32, 18)  # size of the illumination field


class Background:
    """Running-average background at detect size (float) and its 32x18 copy."""

    def __init__(self, size: tuple[int, int], alpha: float) -> None:
        self._size = size  # detect (width, height)
        self.alpha = alpha  # learning rate of the running average
        self.bg: np.ndarray | None = None  # float32, detect size
        self.bg_low: np.ndarray | None = None  # float32, LOW
        self.n_learn = 0  # frames since the background was (re)learnt from one frame
        self.rate = alpha  # learning rate of this frame
        self.low_weight: np.ndarray | None = None  # 1 - share of moving pixels per field cell
        self._field: tuple[np.ndarray | None] | None = None  # last field (None inside: steady light)

    def relearn(self, cur: np.ndarray, low: np.ndarray) -> None:
        """Start over from this picture (`low`: its 32x18 copy, float32)."""
        self.bg = cur.astype(np.float32)
        self.bg_low = low.copy()
        self.n_learn = 0
        self._field = None

    def field(self, low: np.ndarray, moving: np.ndarray | None, frame: int) -> np.ndarray | None:
        """The illumination field to multiply into the picture, or None when the light is steady.

        `moving`: where something changed a frame ago; `frame`: the detector's frame count.
        """
        if self._field is None or frame % 2 == 0 or moving is not None:
            # Lighting drifts slowly: in quiet frames the field is refreshed every other frame.
            self._field = (self._illumination(low, moving),)
        return self._field[0]

    def _illumination(self, low: np.ndarray, moving: np.ndarray | None) -> np.ndarray | None:
        """Smooth gain field bg/frame at ~1/10 picture scale, applied to the frame.

        Auto-exposure, cloud shadows and lamp fall-off are smooth and multiplicative, so they
        cancel. Where something moved a frame ago the field is interpolated from around it
        (normalised convolution), so a large object does not correct itself away or light a halo.
        """
        assert self.bg_low is not None
        if moving is None:
            weight = np.ones_like(low)
        else:
            weight = 1.0 - cv2.resize(moving, LOW, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        self.low_weight = weight
        wsum = cv2.GaussianBlur(weight, (7, 7), 2.0) + 1e-3
        lo_f = cv2.GaussianBlur(low * weight, (7, 7), 2.0) / wsum
        lo_b = cv2.GaussianBlur(self.bg_low * weight, (7, 7), 2.0) / wsum
        field = np.clip((lo_b + 8.0) / (lo_f + 8.0), 0.4, 2.5)
        lo, hi = float(field.min()), float(field.max())
        if lo > 0.96 and hi < 1.04:  # within what the 7 % Weber term absorbs anyway
            return None  # steady light: skip the full-size multiply
        out: np.ndarray = cv2.resize(field, self._size, interpolation=cv2.INTER_LINEAR)
        return out

    def learn(self, cur: np.ndarray, low: np.ndarray, fg: np.ndarray, fg_count: int) -> None:
        """Learn this picture (`cur`, in the background's coordinates) outside the change `fg`."""
        assert self.bg is not None and self.bg_low is not None
        still = None if self.low_weight is None else (self.low_weight > 0.5).astype(np.uint8)
        # After (re)learning from one frame, the background is a cumulative mean until it reaches
        # the running average's memory: its own noise then falls as 1/sqrt(n) within a second or
        # two instead of staying that of a single frame for tau seconds (which inflated the noise
        # estimate and blinded the first seconds of a stream and every re-learn).
        self.n_learn += 1
        self.rate = max(self.alpha, 1.0 / (self.n_learn + 1))
        cv2.accumulateWeighted(low, self.bg_low, self.rate, mask=still)
        if not fg_count:
            cv2.accumulateWeighted(cur, self.bg, self.rate)
            return
        cv2.accumulateWeighted(cur, self.bg, self.rate, mask=cv2.bitwise_not(fg))
        # Moving things still fade in slowly, so a parked object or a ghost cannot hold motion forever.
        cv2.accumulateWeighted(cur, self.bg, self.alpha * 0.25, mask=fg)
