"""Thresholded difference -> the cleaned change mask (pure).

A 3x3 opening removes speckle and thin rain streaks; a persistence test then keeps a changed
pixel only near (7x7) a pixel that changed a frame earlier, or in a solid region at least 7x7
(a fast runner jumps past its previous outline): rain and snow neither persist nor are solid, a
walking or running person is one or both. Change spread over most of the picture is global.
"""

from __future__ import annotations

import cv2
import numpy as np


class ChangeMask:
    """The change mask of each frame, with the previous frame's for the persistence test."""

    def __init__(self, valid: np.ndarray) -> None:
        self._valid = valid  # 255 where the picture is not masked
        self._valid_px = max(1, int(cv2.countNonZero(valid)))
        self._open_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        self._near_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))
        self._solid_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))
        self._grow_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9))
        self.opened: np.ndarray | None = None  # this frame's mask after the opening, before persistence
        self.prev: np.ndarray | None = None  # the opened mask of the previous frame (None after a re-learn)
        self.prev_count = 0

    def reset(self) -> None:
        """The background was re-learnt: nothing changed a frame ago."""
        self.prev = None
        self.prev_count = 0

    def near_previous(self) -> np.ndarray | None:
        """Where the previous frame changed, grown by 7x7; None when it did not change."""
        # Quiet frames (the common case) leave empty masks: skip the morphology on them.
        if self.prev is not None and self.prev_count:
            out: np.ndarray = cv2.dilate(self.prev, self._near_kernel)
            return out
        return None

    def update(self, diff: np.ndarray, thr_map: np.ndarray,
               near: np.ndarray | None) -> tuple[np.ndarray, int, float]:
        """(change mask, its pixel count, changed share of the picture) of `diff` over `thr_map`.

        `near`: `near_previous()` of this frame. The share is 1.0 when the cleaned change is spread
        over the whole picture.
        """
        had_prev = self.prev is not None
        fg = cv2.bitwise_and(cv2.compare(diff, thr_map, cv2.CMP_GT), self._valid)
        global_frac = cv2.countNonZero(fg) / self._valid_px
        if global_frac > 0:
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open_kernel)  # speckle, thin rain streaks
        count = cv2.countNonZero(fg) if global_frac > 0 else 0
        self.opened = fg
        self.prev, self.prev_count = fg, count
        if had_prev and count:
            fg, count = self._persistent(fg, near)
        if count > 0.04 * self._valid_px and self._spread(fg):
            global_frac = max(global_frac, 1.0)
        return fg, count, global_frac

    def _persistent(self, fg: np.ndarray, near: np.ndarray | None) -> tuple[np.ndarray, int]:
        """Motion must persist near where it was a frame ago (rain and speckle do not), or be a
        solid region at least 7x7 (a fast runner jumps past its previous outline; thin rain streaks
        never survive the 7x7 erosion)."""
        keep = near
        solid = cv2.erode(fg, self._solid_kernel)
        if cv2.countNonZero(solid):
            grown = cv2.dilate(solid, self._grow_kernel)
            keep = grown if keep is None else cv2.bitwise_or(keep, grown)
        out = cv2.bitwise_and(fg, keep) if keep is not None else np.zeros_like(fg)
        return out, cv2.countNonZero(out)

    @staticmethod
    def _spread(fg: np.ndarray) -> bool:
        """Cleaned change spread over most of the picture (IR fade, flicker, shake, downpour) is
        global even when no single place changed much; a person fills one or two of 16 cells."""
        cells = cv2.resize(fg, (4, 4), interpolation=cv2.INTER_AREA)
        return int(np.count_nonzero(cells > 0.05 * 255)) >= 11
