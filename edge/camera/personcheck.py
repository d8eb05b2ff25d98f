"""Optional person confirmation of a track about to be confirmed (pure: picture + box in, verdict out).

OpenCV's built-in HOG people detector (Dalal-Triggs linear SVM, 64x128 window; no download)
scores the candidate's region, scaled so that the expected person fills the window as in
its training data (96 of 128 rows). It runs only when a track has passed every behaviour rule
and is about to be confirmed, so its cost is per candidate, not per frame.

OpenCV 5 keeps HOG in the contrib build (`opencv-contrib-python-headless`, same version as
`opencv-python-headless`); `available()` says whether this process has it. A camera that asks
for the check where it is missing is a configuration error (events.py), never a silent skip.

Measured on the held-out models (docs/camera.md, "Person check"): what it costs and what it
gains are recorded there; it is off by default.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

__all__ = ["HogPersonCheck", "available"]

_WIN_W, _WIN_H = 64, 128
_PERSON_ROWS = 96.0  # rows of the 128-row window a person fills in the detector's training data


def available() -> bool:
    """True when this OpenCV build has the HOG people detector."""
    return hasattr(cv2, "HOGDescriptor") and hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector")


class HogPersonCheck:
    """Scores a candidate box; `ok()` compares the best score near it with `threshold`."""

    def __init__(self, threshold: float = -1.5, counters: dict[str, int] | None = None) -> None:
        if not available():
            raise RuntimeError("person check: this OpenCV build has no HOG people detector "
                               "(install opencv-contrib-python-headless of the same version)")
        if not math.isfinite(threshold):
            raise ValueError("person check threshold must be finite")
        hog_cls: Any = cv2.HOGDescriptor  # type: ignore[attr-defined,unused-ignore]
        det: Any = cv2.HOGDescriptor_getDefaultPeopleDetector()  # type: ignore[attr-defined,unused-ignore]
        self._hog = hog_cls()
        svm = np.asarray(det, np.float32).ravel()
        self._w, self._b = svm[:-1], float(svm[-1])
        self.threshold = threshold
        self.counters = counters if counters is not None else {}
        for k in ("person_checks", "person_check_rejects"):
            self.counters.setdefault(k, 0)

    def score(self, gray: np.ndarray, cx: float, foot: float, height: float) -> float:
        """SVM score of the window around a person `height` px tall standing at (cx, foot);
        the best of three vertical placements (a partly seen person's box is not the person's)."""
        h = max(height, 4.0)
        ch = h * _WIN_H / _PERSON_ROWS
        cw = ch * _WIN_W / _WIN_H
        sx, sy = _WIN_W / cw, _WIN_H / ch
        best = -math.inf
        for dy in (0.0, -0.15 * h, 0.15 * h):
            cy = foot - h / 2 + dy
            m = np.array([[sx, 0.0, _WIN_W / 2 - cx * sx], [0.0, sy, _WIN_H / 2 - cy * sy]], np.float32)
            win = cv2.warpAffine(gray, m, (_WIN_W, _WIN_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            d = np.asarray(self._hog.compute(win), np.float32).ravel()
            best = max(best, float(d @ self._w) + self._b)
        return best

    def ok(self, gray: np.ndarray, cx: float, foot: float, height: float) -> bool:
        """Whether the region looks like a person; counted (`person_checks`, `person_check_rejects`)."""
        self.counters["person_checks"] += 1
        good = self.score(gray, cx, foot, height) >= self.threshold
        if not good:
            self.counters["person_check_rejects"] += 1
        return good
