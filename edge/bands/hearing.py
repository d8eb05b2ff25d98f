"""What each receiver hears: its floor and hearing curve, learned from data, and its health.

* **Floor per receiver.** The 0.5 % quantile of every level the receiver reported (1 dB bins,
  offset-corrected) once it has `min_samples`; the site-wide floor until then. A deaf receiver
  (floor -85 dBm) then has its own curve, so its silence is not over-read; a keen one (-105) gives
  the strong evidence its silence is.
* **Hearing curve.** P(heard | level v) = (1 - loss)·logistic((v - floor - knee)/width) above the
  floor, 0 below, averaged over the per-packet fading; `logmiss` tabulates log(1 - P) per receiver
  for the window test (`window_kernels`).
* **Gain health.** The window test reports, for bands confidently inside, each heard link's residual
  against the best inside explanation. Their running mean per receiver is the receiver's gain error
  that the beacons did not catch; a receiver more than `gain_off_db` off is reported and its links
  are down-weighted by that much (its squared mean residual is added to their variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
V0, DV, V1 = -140.0, 0.5, -10.0  # level grid of the miss tables (dBm)
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(15)
_GH_W = _GH_W / _GH_W.sum()


@dataclass(frozen=True, slots=True)
class HearingParams:
    """Hearing-curve and health constants."""

    floor_quantile: float = 0.01
    min_samples: int = 600
    knee_above_floor_db: float = 3.0  # half the adverts are lost this far above the floor
    width_db: float = 2.0
    base_loss: float = 0.15  # far above the floor (collisions, scan gaps)
    deaf_above_median_db: float = 6.0  # a floor this far above the receivers' median is reported deaf
    gain_off_db: float = 3.0
    gain_min_links: int = 60  # residuals needed before a receiver's gain is judged
    gain_alpha: float = 0.02
    # Until a receiver's floor is measured it is assumed this high: an unknown floor must not turn a
    # deaf receiver's misses into evidence (at start-up on a site with floors of -98 … -88 dBm the
    # keen default pushed bands tens of metres out).
    unmeasured_floor_dbm: float = -90.0


def miss_table(floor_dbm: float, fast_sd: float, p: HearingParams) -> F64:
    """log(1 - P(heard)) on the grid V0..V1 for a receiver with this floor, fading averaged out."""
    v = np.arange(V0, V1 + DV / 2, DV)
    x = v[:, None] + fast_sd * _GH_X[None, :]
    ok = (1.0 - p.base_loss) / (1.0 + np.exp(-(x - floor_dbm - p.knee_above_floor_db) / p.width_db))
    ok = np.where(x >= floor_dbm, ok, 0.0)
    q = (ok * _GH_W[None, :]).sum(axis=1)
    return np.asarray(np.log(np.clip(1.0 - q, 1e-12, 1.0)))


class Hearing:
    """Per-receiver floors, miss tables and gain health."""

    def __init__(self, rx_ids: list[str], fast_sd: float, params: HearingParams | None = None,
                 default_floor_dbm: float = -100.0) -> None:
        self.p = params or HearingParams()
        self.rx_ids = rx_ids
        n = len(rx_ids)
        self.fast_sd = fast_sd
        start = max(default_floor_dbm, self.p.unmeasured_floor_dbm)
        self.floor = np.full(n, start)
        self.measured = np.zeros(n, dtype=bool)
        self.logmiss = np.tile(miss_table(start, fast_sd, self.p), (n, 1)) if n else np.zeros((0, 1))
        self._tables: dict[float, F64] = {}
        self.resid_mean = np.zeros(n)
        self.resid_n = np.zeros(n)

    def update_floors(self, rx_hist: NDArray[np.int64], site_floor_dbm: float | None) -> None:
        """Re-read every receiver's floor from its level histogram (1 dB bins from -140 dBm)."""
        fallback = max(site_floor_dbm, self.p.unmeasured_floor_dbm) if site_floor_dbm is not None \
            else self.p.unmeasured_floor_dbm
        for r in range(len(self.rx_ids)):
            total = int(rx_hist[r].sum())
            if total >= self.p.min_samples:
                cum = np.cumsum(rx_hist[r])
                floor = float(np.searchsorted(cum, self.p.floor_quantile * total) - 140)
                self.measured[r] = True
            else:
                floor = fallback
            if floor != self.floor[r] or not self._tables:
                self.floor[r] = floor
                table = self._tables.get(floor)
                if table is None:
                    table = self._tables[floor] = miss_table(floor, self.fast_sd, self.p)
                self.logmiss[r] = table

    def note_residuals(self, rx: NDArray[np.int64], resid: F64) -> None:
        """Residuals (dB, observed minus best inside explanation) of heard links of confidently-inside bands."""
        a = self.p.gain_alpha
        for r, e in zip(rx.tolist(), resid.tolist(), strict=True):
            n = self.resid_n[r] + 1.0
            self.resid_n[r] = n
            self.resid_mean[r] += max(a, 1.0 / n) * (float(np.clip(e, -20.0, 20.0)) - self.resid_mean[r])

    def extra_var_db2(self) -> F64:
        """(R,) variance added to each receiver's links: its learned gain error squared, once judged."""
        judged = self.resid_n >= self.p.gain_min_links
        return np.asarray(np.where(judged, np.maximum(self.resid_mean**2 - 1.0, 0.0), 0.0))

    def report(self, alive: NDArray[np.bool_] | None = None) -> dict[str, dict[str, float | int | str]]:
        """Per receiver: floor, gain residual, residual count and state (ok, gain_off, deaf, silent)."""
        med = float(np.median(self.floor[self.measured])) if self.measured.any() else None
        out: dict[str, dict[str, float | int | str]] = {}
        for r, rx in enumerate(self.rx_ids):
            state = "ok"
            if alive is not None and not alive[r]:
                state = "silent"
            elif self.resid_n[r] >= self.p.gain_min_links and abs(self.resid_mean[r]) >= self.p.gain_off_db:
                state = "gain_off"
            elif med is not None and self.measured[r] and self.floor[r] >= med + self.p.deaf_above_median_db:
                state = "deaf"
            out[rx] = {"floor_dbm": round(float(self.floor[r]), 1),
                       "gain_resid_db": round(float(self.resid_mean[r]), 2),
                       "gain_links": int(self.resid_n[r]), "state": state}
        return out
