"""What each receiver hears: its floor and hearing curve, learned from data, and its health.

* **Floor per receiver.** The 0.5 % quantile of every level the receiver reported (1 dB bins,
  offset-corrected) once it has `min_samples`; the site-wide floor until then. A deaf receiver
  (floor -85 dBm) then has its own curve, so its silence is not over-read; a keen one (-105) gives
  the strong evidence its silence is.
* **Hearing curve.** P(heard | level v) = (1 - loss)·logistic((v - floor - knee)/width) above the
  floor, 0 below, averaged over the per-packet fading; `logmiss` tabulates log(1 - P) per receiver
  for the window test (`window_kernels`).
* **Gain from the bands.** The window test reports, for every tested band (whatever the breach test
  says: a receiver reading low pulls its bands towards the fence, and a "confidently inside" gate
  kept exactly those out), each well-heard link's residual against the best inside explanation (the
  window's median residual removed: position and band gain absorb what all links share). Their median
  over each receiver's last `resid_keep` is the gain error the beacons did not catch (an outside
  receiver far from every beacon is not pinned by them at all; a real escapee's few windows cannot
  move a median). It corrects the receiver's levels, shrunk by how much it knows against the beacons'
  variance (never surer than `resid_bias_sd_db`: the residuals' reference is censored), and the combined
  variance replaces the beacons' alone (`corrections`). Not for a deaf
  receiver: its links near the floor read high (only the lucky packets arrive).
* **Health.** A receiver whose learned gain (beacons + bands) is `gain_off_db` or more from the
  receivers' median deviation is reported `gain_off` and down-weighted; one whose floor is
  `deaf_above_median_db` above the others' is `deaf` (its own floor already keeps its silence from
  being over-read).
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
    min_samples: int = 300
    knee_above_floor_db: float = 3.0  # half the adverts are lost this far above the floor
    width_db: float = 2.0
    base_loss: float = 0.15  # far above the floor (collisions, scan gaps)
    deaf_above_median_db: float = 5.0  # a floor this far above the receivers' median is reported deaf
    gain_off_db: float = 4.0
    gain_min_links: int = 60  # residuals needed before a receiver's gain is judged (or:)
    judge_sd_db: float = 2.0  # ... its learned gain known this well (beacons and bands together)
    resid_var_db2: float = 16.0  # variance of one link residual (slow shadowing, position error)
    resid_correlation: float = 3.0  # residuals of one receiver share shadowing and geometry
    # What no number of residuals removes: their reference is censored. Each look's residuals are taken less the
    # window's median, and far links near the floor read high (only the up-fades arrive), so a layout's inside
    # receivers look 2-3 dB low and its outside ones high (docs/bands.md, "Receiver gains from the censored
    # beacon fit"). Their median's variance is at least this squared.
    resid_bias_sd_db: float = 2.0
    resid_keep: int = 400  # the gain error is the median of each receiver's last this many residuals
    # Until a receiver's floor is measured it is assumed this high: an unknown floor must not turn a
    # deaf receiver's misses into evidence (at start-up on a site with floors of -98 … -88 dBm the
    # keen default pushed bands tens of metres out).
    unmeasured_floor_dbm: float = -90.0


def miss_table(floor_dbm: float, fast_sd: float, p: HearingParams, loss: float | None = None) -> F64:
    """log(1 - P(heard)) on the grid V0..V1 for a receiver with this floor (and plateau loss, default
    `p.base_loss`), fading averaged out."""
    v = np.arange(V0, V1 + DV / 2, DV)
    x = v[:, None] + fast_sd * _GH_X[None, :]
    plateau = 1.0 - (p.base_loss if loss is None else loss)
    ok = plateau / (1.0 + np.exp(-(x - floor_dbm - p.knee_above_floor_db) / p.width_db))
    ok = np.where(x >= floor_dbm, ok, 0.0)
    q = (ok * _GH_W[None, :]).sum(axis=1)
    return np.asarray(np.log(np.clip(1.0 - q, 1e-12, 1.0)))


@dataclass(frozen=True, slots=True)
class HearingState:
    """The receivers' gain errors learned from the bands, for a restart (floors come from the tracker's level
    histograms, `Tracker.snapshot`; deviations and health are recomputed from these each calibration round)."""

    resid_db: F64  # (R,) the median residual: dB each receiver reads high beyond the beacon calibration
    resid_n: F64  # (R,) how many residuals it is the median of (at most `resid_keep`)


class Hearing:
    """Per-receiver floors, miss tables and gain health."""

    def __init__(self, rx_ids: list[str], fast_sd: float, params: HearingParams | None = None,
                 default_floor_dbm: float = -100.0) -> None:
        self.p = params or HearingParams()
        self.rx_ids = rx_ids
        n = len(rx_ids)
        self.fast_sd = fast_sd
        start = max(default_floor_dbm, self.p.unmeasured_floor_dbm)
        self.floor = np.full(n, start)  # in corrected terms (what the window test compares with)
        self.raw_floor = np.full(n, start)  # as reported
        self.measured = np.zeros(n, dtype=bool)
        self.logmiss = np.tile(miss_table(start, fast_sd, self.p), (n, 1)) if n else np.zeros((0, 1))
        self._tables: dict[tuple[float, float], F64] = {}
        self.loss = np.full(n, self.p.base_loss)  # plateau loss per receiver (set_loss)
        self.resid_mean = np.zeros(n)  # dB the receiver reads high, beyond the beacon calibration
        self.resid_n = np.zeros(n)
        self._ring = np.zeros((n, self.p.resid_keep))
        self._ring_at = np.zeros(n, dtype=np.int64)
        self._dirty: set[int] = set()
        self.dev_db = np.zeros(n)  # learned gain deviation from the configured offset (for health)
        self.dev_var = np.full(n, np.inf)  # not known until the first calibration round (`note_deviation`)

    def update_floors(self, rx_hist: NDArray[np.int64], site_floor_dbm: float | None,
                      bias_db: F64 | None = None) -> None:
        """Re-read every receiver's floor from its level histogram (1 dB bins from -140 dBm).

        The histogram holds levels as reported (offset-corrected); the window test compares corrected
        levels (plus the receiver's calibrated bias `bias_db`), so the floor is moved by the same bias:
        a receiver 7 dB less sensitive than configured stops hearing 7 dB higher in corrected terms.
        """
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
            self.raw_floor[r] = floor
            if bias_db is not None:
                floor = round(2.0 * (floor + float(bias_db[r]))) / 2.0  # 0.5 dB steps: the tables are cached
            if floor != self.floor[r] or not self._tables:
                self.floor[r] = floor
                self._table(r)

    def _table(self, r: int) -> None:
        key = (float(self.floor[r]), float(self.loss[r]))
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = miss_table(key[0], self.fast_sd, self.p, key[1])
        self.logmiss[r] = table

    def set_loss(self, loss: F64) -> None:
        """Each receiver's share of adverts lost far above its floor (bursts, collisions, body), in 0.02
        steps (the tables are cached): misses beyond it are what the level explains."""
        q = np.round(np.clip(np.asarray(loss, dtype=np.float64), 0.0, 0.9) * 50.0) / 50.0
        for r in np.nonzero(q != self.loss)[0].tolist():
            self.loss[r] = q[r]
            self._table(r)

    def note_residuals(self, rx: NDArray[np.int64], resid: F64) -> None:
        """Residuals (dB, observed minus the band's best inside explanation) of well-heard links.

        The gain error is their median over each receiver's last `resid_keep`: the few windows of a real
        escapee (whose inside explanation is wrong) cannot move it, and the bands a bad receiver pulls
        towards the fence, whose residuals carry its error most clearly, count like any other."""
        keep = self.p.resid_keep
        for r, e in zip(rx.tolist(), resid.tolist(), strict=True):
            self._ring[r, self._ring_at[r] % keep] = float(np.clip(e, -20.0, 20.0))
            self._ring_at[r] += 1
            self._dirty.add(r)
        self.resid_n = np.minimum(self._ring_at, keep).astype(np.float64)

    def _medians(self) -> None:
        """The medians of the receivers with new residuals (read once per calibration round, not per look)."""
        for r in self._dirty:
            self.resid_mean[r] = float(np.median(self._ring[r, :int(self.resid_n[r])]))
        self._dirty.clear()

    def corrections(self, beacon_var_db2: F64) -> tuple[F64, F64]:
        """(R,) dB to add to each receiver's levels, and the (R,) variance of its gain after that.

        The band residuals' mean is weighed against the beacons' variance (a precision-weighted
        shrink), so a receiver the beacons pin well moves little and an unpinned one follows the bands.
        """
        self._medians()
        n_eff = self.resid_n / self.p.resid_correlation
        prec_b = 1.0 / np.maximum(beacon_var_db2, 1e-3)
        prec_r = np.where(n_eff > 0, 1.0 / (self.p.resid_var_db2 / np.maximum(n_eff, 1e-9)
                                            + self.p.resid_bias_sd_db**2), 0.0)
        # A deaf receiver hears only the bands close to it, the links near its floor read high (only the
        # lucky packets arrive) and its residuals say "reads high": corrected by them, it pushed every
        # band near it away (alt L-wing, floor -84 dBm: learned 7 dB high, 7 false breaches in 10 min).
        # Its own floor and hearing curve already model it; its gain stays the beacons'.
        prec_r = np.where(self.deaf(), 0.0, prec_r)
        var = 1.0 / (prec_b + prec_r)
        corr = -self.resid_mean * prec_r * var
        return np.asarray(corr), np.asarray(var)

    def deaf(self) -> NDArray[np.bool_]:
        """(R,) receivers whose measured floor is `deaf_above_median_db` or more above the others' median."""
        if not self.measured.any():
            return np.zeros(len(self.rx_ids), dtype=bool)
        med = float(np.median(self.raw_floor[self.measured]))
        return np.asarray(self.measured & (self.raw_floor >= med + self.p.deaf_above_median_db))

    def note_deviation(self, dev_db: F64, var_db2: F64 | None = None) -> None:
        """The learned gain deviation from the configured offset (beacon bias plus band correction) and
        its variance: a receiver is judged once its gain is known to `judge_sd_db` (or from enough links)."""
        self.dev_db = np.asarray(dev_db, dtype=np.float64)
        if var_db2 is not None:
            self.dev_var = np.asarray(var_db2, dtype=np.float64)

    def relative_dev(self) -> F64:
        """Each receiver's learned gain deviation less the receivers' median (with 4 or more receivers): what
        they all share (a site-wide offset, the band powers' mean) is no one receiver's fault; a receiver is
        judged by how far it disagrees with the others (alt perimeter: a receiver 6 dB low, learned +5.1 dB
        against the others' median, was still reported ok when judged against its configured offset)."""
        if len(self.dev_db) < 4:
            return np.asarray(self.dev_db)
        return np.asarray(self.dev_db - float(np.median(self.dev_db)))

    def _judged(self) -> NDArray[np.bool_]:
        return np.asarray((self.resid_n >= self.p.gain_min_links) | (self.dev_var <= self.p.judge_sd_db**2))

    def confirmed_ok(self) -> NDArray[np.bool_]:
        """(R,) receivers whose gain is judged and within `gain_off_db` of the others', and not deaf."""
        ok = np.abs(self.relative_dev()) < self.p.gain_off_db
        return np.asarray(self._judged() & ok & ~self.deaf())

    def extra_var_db2(self) -> F64:
        """(R,) variance added to a receiver reported gain_off: it is down-weighted, not trusted."""
        judged = self._judged() & ~self.deaf()
        off = np.maximum(np.abs(self.relative_dev()) - (self.p.gain_off_db - 1.0), 0.0)
        return np.asarray(np.where(judged, off**2, 0.0))

    def snapshot(self) -> HearingState:
        """Each receiver's learned gain error and its weight (`HearingState`)."""
        self._medians()
        return HearingState(self.resid_mean.copy(), self.resid_n.copy())

    def restore(self, s: HearingState) -> None:
        """Start from `s`: each receiver's ring holds its median `resid_n` times, so the median and the weight
        are the restored ones and new residuals replace them one by one, oldest first."""
        n = len(self.rx_ids)
        if len(s.resid_db) != n or len(s.resid_n) != n:
            raise ValueError(f"hearing state for {len(s.resid_db)} receivers, this site has {n}")
        keep = self.p.resid_keep
        count = np.clip(np.asarray(s.resid_n), 0, keep).astype(np.int64)
        value = np.clip(np.asarray(s.resid_db, dtype=np.float64), -20.0, 20.0)
        self._ring[:] = 0.0
        for r in range(n):
            self._ring[r, :count[r]] = value[r]
        self._ring_at = count.copy()
        self.resid_n = count.astype(np.float64)
        self.resid_mean = np.where(count > 0, value, 0.0)
        self._dirty.clear()

    def report(self, alive: NDArray[np.bool_] | None = None) -> dict[str, dict[str, float | int | str]]:
        """Per receiver: floor, gain residual, residual count and state (ok, gain_off, deaf, silent)."""
        out: dict[str, dict[str, float | int | str]] = {}
        judged, deaf, rel = self._judged(), self.deaf(), self.relative_dev()
        for r, rx in enumerate(self.rx_ids):
            state = "ok"
            if alive is not None and not alive[r]:
                state = "silent"
            elif deaf[r]:  # before gain_off: a deaf receiver's gain cannot be judged from its lucky packets
                state = "deaf"
            elif judged[r] and abs(rel[r]) >= self.p.gain_off_db:
                state = "gain_off"
            out[rx] = {"floor_dbm": round(float(np.clip(self.raw_floor[r], -140.0, 20.0)), 1),
                       "gain_dev_db": round(float(np.clip(self.dev_db[r], -40.0, 40.0)), 2),
                       "gain_links": int(self.resid_n[r]), "state": state}
        return out
