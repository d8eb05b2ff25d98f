"""Day / night (IR or low light) mode of one camera, decided from the picture itself (pure).

An IR picture is grey: its colour saturation collapses (the IR-cut filter is out and the
lamp is monochrome). A low-light colour picture is dark and noisy. Either means night: the
detector then uses its night noise model and stricter track limits. The mode changes only
after the picture has said so for `enter_s` (to night) or `leave_s` (to day), and the
thresholds for entering and leaving differ, so dusk, headlights or a cloud do not make it
flap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["NightMode", "NightParams"]


@dataclass(frozen=True, slots=True)
class NightParams:
    """Thresholds (grey levels; chroma = mean |B-G| + |G-R| of a small picture)."""

    grey_chroma: float = 2.0  # at or below: an IR (grey) picture
    colour_chroma: float = 5.0  # at or above: a colour picture
    dark_mean: float = 40.0  # a colour picture this dark is low light
    bright_mean: float = 60.0
    noisy_sigma: float = 4.0  # with the mean below bright_mean: low light (gain up)
    enter_s: float = 4.0
    leave_s: float = 8.0


class NightMode:
    """Hysteresis state machine; `update()` once per detect frame."""

    def __init__(self, fps: float, params: NightParams | None = None, counters: dict[str, int] | None = None) -> None:
        self.p = params or NightParams()
        self.dt = 1.0 / max(fps, 0.1)
        self.night = False
        self._pending = 0.0  # seconds the picture has pointed to the other mode
        self._known = False  # the first clear indication sets the mode at once (stream start)
        self.counters = counters if counters is not None else {}  # shared with the detector
        self.counters.setdefault("night_frames", 0)
        self.counters.setdefault("night_switches", 0)

    def indication(self, mean: float, sigma: float, chroma: float | None) -> bool | None:
        """True: looks like night; False: looks like day; None: in between (keep the mode)."""
        p = self.p
        if not (math.isfinite(mean) and math.isfinite(sigma)):
            return None
        if chroma is not None and math.isfinite(chroma):
            if chroma <= p.grey_chroma:
                return True
            if chroma >= p.colour_chroma and mean >= p.dark_mean:
                return False
        if mean < p.dark_mean or (mean < p.bright_mean and sigma >= p.noisy_sigma):
            return True
        if mean >= p.bright_mean and (chroma is None or chroma > p.grey_chroma):
            return False
        return None

    @property
    def day(self) -> bool:
        """True once the picture is known to be a day picture (False before the first clear frame)."""
        return self._known and not self.night

    def update(self, mean: float, sigma: float, chroma: float | None) -> bool:
        """Feed one frame's statistics; return the (possibly new) mode: True = night."""
        ind = self.indication(mean, sigma, chroma)
        if ind is not None and not self._known:
            self._known, self.night = True, ind
        if ind is None or ind == self.night:
            self._pending = 0.0
        else:
            self._pending += self.dt
            if self._pending >= (self.p.enter_s if ind else self.p.leave_s) - 1e-9:
                self.night = ind
                self._pending = 0.0
                self.counters["night_switches"] += 1
        if self.night:
            self.counters["night_frames"] += 1
        return self.night
