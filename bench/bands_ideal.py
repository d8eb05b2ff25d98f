"""The issue's ideal observer for the breach benchmark (issue 3, "Benchmarks").

It knows what no deployed system can: every receiver's true gain, every band's true 1 m power,
the channel's path-loss exponent, its shadowing σ and slow/fast split, and its loss curve near
sensitivity (`edge.sim.radio`). Each tick it takes the same 8 s of observations the pipeline
sees and compares the likelihood of those samples at the best position inside the band's
allowed area against the best position outside it (a generalised likelihood-ratio test). What
it cannot detect is physics (layout and noise); what it detects and qwatch does not is software.

Per link (band × receiver) the window is summarised exactly by the number of adverts heard k
(out of N sent) and their mean RSSI x̄: with the slow shadowing s held over the window and the
fast part f independent per packet, L(μ) = E_s[ exp(-k(x̄-μ-s)²/2σ_f²) · (1 - q(μ+s))^(N-k) ],
q(v) = E_f[P(received | RSSI = v+f)]. The receive probability factor of the heard samples does not
depend on the position, so it drops out. L is tabulated over μ per link, and each candidate
position only looks its μ up.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray

from edge.bands.geometry import ZoneMap, ZoneShape, as_points, grid_over, sample_region
from edge.sim.radio import SENSITIVITY_DBM, RadioChannel
from edge.sim.radio_alt import AltRadioChannel
from protocols.site_config import SiteConfig

F64 = NDArray[np.float64]
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(15)  # E[g(Z)], Z ~ N(0, 1)
_GH_W = _GH_W / _GH_W.sum()
MU = np.arange(-135.0, -20.0, 0.5)  # tabulated mean RSSI (dBm)


class IdealObserver:
    """Inside-vs-outside likelihood-ratio test with the true channel; one decision per band per tick."""

    def __init__(self, site: SiteConfig, channel: RadioChannel | AltRadioChannel, band_ids: list[int],
                 rx_ids: list[str], band_power_dbm: float, *, window_s: float = 8.0, interval_s: float = 1.0,
                 thresholds: tuple[float, ...] = (9.0,), margin_m: float = 1.0) -> None:
        self.p = channel.p
        # The alt channel (`edge.sim.radio_alt`) has per-receiver floors; this observer uses their mean
        # and the Gaussian approximation `channel.p` of that channel (documented in bands.md).
        floors = getattr(channel, "rx_floor", None)
        self.sensitivity = float(np.mean(floors)) if floors is not None and len(floors) else SENSITIVITY_DBM
        self.window_s, self.n_sent = window_s, round(window_s / interval_s)
        self.rx_index = {r: i for i, r in enumerate(rx_ids)}
        self.band_ids = [b.id for b in site.bands]
        self.index = {b: i for i, b in enumerate(self.band_ids)}
        sim_idx = {b: i for i, b in enumerate(band_ids)}
        self.power = np.array([band_power_dbm + channel.tx_power_err[sim_idx[b]] for b in self.band_ids])
        var = self.p.shadowing_db**2
        self.s_slow = float(np.sqrt(var * self.p.slow_fraction))
        self.s_fast = float(np.sqrt(var * (1.0 - self.p.slow_fraction)))
        self._q_log_miss = self._miss_table()
        polys = {z.id: as_points(z.polygon) for z in site.zones}
        zmap = ZoneMap([ZoneShape(z.id, z.kind, as_points(z.polygon)) for z in site.zones])
        allowed_sets = {tuple(sorted(b.allowed_zones)) for b in site.bands}
        if len(allowed_sets) != 1:
            raise ValueError("ideal observer: one allowed-area set per site is supported")
        allowed = next(iter(allowed_sets))
        inside = sample_region([polys[z] for z in allowed], spacing=1.5, edge_spacing=0.75)
        lo_x, lo_y, hi_x, hi_y = zmap.bounds(pad=60.0)
        grid = grid_over((lo_x, lo_y, hi_x, hi_y), 2.5)
        mask = np.array([z.id in allowed for z in site.zones], dtype=bool)
        out_d = zmap.union_signed_distance(zmap.signed_distances(grid), mask)
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        centre = np.array([(lo_x + hi_x) / 2, (lo_y + hi_y) / 2])
        far = np.concatenate([centre + r * np.stack([np.cos(angles), np.sin(angles)], axis=1)
                              for r in (100.0, 150.0, 250.0, 400.0)])
        outside = np.concatenate([grid[out_d > margin_m], far])
        self.n_inside = len(inside)
        pts = np.concatenate([inside, outside])
        d = np.linalg.norm(pts[:, None, :] - channel.rx_pos[None, :, :], axis=2)
        # μ at each candidate minus the band power: receiver gain and path loss (G, R).
        self.base = channel.rx_gain[None, :] - 10.0 * self.p.path_loss_exponent * np.log10(
            np.maximum(d, self.p.min_distance_m))
        n_b, n_r = len(self.band_ids), len(rx_ids)
        mu = self.power[:, None, None] + self.base[None, :, :]  # (B, G, R)
        idx = np.clip(np.rint((mu - MU[0]) / 0.5).astype(np.int64), 0, len(MU) - 1)
        # Flat index into a (B, R, len(MU)) table: each candidate looks its μ up per link.
        self._flat = ((np.arange(n_b)[:, None, None] * n_r + np.arange(n_r)[None, None, :]) * len(MU) + idx)
        self._unheard = self._loglik_tables(np.zeros(1), np.zeros(1))[0]
        self.samples: list[list[deque[tuple[float, float]]]] = [[deque() for _ in range(n_r)] for _ in range(n_b)]
        self.states = [_DwellState(t) for t in thresholds]
        self.lr: dict[int, float] = {}

    def _miss_table(self) -> F64:
        """log(1 - q(v)) on the grid MU + s for every slow node s: (len(MU), nodes)."""
        v = MU[:, None] + self.s_slow * _GH_X[None, :]
        r = v[..., None] + self.s_fast * _GH_X[None, None, :]
        p = self.p
        p_ok = (1.0 - p.base_loss) / (1.0 + np.exp(-(r - p.loss_knee_dbm) / p.loss_width_db))
        p_ok = np.where(r >= self.sensitivity, p_ok, 0.0)
        q = (p_ok * _GH_W[None, None, :]).sum(axis=2)
        return np.asarray(np.log(np.clip(1.0 - q, 1e-300, 1.0)))

    def observe(self, ts: float, rx: str, rssi: int, band: int) -> None:
        """One received advert."""
        i, r = self.index.get(band), self.rx_index.get(rx)
        if i is not None and r is not None:
            self.samples[i][r].append((ts, float(rssi)))

    def _loglik_tables(self, k: F64, xbar: F64) -> F64:
        """(L, len(MU)) log-likelihood of (k heard, mean x̄, N - k missed) as a function of μ, per link."""
        v = MU[None, :, None] + self.s_slow * _GH_X[None, None, :]  # (1, M, S)
        heard = -k[:, None, None] * (xbar[:, None, None] - v) ** 2 / (2 * self.s_fast**2)
        miss = (self.n_sent - k)[:, None, None].clip(0) * self._q_log_miss[None, :, :]
        a = heard + miss + np.log(_GH_W)[None, None, :]
        m = a.max(axis=2, keepdims=True)
        return np.asarray((m + np.log(np.exp(a - m).sum(axis=2, keepdims=True)))[..., 0])

    def tick(self, now: float, dwell_s: float, clear_s: float, gap_s: float = 3.0) -> None:
        """Decide every band heard in the window (all bands at once); run the same dwell logic as the rules."""
        n_b, n_r = len(self.band_ids), self.base.shape[1]
        k = np.zeros((n_b, n_r))
        xbar = np.zeros((n_b, n_r))
        for i in range(n_b):
            for r, dq in enumerate(self.samples[i]):
                while dq and dq[0][0] <= now - self.window_s:
                    dq.popleft()
                if dq:
                    k[i, r] = min(len(dq), self.n_sent)
                    xbar[i, r] = sum(x for _, x in dq) / len(dq)
        heard = np.nonzero(k.sum(axis=1) > 0)[0]
        lr = np.full(n_b, np.nan)
        if len(heard):
            table = np.broadcast_to(self._unheard, (n_b, n_r, len(MU))).copy()
            links = k > 0
            table[links] = self._loglik_tables(k[links], xbar[links])
            ll = table.ravel()[self._flat[heard]].sum(axis=2)  # (H, G)
            lr[heard] = 2.0 * (ll[:, self.n_inside:].max(axis=1) - ll[:, :self.n_inside].max(axis=1))
        for i, band in enumerate(self.band_ids):
            if not np.isnan(lr[i]):
                self.lr[band] = float(lr[i])
            for state in self.states:
                # Unheard: carry the last decision forward (as qwatch carries its last fix).
                outside = state.decided.get(band, False) if np.isnan(lr[i]) else bool(lr[i] >= state.threshold)
                state.update(band, now, outside, dwell_s, clear_s, gap_s)

    def raises(self, which: int = 0) -> list[tuple[int, float]]:
        """(band, ts) of every breach the observer raised at its `which`-th threshold."""
        return list(self.states[which].raised)


class _DwellState:
    """Breach dwell of every band at one likelihood-ratio threshold (same dwell/gap/clear as the rules)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.outside_since: dict[int, float] = {}
        self.last_out: dict[int, float] = {}
        self.inside_since: dict[int, float] = {}
        self.decided: dict[int, bool] = {}
        self.active: set[int] = set()
        self.raised: list[tuple[int, float]] = []

    def update(self, band: int, now: float, outside: bool, dwell_s: float, clear_s: float, gap_s: float) -> None:
        """Feed one decision."""
        self.decided[band] = outside
        if outside:
            last = self.last_out.get(band)
            if band not in self.outside_since or last is None or now - last > gap_s:
                self.outside_since[band] = now
            self.last_out[band] = now
            self.inside_since.pop(band, None)
            if band not in self.active and now - self.outside_since[band] >= dwell_s:
                self.raised.append((band, now))
                self.active.add(band)
            return
        since_in = self.inside_since.setdefault(band, now)
        if band in self.active and now - since_in >= clear_s:
            self.active.discard(band)
            self.outside_since.pop(band, None)
