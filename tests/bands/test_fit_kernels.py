"""The compiled tick kernels against independent oracles: brute-force χ² minima, finite-difference
covariance, direct evaluation of the breach test's Δχ², the numpy filter and zone geometry."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.bands.fit_kernels import window_filter
from edge.bands.geometry import ZoneMap, ZoneShape, grid_over
from edge.bands.locate import LinkModel, LocateParams, locate
from edge.bands.pipeline import BandPipeline
from edge.bands.rssi_filter import RssiWindows, robust_median
from edge.sim import Simulator
from edge.sim.scenarios import demo_scenario
from protocols.site_config import SiteConfig

P = LocateParams(iterations=60)  # converge fully: the oracle checks the minimum, not the iteration budget


def _scene(rng: np.random.Generator, n_bands: int, n_rx: int) -> dict[str, np.ndarray]:
    """Bands on a 60 × 40 m site, heard by 3+ receivers with log-distance RSSI; the far ones are silent."""
    rx = rng.uniform([0, 0], [60, 40], size=(n_rx, 2))
    truth = rng.uniform([5, 5], [55, 35], size=(n_bands, 2))
    d = np.linalg.norm(truth[:, None, :] - rx[None, :, :], axis=2)
    rssi = -59.0 - 10 * 2.7 * np.log10(np.maximum(d, 0.5)) + rng.normal(0, 4, d.shape)
    order = np.argsort(d, axis=1)
    keep = np.zeros_like(rssi, dtype=bool)
    n_heard = rng.integers(3, min(n_rx, 9), size=n_bands)
    for b in range(n_bands):
        keep[b, order[b, : n_heard[b]]] = True
    n = np.where(keep, rng.integers(1, 9, size=rssi.shape), 0).astype(np.float64)
    spread = np.where(n >= 3, rng.uniform(0.5, 5, size=rssi.shape), 0.0)
    return {"rssi": np.where(keep, np.round(rssi), np.nan), "n": n, "spread": spread,
            "power": np.full(n_bands, -59.0), "rx": rx}


def _oracle_residuals(pts: np.ndarray, s: dict[str, np.ndarray], model: LinkModel, b: int) -> np.ndarray:
    """(G, R) residuals of band b at points pts (G, 2), the documented model written out plainly:
    (obs - P + 10·n·log10 d)/σ on heard links, one-sided (model - threshold)/σ_c on silent live ones."""
    d = np.sqrt(np.maximum(((pts[:, None, :] - s["rx"][None]) ** 2).sum(axis=2), P.min_distance_m**2))
    pred = s["power"][b] - 10 * 2.7 * np.log10(d)
    censored = np.maximum(pred - P.heard_threshold_dbm, 0.0) / P.censor_sigma_db
    return np.where(model.heard[b], (model.obs[b] - pred) / model.sigma[b], np.where(model.censor[b], censored, 0.0))


def test_fit_is_the_chi2_minimum_and_err_is_the_covariance() -> None:
    rng = np.random.default_rng(3)
    s = _scene(rng, 60, 8)  # 8 receivers = max_links: every link is in the fit
    xy, err, model = locate(s["rssi"], s["n"], s["spread"], s["power"], s["rx"], P, 2.7, np.ones(8, dtype=bool))
    at_min = []
    for b in range(len(xy)):
        if np.count_nonzero(model.heard[b]) < 3:
            continue
        # Brute force: a 0.05 m grid 3 m around the fit (the fit is a local minimum by design).
        g = grid_over((xy[b, 0] - 3, xy[b, 1] - 3, xy[b, 0] + 3, xy[b, 1] + 3), 0.05)
        costs = (_oracle_residuals(g, s, model, b) ** 2).sum(axis=1)
        fit_cost = float((_oracle_residuals(xy[b:b + 1], s, model, b) ** 2).sum())
        if fit_cost > costs.min() + 0.1:  # (flat valleys: the grid's argmin may sit metres away at equal χ²)
            continue  # Gauss-Newton stopped short (see the count below); the numpy test covers these
        at_min.append(b)
        # err_m = sqrt(trace((JᵀJ)⁻¹) · max(1, χ²/(m-2))): Jacobian by central differences.
        h = 1e-5
        jac = np.stack([(_oracle_residuals(xy[b:b + 1] + e, s, model, b) - _oracle_residuals(xy[b:b + 1] - e, s,
                         model, b))[0] / (2 * h) for e in (np.array([h, 0.0]), np.array([0.0, h]))], axis=1)
        res = _oracle_residuals(xy[b:b + 1], s, model, b)[0]
        heard = model.heard[b]
        scale = max(1.0, float(np.sum(res[heard] ** 2)) / max(int(heard.sum()) - 2, 1))
        want = math.sqrt(np.trace(np.linalg.inv(jac.T @ jac + 1e-6 * np.eye(2))) * scale)
        assert err[b] == pytest.approx(np.clip(want, P.min_err_m, P.max_err_m), rel=1e-4), b
        assert model.scale[b] == pytest.approx(scale, rel=1e-9)
    # Measured: 55 of 60. In the others the damped Gauss-Newton stalls at a point a few metres from a
    # lower χ² (Δχ² 0.4-2; the numpy code stops at the very same points): a property of the fit, not the kernel.
    assert len(at_min) >= 0.85 * len(xy), len(at_min)


def test_compiled_equals_numpy_reference_with_compaction_warm_start_and_extra_variance() -> None:
    rng = np.random.default_rng(11)
    s = _scene(rng, 300, 16)  # 16 receivers > max_links: the link selection is exercised
    alive = rng.random(16) > 0.1
    warm = np.where(rng.random((300, 1)) < 0.7, rng.uniform([5, 5], [55, 35], (300, 2)), np.nan)
    extra = rng.uniform(0, 9, 16)
    out = {}
    for compiled in (True, False):
        p = dataclasses.replace(LocateParams(), compiled=compiled)
        out[compiled] = locate(s["rssi"], s["n"], s["spread"], s["power"], s["rx"], p, 2.7, alive, warm,
                               extra_var_db2=extra)
    (xy1, err1, m1), (xy0, err0, m0) = out[True], out[False]
    assert np.allclose(xy1, xy0, atol=1e-6) and np.allclose(err1, err0, rtol=1e-6)
    for name in ("obs", "sigma", "scale"):
        assert np.allclose(getattr(m1, name), getattr(m0, name), rtol=1e-12), name
    assert (m1.heard == m0.heard).all() and (m1.censor == m0.censor).all()


def test_extra_variance_adds_to_every_heard_link_sigma_and_the_cost() -> None:
    rng = np.random.default_rng(5)
    s = _scene(rng, 50, 10)
    extra = rng.uniform(0, 16, 10)
    for compiled in (True, False):
        p = dataclasses.replace(LocateParams(), compiled=compiled)
        _, _, base = locate(s["rssi"], s["n"], s["spread"], s["power"], s["rx"], p, 2.7)
        _, _, more = locate(s["rssi"], s["n"], s["spread"], s["power"], s["rx"], p, 2.7, extra_var_db2=extra)
        h = base.heard
        assert np.allclose((more.sigma**2 - base.sigma**2)[h], np.broadcast_to(extra, h.shape)[h])
        rows = np.arange(50)
        hl = more.half_log_d2(rng.uniform(0, 60, (7, 2)))
        # Same scale on both sides: a larger σ must lower every heard-link cost.
        object.__setattr__(more, "scale", base.scale)
        assert (more.cost(rows, hl) <= base.cost(rows, hl) + 1e-12).all()


def test_breach_delta_chi2_matches_direct_evaluation() -> None:
    rng = np.random.default_rng(8)
    s = _scene(rng, 60, 12)
    alive = rng.random(12) > 0.15
    xy, _, model = locate(s["rssi"], s["n"], s["spread"], s["power"], s["rx"], LocateParams(), 2.7, alive)
    sets = [rng.uniform([0, 0], [30, 20], (97, 2)), rng.uniform([30, 20], [60, 40], (41, 2))]
    hl_sets = np.concatenate([model.half_log_d2(p) for p in sets])
    bounds = np.array([0, 97, 138], dtype=np.int64)
    offsets = grid_over((-6.0, -6.0, 6.0, 6.0), 3.0)
    rows = np.arange(0, 60, 2, dtype=np.int64)
    set_of = rng.integers(0, 2, len(rows))
    got = model.delta_chi2(rows, xy, offsets, hl_sets, bounds, set_of)

    def cost(b: int, pts: np.ndarray) -> np.ndarray:
        d = np.sqrt(np.maximum(((pts[:, None, :] - s["rx"][None]) ** 2).sum(axis=2), P.min_distance_m**2))
        pred = s["power"][b] - 10 * 2.7 * np.log10(d)
        r = np.where(model.heard[b], (model.obs[b] - pred) / model.sigma[b],
                     np.where(model.censor[b], np.maximum(pred - P.heard_threshold_dbm, 0) / P.censor_sigma_db, 0))
        return np.asarray((r**2).sum(axis=1) / model.scale[b])

    for i, b in enumerate(rows.tolist()):
        want = max(cost(b, sets[set_of[i]]).min() - cost(b, xy[b] + offsets).min(), 0.0)
        assert got[i] == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert (got > 0).any()


def test_window_filter_equals_robust_median() -> None:
    rng = np.random.default_rng(2)
    w = RssiWindows(200, 6, 8)
    for _ in range(6000):
        level = float(rng.normal(-80, 4) if rng.random() > 0.1 else rng.normal(-55, 3))
        w.add(int(rng.integers(200)), int(rng.integers(6)), float(rng.uniform(0, 20)), round(level))
    bands = np.arange(0, 200, 3, dtype=np.int64)
    shape = (len(bands), 6)
    med, n, spread = np.empty(shape), np.empty(shape), np.empty(shape)
    window_filter(w.rssi, w.ts, bands, 20.0, 8.0, med, n, spread)
    fresh = w.ts[bands] > 12.0
    want = robust_median(np.where(fresh, w.rssi[bands], np.nan))
    assert np.array_equal(med, want[0], equal_nan=True)
    assert np.array_equal(n, want[1]) and np.array_equal(spread, want[2])
    assert np.array_equal(np.nan_to_num(w.filtered(bands, 20.0, 8.0, compiled=False)[0], nan=1.0),
                          np.nan_to_num(med, nan=1.0))


def test_zone_classify_equals_the_numpy_methods() -> None:
    rng = np.random.default_rng(4)
    zones = ZoneMap([
        ZoneShape("a", "permitted", np.array([[0, 0], [30, 0], [30, 16], [0, 16]], float)),
        ZoneShape("b", "permitted", np.array([[34, 0], [64, 0], [50, 20], [34, 16]], float)),
        ZoneShape("gate", "restricted", np.array([[28, -2], [36, -2], [36, 2], [28, 2]], float)),
    ])
    pts = rng.uniform([-10, -10], [75, 30], (400, 2))
    allowed = rng.random((400, 3)) < 0.5
    is_band = rng.random(400) < 0.8
    restricted = np.array([False, False, True])
    sd, zone, out, first_r = zones.classify(pts, allowed & is_band[:, None], restricted, is_band)
    ref = zones.signed_distances(pts)
    assert np.allclose(sd, ref, atol=1e-12)
    names = [*(z.id for z in zones.zones), None]
    assert [names[z] for z in zone] == zones.containing(ref)
    want_out = np.where(is_band, zones.union_signed_distance(ref, allowed & is_band[:, None]), 0.0)
    assert np.array_equal(out, want_out)
    in_r = (ref < 0) & restricted & ~(allowed & is_band[:, None]) & is_band[:, None]
    assert np.array_equal(first_r, np.where(in_r.any(axis=1), np.argmax(in_r, axis=1), -1))


def test_kernel_cache_dir_follows_the_environment(tmp_path: Path) -> None:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = "import numba, edge.bands.jit as j; print(j.cache_dir(), numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    assert out.split() == [str(tmp_path), str(tmp_path)]



def test_pipeline_fixes_equal_with_compiled_and_numpy_engines(demo_site: SiteConfig,
                                                              demo_keys: dict[int, bytes]) -> None:
    """Same observations through both engines: the fixes agree to rounding, except where a fit starts
    from a degenerate state, and the alerts are the same."""
    sim = Simulator(demo_site, demo_keys, seed=2, start_ts=500.0,
                    scenario=demo_scenario(demo_site, escape_band=1002, escape_at_s=10.0))
    pipes = {c: BandPipeline(demo_site, demo_keys, node="n") for c in (True, False)}
    alerts: dict[bool, list[tuple[str, str, float]]] = {True: [], False: []}
    compared = outside = differ = 0
    was_degenerate: set[int] = set()
    for s in range(1, 91):
        obs = sim.advance(500.0 + s)
        for c, pipe in pipes.items():
            tr = pipe.tracker
            tr.locate_params = dataclasses.replace(tr.locate_params, compiled=c)
            for o in obs:
                pipe.observe_raw(o)
            alerts[c] += [(a.type, a.state, a.ts) for a in pipe.tick(500.0 + s)]
        for band in demo_site.bands:
            a, b = pipes[True].fix(band.id), pipes[False].fix(band.id)
            if a is None or b is None:
                assert a is b
                continue
            compared += 1
            outside += a.evidence > 0
            if max(a.err_m, b.err_m) >= LocateParams().max_err_m:
                was_degenerate.add(band.id)
            if not np.allclose([a.x, a.y, a.out_m, a.err_m, a.evidence], [b.x, b.y, b.out_m, b.err_m, b.evidence],
                               rtol=1e-6, atol=1e-5):
                # Measured (seed 2): 3 bands, 1.5 % of fixes. The demo site is mirror-symmetric about
                # x = 15; a band heard only by the receivers on that line has a flat χ² across it
                # (err_m = max). Exact arithmetic stays on the line, numpy's rounding noise drifts
                # off it one way or the other, and the warm start carries that on for a few ticks.
                assert band.id in was_degenerate, (band.id, a, b)
                differ += 1
    assert compared > 2000 and outside > 0 and differ <= 0.03 * compared, (compared, differ)
    assert alerts[True] == alerts[False]


def test_unwritable_kernel_cache_dir_falls_back(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "cache"  # cannot be created, not even by root
    env = dict(os.environ, NUMBA_CACHE_DIR=str(bad), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    code = "import numba, edge.bands.jit as j; print(j.cache_dir(), numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    want = str(tmp_path / "xdg" / "qwatch" / "numba")
    assert out.split() == [want, want]
