"""Robust RSSI filter per band × receiver: the last few seconds, 1.5·IQR outliers trimmed, median.

Samples go into fixed ring buffers (numpy, O(1) per sample); the filter runs once per tick for all
bands together, so its cost is a few sorts over a (B, R, W) array, not Python per sample.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge.bands.fit_kernels import window_filter

F64 = NDArray[np.float64]


class RssiWindows:
    """Ring buffers of (time, RSSI) per band × receiver."""

    def __init__(self, n_bands: int, n_rx: int, window: int = 8) -> None:
        self.window = window
        self.rssi = np.full((n_bands, n_rx, window), np.nan, dtype=np.float64)
        self.ts = np.full((n_bands, n_rx, window), -np.inf, dtype=np.float64)
        self.pos = np.zeros((n_bands, n_rx), dtype=np.int64)  # next slot per band × receiver

    def add(self, band: int, rx: int, ts: float, rssi: float) -> None:
        """Store one sample (already corrected by the receiver's configured offset)."""
        i = int(self.pos[band, rx])
        self.rssi[band, rx, i] = rssi
        self.ts[band, rx, i] = ts
        self.pos[band, rx] = (i + 1) % self.window

    def add_many(self, band: NDArray[np.int64], rx: NDArray[np.int64], ts: F64, rssi: F64) -> None:
        """Store samples in the given order: the same buffers as `add` called for each one in turn.

        A band × receiver pair may get several samples; they take consecutive slots, and of more
        than `window` samples only the last `window` survive, exactly as sequential writes leave them.
        """
        n = len(band)
        if n == 0:
            return
        w = self.window
        n_rx = self.pos.shape[1]
        key = band * n_rx + rx
        order = np.argsort(key, kind="stable")  # stable: a pair's samples stay in arrival order
        ks = key[order]
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(ks[1:], ks[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, n))
        group = np.cumsum(first) - 1
        rank = np.arange(n) - starts[group]
        pair = ks[starts]
        pb, pr = pair // n_rx, pair % n_rx
        p0 = self.pos[pb, pr]
        # Only the last `window` samples of a pair survive: writing just those keeps every target
        # slot unique (numpy does not define which of several writes to one slot wins).
        keep = rank >= counts[group] - w
        src = order[keep]
        slot = (p0[group[keep]] + rank[keep]) % w
        kb, kr = ks[keep] // n_rx, ks[keep] % n_rx
        self.rssi[kb, kr, slot] = rssi[src]
        self.ts[kb, kr, slot] = ts[src]
        self.pos[pb, pr] = (p0 + counts) % w

    def filtered(self, bands: NDArray[np.int64], now: float, max_age_s: float,
                 compiled: bool = True) -> tuple[F64, F64, F64]:
        """For the given bands: (median RSSI, sample count, spread) per receiver, NaN where unheard.

        Spread is the IQR-based robust std of the kept samples (0 for fewer than 3 samples).
        `compiled` runs `fit_kernels.window_filter` (same maths per window); False, the numpy reference.
        """
        if compiled:
            shape = (len(bands), self.rssi.shape[1])
            med, n, spread = np.empty(shape), np.empty(shape), np.empty(shape)
            window_filter(self.rssi, self.ts, np.ascontiguousarray(bands, dtype=np.int64), float(now),
                          float(max_age_s), med, n, spread)
            return med, n, spread
        fresh = self.ts[bands] > now - max_age_s
        shape = fresh.shape[:2]
        med = np.full(shape, np.nan)
        n = np.zeros(shape)
        spread = np.zeros(shape)
        # Only the band × receiver pairs that heard anything: a band is heard by a few receivers.
        rows = np.nonzero(fresh.any(axis=2))
        if len(rows[0]):
            vals = np.where(fresh[rows], self.rssi[bands[rows[0]], rows[1]], np.nan)
            med[rows], n[rows], spread[rows] = robust_median(vals)
        return med, n, spread


def _lut(window: int, q: float) -> tuple[NDArray[np.int64], NDArray[np.int64], F64]:
    """Per sample count n (0..window): low index, high index and fraction of the q-quantile."""
    n = np.arange(window + 1, dtype=np.float64)
    pos = np.maximum(n - 1, 0) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n.astype(np.int64) - 1, 0))
    return lo, hi, pos - lo


_LUTS: dict[tuple[int, float], tuple[NDArray[np.int64], NDArray[np.int64], F64]] = {}


def _quantile_sorted(s: F64, n: NDArray[np.int64], q: float) -> F64:
    """Linear-interpolated quantile of the first n values of each sorted row (NaN if n == 0)."""
    key = (s.shape[1], q)
    lut = _LUTS.get(key)
    if lut is None:
        lut = _LUTS[key] = _lut(s.shape[1], q)
    lo, hi, frac = lut[0][n], lut[1][n], lut[2][n]
    rows = np.arange(len(s))
    a = s[rows, lo]
    out = a + (s[rows, hi] - a) * frac
    return np.where(n > 0, out, np.nan)


def robust_median(vals: F64) -> tuple[F64, F64, F64]:
    """Median along the last axis after dropping values beyond 1.5·IQR of the quartiles. NaN = missing.

    Returns (median, kept sample count, robust std from the IQR; 0 below 3 samples).
    """
    shape = vals.shape[:-1]
    s = np.sort(vals.reshape(-1, vals.shape[-1]), axis=-1)  # NaNs sort last
    n = np.count_nonzero(~np.isnan(s), axis=-1)
    q1 = _quantile_sorted(s, n, 0.25)
    q3 = _quantile_sorted(s, n, 0.75)
    iqr = q3 - q1
    with np.errstate(invalid="ignore"):
        keep = (s >= (q1 - 1.5 * iqr)[:, None]) & (s <= (q3 + 1.5 * iqr)[:, None])
    # Too few samples for quartiles to mean anything: keep them all.
    keep |= (n < 4)[:, None] & ~np.isnan(s)
    nk = np.count_nonzero(keep, axis=-1)
    if np.any(nk != n):
        s = np.sort(np.where(keep, s, np.nan), axis=-1)
    med = _quantile_sorted(s, nk, 0.5)
    spread = np.where(nk >= 3, iqr / 1.349, 0.0)
    return med.reshape(shape), nk.astype(np.float64).reshape(shape), spread.reshape(shape)
