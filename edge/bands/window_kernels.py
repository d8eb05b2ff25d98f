"""Compiled kernel of the window breach test (`edge.bands.window_test`): one call per tick.

Per band and window the data are, per receiver r, the number of adverts heard k_r of the N sent
and their mean corrected level x̄_r. With the slow shadowing s_r held over the window (integrated
out with Gauss-Hermite nodes) and the fast part per packet, the log-likelihood of a mean level μ
at that receiver is

    T_r(μ) = log E_s[ exp(-k (x̄ - μ - s)² / 2σ_f²) · (1 - q_r(μ + s))^(N - k) ]

where q_r is receiver r's hearing probability (its learned floor; `logmiss` tabulates
log(1 - q_r)). The heard samples' own reception factor does not depend on μ and drops out, so
truncation near the floor is exact, and every advert a listening receiver missed counts.
A candidate position x gives μ_r = P + b - n·10·log10(d_r(x)); the band's gain b is marginalised
over its learned prior. The test is 2·(max over outside candidates - max over inside candidates).
`window_lr_reference` in `window_test` is the plain numpy oracle of the same maths.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from edge.bands.jit import kernel

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]
MU_STEP = 1.0  # dB between tabulated μ values (linear interpolation in between)
MAX_TABLE = 400


@kernel
def _interp_n(table: F64, n: int, v0: float, dv: float, v: float) -> float:
    """Linear interpolation in the first n entries of a table sampled at v0 + i·dv, clamped at both ends."""
    x = (v - v0) / dv
    if x <= 0.0:
        return float(table[0])
    if x >= n - 1:
        return float(table[n - 1])
    i = int(x)
    f = x - i
    return float(table[i] + (table[i + 1] - table[i]) * f)


@kernel
def _interp(table: F64, v0: float, dv: float, v: float) -> float:
    """Linear interpolation in a table sampled at v0 + i·dv, clamped at both ends."""
    x = (v - v0) / dv
    n = table.shape[0]
    if x <= 0.0:
        return float(table[0])
    if x >= n - 1:
        return float(table[n - 1])
    i = int(x)
    f = x - i
    return float(table[i] + (table[i + 1] - table[i]) * f)


@kernel
def _link_table(k: float, xbar: float, missed: float, slow_sd: float, fast_sd: float, logmiss: F64,
                v0: float, dv: float, gh_x: F64, gh_lw: F64, mu_lo: float, n_mu: int, out: F64) -> None:
    """T(μ) for μ = mu_lo + j·MU_STEP, j < n_mu (see the module docstring)."""
    inv2f = 0.5 / (fast_sd * fast_sd)
    nq = gh_x.shape[0]
    for j in range(n_mu):
        mu = mu_lo + j * MU_STEP
        top = -1e300
        for q in range(nq):
            s = slow_sd * gh_x[q]
            a = gh_lw[q]
            if k > 0.0:
                e = xbar - mu - s
                a -= k * e * e * inv2f
            if missed > 0.0:
                a += missed * _interp(logmiss, v0, dv, mu + s)
            if a > top:
                top = a
        acc = 0.0
        for q in range(nq):
            s = slow_sd * gh_x[q]
            a = gh_lw[q]
            if k > 0.0:
                e = xbar - mu - s
                a -= k * e * e * inv2f
            if missed > 0.0:
                a += missed * _interp(logmiss, v0, dv, mu + s)
            acc += math.exp(a - top)
        out[j] = top + math.log(acc)


@kernel
def _block_table(kb: F64, xb: F64, missb: F64, held_sd: float, blk_sd: float, fast_sd: float, logmiss: F64,
                 v0: float, dv: float, gh_x: F64, gh_lw: F64, mu_lo: float, n_mu: int, work: F64, out: F64) -> None:
    """T(μ) with the slow shadowing in two parts: h held over the window (sd `held_sd`) and s_b drawn
    afresh in each block b (sd `blk_sd`): T(μ) = log E_h exp(Σ_b log E_s[exp(-k_b(x̄_b-μ-h-s)²/2σ_f²)
    · (1-q(μ+h+s))^miss_b]). The block sum S(ν) is tabulated on ν = μ + h, then integrated over h."""
    inv2f = 0.5 / (fast_sd * fast_sd)
    nq = gh_x.shape[0]
    n_b = kb.shape[0]
    reach = 0.0
    for q in range(nq):
        reach = max(reach, abs(gh_x[q]) * held_sd)
    s_lo = math.floor(mu_lo - reach) - 1.0
    n_s = min(n_mu + 2 * math.ceil(reach) + 3, work.shape[0])
    a_q = np.empty(nq)
    for i in range(n_s):
        nu = s_lo + i * MU_STEP
        tot = 0.0
        for b in range(n_b):
            if kb[b] <= 0.0 and missb[b] <= 0.0:
                continue
            top = -1e300
            for q in range(nq):
                s = blk_sd * gh_x[q]
                a = gh_lw[q]
                if kb[b] > 0.0:
                    e = xb[b] - nu - s
                    a -= kb[b] * e * e * inv2f
                if missb[b] > 0.0:
                    a += missb[b] * _interp(logmiss, v0, dv, nu + s)
                a_q[q] = a
                if a > top:
                    top = a
            acc = 0.0
            for q in range(nq):
                acc += math.exp(a_q[q] - top)
            tot += top + math.log(acc)
        work[i] = tot
    for j in range(n_mu):
        mu = mu_lo + j * MU_STEP
        top = -1e300
        for q in range(nq):
            a = gh_lw[q] + _interp_n(work, n_s, s_lo, MU_STEP, mu + held_sd * gh_x[q])
            a_q[q] = a
            if a > top:
                top = a
        acc = 0.0
        for q in range(nq):
            acc += math.exp(a_q[q] - top)
        out[j] = top + math.log(acc)


@kernel
def window_lr(k: F64, xbar: F64, n_sent: F64, power: F64, sb: F64, slow_sd: F64, fast_sd: float,
              listen: B, floor: F64, logmiss: F64, v0: float, dv: float, logd: F64, lo: I64, mid: I64,
              hi: I64, set_of_row: I64, exponents: F64, profile_above: float, gh_x: F64, gh_lw: F64, bz: F64,
              blw: F64, lr: F64,
              best_in: I64, best_out: I64, b_mean: F64, b_var: F64, ll_in: F64, kb: F64, xb: F64, nsb: F64,
              blk_sd: F64) -> None:
    """Per row m (a band's window): the outside-vs-inside log-likelihood ratio and its arg-maxes.

    k, xbar, slow_sd (M, R); n_sent, power (prior mean P + b̂), sb (M,); logd (G, R) = 10·log10(d)
    of every candidate to every receiver; set s = rows lo[s]:hi[s] of logd, of which lo[s]:mid[s] are
    inside and mid[s]:hi[s] outside. bz/blw: standard-normal nodes and log weights of the band-gain
    prior. Writes lr (2·Δ log-likelihood; NaN if nothing to test), best_in/best_out (candidate rows),
    b_mean/b_var (band-gain posterior at the best inside point, relative to the prior mean), ll_in (the
    best inside log-likelihood itself, for learning the exponent; NaN if nothing to test).

    Blocks (`_block_table`): where blk_sd[m, r] > 0 and the window is cut into more than one block
    (kb, xb: (M, R, B) heard counts and mean levels per block, nsb: (M, B) adverts sent per block), the
    link's slow shadowing is slow_sd[m, r] held over the window plus blk_sd[m, r] drawn afresh per block;
    elsewhere slow_sd is all held (one block: kb, xb, nsb are not read).

    `exponents`: the path-loss exponents the test allows (the calibrated one first, then values it cannot
    rule out); each hypothesis takes its best (position, exponent) pair, i.e. the exponent is a nuisance
    parameter profiled in both. Exponents after the first are tried only where the first gives a
    statistic above `profile_above`.

    Two exact-enough shortcuts keep a big site cheap: outside candidates farther from the strongest
    heard receiver than its level allows (3.5 σ) are skipped, and an unheard receiver's term is
    skipped where the band would be 4 dB + 3.5 σ below its floor (its log-miss term is ~0 there).
    """
    n_rx = k.shape[1]
    nb = bz.shape[0]
    tables = np.empty((n_rx, MAX_TABLE))
    mu0 = np.empty(n_rx)
    nmu = np.zeros(n_rx, dtype=np.int64)
    cut = np.empty(n_rx)
    heard = np.zeros(n_rx, dtype=np.bool_)
    links = np.empty(n_rx, dtype=np.int64)
    lmin = np.empty(n_rx)
    lmax = np.empty(n_rx)
    per_b = np.empty(nb)
    best_b = np.empty(nb)
    n_blk = kb.shape[2]
    missb = np.empty(n_blk)
    work = np.empty(MAX_TABLE + 200)
    n_g = logd.shape[0]
    active = np.zeros(n_g, dtype=np.bool_)
    n_e = exponents.shape[0]
    e_min = exponents[0]
    e_max = exponents[0]
    for e in range(n_e):
        e_min = min(e_min, exponents[e])
        e_max = max(e_max, exponents[e])
    for m in range(k.shape[0]):
        s = set_of_row[m]
        p = power[m]
        sdb = sb[m]
        n = n_sent[m]
        bmin = p + sdb * bz[0]
        bmax = p + sdb * bz[nb - 1]
        strong = -1
        top_x = -1e300
        for r in range(n_rx):
            if min(k[m, r], n) > 0.0 and xbar[m, r] > top_x:
                top_x = xbar[m, r]
                strong = r
        if strong < 0:
            lr[m] = math.nan
            best_in[m] = -1
            best_out[m] = -1
            b_mean[m] = 0.0
            b_var[m] = 0.0
            ll_in[m] = math.nan
            continue
        # Farthest a candidate can be from the strongest receiver and still explain its level.
        # The shortcuts below use each link's whole slow sd (held and per-block parts together).
        sd_strong = math.sqrt(slow_sd[m, strong] ** 2 + (blk_sd[m, strong] ** 2 if n_blk > 1 else 0.0))
        reach = (bmax - top_x + 3.5 * sd_strong + 3.0 * fast_sd) / e_min
        for r in range(n_rx):
            lmin[r] = 1e300
            lmax[r] = -1e300
        for g in range(lo[s], hi[s]):
            ok = g < mid[s] or logd[g, strong] <= reach
            active[g] = ok
            if ok:
                for r in range(n_rx):
                    v = logd[g, r]
                    if v < lmin[r]:
                        lmin[r] = v
                    if v > lmax[r]:
                        lmax[r] = v
        nl = 0
        for r in range(n_rx):
            kr = min(k[m, r], n)
            heard[r] = kr > 0.0
            if not heard[r] and not listen[r]:
                continue
            hi_mu = bmax - e_min * lmin[r]
            lo_mu = bmin - e_max * lmax[r]
            cut[r] = -1e300
            if not heard[r]:
                sd_r = math.sqrt(slow_sd[m, r] ** 2 + (blk_sd[m, r] ** 2 if n_blk > 1 else 0.0))
                cut[r] = floor[r] - 4.0 - 3.5 * sd_r
                if hi_mu < cut[r]:
                    continue  # could not have been heard from any candidate: nothing to learn
                lo_mu = max(lo_mu, cut[r])
            start = math.floor(lo_mu) - 1.0
            cnt = min(math.ceil(hi_mu - start) + 2, MAX_TABLE)
            # A receiver that stopped listening (down, or its node) says nothing by missing adverts.
            missed = max(n - kr, 0.0) if listen[r] else 0.0
            if n_blk > 1 and blk_sd[m, r] > 0.0:
                for b in range(n_blk):
                    missb[b] = max(nsb[m, b] - min(kb[m, r, b], nsb[m, b]), 0.0) if listen[r] else 0.0
                _block_table(kb[m, r], xb[m, r], missb, slow_sd[m, r], blk_sd[m, r], fast_sd, logmiss[r], v0,
                             dv, gh_x, gh_lw, start, cnt, work, tables[r])
            else:
                _link_table(kr, xbar[m, r], missed, slow_sd[m, r], fast_sd, logmiss[r], v0, dv, gh_x,
                            gh_lw, start, cnt, tables[r])
            mu0[r] = start
            nmu[r] = cnt
            links[nl] = r
            nl += 1
        top_in = -1e300
        top_out = -1e300
        i_in = -1
        i_out = -1
        for e in range(n_e):
            # The other exponents only where the calibrated one leaves the band not confidently inside
            # (the detector's gate for its shorter windows): the profile's cost stays with bands near a fence.
            if e == 1 and (i_in < 0 or i_out < 0 or 2.0 * (top_out - top_in) <= profile_above):
                break
            exponent = exponents[e]
            for g in range(lo[s], hi[s]):
                if not active[g]:
                    continue
                for j in range(nb):
                    base = p + sdb * bz[j]
                    acc = blw[j]
                    for li in range(nl):
                        r = links[li]
                        mu = base - exponent * logd[g, r]
                        if mu < cut[r]:
                            continue
                        acc += _interp_n(tables[r], nmu[r], mu0[r], MU_STEP, mu)
                    per_b[j] = acc
                top = -1e300
                for j in range(nb):
                    if per_b[j] > top:
                        top = per_b[j]
                tot = 0.0
                for j in range(nb):
                    tot += math.exp(per_b[j] - top)
                ll = top + math.log(tot)
                if g < mid[s]:
                    if ll > top_in:
                        top_in = ll
                        i_in = g
                        for j in range(nb):
                            best_b[j] = per_b[j]
                elif ll > top_out:
                    top_out = ll
                    i_out = g
        if i_in >= 0 and i_out >= 0:
            lr[m] = 2.0 * (top_out - top_in)
        else:  # no outside point can explain the level at all (or no inside candidates: degenerate)
            lr[m] = -1000.0 if i_in >= 0 else math.nan
        best_in[m] = i_in
        best_out[m] = i_out
        ll_in[m] = top_in if i_in >= 0 else math.nan
        # Posterior of the band gain at the best inside point (for learning it while inside).
        top = -1e300
        for j in range(nb):
            if best_b[j] > top:
                top = best_b[j]
        w_sum = 0.0
        m1 = 0.0
        m2 = 0.0
        for j in range(nb):
            w = math.exp(best_b[j] - top)
            v = sdb * bz[j]
            w_sum += w
            m1 += w * v
            m2 += w * v * v
        mean = m1 / w_sum
        b_mean[m] = mean
        b_var[m] = max(m2 / w_sum - mean * mean, 0.0)
