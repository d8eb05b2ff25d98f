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
from typing import Any

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


class WindowObserver:
    """The first ideal observer (8 s windows, one decision per band per tick); kept for bands_quality.py."""

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


# -- the issue-16 ideal observer: long windows, position held, censoring, threshold from the budget -----
VARIANTS = ("true", "pm1", "unknown")  # band gain: known exactly, known to ±1 dB, unknown (prior only)
MU1 = np.arange(-140.0, -35.0, 1.0)  # tabulated link mean (dBm), 1 dB bins, linear interpolation
S_NODES = 7  # slow-shadowing states of the per-link hidden Markov chain


def mean_offset_db(channel: Any, d: F64) -> F64:
    """What the ideal observer adds to the log-distance mean: 0 on the default channel; on the alt one
    the mean body loss (half its maximum, the wearer's heading being uniform) and the mean of the
    Rician fading in dB at that distance (its K falls with distance: −2.5 dB when Rayleigh-like)."""
    if not isinstance(channel, AltRadioChannel):
        return np.zeros_like(d)
    a = channel.alt
    k_grid = np.linspace(0.0, a.rician_k_near, 33)
    rng = np.random.default_rng(7)
    re0, im0 = rng.normal(0, 1, 4000), rng.normal(0, 1, 4000)
    los = np.sqrt(k_grid / (k_grid + 1.0))[:, None]
    scat = np.sqrt(1.0 / (2.0 * (k_grid + 1.0)))[:, None]
    fade = (10.0 * np.log10(np.maximum((los + scat * re0) ** 2 + (scat * im0) ** 2, 1e-6))).mean(axis=1)
    k = a.rician_k_near * np.exp(-d / a.rician_k_scale_m)
    return np.asarray(np.interp(k, k_grid, fade) - a.body_db / 2.0)


def _ar1_chain(rho: float) -> tuple[F64, F64, F64]:
    """Nodes z (in units of σ_slow), log prior and transition matrix of a discretised AR(1) with correlation rho."""
    z = np.linspace(-2.6, 2.6, S_NODES)
    prior = np.exp(-z**2 / 2)
    prior /= prior.sum()
    sd = max(np.sqrt(1.0 - rho**2), 1e-3)
    trans = np.exp(-((z[None, :] - rho * z[:, None]) / sd) ** 2 / 2)
    trans /= trans.sum(axis=1, keepdims=True)
    return z, np.log(prior), trans


class IdealObserver:
    """The in-run ideal observer of issue 16, on the true channel and the same observations as the pipeline.

    Superseded as the bound by `bench.bands_bound` (exact per radio model, thresholds from thousands
    of cheap null band-hours); kept because it runs on the pipeline's very observations.

    It knows every receiver's true gain, reception floor and hearing curve, the true path-loss
    exponent and shadowing σ with its slow/fast split, and (variant ``true``) each band's true
    power. Time is cut into `block_s` blocks; per link (band × receiver) a block is summarised by the
    adverts heard k, their RSSI sum and the adverts sent N (from the band's advert interval). The
    slow shadowing is a hidden AR(1) chain over the blocks (correlation time τ), the fast part is
    per packet, and every advert a receiver did not hear enters through that receiver's hearing
    curve (censoring), so silence is evidence. For a window ending now, the likelihood of a
    position held over the whole window is exact under this model up to the block discretisation:
    a backward recursion over the blocks gives it for every window length at once.

    Statistic per band and evaluation (every `eval_s`): GLR_W = 2·(max over outside positions − max
    over inside positions) of the log-likelihood, for the long windows W = dwell, dwell + 10, dwell +
    20 s; and the short window (8 s) for a person still walking, which must hold for the dwell (its
    minimum over the last dwell). D = the larger of the two. Outside = more than `margin_m` beyond the
    allowed area: a 5 m grid out to 40 m beyond the site and far points to 300 m; inside = a 3 m grid
    and every zone edge each 1.5 m. Each window's best 4 points of each side and a 1.5 m grid round
    the best one are then scored with the band gain marginalised (`_glr`). The threshold on D
    comes from the false-alarm budget measured on null bands (`calibrate_threshold`), not from "3σ".

    Band gain variants: ``true``; ``pm1`` = an estimate off by U(−1, 1) dB per band, marginalised
    over −1, 0, +1 dB; ``unknown`` = the advertised power, marginalised over the channel's own prior
    of the band power error (1 dB steps). On the alt radio the model is the nearest Gaussian one
    (`AltRadioChannel.p`, τ 30 s for its place-bound shadowing, mean loss, but the true per-receiver
    floors): there it is a strong reference observer, not a bound.
    """

    def __init__(self, site: SiteConfig, sim: Any, band_power_dbm: float, *, dwell_s: float, seed: int = 0,
                 block_s: float = 2.0, eval_s: float = 4.0, short_s: float = 8.0, margin_m: float = 1.0,
                 bands: list[int] | None = None, variants: tuple[str, ...] = VARIANTS) -> None:
        ch = sim.channel
        p = ch.p
        self.block_s, self.dwell_s, self.variants = block_s, dwell_s, variants
        self.eval_blocks = max(round(eval_s / block_s), 1)
        self.start = sim.start_ts
        sim_idx = {b: i for i, b in enumerate(sim.band_ids)}
        self.band_ids = [b for b in sim.band_ids if bands is None or b in bands]
        sel = np.array([sim_idx[b] for b in self.band_ids], dtype=np.int64)
        self.rx_ids = list(sim.rx_ids)
        self.rx_index = {r: i for i, r in enumerate(self.rx_ids)}
        self.index = {b: i for i, b in enumerate(self.band_ids)}
        n_b, n_r = len(self.band_ids), len(self.rx_ids)
        alt = isinstance(ch, AltRadioChannel)
        var = p.shadowing_db**2
        self.s_slow = float(np.sqrt(var * p.slow_fraction))
        self.var_fast = float(var * (1.0 - p.slow_fraction)) + 1.0 / 12.0  # RSSI is reported rounded
        tau = 30.0 if alt else p.slow_tau_s
        self.z, self.log_prior, self.trans = _ar1_chain(float(np.exp(-block_s / tau)))
        floor = np.asarray(getattr(ch, "rx_floor", np.full(n_r, SENSITIVITY_DBM)), dtype=np.float64)
        knee = floor + 2.0 if alt else np.asarray(getattr(ch, "rx_knee", np.full(n_r, p.loss_knee_dbm)))
        self._v = MU1[:, None] + self.s_slow * self.z[None, :]  # (M, S) link mean incl. the slow state
        self._log_miss = self._miss_tables(floor, knee, p.base_loss, p.loss_width_db)  # (R, M, S)
        interval = sim.interval_s * np.asarray(getattr(ch, "interval_factor", np.ones(len(sim.band_ids) + 99)))
        self.n_sent = block_s / (interval[sel] + 0.005)  # adverts sent per block (+ BLE's 0-10 ms delay)
        self.windows = (short_s, dwell_s, dwell_s + 10.0, dwell_s + 20.0)
        self.n_blocks = round(max(self.windows) / block_s)
        ring = self.n_blocks + 3
        self._k = np.zeros((ring, n_b, n_r))
        self._sx = np.zeros((ring, n_b, n_r))
        self._slot_block = np.full(ring, -1, dtype=np.int64)
        self._emis: dict[int, tuple[NDArray[np.float32], F64]] = {}  # closed block -> (exp(E - m), m)
        self._closed = -1
        self._rx_pos, self._rx_gain, self._channel = ch.rx_pos, ch.rx_gain, ch
        self._exponent, self._dmin = p.path_loss_exponent, p.min_distance_m
        self._candidates(site, margin_m)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 16])
        true_power = band_power_dbm + ch.tx_power_err[sel]
        spread = ch.alt.power_error_db if alt else getattr(p, "band_power_uniform_db", None)
        self._var: dict[str, tuple[F64, F64, F64]] = {}  # variant -> (power estimate (B,), δ grid, log weights)
        for v in variants:
            if v == "true":
                self._var[v] = (true_power, np.zeros(1), np.zeros(1))
            elif v == "pm1":
                d = np.array([-1.0, 0.0, 1.0])
                self._var[v] = (true_power + rng.uniform(-1.0, 1.0, n_b), d, np.full(3, -np.log(3.0)))
            else:
                half = float(np.floor(spread)) if spread is not None else float(np.ceil(2.0 * p.band_power_sigma_db))
                d = np.arange(-half, half + 1e-9, 1.0)
                w = (np.full(len(d), 1.0) if spread is not None
                     else np.exp(-d**2 / (2 * max(p.band_power_sigma_db, 1e-3) ** 2)))
                self._var[v] = (np.full(n_b, float(band_power_dbm)), d, np.log(w / w.sum()))
        self.times: list[float] = []
        self._rows: dict[str, NDArray[np.int64]] = {}
        self.stats: dict[str, list[F64]] = {v: [] for v in variants}  # per evaluation: D per band
        self._short_hist: dict[str, list[F64]] = {v: [] for v in variants}

    def _miss_tables(self, floor: F64, knee: F64, base_loss: float, width: float) -> F64:
        """log P(not heard | link mean v) per receiver on the (M, S) grid, fast fading integrated out."""
        sf = np.sqrt(self.var_fast)
        r = self._v[None, :, :, None] + sf * _GH_X[None, None, None, :]  # (1, M, S, F)
        p_ok = (1.0 - base_loss) / (1.0 + np.exp(-(r - knee[:, None, None, None]) / width))
        p_ok = np.where(r >= floor[:, None, None, None], p_ok, 0.0)
        q = (p_ok * _GH_W).sum(axis=3)
        return np.asarray(np.log(np.clip(1.0 - q, 1e-300, 1.0)))

    def _base(self, pts: F64) -> F64:
        """(..., R) link mean minus the band power at points (..., 2): true receiver gain and path loss."""
        d = np.maximum(np.linalg.norm(pts[..., None, :] - self._rx_pos, axis=-1), self._dmin)
        return np.asarray(self._rx_gain - 10.0 * self._exponent * np.log10(d) + mean_offset_db(self._channel, d))

    def _candidates(self, site: SiteConfig, margin_m: float) -> None:
        polys = {z.id: as_points(z.polygon) for z in site.zones}
        zmap = ZoneMap([ZoneShape(z.id, z.kind, as_points(z.polygon)) for z in site.zones])
        allowed_sets = {tuple(sorted(b.allowed_zones)) for b in site.bands}
        if len(allowed_sets) != 1:
            raise ValueError("ideal observer: one allowed-area set per site is supported")
        allowed = next(iter(allowed_sets))
        self._zmap, self._mask = zmap, np.array([z.id in allowed for z in site.zones], dtype=bool)
        self.margin_m = margin_m
        inside = sample_region([polys[z] for z in allowed], spacing=3.0, edge_spacing=1.5)
        lo_x, lo_y, hi_x, hi_y = zmap.bounds(pad=40.0)
        grid = grid_over((lo_x, lo_y, hi_x, hi_y), 5.0)
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        centre = np.array([(lo_x + hi_x) / 2, (lo_y + hi_y) / 2])
        far = np.concatenate([centre + r * np.stack([np.cos(angles), np.sin(angles)], axis=1)
                              for r in (80.0, 110.0, 150.0, 200.0, 300.0)])
        outside = np.concatenate([grid[self._out(grid) > margin_m], far])
        self.n_inside = len(inside)
        self.points = np.concatenate([inside, outside])
        self.base = self._base(self.points)  # (G, R)
        self._local = grid_over((-1.5, -1.5, 1.5, 1.5), 1.5)  # refinement round the best coarse points

    def _out(self, pts: F64) -> F64:
        return np.asarray(self._zmap.union_signed_distance(self._zmap.signed_distances(pts), self._mask))

    # -- data ---------------------------------------------------------------------------------------
    def observe(self, ts: float, rx: str, rssi: int, data: bytes) -> None:
        """One received advert (beacons, bands not observed and unknown receivers are ignored)."""
        i = self.index.get(int.from_bytes(data[1:5], "little"))
        r = self.rx_index.get(rx)
        if i is None or r is None:
            return
        block = int((ts - self.start) // self.block_s)
        slot = block % len(self._slot_block)
        if self._slot_block[slot] != block:
            self._slot_block[slot] = block
            self._k[slot] = 0.0
            self._sx[slot] = 0.0
        self._k[slot, i, r] += 1.0
        self._sx[slot, i, r] += rssi

    def tick(self, now: float) -> None:
        """Close the blocks that ended by `now`; evaluate every band every `eval_s`."""
        block = int((now - self.start) // self.block_s) - 1
        while self._closed < block:
            self._closed += 1
            self._emis[self._closed] = self._emission(self._closed)
            self._emis.pop(self._closed - self.n_blocks, None)
            if self._closed + 1 >= self.n_blocks and self._closed % self.eval_blocks == 0:
                self._evaluate(self.start + (self._closed + 1) * self.block_s)

    def _evaluate(self, t_end: float) -> None:
        self.times.append(t_end - self.start)
        ll = self._window_loglik(self._closed)  # (B, R, M, W)
        keep = round(self.dwell_s / (self.block_s * self.eval_blocks)) + 1
        for v in self.variants:
            glr = self._glr(ll, v)  # (B, W)
            hist = self._short_hist[v]
            hist.append(glr[:, 0])
            del hist[:-keep]
            short_held = np.min(np.stack(hist), axis=0) if len(hist) == keep else np.full(len(glr), -np.inf)
            self.stats[v].append(np.maximum(glr[:, 1:].max(axis=1), short_held))

    def _emission(self, block: int) -> tuple[NDArray[np.float32], F64]:
        """exp(E - m) and m of one block's emission log-likelihood over (μ, slow state), every link."""
        slot = block % len(self._slot_block)
        if self._slot_block[slot] == block:
            k, sx = self._k[slot], self._sx[slot]
        else:
            k = sx = np.zeros(self._k.shape[1:])
        v = self._v
        miss = np.clip(self.n_sent[:, None] - k, 0.0, None)  # (B, R)
        e = ((2.0 * sx[..., None, None] * v - k[..., None, None] * v**2) / (2.0 * self.var_fast)
             + miss[..., None, None] * self._log_miss[None, :, :, :])  # (B, R, M, S)
        m = e.max(axis=3, keepdims=True)
        return np.exp(e - m).astype(np.float32), m[..., 0]

    def _window_loglik(self, last: int) -> F64:
        """(B, R, M, W) log-likelihood over μ of every link for every window ending with block `last`."""
        want = {round(w / self.block_s): j for j, w in enumerate(self.windows)}
        n_b, n_r = self._k.shape[1:]
        n_m, n_s = self._v.shape
        out = np.empty((n_b, n_r, n_m, len(self.windows)))
        prior = np.exp(self.log_prior)
        trans_t = self.trans.T.astype(np.float32)
        g: NDArray[np.float32] | None = None
        scale = np.zeros((n_b, n_r, n_m))
        for back in range(1, self.n_blocks + 1):
            f, m = self._emis[last - back + 1]
            g = f.copy() if g is None else f * (g.reshape(-1, n_s) @ trans_t).reshape(f.shape)
            scale += m
            c = g.max(axis=3, keepdims=True)
            g /= c
            scale += np.log(c[..., 0])
            if back in want:
                out[..., want[back]] = scale + np.log(g.reshape(-1, n_s) @ prior).reshape(n_b, n_r, n_m)
        return out

    def _lookup(self, flat: F64, base: F64, shift: F64, n_r: int, n_m: int) -> F64:
        """Σ over links of the (B·R·M, W) table at link means `base` (B, P, R) + `shift` (B,), interpolated."""
        x = np.clip(base + shift[:, None, None] - MU1[0], 0.0, n_m - 1.001)
        i0 = x.astype(np.int64)
        fr = (x - i0)[..., None]
        rows = (np.arange(base.shape[0])[:, None, None] * n_r + np.arange(n_r)[None, None, :]) * n_m + i0
        return np.asarray((flat[rows] * (1.0 - fr) + flat[rows + 1] * fr).sum(axis=2))  # (B, P, W)

    def _coarse_rows(self, variant: str, n_m: int) -> NDArray[np.int64]:
        """(B, R, G) rows of the (B·R·M, W) table at every coarse candidate, per variant (fixed: cached)."""
        rows = self._rows.get(variant)
        if rows is None:
            power = self._var[variant][0]
            n_b, n_r = len(power), self.base.shape[1]
            i = np.clip(np.rint(power[:, None, None] + self.base[None] - MU1[0]), 0, n_m - 1).astype(np.int64)
            rows = (np.arange(n_b)[:, None, None] * n_r + np.arange(n_r)) * n_m + i
            rows = self._rows[variant] = np.ascontiguousarray(rows.transpose(0, 2, 1))  # (B, R, G): sum over R
        return rows

    def _lookup_w(self, ll: F64, base: F64, shift: F64) -> F64:
        """Σ over links at per-window points: `base` (B, W, P, R) looked up in window w's own table -> (B, W, P)."""
        n_b, n_r, n_m, n_w = ll.shape
        x = np.clip(base + shift[:, None, None, None] - MU1[0], 0.0, n_m - 1.001)
        i0 = x.astype(np.int64)
        fr = x - i0
        idx = ((np.arange(n_b)[:, None, None, None] * n_r + np.arange(n_r)[None, None, None, :]) * n_m + i0) * n_w
        idx += np.arange(n_w)[None, :, None, None]
        flat = ll.ravel()
        return np.asarray((flat[idx] * (1.0 - fr) + flat[idx + n_w] * fr).sum(axis=3))

    def _glr(self, ll: F64, variant: str, top: int = 4) -> F64:
        """(B, W) 2·(best outside − best inside) per band and window, gain per the variant (δ marginalised).

        Stage 1 scores every coarse candidate at the variant's power estimate (δ = 0); stage 2 takes
        each window's best `top` inside and outside candidates and a 1 m grid round the best of each
        side, and marginalises the band gain over δ there.
        """
        power, deltas, logw = self._var[variant]
        n_b, n_r, n_m, n_w = ll.shape
        flat = ll.reshape(n_b * n_r * n_m, n_w)
        coarse = flat[self._coarse_rows(variant, n_m)].sum(axis=1)  # (B, G, W), nearest 1 dB bin: ranking only
        ni = self.n_inside
        in_top = np.argsort(-coarse[:, :ni], axis=1)[:, :top]  # (B, top, W)
        out_top = ni + np.argsort(-coarse[:, ni:], axis=1)[:, :top]
        pts_in = self.points[in_top[:, 0]]  # (B, W, 2) best inside / outside per window
        pts_out = self.points[out_top[:, 0]]
        loc_in = pts_in[:, :, None, :] + self._local[None, None]  # (B, W, L, 2)
        loc_out = pts_out[:, :, None, :] + self._local[None, None]
        n_l = len(self._local)
        d_in = self._out(loc_in.reshape(-1, 2)).reshape(n_b, n_w, n_l)
        d_out = self._out(loc_out.reshape(-1, 2)).reshape(n_b, n_w, n_l)
        cand = np.concatenate([self.points[in_top.transpose(0, 2, 1)], loc_in,
                               self.points[out_top.transpose(0, 2, 1)], loc_out], axis=2)  # (B, W, P, 2)
        is_in = np.concatenate([np.ones((n_b, n_w, top), bool), d_in <= 0.0,
                                np.zeros((n_b, n_w, top), bool), np.zeros((n_b, n_w, n_l), bool)], axis=2)
        is_out = np.concatenate([np.zeros((n_b, n_w, top + n_l), bool), np.ones((n_b, n_w, top), bool),
                                 d_out > self.margin_m], axis=2)
        base = self._base(cand)  # (B, W, P, R)
        tot = _logsumexp([self._lookup_w(ll, base, power + d) + lw
                          for d, lw in zip(deltas.tolist(), logw.tolist(), strict=True)])  # (B, W, P)
        best_in = np.where(is_in, tot, -np.inf).max(axis=2)
        best_out = np.where(is_out, tot, -np.inf).max(axis=2)
        return np.asarray(2.0 * (best_out - best_in))

    # -- results ------------------------------------------------------------------------------------
    def series(self, variant: str, band_idx: int) -> tuple[F64, F64]:
        """(window end times since start, D) of one band."""
        t = np.asarray(self.times)
        d = np.asarray([s[band_idx] for s in self.stats[variant]]) if self.stats[variant] else np.zeros(0)
        return t, d

    def window_series(self, variant: str, band_idx: int, t0: float, t1: float) -> list[tuple[float, float]]:
        """(window end time, D) of a band for window ends in [t0, t1)."""
        t, d = self.series(variant, band_idx)
        sel = (t >= t0) & (t < t1)
        return list(zip(t[sel].tolist(), d[sel].tolist(), strict=True))


def _logsumexp(parts: list[F64]) -> F64:
    if len(parts) == 1:
        return parts[0]
    stack = np.stack(parts)
    mx = stack.max(axis=0)
    return np.asarray(mx + np.log(np.exp(stack - mx).sum(axis=0)))


def count_raises(series: list[list[tuple[float, float]]], thresholds: F64, refractory_s: float = 10.0) -> F64:
    """False raises at each threshold: exceedances after at least `refractory_s` below (per series)."""
    counts = np.zeros(len(thresholds))
    for s in series:
        if not s:
            continue
        t = np.array([x[0] for x in s])
        d = np.array([x[1] for x in s])
        above = d[None, :] >= thresholds[:, None]  # (C, T)
        for c in range(len(thresholds)):
            idx = np.nonzero(above[c])[0]
            if len(idx) == 0:
                continue
            gaps = np.diff(t[idx])
            counts[c] += 1 + int(np.sum(gaps > refractory_s))
    return counts


def calibrate_threshold(series: list[list[tuple[float, float]]], band_hours: float, budget: float) -> tuple[float, str]:
    """The smallest threshold whose false raises stay within `budget` per 100 band-hours.

    Measured where the null data resolve it (at least 3 raises allowed); otherwise the raise count is
    extrapolated along its exponential tail (log count linear in the threshold, fitted where at least
    3 raises were seen), which is how a χ²-like statistic's tail behaves.
    """
    allowed = budget * band_hours / 100.0
    grid = np.arange(0.0, 120.0, 0.5)
    counts = count_raises(series, grid)
    ok = np.nonzero(counts <= allowed)[0]
    if allowed >= 3.0 and len(ok):
        return float(grid[ok[0]]), f"measured ({int(counts[ok[0]])} raises allowed {allowed:.1f})"
    fit = (counts >= 3) & (counts <= max(30.0, counts.max() / 10))
    if fit.sum() >= 3:
        slope, icpt = np.polyfit(grid[fit], np.log(counts[fit]), 1)
        if slope < 0:
            thr = (np.log(max(allowed, 1e-9)) - icpt) / slope
            return float(max(thr, grid[ok[0]] if len(ok) else 0.0)), f"extrapolated (tail slope {slope:.2f}/unit)"
    return float(grid[ok[0]]) if len(ok) else float("inf"), "too few null data: first threshold with no raise"


def first_crossing(trace: list[tuple[float, float]], threshold: float) -> float | None:
    """Time of the first evaluation at or above the threshold, or None."""
    for t, d in trace:
        if d >= threshold:
            return t
    return None


def model_check(channel: Any, gain_db: float, power_dbm: float, distances: tuple[float, ...] = (5, 10, 20, 30, 40, 50),
                n: int = 3000, step_s: float = 10.0) -> list[tuple[float, float, float, float, float]]:
    """The channel's own samples against the ideal observer's model, one transmitter per distance.

    Adverts `step_s` apart (the slow shadowing decorrelates between them) from a transmitter `d` m from
    receiver 0. Per distance: (d, heard share sampled, heard share modelled, mean heard RSSI sampled,
    mean modelled). The model is the observer's: mean = power + gain − 10·n·log10(d), Gaussian
    shadowing of the total σ, receive probability (1 − base loss) / (1 + exp(−(x − knee) / width)),
    nothing below the receiver's floor, RSSI rounded.
    """
    p = channel.p
    alt = isinstance(channel, AltRadioChannel)
    floor = float(np.asarray(getattr(channel, "rx_floor", [SENSITIVITY_DBM]))[0])
    knee = floor + 2.0 if alt else float(np.asarray(getattr(channel, "rx_knee", [p.loss_knee_dbm]))[0])
    out = []
    k = len(distances)
    idx = np.arange(k, dtype=np.int64)
    dist = np.asarray(distances, dtype=np.float64)
    rng = np.random.default_rng(3)
    heard = np.zeros(k)
    total = np.zeros(k)
    for j in range(n):
        # A new bearing every advert: on the alt channel the shadow belongs to the place, so one spot
        # would sample one shadow; averaging over places is what the Gaussian model describes.
        ang = rng.uniform(0, 2 * np.pi, k)
        pos = channel.rx_pos[0] + dist[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        rssi, ok = channel.transmit(idx, np.full(k, j * step_s), np.full(k, power_dbm), pos)
        heard += ok[:, 0]
        total += np.where(ok[:, 0], np.round(rssi[:, 0]), 0.0)
    x = np.arange(-140.0, -20.0, 0.05)
    for i, d in enumerate(distances):
        mu = (power_dbm + channel.tx_power_err[i] + gain_db - 10.0 * p.path_loss_exponent * np.log10(max(d, 0.5))
              + float(mean_offset_db(channel, np.array([d]))[0]))
        dens = np.exp(-((x - mu) ** 2) / (2 * p.shadowing_db**2))
        dens /= dens.sum()
        p_ok = np.where(x >= floor, (1.0 - p.base_loss) / (1.0 + np.exp(-(x - knee) / p.loss_width_db)), 0.0)
        q = float((dens * p_ok).sum())
        mean = float((dens * p_ok * x).sum() / max(q, 1e-12))
        out.append((float(d), float(heard[i] / n), q, float(total[i] / max(heard[i], 1.0)), mean))
    return out
