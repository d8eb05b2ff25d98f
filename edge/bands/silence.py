"""Silence as breach evidence: a band heard well and then heard by no live receiver.

When nobody hears a band, the tracker has no fix, and the rules used to carry the last one
forward: a CUSUM frozen at whatever it had reached. But silence is data. Receivers that are
listening (they hear other bands and beacons right now) and that the link model says would hear
the band from every point inside its allowed area it could have reached since it was last heard
are evidence that it is not there. Per tick this module scores the censoring term of
`LinkModel.cost` for an all-silent band, C(x) = Σ_live (max(P − 10·n·log10 d − threshold, 0) / σ_c)²
(σ_c widened by each receiver's calibration uncertainty), and gives the rules
Δχ² = min C over reachable inside points − min C over reachable outside points, where reachable
means within walking distance (2 m/s over at most 8 s) of the last fix: the band was already
unheard by everyone a few adverts after its last sample, so it must have been at a
silence-consistent point by then. A band silenced mid-block has no silent-consistent point
outside within reach: Δχ² ≈ 0 (a device that stopped is `band_missing`'s business); one that
fades out past a fence has.

When silence does NOT count:
* the band told us its battery is low (flag or level ≤ `low_battery_pct`): a flat battery inside
  is the commonest silence, and `band_missing` at `missing_after_s` is the alert for it;
* before the band's filter window has emptied (its last samples still give a fix);
* after `missing_after_s` (then `band_missing` speaks; a breach already raised stays raised);
* receivers that heard nothing from anyone in the last `live_s` (down, or their host is) do not
  count as listening, so a dead receiver's bands are not pushed outside.
A band whose battery dies without warning next to a well-covered fence therefore can raise
`geofence_breach` ("reason": "silent") some 20 s before `band_missing`: on the radio data that is
indistinguishable from walking out of range, and a guard should look either way (bands.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edge.bands.geometry import as_points, grid_over, sample_region, signed_distance
from protocols.advert import FLAG_LOW_BATTERY
from protocols.site_config import SiteConfig

F64 = NDArray[np.float64]


class _Status(Protocol):
    battery: int | None
    flags: int


class _FixLike(Protocol):
    @property
    def ts(self) -> float: ...
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...
    @property
    def err_m(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SilenceParams:
    """When silence counts and how far a person can have walked."""

    live_s: float = 5.0  # a receiver that heard anyone this recently is listening
    max_speed_mps: float = 2.0  # reachable points: within this speed × time since the last sample
    reach_s: float = 8.0  # ... over at most this long (about one filter window of missed adverts)
    max_err_m: float = 200.0  # the last fix's error radius (a proximity fix says "anywhere near rx")
    horizon_s: float = 60.0  # silence older than this is band_missing's business
    margin_m: float = 1.0  # outside candidates: at least this far outside the allowed area
    outside_pad_m: float = 60.0
    outside_spacing_m: float = 3.0


DEFAULT_SILENCE = SilenceParams()


class SilenceEvidence:
    """Δχ² that silent bands are outside their allowed area, from the receivers that still listen."""

    def __init__(self, site: SiteConfig, rx_pos: F64, params: SilenceParams | None = None,
                 min_distance_m: float = 0.5) -> None:
        self.p = params or SilenceParams()
        self.rx_pos = np.asarray(rx_pos, dtype=np.float64).reshape(-1, 2)
        # score() is a pure function of its inputs, and once a band's reach stops growing (reach_s) they
        # stay the same tick after tick: remembered per band, so a silent band costs one look-up a tick.
        self._memo: dict[tuple[object, ...], float] = {}
        polys = {z.id: as_points(z.polygon) for z in site.zones}
        groups: dict[tuple[str, ...], int] = {}
        self.group_of: dict[int, int] = {}
        for b in site.bands:
            key = tuple(sorted(b.allowed_zones))
            self.group_of[b.id] = groups.setdefault(key, len(groups))
        lo_x, lo_y, hi_x, hi_y = _bounds([polys[z] for key in groups for z in key], self.p.outside_pad_m)
        grid = grid_over((lo_x, lo_y, hi_x, hi_y), self.p.outside_spacing_m)
        centre = np.array([(lo_x + hi_x) / 2, (lo_y + hi_y) / 2])
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        far = np.concatenate([centre + r * np.stack([np.cos(ang), np.sin(ang)], axis=1) for r in (100.0, 200.0, 400.0)])
        self.inside: list[F64] = []
        self.outside: list[F64] = []
        for key in groups:
            shapes = [polys[z] for z in key]
            self.inside.append(sample_region(shapes, spacing=2.0, edge_spacing=1.0))
            pts = np.concatenate([grid, far])
            out_d = np.min([signed_distance(pts, poly) for poly in shapes], axis=0)
            self.outside.append(pts[out_d > self.p.margin_m])
        # 10·log10(d) from every candidate to every receiver, per allowed-area group.
        self._path_in = [_path(g, self.rx_pos, min_distance_m) for g in self.inside]
        self._path_out = [_path(g, self.rx_pos, min_distance_m) for g in self.outside]

    def _cost(self, path: F64, sel: NDArray[np.bool_], power: float, listening: NDArray[np.bool_], exponent: float,
              threshold_dbm: float, censor_var_db2: F64) -> float:
        """Min over selected candidates of the censoring χ² of an all-silent band (inf if none selected)."""
        if not sel.any():
            return math.inf
        excess = power - exponent * path[sel][:, listening] - threshold_dbm
        return float((np.maximum(excess, 0.0) ** 2 / censor_var_db2[listening][None, :]).sum(axis=1).min())

    def score(self, group: int, power: float, last: _FixLike, silent_s: float, listening: NDArray[np.bool_],
              exponent: float, threshold_dbm: float, censor_var_db2: F64) -> float:
        """Δχ² of silence for one band of allowed-area `group`, last fixed at `last`, unheard for `silent_s`.

        Both hypotheses are limited to where the person can have walked since the last sample: a band
        silenced in the middle of a block, far from any point outside that nobody would hear, is a
        device that stopped (band_missing's business), not a person who left.
        """
        if not listening.any():
            return 0.0
        # Every listening receiver missed the band from the first advert after its last sample on, so
        # it was at silence-consistent points within a few seconds: reach stops growing after reach_s.
        # (A band silenced mid-block would otherwise "reach" far outside given time, and a walker
        # cannot get there unheard: the path passes the receivers.)
        reach = self.p.max_speed_mps * min(max(silent_s, 0.0), self.p.reach_s) + min(last.err_m, self.p.max_err_m)
        key = (group, power, last.x, last.y, reach, listening.tobytes(), exponent, threshold_dbm,
               censor_var_db2.tobytes())
        value = self._memo.get(key)
        if value is None:
            value = self._score(group, last, reach, (power, listening, exponent, threshold_dbm, censor_var_db2))
            if len(self._memo) > 4096:
                self._memo.clear()
            self._memo[key] = value
        return value

    def _score(self, group: int, last: _FixLike, reach: float, args: tuple[float, NDArray[np.bool_], float, float,
                                                                            F64]) -> float:
        pin, pout = self.inside[group], self.outside[group]
        c_in = self._cost(self._path_in[group], np.hypot(pin[:, 0] - last.x, pin[:, 1] - last.y) <= reach, *args)
        c_out = self._cost(self._path_out[group], np.hypot(pout[:, 0] - last.x, pout[:, 1] - last.y) <= reach, *args)
        if math.isinf(c_out):
            return 0.0  # nowhere outside within reach: it did not leave (yet)
        if math.isinf(c_in):
            c_in = self._cost(self._path_in[group], np.ones(len(pin), dtype=bool), *args)
        return max(c_in - c_out, 0.0)

    def evaluate(self, now: float, *, band_ids: Sequence[int], last_sample: F64, power: F64, window_s: float,
                 rx_last: Sequence[float], fixes: Mapping[int, _FixLike], status: Mapping[int, _Status],
                 low_battery_pct: int, exponent: float, threshold_dbm: float,
                 censor_var_db2: F64) -> dict[int, float]:
        """Silence Δχ² for every band (dense index i < len(band_ids)) whose silence counts this tick."""
        n = len(band_ids)
        ls = last_sample[:n]
        silent = np.nonzero((ls <= now - window_s) & (ls > now - self.p.horizon_s))[0]
        out: dict[int, float] = {}
        if len(silent) == 0:
            return out
        listening = np.asarray(rx_last, dtype=np.float64) > now - self.p.live_s
        for i in silent.tolist():
            band = band_ids[i]
            last = fixes.get(band)
            st = status.get(band)
            group = self.group_of.get(band)
            if last is None or st is None or group is None or _low_battery(st, low_battery_pct):
                continue
            out[band] = self.score(group, float(power[i]), last, now - float(ls[i]), listening, exponent,
                                   threshold_dbm, censor_var_db2)
        return out


def _path(pts: F64, rx_pos: F64, min_distance_m: float) -> F64:
    d = np.linalg.norm(pts[:, None, :] - rx_pos[None, :, :], axis=2)
    return np.asarray(10.0 * np.log10(np.maximum(d, min_distance_m)))


def _bounds(polys: Sequence[F64], pad: float) -> tuple[float, float, float, float]:
    allp = np.concatenate(polys)
    return (float(allp[:, 0].min() - pad), float(allp[:, 1].min() - pad), float(allp[:, 0].max() + pad),
            float(allp[:, 1].max() + pad))


def _low_battery(st: _Status, low_battery_pct: int) -> bool:
    return bool(st.flags & FLAG_LOW_BATTERY) or (st.battery is not None and st.battery <= low_battery_pct)
