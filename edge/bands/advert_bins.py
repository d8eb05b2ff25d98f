"""Per-second reception counts of every band at every receiver, for the window breach test.

The filter windows (`rssi_filter`) keep the last 8 samples per link; the breach test needs tens of
seconds with nothing thrown away: per band × receiver × second, how many adverts were heard and
the sum of their (offset-corrected) levels. A ring of `span_s` one-second bins, laid out
(second, band, receiver) so starting a new second clears one contiguous slice. Each band's advert
interval is learned from its counters, so a window's "adverts sent" is known even when nobody
heard some of them (`sent`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_DECAY = 0.95  # per accepted advert pair, in the interval's time and counter sums: a memory of ~20 adverts


class AdvertBins:
    """Ring of one-second bins: (count, level sum) per band × receiver, and each band's advert interval."""

    def __init__(self, n_bands: int, n_rx: int, span_s: int = 64, interval_s: float = 1.0) -> None:
        self.span = span_s
        self.count = np.zeros((span_s, n_bands, n_rx), dtype=np.float32)
        self.total = np.zeros((span_s, n_bands, n_rx), dtype=np.float64)
        self.sec = np.full(span_s, -(2**62), dtype=np.int64)  # which second each bin holds
        self.interval = np.full(n_bands, interval_s)
        self._last_counter = np.full(n_bands, -1, dtype=np.int64)
        self._last_ts = np.zeros(n_bands)
        self._span_t = np.zeros(n_bands)  # decayed sums of time and of counter steps: interval = their ratio
        self._span_c = np.zeros(n_bands)
        self.first = np.full(n_bands, np.inf)  # first second a band was heard (its windows start there)

    def _bins(self, seconds: I64) -> I64:
        """Ring slots of `seconds`, starting (clearing) bins for seconds newer than they hold; -1 = too old."""
        slot = seconds % self.span
        out = np.where(seconds >= self.sec[slot], slot, -1)
        newer = seconds > self.sec[slot]
        if newer.any():
            for s in np.unique(seconds[newer]).tolist():
                j = s % self.span
                if s > self.sec[j]:
                    self.count[j] = 0.0
                    self.total[j] = 0.0
                    self.sec[j] = s
        return np.asarray(out)

    def add(self, band: int, rx: int, ts: float, level: float) -> None:
        """One heard advert."""
        s = math.floor(ts)
        j = s % self.span
        if s > self.sec[j]:
            self.count[j] = 0.0
            self.total[j] = 0.0
            self.sec[j] = s
        elif s < self.sec[j]:
            return
        self.count[j, band, rx] += 1.0
        self.total[j, band, rx] += level
        if s < self.first[band]:
            self.first[band] = s

    def add_many(self, band: I64, rx: I64, ts: F64, level: F64) -> None:
        """Heard adverts in arrival order (the same state as `add` for each)."""
        if len(band) == 0:
            return
        order = np.argsort(ts, kind="stable")  # a bin is started by its first second, as `add` would
        slots = self._bins(np.floor(ts[order]).astype(np.int64))
        ok = slots >= 0
        b, r, j = band[order][ok], rx[order][ok], slots[ok]
        np.add.at(self.count, (j, b, r), 1.0)
        np.add.at(self.total, (j, b, r), level[order][ok])
        np.minimum.at(self.first, b, np.floor(ts[order][ok]))

    def note_counter(self, band: int, ts: float, counter: int) -> None:
        """An accepted advert's counter: learn the band's advert interval, robust to gaps.

        The interval is time over counter steps, both summed with a decay of 5 % per accepted pair: right from
        the second advert (a start at the nominal 1 s with a slow average had read a 1.3 s band as missing a
        fifth of its adverts for its first minutes, which the window test reads as distance), and following a
        drifting band over ~20 adverts. A long gap is a long baseline and weighs by its counter step.
        """
        last = int(self._last_counter[band])
        if last >= 0:
            dc = (counter - last) & 0xFFFFFFFF
            dt = ts - float(self._last_ts[band])
            if 1 <= dc <= 60 and 0.0 < dt < 120.0:
                self._span_t[band] = _DECAY * self._span_t[band] + min(max(dt, 0.2 * dc), 10.0 * dc)
                self._span_c[band] = _DECAY * self._span_c[band] + dc
                self.interval[band] = self._span_t[band] / self._span_c[band]
        self._last_counter[band] = counter
        self._last_ts[band] = ts

    def window(self, rows: I64, now: float, window_s: float) -> tuple[F64, F64, F64]:
        """For bands `rows`: heard counts k (M, R), mean levels x̄ (M, R; 0 where unheard) and adverts sent (M,).

        The window is the whole seconds in (now - window_s, now]; the newest one counts for its elapsed share.
        """
        top = math.floor(now)
        n = min(round(window_s), self.span)
        # A band first heard inside the window sent nothing before that: count its adverts from then. The
        # newest second is only `now - top` old: its adverts are still to come (a tick on the whole second
        # sees it empty), so it counts for that share only, not as a second of misses at every receiver.
        span = np.clip(now - self.first[rows], 0.0, n - 1.0 + (now - top))
        secs = np.arange(top - n + 1, top + 1, dtype=np.int64)
        slots = secs % self.span
        valid = slots[self.sec[slots] == secs]
        if len(valid) == 0:
            shape = (len(rows), self.count.shape[2])
            return np.zeros(shape), np.zeros(shape), span / self.interval[rows]
        k = self.count[valid][:, rows].sum(axis=0, dtype=np.float64)
        tot = self.total[valid][:, rows].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            xbar = np.where(k > 0, tot / np.maximum(k, 1.0), 0.0)
        return k, xbar, span / self.interval[rows]

    def window_blocks(self, rows: I64, now: float, window_s: float, n_blocks: int) -> tuple[F64, F64, F64]:
        """The same window cut into `n_blocks` consecutive blocks of whole seconds (oldest first):
        k (M, R, B), x̄ (M, R, B; 0 where unheard) and adverts sent (M, B)."""
        top = math.floor(now)
        n = min(round(window_s), self.span)
        secs = np.arange(top - n + 1, top + 1, dtype=np.int64)
        m, n_rx = len(rows), self.count.shape[2]
        k = np.zeros((m, n_rx, n_blocks))
        tot = np.zeros((m, n_rx, n_blocks))
        sent = np.zeros((m, n_blocks))
        first = self.first[rows]
        for b, part in enumerate(np.array_split(secs, n_blocks)):
            if not len(part):
                continue
            # Seconds of the block at or after the band's first advert: it sent nothing before that.
            end = now if part[-1] == top else float(part[-1] + 1)  # the newest second: only its elapsed share
            sent[:, b] = np.clip(end - np.maximum(first, part[0]), 0.0, end - part[0]) / self.interval[rows]
            slots = part % self.span
            valid = slots[self.sec[slots] == part]
            if len(valid):
                k[:, :, b] = self.count[valid][:, rows].sum(axis=0, dtype=np.float64)
                tot[:, :, b] = self.total[valid][:, rows].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            xbar = np.where(k > 0, tot / np.maximum(k, 1.0), 0.0)
        return k, xbar, sent
