"""The ideal observer's likelihood of one link's window of adverts, exact to each simulated radio (issue 16).

For every link (band × receiver) and every window ending now, `window_tables` gives the log-likelihood of
what the receiver heard and did not hear, as a function of the link mean m (dBm, on the grid `V`: band
power + receiver gain − 10·n·log10(d), the true values) and, on the alt radio, of the Rician K bin (K
falls with the distance). A candidate position then only looks its m up. Missed adverts are evidence:
every advert the band sent and a receiver did not hear enters through that receiver's hearing curve.

* **Default radio** (`edge.sim.radio`): RSSI = m + slow + fast; slow = per-link AR(1) (σ_slow, τ),
  fast = per-packet Gaussian (σ_fast, + 1/12 for the rounding); heard with (1 − base loss) /
  (1 + exp(−(RSSI − knee) / width)), never below the receiver's floor. The slow part is a hidden
  Markov chain over `block_s` blocks (held within a block), so correlated adverts count once.
* **Alt radio** (`edge.sim.radio_alt`): RSSI = m + s + fading, s = the place's spatial shadow (σ
  `spatial_db`, fixed while the position is held) minus the body loss (0…`body_db`, the heading
  uniform), integrated over its exact prior; fading = Rician power in dB with K = K0·exp(−d / scale),
  its exact per-packet distribution (per 1 dB bin, as RSSI is rounded); loss = the Gilbert–Elliott
  burst chain per link (exact, per advert) times the receiver's own hearing curve and floor. The
  heard values and the hear/miss pattern factorise given m + s: the pattern's likelihood depends on
  m + s only through the hearing probability Q, so the burst chain runs once per link on a grid of Q.
  Approximations (documented): the body loss is per link and fixed in the window (the true one is
  shared by the receivers through the heading and changes when the wearer turns).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.sim.radio import SENSITIVITY_DBM, RadioChannel
from edge.sim.radio_alt import AltRadioChannel

F64 = NDArray[np.float64]
V = np.arange(-128.0, -27.0, 1.0)  # link mean grid (dBm)
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(20)
_GH_W = _GH_W / _GH_W.sum()
K_EDGES_M = np.array([2.5, 5.0, 8.5, 14.0])  # distance bins of the alt radio's Rician K
K_MID_M = np.array([1.2, 3.7, 6.7, 11.0, 22.0])
_LOGIT_Q = np.linspace(-11.0, 9.0, 41)  # hearing probability grid of the burst chain (logit)


def _logsumexp(a: F64, axis: int) -> F64:
    m = a.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.asarray(np.squeeze(m, axis) + np.log(np.exp(a - m).sum(axis=axis)))


class Window:
    """The adverts of B bands in the window (t_end − W_max, t_end], aligned at the end (newest last).

    heard (B, T, R) bool, x (B, T, R) rounded RSSI, age (B, T) = t_end − send time, valid (B, T).
    """

    def __init__(self, heard: NDArray[np.bool_], x: F64, age: F64, valid: NDArray[np.bool_]) -> None:
        self.heard, self.x, self.age, self.valid = heard & valid[..., None], x, age, valid


class DefaultModel:
    """The default channel's exact model (slow AR(1) as a chain over blocks)."""

    n_k = 1

    def __init__(self, ch: RadioChannel, block_s: float = 2.0, nodes: int = 7) -> None:
        p = ch.p
        var = p.shadowing_db**2
        self.s_slow = math.sqrt(var * p.slow_fraction)
        self.var_fast = var * (1.0 - p.slow_fraction) + 1.0 / 12.0
        self.block_s = block_s
        self.z = np.linspace(-2.5, 2.5, nodes)
        prior = np.exp(-self.z**2 / 2)
        self.prior = prior / prior.sum()
        rho = math.exp(-block_s / p.slow_tau_s)
        sd = max(math.sqrt(1.0 - rho**2), 1e-3)
        a = np.exp(-((self.z[None, :] - rho * self.z[:, None]) / sd) ** 2 / 2)
        self.trans = a / a.sum(axis=1, keepdims=True)
        u = V[:, None] + self.s_slow * self.z[None, :]  # (V, S)
        r = u[None, :, :, None] + math.sqrt(self.var_fast) * _GH_X  # (1, V, S, F)
        knee = np.asarray(ch.rx_knee)[:, None, None, None]
        floor = np.asarray(ch.rx_floor)[:, None, None, None]
        p_ok = (1.0 - p.base_loss) / (1.0 + np.exp(-(r - knee) / p.loss_width_db))
        q = (np.where(r >= floor, p_ok, 0.0) * _GH_W).sum(axis=3)
        self.log_miss = np.log(np.clip(1.0 - q, 1e-300, 1.0))  # (R, V, S)
        self.floor, self.knee, self.width = np.asarray(ch.rx_floor), np.asarray(ch.rx_knee), p.loss_width_db

    def k_index(self, d: F64) -> NDArray[np.int64]:
        return np.zeros(d.shape, dtype=np.int64)

    def tables(self, w: Window, windows_s: tuple[float, ...]) -> F64:
        """(B, R, nW, V, 1) log-likelihood of each link's adverts in each window, over the link mean."""
        n_blk = round(max(windows_s) / self.block_s)
        blk = np.floor(w.age / self.block_s).astype(np.int64)
        onehot = ((blk[..., None] == np.arange(n_blk)) & w.valid[..., None]).astype(np.float64)  # (B, T, J)
        h = w.heard.astype(np.float64)
        k = np.einsum("btr,btj->brj", h, onehot)
        sx = np.einsum("btr,btj->brj", h * w.x, onehot)
        sxx = np.einsum("btr,btj->brj", h * w.x**2, onehot)
        n = onehot.sum(axis=1)[:, None, :]  # (B, 1, J)
        u = V[:, None] + self.s_slow * self.z[None, :]  # (V, S)
        kk, s1, s2 = (a[..., None, None] for a in (k, sx, sxx))
        e = (-(kk * u**2 - 2.0 * s1 * u + s2) / (2.0 * self.var_fast) - kk * 0.5 * math.log(2 * math.pi * self.var_fast)
             + (n - k)[..., None, None] * self.log_miss[None, :, None])  # (B, R, J, V, S)
        b, r = k.shape[:2]
        want = {round(x / self.block_s): i for i, x in enumerate(windows_s)}
        out = np.empty((b, r, len(windows_s), len(V), 1))
        g = np.ones((b, r, len(V), len(self.z)))
        scale = np.zeros((b, r, len(V)))
        for j in range(n_blk):
            g = (g @ self.trans.T) if j else g
            m = e[:, :, j].max(axis=-1, keepdims=True)
            g = g * np.exp(e[:, :, j] - m)
            c = g.max(axis=-1, keepdims=True)
            g = g / c
            scale += m[..., 0] + np.log(c[..., 0])
            if j + 1 in want:
                out[:, :, want[j + 1], :, 0] = scale + np.log(g @ self.prior)
        return out


def rician_log_pmf(k_factor: float, lo: int = -70, hi: int = 25) -> tuple[F64, int]:
    """log P(fading in dB rounds to d) for integer d in [lo, hi] (unit mean power, as `_fading` draws)."""
    y = np.arange(lo - 0.5, hi + 0.5, 0.005)
    pw = 10.0 ** (y / 10.0)
    arg = 2.0 * np.sqrt(k_factor * (k_factor + 1.0) * pw)
    # Rician power density (K+1)·exp(−K − (K+1)P)·I0(2·sqrt(K(K+1)P)), I0 scaled to avoid overflow.
    dens = (k_factor + 1.0) * np.exp(-k_factor - (k_factor + 1.0) * pw + arg) * np.i0(arg) * np.exp(-arg)
    dens = dens * pw * math.log(10.0) / 10.0  # per dB
    mass = np.add.reduceat(dens * 0.005, np.arange(0, len(y), 200))[: hi - lo + 1]
    mass[0] += max(1.0 - mass.sum(), 0.0)  # the clip at −60 dB and the far tail
    return np.log(np.clip(mass / mass.sum(), 1e-12, None)), lo


class AltModel:
    """The alt channel's exact per-packet model (see the module docstring)."""

    def __init__(self, ch: AltRadioChannel, s_step: float = 2.0) -> None:
        a = ch.alt
        self.alt = a
        k_fac = a.rician_k_near * np.exp(-K_MID_M / a.rician_k_scale_m)
        self.n_k = len(k_fac)
        pmfs = [rician_log_pmf(float(k)) for k in k_fac]
        self.f_lo = pmfs[0][1]
        self.log_f = np.stack([p for p, _ in pmfs])  # (K, D)
        # Hearing probability Q_{r,K}(v) with the fading integrated: p_ok = sigmoid((x − floor − 2)/w), x ≥ floor.
        d = np.arange(self.log_f.shape[1]) + self.f_lo
        x = V[None, :, None, None] + d[None, None, None, :]  # (1, V, 1, D)
        self.floor = np.asarray(ch.rx_floor)
        floor = self.floor[:, None, None, None]
        p_ok = np.where(x >= floor, 1.0 / (1.0 + np.exp(-(x - floor - 2.0) / a.floor_width_db)), 0.0)
        q = (p_ok * np.exp(self.log_f)[None, None, :, :]).sum(axis=3)  # (R, V, K)
        lq = np.log(np.clip(q, 1e-12, 1 - 1e-9)) - np.log(np.clip(1.0 - q, 1e-12, None))
        pos = np.clip((lq - _LOGIT_Q[0]) / (_LOGIT_Q[1] - _LOGIT_Q[0]), 0.0, len(_LOGIT_Q) - 1.001)
        self.q_i0 = pos.astype(np.int64)
        self.q_fr = pos - self.q_i0
        self.q_grid = 1.0 / (1.0 + np.exp(-_LOGIT_Q))
        self.keep = np.array([1.0 - a.loss_good, 1.0 - a.loss_bad])  # heard share per burst state
        self.bad_share = a.bad_share
        # Per-link static offset: spatial shadow N(0, σ²) minus the body loss body·(1 − cos U)/2, U uniform.
        sig = max(a.spatial_db, 1e-3)
        lo, hi = -math.ceil(3.0 * sig + a.body_db), math.ceil(3.0 * sig)
        self.s_nodes = np.arange(lo, hi + 1e-9, s_step)
        u = np.linspace(0, 2 * math.pi, 720, endpoint=False)
        body = a.body_db * (1.0 - np.cos(u)) / 2.0
        dens = np.exp(-((self.s_nodes[:, None] + body[None, :]) ** 2) / (2 * sig**2)).mean(axis=1)
        self.log_ps = np.log(dens / dens.sum())
        # out(m) = Σ_s p(s)·exp(T(m + s)): column m of s_conv holds p(s) at row m + s (clamped at the ends).
        n_v = len(V)
        self.s_conv = np.zeros((n_v, n_v))
        for sv, lw in zip(self.s_nodes.tolist(), self.log_ps.tolist(), strict=True):
            rows = np.clip(np.arange(n_v) + round(sv), 0, n_v - 1)
            np.add.at(self.s_conv, (rows, np.arange(n_v)), math.exp(lw))
        self.log_p0 = float(self.log_ps[np.argmin(np.abs(self.s_nodes))])
        # Σ over heard adverts of log f_K(x − v) = histogram of x (integer dBm) @ this (X, V·K) matrix.
        self.xs = np.arange(-135, -9)
        diff = (self.xs[:, None] - V[None, :] - self.f_lo).astype(np.int64)  # (X, V)
        ok = (diff >= 0) & (diff < self.log_f.shape[1])
        mats = np.where(ok[None], self.log_f[:, np.clip(diff, 0, self.log_f.shape[1] - 1)], -27.6)  # (K, X, V)
        self.heard_mats = np.ascontiguousarray(mats.transpose(1, 2, 0).reshape(len(self.xs), -1))  # (X, V·K)

    def k_index(self, d: F64) -> NDArray[np.int64]:
        return np.asarray(np.searchsorted(K_EDGES_M, d), dtype=np.int64)

    def _pattern(self, w: Window, rx_heard: NDArray[np.bool_], counts: NDArray[np.int64]) -> F64:
        """(B, R, nW, nQ) log-likelihood of the hear/miss pattern under the burst chain, per hearing prob."""
        b, t, r = rx_heard.shape
        a = self.alt
        g = np.ones((b, r, len(self.q_grid), 2))
        scale = np.zeros((b, r, len(self.q_grid)))
        out = np.zeros((b, r, counts.shape[1], len(self.q_grid)))
        miss_e = 1.0 - self.keep[None, :] * self.q_grid[:, None]  # (nQ, 2)
        valid = w.valid.astype(np.float64)
        for j in range(t):
            i = t - 1 - j
            if j:
                # Transition to the next advert (dt apart); an absent advert (padding) leaves g as it is.
                dt = np.clip(w.age[:, i] - w.age[:, i + 1], 0.0, 60.0) * valid[:, i + 1]
                leave = (1.0 - np.exp(-dt / a.burst_s))[:, None, None]
                enter = (1.0 - np.exp(-dt * a.bad_share / (a.burst_s * max(1.0 - a.bad_share, 1e-3))))[:, None, None]
                g0, g1 = g[..., 0], g[..., 1]
                g = np.stack([g0 + enter * (g1 - g0), g1 + leave * (g0 - g1)], axis=-1)
            hv = rx_heard[:, i, :, None, None]
            e = np.where(hv, self.keep, miss_e)  # (B, R, nQ, 2)
            vi = valid[:, i][:, None, None, None]
            g = g * (1.0 + vi * (e - 1.0))
            c = g.max(axis=-1, keepdims=True)
            g = g / c
            scale += np.log(c[..., 0])
            done = counts == j + 1  # (B, nW)
            if done.any():
                bb, ww = np.nonzero(done)
                out[bb, :, ww] = (scale[bb] + np.log(g[bb, ..., 0] * (1 - self.bad_share)
                                                     + g[bb, ..., 1] * self.bad_share))
        return out

    def tables(self, w: Window, windows_s: tuple[float, ...]) -> F64:
        """(B, R, nW, V, K) log-likelihood of each link's adverts in each window, over the link mean and K bin."""
        in_w = (w.age[:, None, :] < np.asarray(windows_s)[None, :, None]) & w.valid[:, None, :]  # (B, nW, T)
        counts = in_w.sum(axis=2)
        pat = self._pattern(w, w.heard, counts)  # (B, R, nW, nQ)
        b, r, n_w, _ = pat.shape
        idx = (self.q_i0 * 1).reshape(1, r, 1, -1)
        fr = self.q_fr.reshape(1, r, 1, -1)
        lo = np.take_along_axis(pat, np.broadcast_to(idx, (b, r, n_w, idx.shape[-1])), axis=3)
        hi = np.take_along_axis(pat, np.broadcast_to(idx + 1, (b, r, n_w, idx.shape[-1])), axis=3)
        lp = (lo * (1 - fr) + hi * fr).reshape(b, r, n_w, len(V), self.n_k)
        # Heard values: Σ log f_K(x − v) via a histogram of x per link and window.
        xs = self.xs
        xi = np.clip(np.rint(w.x).astype(np.int64) - xs[0], 0, len(xs) - 1)
        n_b, n_r, n_w, n_x = w.heard.shape[0], w.heard.shape[2], len(windows_s), len(xs)
        bb, tt, rr = np.nonzero(w.heard)
        flat = []
        for k in range(n_w):
            sel = in_w[bb, k, tt]
            flat.append(((bb[sel] * n_r + rr[sel]) * n_w + k) * n_x + xi[bb[sel], tt[sel], rr[sel]])
        hist = np.bincount(np.concatenate(flat), minlength=n_b * n_r * n_w * n_x).astype(np.float64)
        hist = hist.reshape(n_b, n_r, n_w, n_x)
        heard = (hist.reshape(-1, n_x) @ self.heard_mats).reshape(n_b, n_r, n_w, len(V), self.n_k)
        tab = heard + lp
        # The static offset s (spatial shadow − body) is fixed in the window: integrate it over its prior,
        # a convolution along the mean axis (in the linear domain, each row scaled by its maximum).
        tv = np.moveaxis(tab, 3, -1)  # (B, R, nW, K, V)
        mx = tv.max(axis=-1, keepdims=True)
        conv = np.exp(tv - mx).reshape(-1, len(V)) @ self.s_conv
        with np.errstate(divide="ignore"):
            out = np.log(conv).reshape(tv.shape) + mx
        # Far below the maximum (exp underflows) the s = 0 term is the bound we keep.
        out = np.where(np.isfinite(out), out, tv + self.log_p0)
        return np.asarray(np.moveaxis(out, -1, 3))


def link_model(ch: Any) -> DefaultModel | AltModel:
    return AltModel(ch) if isinstance(ch, AltRadioChannel) else DefaultModel(ch)


__all__ = ["SENSITIVITY_DBM", "AltModel", "DefaultModel", "V", "Window", "link_model", "rician_log_pmf"]
