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

Speed (issue 14), without changing a bit of the result: the two maxima are found by branch and
bound over square cells of candidates (`_search`, `_cell_bound`, range-max tables per link), and the
table of a receiver that heard nothing is computed once per call (`_miss_table`).
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
LEVELS = 9  # 2**(LEVELS-1) >= MAX_TABLE / 2: levels of the range-max tables
_LOG2 = np.array([0, 0] + [math.floor(math.log2(i)) for i in range(2, MAX_TABLE + 2)], dtype=np.int64)  # of a length
MEMO_LO, MEMO_N = -300, 400  # whole-dB μ from -300 to +99 dBm: the memo of unheard receivers' tables
BOUND_SLACK = 1e-9  # relative: rounding of the bound vs the exact sum (both are sums of the same terms' maxima)
DECIDE_TOL = 1e-9  # relative: a statistic this close to a threshold is never decided from bounds
UNDECIDED, DECIDED = -1, -2  # `_search`'s best when no candidate was found: none in play / settled by bounds


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
def _log_sum_exp(v: F64, n: int) -> float:
    """log Σ exp(v[:n]), shifted by the maximum so no term overflows."""
    top = -1e300
    for j in range(n):
        if v[j] > top:
            top = v[j]
    tot = 0.0
    for j in range(n):
        tot += math.exp(v[j] - top)
    return float(top + math.log(tot))


@kernel
def _link_entry(k: float, xbar: float, missed: float, slow_sd: float, inv2f: float, logmiss: F64, v0: float,
                dv: float, gh_x: F64, gh_lw: F64, mu: float, a_q: F64) -> float:
    """T(μ) at one μ (see the module docstring); a_q is scratch of len(gh_x)."""
    nq = gh_x.shape[0]
    top = -1e300
    for q in range(nq):
        s = slow_sd * gh_x[q]
        a = gh_lw[q]
        if k > 0.0:
            e = xbar - mu - s
            a -= k * e * e * inv2f
        if missed > 0.0:
            a += missed * _interp(logmiss, v0, dv, mu + s)
        a_q[q] = a  # kept for the log-sum-exp's second pass
        if a > top:
            top = a
    acc = 0.0
    for q in range(nq):
        acc += math.exp(a_q[q] - top)
    return float(top + math.log(acc))


@kernel
def _link_table(k: float, xbar: float, missed: float, slow_sd: float, fast_sd: float, logmiss: F64,
                v0: float, dv: float, gh_x: F64, gh_lw: F64, mu_lo: float, n_mu: int, out: F64, a_q: F64) -> None:
    """T(μ) for μ = mu_lo + j·MU_STEP, j < n_mu (see the module docstring)."""
    inv2f = 0.5 / (fast_sd * fast_sd)
    for j in range(n_mu):
        out[j] = _link_entry(k, xbar, missed, slow_sd, inv2f, logmiss, v0, dv, gh_x, gh_lw, mu_lo + j * MU_STEP, a_q)


@kernel
def _miss_table(r: int, missed: float, slow_sd: float, fast_sd: float, logmiss: F64, v0: float, dv: float,
                gh_x: F64, gh_lw: F64, mu_lo: float, n_mu: int, out: F64, a_q: F64, memo: F64, filled: B,
                key: F64) -> None:
    """`_link_table` of a receiver that heard nothing, through a memo of its entries.

    Such a table depends only on the receiver and the adverts missed (the same for all rows of a call),
    and its μ are whole dB (mu_lo is whole), so every row's entries are the same numbers: each one is
    computed once per call (`memo[r]`, valid for `key[r]` = (missed, slow sd)).
    """
    if key[2 * r] != missed or key[2 * r + 1] != slow_sd:
        filled[r, :] = False
        key[2 * r] = missed
        key[2 * r + 1] = slow_sd
    inv2f = 0.5 / (fast_sd * fast_sd)
    for j in range(n_mu):
        mu = mu_lo + j * MU_STEP
        i = int(mu) - MEMO_LO
        if 0 <= i < MEMO_N and mu == math.floor(mu):
            if not filled[r, i]:
                memo[r, i] = _link_entry(0.0, 0.0, missed, slow_sd, inv2f, logmiss, v0, dv, gh_x, gh_lw, mu, a_q)
                filled[r, i] = True
            out[j] = memo[r, i]
        else:
            out[j] = _link_entry(0.0, 0.0, missed, slow_sd, inv2f, logmiss, v0, dv, gh_x, gh_lw, mu, a_q)


@kernel
def _sparse_max(tables: F64, r: int, n: int, sp: F64) -> None:
    """sp[r, l, i] = max(tables[r, i : i + 2**l]) for every level that fits in the first n entries."""
    for i in range(n):
        sp[r, 0, i] = tables[r, i]
    w = 1
    lv = 0
    while 2 * w <= n:
        for i in range(n - 2 * w + 1):
            a = sp[r, lv, i]
            b = sp[r, lv, i + w]
            sp[r, lv + 1, i] = a if a > b else b
        w *= 2
        lv += 1


@kernel
def _range_max(sp: F64, r: int, n: int, x0: float, x1: float) -> float:
    """Largest entry of table r that linear interpolation (clamped, as `_interp_n`) can use for x in [x0, x1]."""
    i0 = min(max(math.floor(x0), 0), n - 1)
    i1 = min(max(math.ceil(x1), 0), n - 1)
    lv = _LOG2[i1 - i0 + 1]
    a = sp[r, lv, i0]
    b = sp[r, lv, i1 - (1 << lv) + 1]
    return float(a if a > b else b)


@kernel
def _cand_ll(g: int, logd: F64, p: float, sdb: float, bz: F64, blw: F64, exponent: float, links: I64, nl: int,
             tables: F64, nmu: I64, mu0: F64, cut: F64, per_b: F64) -> float:
    """Log-likelihood of candidate g (band gain marginalised); per_b gets it per gain node."""
    nb = bz.shape[0]
    for j in range(nb):
        per_b[j] = blw[j]
    for li in range(nl):  # per gain node the links are added in the same order as ever: the same sums
        r = links[li]
        e = exponent * logd[g, r]
        n = nmu[r]
        m0 = mu0[r]
        for j in range(nb):
            mu = (p + sdb * bz[j]) - e
            if mu < cut[r]:
                continue
            x = (mu - m0) / MU_STEP
            if x <= 0.0:
                v = tables[r, 0]
            elif x >= n - 1:
                v = tables[r, n - 1]
            else:
                i = int(x)
                f = x - i
                v = tables[r, i] + (tables[r, i + 1] - tables[r, i]) * f
            per_b[j] += v
    return _log_sum_exp(per_b, nb)


@kernel
def _cell_bound(c: int, cmin: F64, cmax: F64, p: float, sdb: float, bz: F64, blw: F64, exponent: float,
                links: I64, nl: int, spmax: F64, nmu: I64, mu0: F64, cut: F64, per_b: F64) -> float:
    """An upper bound of `_cand_ll` over every candidate of cell c (its per-receiver 10·log10 d range)."""
    nb = bz.shape[0]
    for j in range(nb):
        per_b[j] = blw[j]
    for li in range(nl):
        r = links[li]
        e1 = exponent * cmin[c, r]
        e2 = exponent * cmax[c, r]
        e_hi = max(e1, e2)
        e_lo = min(e1, e2)
        n = nmu[r]
        m0 = mu0[r]
        cr = cut[r]
        for j in range(nb):
            base = p + sdb * bz[j]
            a = base - e_hi  # the members' μ lie in [a, b] (rounding is monotonic)
            b = base - e_lo
            if b < cr:
                continue  # every member skips this link
            if a < cr:  # some members skip it (adding 0), the others add the table
                per_b[j] += max(_range_max(spmax, r, n, (cr - m0) / MU_STEP, (b - m0) / MU_STEP), 0.0)
            else:
                per_b[j] += _range_max(spmax, r, n, (a - m0) / MU_STEP, (b - m0) / MU_STEP)
    return _log_sum_exp(per_b, nb)


@kernel
def _any_active(c: int, cptr: I64, cg: I64, active: B) -> bool:
    """Whether cell c holds a candidate still in play (numba compiles no `any` over a generator)."""
    for t in range(cptr[c], cptr[c + 1]):  # noqa: SIM110
        if active[cg[t]]:
            return True
    return False


@kernel
def _bounds(c_lo: int, c_hi: int, cmin: F64, cmax: F64, p: float, sdb: float, bz: F64, blw: F64, exponent: float,
            links: I64, nl: int, spmax: F64, nmu: I64, mu0: F64, cut: F64, per_b: F64, ok: B, ub: F64) -> I64:
    """Bounds of cells c_lo:c_hi into ub (-inf where not ok, +inf where NaN); their order, best first."""
    n_c = c_hi - c_lo
    for c in range(c_lo, c_hi):
        v = (_cell_bound(c, cmin, cmax, p, sdb, bz, blw, exponent, links, nl, spmax, nmu, mu0, cut, per_b)
             if ok[c - c_lo] else -math.inf)
        ub[c - c_lo] = math.inf if v != v else v  # a NaN bound proves nothing: such a cell is searched
    return np.argsort(-ub[:n_c])


@kernel
def _pruned(bound: float, top: float) -> bool:
    """No candidate under `bound` can beat (or tie with) `top`, allowing for rounding."""
    return bound == -math.inf or bound + BOUND_SLACK * (1.0 + abs(top)) < top


@kernel
def _decided(top: float, found: bool, bound: float, ref: float, decide: F64) -> bool:
    """Whether every comparison the detector makes is already settled (`window_lr`'s `decide`).

    The outside maximum lies between `top` (the best found; -inf if none) and `bound` (above every
    candidate not yet evaluated), so the statistic lies between 2·(top - ref) and 2·(bound - ref).
    Settled = no threshold in that interval (with a margin for rounding) and the interval below the
    last threshold, above which the statistic itself is read (alert detail).
    """
    if decide.shape[0] == 0 or bound != bound or bound == math.inf:
        return False
    hi = 2.0 * (bound + BOUND_SLACK * (1.0 + abs(bound)) - ref)
    tol = DECIDE_TOL * (1.0 + abs(hi))
    if hi + tol >= decide[decide.shape[0] - 1]:
        return False
    lo = 2.0 * (top - ref) - tol if found else -math.inf
    for i in range(decide.shape[0]):  # noqa: SIM110  (numba compiles no `all` over a generator)
        if lo <= decide[i] <= hi + tol:
            return False
    return True


@kernel
def _settled(top: float, best: int, bound: float) -> tuple[float, int]:
    """`_search`'s result when bounds settled it: the best found, or the bound itself if none was found."""
    if best >= 0:
        return top, best
    return bound + BOUND_SLACK * (1.0 + abs(bound)), DECIDED


@kernel
def _search(k_lo: int, k_hi: int, kptr: I64, kmin: F64, kmax: F64, cptr: I64, cg: I64, cmin: F64, cmax: F64,
            active: B, logd: F64, p: float, sdb: float, bz: F64, blw: F64, exponent: float, links: I64, nl: int,
            tables: F64, spmax: F64, nmu: I64, mu0: F64, cut: F64, per_b: F64, best_b: F64,
            keep_b: bool, top0: float, best0: int, decide: F64, ref: float) -> tuple[float, int]:
    """The best candidate under coarse cells k_lo:k_hi and its log-likelihood, if better than (top0, best0).

    Among equals the first in (exponent, row) order wins, as in a plain loop over exponents then rows.
    With thresholds in `decide` (see `window_lr`) the search may stop early, once 2·(max - ref) is settled
    against all of them (`_decided`): it then returns the best found so far, or (an upper bound, DECIDED)
    if it found none.

    Branch and bound over two levels of square cells (coarse cells hold fine cells, fine cells hold
    candidates): a cell's bound (`_cell_bound`) is above every candidate's log-likelihood in it, so
    cells are opened best bound first and the search stops at the first one whose bound is below the
    best found. The result is the exhaustive search's, bit for bit (`_cand_ll` is the same arithmetic).
    """
    top = top0
    best = best0
    own = False  # whether `best` was found in this call (a tie goes to the earlier exponent, then the lower row)
    n_k = k_hi - k_lo
    if n_k <= 0:
        return top, best
    ok = np.empty(n_k, dtype=np.bool_)
    for c in range(k_lo, k_hi):
        any_active = False
        for f in range(kptr[c], kptr[c + 1]):
            if _any_active(f, cptr, cg, active):
                any_active = True
                break
        ok[c - k_lo] = any_active
    ubk = np.empty(n_k)
    order = _bounds(k_lo, k_hi, kmin, kmax, p, sdb, bz, blw, exponent, links, nl, spmax, nmu, mu0, cut, per_b, ok,
                    ubk)
    for o in range(n_k):
        if _pruned(ubk[order[o]], top):
            break
        if _decided(top, best >= 0, ubk[order[o]], ref, decide):
            return _settled(top, best, ubk[order[o]])
        c = k_lo + order[o]
        f_lo, f_hi = kptr[c], kptr[c + 1]
        n_f = f_hi - f_lo
        okf = np.ones(n_f, dtype=np.bool_)
        ubf = np.full(n_f, math.inf)
        order_f = np.arange(n_f)
        if n_f > 1:  # a lone fine cell's bound is its coarse cell's, nearly: open it directly
            for f in range(f_lo, f_hi):
                okf[f - f_lo] = _any_active(f, cptr, cg, active)
            order_f = _bounds(f_lo, f_hi, cmin, cmax, p, sdb, bz, blw, exponent, links, nl, spmax, nmu, mu0, cut,
                              per_b, okf, ubf)
        rest = ubk[order[o + 1]] if o + 1 < n_k else -math.inf  # above every candidate of the later coarse cells
        for of in range(n_f):
            if _pruned(ubf[order_f[of]], top):
                break
            if _decided(top, best >= 0, max(ubf[order_f[of]], rest), ref, decide):
                return _settled(top, best, max(ubf[order_f[of]], rest))
            f = f_lo + order_f[of]
            for t in range(cptr[f], cptr[f + 1]):
                g = cg[t]
                if not active[g]:
                    continue
                ll = _cand_ll(g, logd, p, sdb, bz, blw, exponent, links, nl, tables, nmu, mu0, cut, per_b)
                if ll > top or (own and ll == top and g < best):
                    top = ll
                    best = g
                    own = True
                    if keep_b:
                        for j in range(bz.shape[0]):
                            best_b[j] = per_b[j]
    return top, best


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
              blw: F64, cell_lo: I64, cell_mid: I64, cell_hi: I64, kptr: I64, kmin: F64, kmax: F64, cptr: I64,
              cg: I64, cmin: F64, cmax: F64, lr: F64,
              best_in: I64, best_out: I64, b_mean: F64, b_var: F64, ll_in: F64, kb: F64, xb: F64, nsb: F64,
              blk_sd: F64, decide: F64) -> None:
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

    `decide` (ascending; empty = exact): the thresholds the caller compares lr with. Where lr is below the
    last of them, the outside search stops as soon as its bounds settle lr against every threshold, and lr
    is then a value on the same side of each threshold as the exact statistic, not the statistic (and
    best_out may be -1). At or above the last threshold, and for the inside results, nothing changes.
    Only with one exponent (a profiled one compares its first exponent's statistic exactly).

    Two exact-enough shortcuts keep a big site cheap: outside candidates farther from the strongest
    heard receiver than its level allows (3.5 σ) are skipped, and an unheard receiver's term is
    skipped where the band would be 4 dB + 3.5 σ below its floor (its log-miss term is ~0 there).
    """
    n_rx = k.shape[1]
    nb = bz.shape[0]
    tables = np.empty((n_rx, MAX_TABLE))
    spmax = np.empty((n_rx, LEVELS, MAX_TABLE))
    a_q = np.empty(gh_x.shape[0])
    memo = np.empty((n_rx, MEMO_N))
    filled = np.zeros((n_rx, MEMO_N), dtype=np.bool_)
    memo_key = np.full(2 * n_rx, math.nan)
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
    exact = np.empty(0)
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
            elif kr > 0.0 or missed <= 0.0:
                _link_table(kr, xbar[m, r], missed, slow_sd[m, r], fast_sd, logmiss[r], v0, dv, gh_x,
                            gh_lw, start, cnt, tables[r], a_q)
            else:
                _miss_table(r, missed, slow_sd[m, r], fast_sd, logmiss[r], v0, dv, gh_x, gh_lw, start, cnt,
                            tables[r], a_q, memo, filled, memo_key)
            mu0[r] = start
            nmu[r] = cnt
            links[nl] = r
            nl += 1
        for li in range(nl):
            _sparse_max(tables, links[li], nmu[links[li]], spmax)
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
            # Inside first (its best point is needed exactly), then outside; each best-first over cells.
            top_in, i_in = _search(cell_lo[s], cell_mid[s], kptr, kmin, kmax, cptr, cg, cmin, cmax, active, logd,
                                   p, sdb, bz, blw, exponent, links, nl, tables, spmax, nmu, mu0, cut, per_b,
                                   best_b, True, top_in, i_in, exact, 0.0)
            top_out, i_out = _search(cell_mid[s], cell_hi[s], kptr, kmin, kmax, cptr, cg, cmin, cmax, active, logd,
                                     p, sdb, bz, blw, exponent, links, nl, tables, spmax, nmu, mu0, cut, per_b,
                                     best_b, False, top_out, i_out, decide if n_e == 1 and i_in >= 0 else exact,
                                     top_in)
        if i_out == DECIDED:  # settled by bounds alone: top_out is a bound, no outside point was evaluated
            lr[m] = 2.0 * (top_out - top_in)
            i_out = -1
        elif i_in >= 0 and i_out >= 0:
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
