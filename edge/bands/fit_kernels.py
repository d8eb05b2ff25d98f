"""Compiled per-tick kernels: window filter, link preparation, Gauss-Newton fit, breach likelihood test.

Each is a loop-per-band transcription of the numpy code it replaces (`rssi_filter.robust_median`,
the start of `locate.locate`, `locate._wls`, and `LinkModel.cost` + min over candidates): the same
formulas in the same order per band, so results agree to floating-point rounding (docs/bands.md,
"Compiled tick kernels", says where and why they may differ). A tick's arrays are small (500 × 8–16), so
numpy spent its time in per-call overhead, not arithmetic; one compiled call per stage removes it.
The numpy versions stay as the reference (`LocateParams.compiled=False`) and tests compare both.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
from numpy.typing import NDArray

from edge.bands.jit import kernel

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]
ZERO = cast(int, np.int64(0))  # counters start as int64, not the literal 0 (one specialisation per helper)


# -- robust window filter ---------------------------------------------------------------------
@kernel
def _quantile(s: F64, n: int, q: float) -> float:
    """Linear-interpolated q-quantile of the first n sorted values (as `_quantile_sorted`)."""
    if n <= 0:
        return math.nan
    pos = max(n - 1, 0) * q
    lo = math.floor(pos)
    hi = min(lo + 1, max(n - 1, 0))
    frac = pos - lo
    a = s[lo]
    return a + (s[hi] - a) * frac


@kernel
def window_filter(rssi: F64, ts: F64, bands: I64, now: float, max_age_s: float,
                  med: F64, cnt: F64, spread: F64) -> None:
    """Per band × receiver of `bands`: median after 1.5·IQR trimming, kept count, IQR/1.349 (into med/cnt/spread)."""
    n_rx, window = rssi.shape[1], rssi.shape[2]
    s = np.empty(window)
    kept = np.empty(window)
    oldest = now - max_age_s
    for k in range(bands.shape[0]):
        b = bands[k]
        for r in range(n_rx):
            n = ZERO  # not the literal 0: that would compile a second specialisation of _quantile
            for w in range(window):
                v = rssi[b, r, w]
                if ts[b, r, w] > oldest and v == v:
                    j = n  # insertion sort: at most `window` values
                    while j > 0 and s[j - 1] > v:
                        s[j] = s[j - 1]
                        j -= 1
                    s[j] = v
                    n += 1
            if n == 0:
                med[k, r], cnt[k, r], spread[k, r] = math.nan, 0.0, 0.0
                continue
            q1 = _quantile(s, n, 0.25)
            q3 = _quantile(s, n, 0.75)
            iqr = q3 - q1
            lo_lim, hi_lim = q1 - 1.5 * iqr, q3 + 1.5 * iqr
            nk = ZERO
            for i in range(n):
                if n < 4 or (lo_lim <= s[i] <= hi_lim):
                    kept[nk] = s[i]
                    nk += 1
            med[k, r] = _quantile(kept, nk, 0.5)
            cnt[k, r] = nk
            spread[k, r] = iqr / 1.349 if nk >= 3 else 0.0


# -- link preparation (locate's numpy preamble) ----------------------------------------------
@kernel
def _norm_ppf(u: float) -> float:
    """As `locate._norm_ppf` (Acklam-type rational approximation)."""
    u = min(max(u, 1e-6), 1 - 1e-6)
    t = math.sqrt(-2.0 * math.log(min(u, 1.0 - u)))
    z = t - (2.515517 + 0.802853 * t + 0.010328 * t**2) / (1.0 + 1.432788 * t + 0.189269 * t**2 + 0.001308 * t**3)
    return -z if u < 0.5 else z


@kernel
def prepare_links(rssi: F64, n: F64, spread: F64, power: F64, rx_pos: F64, extra_var: F64, shadowing: float,
                  slow_floor: float, model_error: float, exponent: float, max_err: float,
                  obs: F64, heard: B, sigma: F64, dist: F64, xy: F64, err: F64) -> None:
    """`locate` up to the fit: truncation correction, link σ, distances and the proximity estimate per band."""
    n_b, n_rx = rssi.shape
    # Unheard links (n = 0) all get q = 0.02 and σ_f = 0.7·shadowing: one ppf for all of them.
    ppf_unheard = _norm_ppf(1.0 - 0.02 / 2.0)
    for b in range(n_b):
        dist_unheard = 10.0 ** ((power[b] - -200.0) / (10.0 * exponent))
        k_max = 0.0
        for r in range(n_rx):
            if rssi[b, r] == rssi[b, r]:
                k_max = max(k_max, n[b, r])
        k_max = max(k_max, 1.0)
        best = 0
        for r in range(n_rx):
            q = min(max(n[b, r] / k_max, 0.02), 1.0)
            sigma_f = min(max(spread[b, r] * 1.3, 1.0), shadowing) if n[b, r] >= 4 else 0.7 * shadowing
            if q >= 0.4:
                shift = 0.0
            elif n[b, r] == 0.0:
                shift = sigma_f * ppf_unheard
            else:
                shift = sigma_f * _norm_ppf(1.0 - q / 2.0)
            fast2 = max(spread[b, r] ** 2, 1.0)
            slow2 = max(shadowing**2 - fast2, slow_floor**2)
            ss = math.sqrt(slow2 + fast2 / max(n[b, r], 1.0) + model_error**2)
            sigma[b, r] = math.sqrt(ss**2 + shift**2 + max(extra_var[r], 0.0))
            h = rssi[b, r] == rssi[b, r]
            heard[b, r] = h
            obs[b, r] = rssi[b, r] - shift if h else -200.0
            dist[b, r] = 10.0 ** ((power[b] - obs[b, r]) / (10.0 * exponent)) if h else dist_unheard
            if obs[b, r] > obs[b, best]:
                best = r
        xy[b, 0], xy[b, 1] = rx_pos[best, 0], rx_pos[best, 1]
        d_up = dist[b, best] * 10.0 ** (2.0 * sigma[b, best] / (10.0 * exponent))
        err[b] = min(max(d_up, 2.0), max_err)


# -- Gauss-Newton fit -------------------------------------------------------------------------
@kernel
def _select_links(x: float, y: float, obs: F64, heard: B, censor: B, rx_pos: F64, m: int, links: I64,
                  key: F64) -> int:
    """`_compact`: the m smallest keys (heard strongest first, then nearest silent live), ties by index."""
    n_rx = obs.shape[0]
    if n_rx <= m:
        for r in range(n_rx):
            links[r] = r
        return n_rx
    for r in range(n_rx):
        if heard[r]:
            key[r] = -1e6 - obs[r]
        elif censor[r]:
            key[r] = math.sqrt((x - rx_pos[r, 0]) ** 2 + (y - rx_pos[r, 1]) ** 2)
        else:
            key[r] = math.inf
    for i in range(m):
        best = -1
        for r in range(n_rx):
            if key[r] != -math.inf and (best < 0 or key[r] < key[best]):
                best = r
        key[best] = -math.inf  # taken (real keys are finite or +inf)
        links[i] = best
    return m


@kernel
def _gather(b: int, nl: int, links: I64, rx_pos: F64, obs: F64, heard: B, censor: B, sigma: F64, lk: F64) -> None:
    """Band b's selected links into lk (5, nl): receiver x, y, observed RSSI, σ, kind (1 heard, 2 silent live, 0)."""
    for j in range(nl):
        r = links[j]
        lk[0, j], lk[1, j], lk[2, j], lk[3, j] = rx_pos[r, 0], rx_pos[r, 1], obs[b, r], sigma[b, r]
        lk[4, j] = 1.0 if heard[b, r] else (2.0 if censor[b, r] else 0.0)


@kernel
def _eval_links(x: float, y: float, nl: int, lk: F64, power: float, k: float, min_d2: float, thr: float,
                cs: float, res: F64) -> float:
    """Normalised residuals and their gradient (as `locate._residuals`) of the gathered links at (x, y) into
    res (3, nl); returns Σ r²."""
    total = 0.0
    for j in range(nl):
        dx, dy = x - lk[0, j], y - lk[1, j]
        d2 = max(dx * dx + dy * dy, min_d2)
        model = power - 0.5 * k * math.log(d2) / 1.0
        gk = k / d2
        kind = lk[4, j]
        r = j0 = j1 = 0.0
        if kind == 1.0:
            s = lk[3, j]
            r, j0, j1 = (lk[2, j] - model) / s, gk * dx / s, gk * dy / s
        elif kind == 2.0:
            excess = model - thr
            if excess > 0:
                r, j0, j1 = excess / cs, -(gk * dx) / cs, -(gk * dy) / cs
        res[0, j], res[1, j], res[2, j] = r, j0, j1
        total += r * r
    return total


@kernel
def _gn_step(nl: int, res: F64, max_step: float) -> tuple[float, float, float]:
    """Damped Gauss-Newton step from residuals/Jacobian res (3, nl), clamped to max_step; returns (dx, dy, |step|)."""
    a00 = a01 = a11 = g0 = g1 = 0.0
    for j in range(nl):
        r, j0, j1 = res[0, j], res[1, j], res[2, j]
        a00 += j0 * j0
        a01 += j0 * j1
        a11 += j1 * j1
        g0 += j0 * r
        g1 += j1 * r
    a00 += 1e-3
    a11 += 1e-3
    det = a00 * a11 - a01 * a01
    s0 = -(a11 * g0 - a01 * g1) / det
    s1 = -(a00 * g1 - a01 * g0) / det
    norm = math.sqrt(s0 * s0 + s1 * s1)
    f = min(1.0, max_step / max(norm, 1e-9))
    return s0 * f, s1 * f, norm


@kernel
def fit_positions(rows: I64, obs: F64, heard: B, censor: B, sigma: F64, dist: F64, power: F64, rx_pos: F64,
                  start: F64, k: float, min_d2: float, thr: float, cs: float, max_links: int, iterations: int,
                  max_step: float, min_err: float, max_err: float, xy: F64, err: F64, scale: F64) -> None:
    """`_wls` for bands `rows`: centroid or warm start, damped Gauss-Newton, error radius (into xy/err/scale)."""
    n_rx = obs.shape[1]
    links = np.empty(n_rx, dtype=np.int64)
    key = np.empty(n_rx)
    res = np.empty((3, n_rx))
    res_warm = np.empty((3, n_rx))
    lk = np.empty((5, n_rx))
    for i in range(rows.shape[0]):
        b = rows[i]
        ob, hb, cb, pw = obs[b], heard[b], censor[b], power[b]
        sw = sx = sy = 0.0
        for r in range(n_rx):
            if hb[r]:
                w = 1.0 / max(dist[b, r], 1.0) ** 2
                sw += w
                sx += w * rx_pos[r, 0]
                sy += w * rx_pos[r, 1]
        x, y = sx / sw, sy / sw
        nl = _select_links(x, y, ob, hb, cb, rx_pos, max_links, links, key)
        _gather(b, nl, links, rx_pos, obs, heard, censor, sigma, lk)
        # The residuals at the starting point are also the first iteration's: evaluated once.
        c0 = _eval_links(x, y, nl, lk, pw, k, min_d2, thr, cs, res)
        if not math.isnan(start[b, 0]):
            c1 = _eval_links(start[b, 0], start[b, 1], nl, lk, pw, k, min_d2, thr, cs, res_warm)
            if c1 < c0:
                x, y = start[b, 0], start[b, 1]
                for j in range(nl):
                    res[0, j], res[1, j], res[2, j] = res_warm[0, j], res_warm[1, j], res_warm[2, j]
        moved = False
        for it in range(iterations):
            if it > 0:
                _eval_links(x, y, nl, lk, pw, k, min_d2, thr, cs, res)
            dx, dy, norm = _gn_step(nl, res, max_step)
            x += dx
            y += dy
            moved = True
            if norm < 0.05:
                break
        if moved:
            _eval_links(x, y, nl, lk, pw, k, min_d2, thr, cs, res)
        a00 = a01 = a11 = chi2 = 0.0
        m = 0
        for j in range(nl):
            j0, j1 = res[1, j], res[2, j]
            a00 += j0 * j0
            a01 += j0 * j1
            a11 += j1 * j1
            if lk[4, j] == 1.0:
                chi2 += res[0, j] * res[0, j]
                m += 1
        a00 += 1e-6
        a11 += 1e-6
        det = a00 * a11 - a01 * a01
        trace = (a00 + a11) / det  # trace of the 2 × 2 inverse
        sc = max(1.0, chi2 / max(m - 2, 1))
        xy[b, 0], xy[b, 1] = x, y
        err[b] = min(max(math.sqrt(max(trace, 0.0) * sc), min_err), max_err)
        scale[b] = sc


# -- likelihood (breach) test -----------------------------------------------------------------
@kernel
def _min_cost(hl: F64, n_pts: int, ob: F64, inv_s: F64, power: float, k: float, thr: float, cs: float,
              heard_idx: I64, nh: int, cens_idx: I64, nc: int) -> float:
    """min over candidate rows of Σ r² (heard links first; a point is dropped once it cannot win)."""
    best = math.inf
    for g in range(n_pts):
        total = 0.0
        for i in range(nh):
            r = heard_idx[i]
            v = (ob[r] - (power - k * hl[g, r])) * inv_s[r]
            total += v * v
        if total >= best:
            continue
        for i in range(nc):
            r = cens_idx[i]
            v = max((power - k * hl[g, r]) - thr, 0.0) / cs
            total += v * v
            if total >= best:
                break
        best = min(best, total)
    return best


@kernel
def _min_cost_local(cx: float, cy: float, offsets: F64, rx_pos: F64, min_d2: float, ob: F64, inv_s: F64,
                    power: float, k: float, thr: float, cs: float, heard_idx: I64, nh: int, cens_idx: I64,
                    nc: int) -> float:
    """`_min_cost` over (cx, cy) + offsets, ½·ln(d²) computed as `half_log_d2` does, only for links it needs."""
    best = math.inf
    n_off = offsets.shape[0]
    for o in range(n_off):
        g = (o + n_off // 2) % n_off  # the estimate itself (centre offset) first: a tight bound early
        px, py = cx + offsets[g, 0], cy + offsets[g, 1]
        total = 0.0
        for i in range(nh):
            r = heard_idx[i]
            dx, dy = px - rx_pos[r, 0], py - rx_pos[r, 1]
            v = (ob[r] - (power - k * (0.5 * math.log(max(dx * dx + dy * dy, min_d2))))) * inv_s[r]
            total += v * v
        if total >= best:
            continue
        for i in range(nc):
            r = cens_idx[i]
            dx, dy = px - rx_pos[r, 0], py - rx_pos[r, 1]
            v = max((power - k * (0.5 * math.log(max(dx * dx + dy * dy, min_d2)))) - thr, 0.0) / cs
            total += v * v
            if total >= best:
                break
        best = min(best, total)
    return best


@kernel
def breach_evidence(rows: I64, xy: F64, offsets: F64, rx_pos: F64, min_d2: float, obs: F64, heard: B,
                    censor: B, sigma: F64, power: F64, scale: F64, k: float, thr: float, cs: float,
                    hl_sets: F64, set_start: I64, set_stop: I64, set_of_row: I64, out: F64) -> None:
    """Δχ² per row: best cost inside its candidate set minus best near its estimate, clipped at 0 (into out)."""
    n_rx = obs.shape[1]
    heard_idx = np.empty(n_rx, dtype=np.int64)
    cens_idx = np.empty(n_rx, dtype=np.int64)
    inv_s = np.empty(n_rx)
    for m in range(rows.shape[0]):
        b = rows[m]
        ob, hb, cb = obs[b], heard[b], censor[b]
        nh, nc = ZERO, ZERO
        for r in range(n_rx):
            inv_s[r] = 1.0 / sigma[b, r]
            if hb[r]:
                heard_idx[nh] = r
                nh += 1
            elif cb[r]:
                cens_idx[nc] = r
                nc += 1
        anywhere = _min_cost_local(xy[b, 0], xy[b, 1], offsets, rx_pos, min_d2, ob, inv_s, power[b], k, thr, cs,
                                   heard_idx, nh, cens_idx, nc)
        s = set_of_row[m]
        pts = hl_sets[set_start[s]:set_stop[s]]
        inside = _min_cost(pts, pts.shape[0], ob, inv_s, power[b], k, thr, cs, heard_idx, nh, cens_idx, nc)
        out[m] = max(inside / scale[b] - anywhere / scale[b], 0.0)
