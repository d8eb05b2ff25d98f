"""Position and error radius from filtered RSSI (numpy, all bands of a tick at once).

Model: RSSI_r = P - 10·n·log10(d_r) + shadowing, with P the advert's `measured_power`, n the
path-loss exponent (calibrated from beacons) and RSSI corrected by each receiver's offset.

* 3+ receivers: weighted nonlinear least squares (Gauss-Newton, vectorised over bands). The
  residuals are in dB, each divided by its standard deviation. In dB the shadowing has the same
  variance at every distance, so this is the distance-domain fit weighted by each distance's
  variance (σ_d = d·ln10·σ/(10n)) to first order, minus its bias at long range.
  Receivers that are alive but did not hear the band add a one-sided penalty where the model says
  they should have heard it, which rules out mirror solutions and "far side of the site" fits.
* 1-2 receivers: proximity to the strongest one; the error radius is the 2σ upper bound of the
  distance to it, so the estimate admits it only knows "somewhere near rx".

The error radius `err_m` is the RMS radial error from the fit's covariance, inflated by the
residual χ² when the data disagree with the model more than σ says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.bands.fit_kernels import breach_evidence, fit_positions, prepare_links

F64 = NDArray[np.float64]
LN10 = math.log(10.0)


@dataclass(frozen=True, slots=True)
class LocateParams:
    """Localiser constants."""

    path_loss_exponent: float = 2.7
    shadowing_db: float = 6.0
    slow_floor_db: float = 2.0  # shadowing that does not average out within the window
    model_error_db: float = 2.5  # band power spread + residual receiver calibration: never averages out
    heard_threshold_dbm: float = -93.0  # a live receiver this strong would almost surely hear 1 of ~8 adverts
    censor_sigma_db: float = 4.0
    iterations: int = 8
    max_links: int = 8  # links per band in the fit (heard first, then the nearest silent ones)
    max_step_m: float = 6.0
    min_err_m: float = 1.0
    max_err_m: float = 150.0
    min_distance_m: float = 0.5
    compiled: bool = True  # numba kernels (fit_kernels); False = the numpy reference, same maths


def sample_sigma(spread: F64, n: F64, p: LocateParams) -> F64:
    """Std (dB) of a filtered RSSI: slow part does not average over the window, fast part does."""
    total2 = p.shadowing_db**2
    fast2 = np.maximum(spread**2, 1.0)
    slow2 = np.maximum(total2 - fast2, p.slow_floor_db**2)
    return np.asarray(np.sqrt(slow2 + fast2 / np.maximum(n, 1.0) + p.model_error_db**2))


def truncation_corrected(rssi: F64, n: F64, spread: F64, p: LocateParams) -> tuple[F64, F64]:
    """Undo the bias of links near sensitivity; returns (corrected RSSI, extra σ in dB).

    Near the floor only the lucky (strong-fading) samples arrive, so their median reads high and
    the band looks closer than it is. If a link delivered k of the samples its band's best link
    delivered (ratio q), the survivors are roughly the top q of a Gaussian fading distribution,
    whose median sits σ_f·Φ⁻¹(1 - q/2) above the true mean. The correction is that amount,
    and the same amount again goes into the link's σ because the model is only approximate.
    """
    k_max = np.maximum(np.nanmax(np.where(np.isnan(rssi), 0.0, n), axis=1, keepdims=True), 1.0)
    q = np.clip(n / k_max, 0.02, 1.0)
    sigma_f = np.where(n >= 4, np.clip(spread * 1.3, 1.0, p.shadowing_db), 0.7 * p.shadowing_db)
    # Binomial scatter of k from ordinary packet loss is not truncation: only clear shortfalls count.
    shift = np.where(q < 0.4, sigma_f * _norm_ppf(1.0 - q / 2.0), 0.0)
    return rssi - shift, shift


def _norm_ppf(u: F64) -> F64:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1e-3 here)."""
    u = np.clip(u, 1e-6, 1 - 1e-6)
    t = np.sqrt(-2.0 * np.log(np.minimum(u, 1.0 - u)))
    z = t - (2.515517 + 0.802853 * t + 0.010328 * t**2) / (1.0 + 1.432788 * t + 0.189269 * t**2 + 0.001308 * t**3)
    return np.asarray(np.where(u < 0.5, -z, z))


def distance_from_rssi(rssi: F64, power: F64, exponent: float) -> F64:
    """Log-distance inversion: d = 10^((P - RSSI) / (10 n))."""
    return np.asarray(10.0 ** ((power - rssi) / (10.0 * exponent)))


@dataclass(frozen=True)
class LinkModel:
    """The fitted measurement model of K bands, to score other candidate positions (likelihood tests)."""

    obs: F64  # (K, R) corrected RSSI, -200 where unheard
    heard: NDArray[np.bool_]
    censor: NDArray[np.bool_]
    sigma: F64
    power: F64
    rx_pos: F64
    k: float
    p: LocateParams
    scale: F64  # (K,) χ²/dof inflation (>= 1): how much worse than σ the data fit

    def half_log_d2(self, pts: F64) -> F64:
        """(G, R) ½·ln(d²) from candidate points to receivers: precompute once per candidate set."""
        diff = pts[:, None, :] - self.rx_pos[None, :, :]
        return np.asarray(0.5 * np.log(np.maximum((diff**2).sum(axis=2), self.p.min_distance_m**2)))

    def cost(self, rows: NDArray[np.int64], hl: F64) -> F64:
        """χ² (normalised by `scale`) of bands `rows` (M,) at candidates with ½·ln(d²) `hl` (G, R) or (M, G, R)."""
        obs = self.obs[rows][:, None, :]
        model = self.power[rows][:, None, None] - self.k * hl
        inv_s = (1.0 / self.sigma[rows])[:, None, :]
        heard = self.heard[rows][:, None, :]
        r = np.where(heard, (obs - model) * inv_s,
                     np.where(self.censor[rows][:, None, :],
                              np.maximum(model - self.p.heard_threshold_dbm, 0.0) / self.p.censor_sigma_db, 0.0))
        return np.asarray(np.einsum("mgr,mgr->mg", r, r) / self.scale[rows][:, None])

    def delta_chi2(self, rows: NDArray[np.int64], xy: F64, offsets: F64, hl_sets: F64,
                   bounds: NDArray[np.int64], set_of_row: NDArray[np.int64]) -> F64:
        """Compiled breach test: per row, min `cost` over its candidate set minus min over xy[row] + offsets, ≥ 0.

        Candidate set s is rows bounds[s]:bounds[s + 1] of `hl_sets` (½·ln(d²) per receiver, as `half_log_d2`);
        `set_of_row` (M,) picks each row's set. Equals the numpy `cost(...).min()` difference up to rounding.
        """
        out = np.empty(len(rows))
        f64, i64 = np.float64, np.int64
        bounds = np.ascontiguousarray(bounds, dtype=i64)
        breach_evidence(np.ascontiguousarray(rows, dtype=i64), np.ascontiguousarray(xy, dtype=f64),
                        np.ascontiguousarray(offsets, dtype=f64), np.ascontiguousarray(self.rx_pos, dtype=f64),
                        float(self.p.min_distance_m) ** 2, self.obs, self.heard, self.censor, self.sigma,
                        self.power, self.scale, float(self.k), float(self.p.heard_threshold_dbm),
                        float(self.p.censor_sigma_db), np.ascontiguousarray(hl_sets, dtype=f64), bounds[:-1],
                        bounds[1:], np.ascontiguousarray(set_of_row, dtype=i64), out)
        return out


def locate(
    rssi: F64,
    n: F64,
    spread: F64,
    power: F64,
    rx_pos: F64,
    p: LocateParams,
    exponent: float,
    alive: NDArray[np.bool_] | None = None,
    start: F64 | None = None,
    *,
    extra_var_db2: F64 | None = None,
) -> tuple[F64, F64, LinkModel]:
    """(K, 2) positions, (K,) error radii and the link model, from (K, R) filtered RSSI (NaN = unheard).

    `extra_var_db2` (R,) is a per-receiver variance (dB²) added to every heard link's σ², e.g. the
    uncertainty of that receiver's calibration; the fit, the error radius and `LinkModel.cost` all use it.
    """
    if p.compiled:
        return _locate_compiled(rssi, n, spread, power, rx_pos, p, exponent, alive, start, extra_var_db2)
    heard = ~np.isnan(rssi)
    m = heard.sum(axis=1)
    rssi, shift = truncation_corrected(rssi, n, spread, p)
    var = sample_sigma(spread, n, p) ** 2 + shift**2
    if extra_var_db2 is not None:
        var = var + np.maximum(np.asarray(extra_var_db2, dtype=np.float64), 0.0)[None, :]
    sigma = np.sqrt(var)
    obs = np.where(heard, rssi, -200.0)
    dist = distance_from_rssi(obs, power[:, None], exponent)
    xy = np.zeros((len(rssi), 2))
    err = np.full(len(rssi), p.max_err_m)
    strongest = np.argmax(obs, axis=1)
    # Proximity for everyone first; the least-squares rows overwrite it.
    rows = np.arange(len(rssi))
    xy[:] = rx_pos[strongest]
    d_up = dist[rows, strongest] * 10.0 ** (2.0 * sigma[rows, strongest] / (10.0 * exponent))
    err[:] = np.clip(d_up, 2.0, p.max_err_m)
    multi = m >= 3
    live = np.ones(rx_pos.shape[0], dtype=bool) if alive is None else alive
    scale = np.ones(len(rssi))
    if multi.any():
        xy_m, err_m, scale_m = _wls(obs[multi], heard[multi], sigma[multi], dist[multi], power[multi], rx_pos, p,
                                    exponent, live, None if start is None else start[multi])
        xy[multi] = xy_m
        err[multi] = err_m
        scale[multi] = scale_m
    model = LinkModel(obs, heard, ~heard & live[None, :], sigma, power, rx_pos, 10.0 * exponent / LN10, p, scale)
    return xy, err, model


def _locate_compiled(rssi: F64, n: F64, spread: F64, power: F64, rx_pos: F64, p: LocateParams, exponent: float,
                     alive: NDArray[np.bool_] | None, start: F64 | None, extra_var_db2: F64 | None
                     ) -> tuple[F64, F64, LinkModel]:
    """`locate` in two compiled calls (`fit_kernels.prepare_links`, `fit_positions`): same steps, per band."""
    f64 = np.float64
    rssi, n, spread = (np.ascontiguousarray(a, dtype=f64) for a in (rssi, n, spread))
    power = np.ascontiguousarray(power, dtype=f64)
    rx_pos = np.ascontiguousarray(rx_pos, dtype=f64)
    n_b, n_rx = rssi.shape
    extra = np.zeros(n_rx) if extra_var_db2 is None else np.ascontiguousarray(extra_var_db2, dtype=f64)
    obs, sigma, dist = np.empty((n_b, n_rx)), np.empty((n_b, n_rx)), np.empty((n_b, n_rx))
    heard = np.empty((n_b, n_rx), dtype=np.bool_)
    xy, err, scale = np.empty((n_b, 2)), np.empty(n_b), np.ones(n_b)
    # Scalars as float/int always: another type would compile (and cache) a second specialisation.
    prepare_links(rssi, n, spread, power, rx_pos, extra, float(p.shadowing_db), float(p.slow_floor_db),
                  float(p.model_error_db), float(exponent), float(p.max_err_m), obs, heard, sigma, dist, xy, err)
    live = np.ones(n_rx, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
    censor = ~heard & live[None, :]
    rows = np.flatnonzero(heard.sum(axis=1) >= 3)
    warm = np.full((n_b, 2), np.nan) if start is None else np.ascontiguousarray(start, dtype=f64)
    k = 10.0 * float(exponent) / LN10
    fit_positions(rows, obs, heard, censor, sigma, dist, power, rx_pos, warm, k, float(p.min_distance_m) ** 2,
                  float(p.heard_threshold_dbm), float(p.censor_sigma_db), int(p.max_links), int(p.iterations),
                  float(p.max_step_m), float(p.min_err_m), float(p.max_err_m), xy, err, scale)
    return xy, err, LinkModel(obs, heard, censor, sigma, power, rx_pos, k, p, scale)


def _wls(obs: F64, heard: NDArray[np.bool_], sigma: F64, dist: F64, power: F64, rx_pos: F64, p: LocateParams,
         n_exp: float, alive: NDArray[np.bool_], start: F64 | None = None) -> tuple[F64, F64, F64]:
    w = np.where(heard, 1.0 / np.maximum(dist, 1.0) ** 2, 0.0)
    x = np.asarray((w @ rx_pos) / w.sum(axis=1, keepdims=True))  # inverse-square weighted centroid start
    k = 10.0 * n_exp / LN10
    censor = ~heard & alive[None, :]
    obs, heard, censor, sigma, rx_pos = _compact(x, obs, heard, censor, sigma, rx_pos, p.max_links)
    if start is not None:
        # Warm start from the last tick's estimate where that fits the data better than the centroid.
        ok = ~np.isnan(start[:, 0])
        if ok.any():
            r0, _ = _residuals(x, obs, heard, censor, sigma, power, rx_pos, p, k)
            r1, _ = _residuals(np.where(ok[:, None], start, x), obs, heard, censor, sigma, power, rx_pos, p, k)
            better = ok & ((r1**2).sum(axis=1) < (r0**2).sum(axis=1))
            x = np.where(better[:, None], start, x)
    active = np.arange(len(x))
    for _ in range(p.iterations):
        # Only bands still moving are iterated: most converge in a few steps from a warm start.
        xa = x[active]
        r, jac = _residuals(xa, obs[active], heard[active], censor[active], sigma[active], power[active],
                            rx_pos[active], p, k)
        j0, j1 = jac[..., 0], jac[..., 1]
        a00 = (j0 * j0).sum(axis=1) + 1e-3
        a01 = (j0 * j1).sum(axis=1)
        a11 = (j1 * j1).sum(axis=1) + 1e-3
        g0 = (j0 * r).sum(axis=1)
        g1 = (j1 * r).sum(axis=1)
        det = a00 * a11 - a01 * a01
        step = -np.stack([a11 * g0 - a01 * g1, a00 * g1 - a01 * g0], axis=1) / det[:, None]
        norm = np.sqrt((step**2).sum(axis=1))
        step *= np.minimum(1.0, p.max_step_m / np.maximum(norm, 1e-9))[:, None]
        x[active] = xa + step
        active = active[norm >= 0.05]
        if len(active) == 0:
            break
    r, jac = _residuals(x, obs, heard, censor, sigma, power, rx_pos, p, k)
    a = np.einsum("kri,krj->kij", jac, jac)
    a[:, 0, 0] += 1e-6
    a[:, 1, 1] += 1e-6
    cov = np.linalg.inv(a)
    m = heard.sum(axis=1)
    chi2 = (np.where(heard, r, 0.0) ** 2).sum(axis=1)
    scale = np.maximum(1.0, chi2 / np.maximum(m - 2, 1))
    err = np.sqrt(np.maximum(cov[:, 0, 0] + cov[:, 1, 1], 0.0) * scale)
    return x, np.clip(err, p.min_err_m, p.max_err_m), scale


def _compact(x: F64, obs: F64, heard: NDArray[np.bool_], censor: NDArray[np.bool_], sigma: F64, rx_pos: F64,
             m: int) -> tuple[F64, NDArray[np.bool_], NDArray[np.bool_], F64, F64]:
    """Keep each band's m most relevant links: heard ones strongest first, then the nearest silent live ones.

    A band is heard by a few of a site's receivers; the far silent ones add nothing to the fit (their
    censoring term is zero far away), so dropping them makes the fit cost independent of site size.
    Returns per-band arrays (K, m) and receiver positions (K, m, 2).
    """
    n_rx = rx_pos.shape[0]
    if n_rx <= m:
        return obs, heard, censor, sigma, np.broadcast_to(rx_pos, (len(x), n_rx, 2))
    d = np.linalg.norm(x[:, None, :] - rx_pos[None, :, :], axis=2)
    key = np.where(heard, -1e6 - obs, np.where(censor, d, np.inf))
    # Stable: equal keys (two links with the same median RSSI) are common and the default sort's
    # tie order depends on the CPU's SIMD sort; the lowest receiver index wins, as in the kernel.
    sel = np.argsort(key, axis=1, kind="stable")[:, :m]

    def take(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, sel, axis=1)

    return take(obs), take(heard), take(censor), take(sigma), rx_pos[sel]


def _residuals(x: F64, obs: F64, heard: NDArray[np.bool_], censor: NDArray[np.bool_], sigma: F64, power: F64,
               rx_pos: F64, p: LocateParams, k: float) -> tuple[F64, F64]:
    """Normalised residuals (K, M) and their Jacobian (K, M, 2) at positions x; rx_pos is (K, M, 2)."""
    diff = x[:, None, :] - rx_pos
    d2 = np.maximum((diff**2).sum(axis=2), p.min_distance_m**2)
    model = power[:, None] - 0.5 * k * np.log(d2) / 1.0  # 10n·log10(d) = (k/2)·ln(d²)
    grad = (k / d2)[..., None] * diff  # ∂(-model)/∂x
    r_heard = (obs - model) / sigma
    excess = model - p.heard_threshold_dbm
    active = censor & (excess > 0)
    r_cens = np.where(active, excess / p.censor_sigma_db, 0.0)
    r = np.where(heard, r_heard, r_cens)
    jac = np.where(heard[..., None], grad / sigma[..., None],
                   np.where(active[..., None], -grad / p.censor_sigma_db, 0.0))
    return r, jac
