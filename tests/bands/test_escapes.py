"""The breach benchmark's escape scripts produce the geometry they claim (edge/sim/escapes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.sim import Simulator
from edge.sim.escapes import HOWS, KINDS, RETURN_AFTER_S, STAND_OUT_M, WANDER_RADIUS_M, AllowedArea, Escape, make_escape
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import Scenario
from edge.sim.sites import BREACH_LAYOUTS, layout_site
from protocols.advert import FLAG_MOVING, decode_status


def _path(e: Escape, until: float) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(0.0, until, 0.5)
    return ts, np.array([e.script.mover.position(float(t)) for t in ts])


@pytest.mark.parametrize("layout", list(BREACH_LAYOUTS))
def test_escape_geometry(layout: str) -> None:
    site = layout_site(layout, 16)
    area = AllowedArea(site, list(site.bands[0].allowed_zones))
    for k, band in enumerate(site.bands):
        kind, how = KINDS[k % len(KINDS)], HOWS[(k // len(KINDS)) % len(HOWS)]
        e = make_escape(site, band.id, 3, kind=kind, how=how, cross_at=120.0 + 7 * k, duration_s=700.0)
        ts, pos = _path(e, 700.0)
        out = area.out_m(pos)
        # Inside until the crossing, on the fence at the crossing, outside until back (if ever).
        assert out[ts < e.cross_at - 0.01].max() <= 0.0
        assert abs(float(area.out_m(np.array([e.script.mover.position(e.cross_at)]))[0])) < 0.05
        end = e.reentry_at if e.reentry_at is not None else 700.0
        assert out[(ts > e.cross_at + 0.5) & (ts < end - 0.5)].min() > 0.0
        if kind in ("stand", "return"):
            assert e.stand is not None
            assert STAND_OUT_M[0] <= e.out_m <= STAND_OUT_M[1] + 0.6
            arrived = e.cross_at + 40.0  # walked the 20-35 m at 1.3 m/s
            there = (ts > arrived) & (ts < end - 40.0)
            spread = np.linalg.norm(pos[there] - np.array(e.stand), axis=1)
            assert spread.max() <= WANDER_RADIUS_M + 1e-6
            assert (spread.max() > 0.5) == e.wander
            assert e.script.fidget < 0.4
        if kind == "return":
            assert e.reentry_at is not None
            assert RETURN_AFTER_S[0] <= e.reentry_at - e.cross_at <= RETURN_AFTER_S[1]
            assert out[ts > e.reentry_at + 0.5].max() <= 0.0
        else:
            assert e.reentry_at is None
        if kind == "range":
            assert e.out_m >= 199.0
        if kind == "walk":
            assert out[ts > e.cross_at + 60.0].min() > 20.0  # walking on, well away from the fence
        if how == "gate":
            gate = next(z for z in site.zones if z.kind == "restricted")
            centre = np.mean(np.array(gate.polygon), axis=0)
            assert np.linalg.norm(np.array(e.cross) - centre) <= 3.0


def test_a_stander_sets_the_moving_flag_only_on_fidgets() -> None:
    site = layout_site("compound", 2)
    keys = site_demo_keys(site)
    e = make_escape(site, site.bands[0].id, 11, kind="stand", how="fence", cross_at=30.0, duration_s=400.0)
    sim = Simulator(site, keys, seed=11, start_ts=0.0, scenario=Scenario(scripts={e.band: e.script}))
    moving: dict[int, bool] = {}
    for o in sim.advance(400.0):
        if o.ts > e.cross_at + 40.0:
            adv = decode_status(o.data)
            if adv.band_id == e.band:
                moving[adv.counter] = bool(adv.flags & FLAG_MOVING)
    share = sum(moving.values()) / len(moving)
    assert len(moving) > 200
    assert 0.2 <= share <= 0.45


def test_unknown_kind_is_refused() -> None:
    site = layout_site("demo", 2)
    with pytest.raises(ValueError, match="kind"):
        make_escape(site, site.bands[0].id, 0, kind="fly", how="fence", cross_at=60.0)
    with pytest.raises(ValueError, match="layout"):
        layout_site("nowhere", 2)
