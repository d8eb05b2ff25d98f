"""Do the reference beacons calibrate every receiver? `plan`'s beacon section, from the site file alone.

Each beacon → receiver pair's averaged level is predicted from the log-distance model with the site's
exponent. The pipeline's calibration (`edge.bands.calibration.Calibration`) only uses a pair whose averaged
level is above its cut, the learned reception floor + `TrackerParams.calibration_above_floor_db`; the plan
takes the floor it models everywhere else (`FLOOR_DBM`, −100 dBm: the default radio's sensitivity). A real
pair's average scatters about the prediction by the receiver's unknown gain and the beacon spot's own slow
shadow, so a pair counts only when its predicted level clears the cut by one sd of that scatter: a pair
right at the cut is used on some sites and not on others, and a receiver resting on it is not calibrated.
The pairs that count are then fed, as averages, through `Calibration` itself, so the remaining gain sd per
receiver is the pipeline's own posterior (`link_var_db2`). A receiver keeping ≥ `NOT_PINNED_SHARE` of the
prior's sd is "not pinned": no pair, or only pairs worth less than the prior itself. For such a receiver the
plan also gives the chance that some pair of it clears the cut anyway (the gain shared by its pairs, each
pair's shadow its own), which is what decides it on a real site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.bands.calibration import Calibration
from edge.bands.geometry import as_points, distance_to_boundary, grid_over
from edge.bands.tracker import TrackerParams
from protocols.site_config import SiteConfig

F64 = NDArray[np.float64]

# A beacon's advertised 1 m power. The site file does not carry it (beacons are enrolled like bands); this
# is the simulator's beacon (edge/sim/simulator.py) and `plan --beacon-power` sets another.
BEACON_POWER_DBM = -55.0
NOT_PINNED_SHARE = 0.8  # remaining gain sd at or above this share of the prior: the beacons do not pin it
CANDIDATE_SPACING_M = 2.0
# A suggested beacon keeps this far from every receiver: within a few metres the link is the mounting and
# the antenna pattern, not the log-distance model the calibration fits.
MIN_FROM_RX_M = 3.0
MAX_EXTRA_BEACONS = 8  # the greedy "pin every receiver" list stops here
MAX_CANDIDATES_PER_SIDE = 120  # the candidate grid's spacing grows on a site wider than 240 m
# What the tracker also passes: the slow part of the site's shadowing that a beacon's average keeps.
PAIR_ERROR_SHARE = 0.7


@dataclass(frozen=True)
class Pair:
    """One beacon → receiver pair as the plan predicts it."""

    beacon: int
    level_dbm: float  # predicted averaged level at the receiver
    used: bool  # clears the cut by the margin: the calibration would use it


@dataclass(frozen=True)
class ReceiverCal:
    """What the beacons leave of one receiver's gain uncertainty."""

    rx: str
    gain_sd_db: float  # from the pairs that count
    pairs: tuple[Pair, ...]  # every beacon's pair, loudest first
    use_chance: float  # chance that at least one of its pairs clears the cut itself (no margin)

    @property
    def used(self) -> tuple[Pair, ...]:
        return tuple(p for p in self.pairs if p.used)


@dataclass(frozen=True)
class BeaconSuggestion:
    """One more beacon and what it would do."""

    position: tuple[float, float]
    worst_before: float  # worst receiver's gain sd, dB
    worst_after: float
    changed: tuple[tuple[str, float, float], ...]  # receivers whose sd drops ≥ 0.1 dB: (id, before, after)
    still_not_pinned: tuple[str, ...]
    # Where `still_not_pinned` is not empty: the further beacons that, with this one, pin every receiver
    # (None: not within MAX_EXTRA_BEACONS, or some receiver no candidate reaches).
    then: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class CalibrationPlan:
    """The beacon section of a plan."""

    cut_dbm: float
    margin_db: float
    prior_sd_db: float
    beacon_power_dbm: float
    receivers: tuple[ReceiverCal, ...]
    suggestion: BeaconSuggestion | None

    def pinned(self, r: ReceiverCal) -> bool:
        return r.gain_sd_db < NOT_PINNED_SHARE * self.prior_sd_db

    @property
    def not_pinned(self) -> tuple[ReceiverCal, ...]:
        return tuple(r for r in self.receivers if not self.pinned(r))

    @property
    def gain_sd(self) -> F64:
        """(R,) each receiver's remaining gain sd, dB, in the site's receiver order."""
        return np.array([r.gain_sd_db for r in self.receivers], dtype=np.float64)


def calibration_cut_dbm(floor_dbm: float) -> float:
    """The level a beacon pair's average must exceed to be used, as the tracker sets it from its floor."""
    return floor_dbm + TrackerParams().calibration_above_floor_db


def level_margin_db(site: SiteConfig) -> float:
    """sd of a pair's averaged level about its prediction: the receiver's gain prior and the beacon spot's
    slow shadow (the share the tracker gives the calibration), taken as independent."""
    return math.hypot(site.radio.receiver_gain_sd_db, PAIR_ERROR_SHARE * site.radio.shadowing_db)


def use_chance(levels: F64, cut_dbm: float, gain_sd_db: float, shadow_sd_db: float) -> float:
    """Chance that at least one of a receiver's pairs (`levels`, predicted dBm) averages above the cut, when
    the receiver's gain error (shared by its pairs) and each pair's shadow (its own) are normal."""
    if len(levels) == 0:
        return 0.0
    # E over the gain ~ N(0, gain_sd²) on a fine grid (a step, with no shadowing, defeats Gauss-Hermite).
    z = np.linspace(-6.0, 6.0, 961)
    w = np.exp(-0.5 * z**2)
    margin = cut_dbm - levels[None, :] - gain_sd_db * z[:, None]
    if shadow_sd_db > 0.0:
        below = np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), otypes=[float])(margin / shadow_sd_db)
    else:
        below = (margin >= 0.0).astype(np.float64)
    none = float(w @ below.prod(axis=1)) / float(w.sum())
    return min(max(1.0 - none, 0.0), 1.0)


def _positions(site: SiteConfig) -> tuple[F64, F64]:
    rx = np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
    bc = np.array([b.position for b in site.beacons], dtype=np.float64).reshape(-1, 2)
    return rx, bc


def pair_levels(site: SiteConfig, rx: F64, beacons: F64, power_dbm: float) -> F64:
    """(B, R) predicted level of each pair; distances clipped at 0.5 m as `Calibration` clips them."""
    d = np.linalg.norm(beacons[:, None, :] - rx[None, :, :], axis=2)
    return np.asarray(power_dbm - 10.0 * site.radio.path_loss_exponent * np.log10(np.maximum(d, 0.5)))


def posterior_sd(site: SiteConfig, rx: F64, beacons: F64, used: NDArray[np.bool_], levels: F64,
                 power_dbm: float, cut_dbm: float) -> F64:
    """(R,) remaining gain sd (dB) per receiver: the pairs in `used` fed through `Calibration` as averages.

    The averages are the model's own, so the solve's gains are 0; only its covariance matters here, and it
    depends on which pairs are used and their distances, as in the pipeline."""
    n_b = len(beacons)
    cal = Calibration(rx, np.arange(n_b, dtype=np.int64), beacons, site.radio.path_loss_exponent,
                      bias_prior_db=site.radio.receiver_gain_sd_db,
                      pair_error_db=PAIR_ERROR_SHARE * site.radio.shadowing_db, floor_dbm=cut_dbm, min_updates=1,
                      first_solve_updates=1)
    if n_b:
        med = np.where(used, levels, np.nan)
        cal.update(np.arange(n_b, dtype=np.int64), med, np.full(n_b, power_dbm))
    return np.asarray(np.sqrt(cal.link_var_db2()))


def _evaluate(site: SiteConfig, rx: F64, beacons: F64, power_dbm: float, cut_dbm: float,
              margin_db: float) -> tuple[F64, F64, NDArray[np.bool_]]:
    levels = pair_levels(site, rx, beacons, power_dbm)
    used = levels > cut_dbm + margin_db
    return posterior_sd(site, rx, beacons, used, levels, power_dbm, cut_dbm), levels, used


def candidate_positions(site: SiteConfig, rx: F64, beacons: F64) -> F64:
    """Where one more beacon may go: a grid over the site's extent (zones, receivers, beacons), away from
    the receivers; coarser than `CANDIDATE_SPACING_M` on a site too wide for that."""
    pts = [rx, beacons, *[np.array(z.polygon, dtype=np.float64).reshape(-1, 2) for z in site.zones]]
    allp = np.concatenate(pts, axis=0)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    spacing = max(CANDIDATE_SPACING_M, float((hi - lo).max()) / MAX_CANDIDATES_PER_SIDE)
    grid = grid_over((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), spacing)
    far = np.ones(len(grid), dtype=bool)
    for r in rx:  # one receiver at a time: the (grid × receivers) matrix can be large
        far &= np.linalg.norm(grid - r, axis=1) >= MIN_FROM_RX_M
    return np.asarray(grid[far])


def _pair_error_db(site: SiteConfig) -> float:
    """What `Calibration` takes one averaged pair to be worth (its own rule, read off an instance)."""
    empty = np.zeros((0, 2))
    return Calibration(empty, np.zeros(0, dtype=np.int64), empty, site.radio.path_loss_exponent,
                       bias_prior_db=site.radio.receiver_gain_sd_db,
                       pair_error_db=PAIR_ERROR_SHARE * site.radio.shadowing_db).pair_error_db


def _sd_from_counts(site: SiteConfig, k: F64) -> F64:
    """Gain sd for k counted pairs per receiver, in closed form (see `_best_candidate`)."""
    prior = site.radio.receiver_gain_sd_db
    return np.asarray(1.0 / np.sqrt(1.0 / prior**2 + k / _pair_error_db(site) ** 2))


def _best_candidate(site: SiteConfig, rx: F64, cands: F64, to_wall: F64, power_dbm: float, need_dbm: float,
                    k_base: F64) -> tuple[int, NDArray[np.bool_]]:
    """Index of the candidate that most lowers the worst receiver's gain sd (ties: fewest receivers left not
    pinned, then the most spare level on the pairs that newly pin, then the lowest total variance, then the
    nearest a zone outline, a fence or wall to mount it on), and the pairs it adds (R,).

    Ranked in closed form: given the exponent, each pair row holds one receiver's gain, so `Calibration`'s
    Var(g_r | n) is 1 / (1/prior² + k_r/pair²) for k_r counted pairs (tests check it against the class), which
    makes every candidate one vectorised step instead of one solve."""
    levels = pair_levels(site, rx, cands, power_dbm)
    new = levels > need_dbm  # (C, R)
    sd = _sd_from_counts(site, k_base[None, :] + new)
    line = NOT_PINNED_SHARE * site.radio.receiver_gain_sd_db
    # How far the weakest pair of a receiver it newly pins clears the line, in whole dB: a pair just over it is
    # the marginal case the margin exists for, so among equals the spot between those receivers wins.
    newly = new & (_sd_from_counts(site, k_base) >= line)[None, :] & (sd < line)
    spare = np.floor(np.where(newly, levels - need_dbm, np.inf).min(axis=1, initial=np.inf))
    spare = np.where(np.isfinite(spare), spare, 0.0)
    order = np.lexsort((to_wall, np.round((sd**2).sum(axis=1), 6), -spare, (sd >= line).sum(axis=1),
                        np.round(sd.max(axis=1), 2)))
    best = int(order[0])
    return best, np.asarray(new[best])


def suggest_beacon(site: SiteConfig, power_dbm: float, cut_dbm: float, margin_db: float,
                   base_sd: F64) -> BeaconSuggestion | None:
    """One more beacon where it helps most (its effect from `Calibration` itself); and, while receivers stay
    not pinned, the next ones (greedy, up to `MAX_EXTRA_BEACONS` in all) that pin every receiver."""
    rx, beacons = _positions(site)
    cands = candidate_positions(site, rx, beacons)
    if len(cands) == 0:
        return None
    need = cut_dbm + margin_db
    k = (pair_levels(site, rx, beacons, power_dbm) > need).sum(axis=0).astype(np.float64)
    to_wall = np.min([distance_to_boundary(cands, as_points(z.polygon)) for z in site.zones], axis=0)
    i, added = _best_candidate(site, rx, cands, to_wall, power_dbm, need, k)
    pos = cands[i]
    sd, _, _ = _evaluate(site, rx, np.vstack([beacons, pos]), power_dbm, cut_dbm, margin_db)
    line = NOT_PINNED_SHARE * site.radio.receiver_gain_sd_db
    ids = [r.id for r in site.receivers]
    changed = tuple((ids[r], float(base_sd[r]), float(sd[r])) for r in range(len(ids)) if base_sd[r] - sd[r] >= 0.1)
    still = tuple(ids[r] for r in range(len(ids)) if sd[r] >= line)
    k_with = k + added
    more: list[tuple[float, float]] = []
    left = int((_sd_from_counts(site, k_with) >= line).sum())
    while left and len(more) + 1 < MAX_EXTRA_BEACONS:
        j, add = _best_candidate(site, rx, cands, to_wall, power_dbm, need, k_with)
        now = int((_sd_from_counts(site, k_with + add) >= line).sum())
        if now >= left:
            break  # no candidate pins another receiver
        more.append((float(cands[j, 0]), float(cands[j, 1])))
        k_with, left = k_with + add, now
    pin_all = tuple(more) if still and not left else None
    return BeaconSuggestion((float(pos[0]), float(pos[1])), float(base_sd.max()), float(sd.max()), changed, still,
                            pin_all)


def plan_calibration(site: SiteConfig, *, floor_dbm: float, beacon_power_dbm: float = BEACON_POWER_DBM,
                     suggest: bool = True) -> CalibrationPlan:
    """Per receiver: the pairs that pin it and its remaining gain sd; and where one more beacon helps most."""
    rx, beacons = _positions(site)
    cut, margin = calibration_cut_dbm(floor_dbm), level_margin_db(site)
    sd, levels, used = _evaluate(site, rx, beacons, beacon_power_dbm, cut, margin)
    recs = []
    for r, rec in enumerate(site.receivers):
        pairs = sorted((Pair(b.id, float(levels[j, r]), bool(used[j, r])) for j, b in enumerate(site.beacons)),
                       key=lambda p: -p.level_dbm)
        chance = use_chance(levels[:, r], cut, site.radio.receiver_gain_sd_db,
                            PAIR_ERROR_SHARE * site.radio.shadowing_db)
        recs.append(ReceiverCal(rec.id, float(sd[r]), tuple(pairs), chance))
    sug = suggest_beacon(site, beacon_power_dbm, cut, margin, sd) if suggest and len(rx) else None
    return CalibrationPlan(cut, margin, site.radio.receiver_gain_sd_db, beacon_power_dbm, tuple(recs), sug)


def _fmt_pairs(pairs: tuple[Pair, ...], limit: int = 3) -> str:
    shown = ", ".join(f"{p.beacon} {p.level_dbm:.1f}" for p in pairs[:limit])
    return shown + (f" +{len(pairs) - limit} more" if len(pairs) > limit else "")


def format_calibration(cp: CalibrationPlan, n_beacons: int) -> list[str]:
    """The lines `plan` prints about the beacons."""
    prior = cp.prior_sd_db
    if n_beacons == 0:
        return [f"beacons: none. Each receiver's gain rests on the bands' own evidence alone (gain sd {prior:.1f} dB, "
                "the site's prior, until enough bands are heard well by it), so a receiver 4-6 dB off is found "
                "late or not at all and can pull bands outside: add beacons", *_suggestion_lines(cp)]
    need = cp.cut_dbm + cp.margin_db
    above = TrackerParams().calibration_above_floor_db
    lines = [f"beacon calibration (beacons at {cp.beacon_power_dbm:.0f} dBm at 1 m; a pair counts when its predicted "
             f"level is above {need:.1f} dBm:",
             f"  the calibration's cut {cp.cut_dbm:.0f} dBm (floor {cp.cut_dbm - above:.0f} + {above:.0f} dB) plus "
             f"{cp.margin_db:.1f} dB, a pair's own scatter; not pinned: gain sd >= {NOT_PINNED_SHARE:.0%} of the prior "
             f"{prior:.1f} dB):"]
    for r in cp.receivers:
        if cp.pinned(r):
            lines.append(f"  {r.rx:8s} pinned by {len(r.used)} pair(s) ({_fmt_pairs(r.used)} dBm): "
                         f"gain sd {r.gain_sd_db:.1f} dB")
        elif r.used:
            lines.append(f"  {r.rx:8s} weakly pinned, counts as not pinned: only {_fmt_pairs(r.used)} dBm, worth less "
                         f"than the prior at this shadowing; gain sd {r.gain_sd_db:.1f} of {prior:.1f} dB")
        else:
            loudest = ", ".join(f"{p.beacon} {p.level_dbm:.1f}" for p in r.pairs[:2])
            lines.append(f"  {r.rx:8s} NOT PINNED: loudest pairs {loudest} dBm; gain sd {r.gain_sd_db:.1f} dB; "
                         f"{r.use_chance:.0%} chance one clears the cut anyway")
    if cp.not_pinned:
        lines.append("  (a receiver not pinned is trusted less by the breach test, and if its gain is off, "
                     "bands near it can be placed outside)")
    return lines + _suggestion_lines(cp)


def _suggestion_lines(cp: CalibrationPlan) -> list[str]:
    s = cp.suggestion
    if s is None:
        return []
    head = (f"one more beacon would help most at ({s.position[0]:.0f}, {s.position[1]:.0f}): worst receiver gain sd "
            f"{s.worst_before:.1f} -> {s.worst_after:.1f} dB")
    lines = [head + (f"; {', '.join(f'{i} {a:.1f} -> {b:.1f}' for i, a, b in s.changed)}" if s.changed else
                     "; no receiver gains from it")]
    if s.still_not_pinned:
        lines.append(f"  still not pinned with it: {', '.join(s.still_not_pinned)}")
        if s.then is not None:
            at = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in s.then)
            lines.append(f"  {len(s.then) + 1} beacons pin every receiver: this one and {at}")
        else:
            lines.append(f"  {MAX_EXTRA_BEACONS} more beacons, placed one at a time this way, do not pin every "
                         "receiver; add the first and run plan again")
    return lines
