"""Alert rules for one band (docs/protocol.md §4): pure state machines with the clock injected.

The pipeline feeds each band's `BandRules` three kinds of facts, each with its own time:
verified adverts (flags, battery, temperature), position fixes (signed distance to the allowed
area with its error radius, restricted zone), and clock ticks. It gets back `Decision`s:
``raised`` or ``cleared`` per alert type, strictly alternating, so the caller can reuse the
raise's alert_id on the clear. Nothing here reads a clock, a socket or a file.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from protocols.advert import FLAG_CHARGING, FLAG_LOW_BATTERY, FLAG_MOVING, FLAG_SOS, FLAG_STRAP_OPEN
from protocols.bounds import Range, check_bounds
from protocols.site_config import Rules

State = Literal["raised", "cleared"]


@dataclass(frozen=True, slots=True)
class Decision:
    """An alert of `type` changes state at `ts`."""

    type: str
    state: State
    ts: float
    detail: dict[str, Any]


# Bounds of RuleParams. The first seven are the site config's `rules:` ranges
# (protocols.site_config.Rules); the rest are the pipeline's constants, kept meaningful.
_RULE_BOUNDS = {
    "breach_dwell_s": Range(ge=0, le=3600), "restricted_dwell_s": Range(ge=0, le=3600),
    "clear_dwell_s": Range(ge=0, le=3600), "missing_after_s": Range(ge=5, le=86400), "fever_c": Range(ge=35, le=42),
    "low_battery_pct": Range(ge=0, le=100), "no_motion_s": Range(ge=60, le=86400),
    "evidence_chi2": Range(gt=0), "evidence_weight": Range(gt=0, le=1), "evidence_max": Range(gt=0),
    "evidence_cap": Range(gt=0), "evidence_drift": Range(ge=0), "evidence_drift_inside": Range(ge=0),
    "support_chi2": Range(ge=0), "support_s": Range(gt=0, le=600), "still_weight": Range(ge=0, le=1),
    "motion_tau_adverts": Range(gt=0), "min_margin_m": Range(ge=0), "restricted_max_err_m": Range(gt=0),
    "gap_s": Range(ge=0, le=600), "fever_window_s": Range(gt=0, le=86400), "fever_min_readings": Range(ge=1),
    "fever_min_span_s": Range(ge=0, le=86400), "fever_clear_hysteresis_c": Range(ge=0, le=5),
    "sos_clear_s": Range(ge=0, le=86400), "security_clear_s": Range(ge=0, le=86400),
}


@dataclass(frozen=True, slots=True)
class RuleParams:
    """Thresholds from the site's `rules:` block plus the pipeline's own constants."""

    breach_dwell_s: float = 20.0
    restricted_dwell_s: float = 5.0
    clear_dwell_s: float = 10.0
    missing_after_s: float = 60.0
    fever_c: float = 37.8
    low_battery_pct: int = 15
    no_motion_s: float = 1800.0
    evidence_chi2: float = 9.0  # accumulated Δχ² that counts as "outside beyond the error margin" (≈3σ)
    evidence_weight: float = 0.25  # consecutive 8 s windows share most samples: ~4 ticks per new window
    evidence_max: float = 27.0  # the CUSUM saturates here, so a return inside clears in bounded time
    evidence_cap: float = 40.0  # one window can add at most this (model errors are not evidence)
    # Subtracted per window: weak evidence fades instead of piling up. 1.0 ≈ the mean Δχ² (1 dof) a
    # band at the fence produces under "inside" when its windows are correlated.
    evidence_drift: float = 1.0
    evidence_drift_inside: float = 8.0  # estimate inside the allowed area: fades fast
    # The dwell needs CURRENT evidence, not only the CUSUM level reached earlier: the mean Δχ² of the
    # fixes of the last `support_s` (one filter window) must be at least `support_chi2` at every tick
    # that counts towards it. 0 turns the check off.
    support_chi2: float = 1.0
    support_s: float = 8.0
    # Correlation time of the evidence: a band that is not moving keeps its place-bound shadowing
    # (walls, bodies, its own heading), so its successive windows are far from independent. Its
    # CUSUM weight is scaled by still_weight + (1 - still_weight) x (share of recent adverts with
    # the moving flag, averaged over ~motion_tau_adverts). 1.0 turns this off.
    still_weight: float = 0.5
    motion_tau_adverts: float = 10.0
    min_margin_m: float = 1.0
    # The breach decision: "window" = the window likelihood-ratio test (`edge.bands.window_test`, raised
    # when a long window's 2·ln LR reaches `window_threshold`, cleared after `clear_dwell_s` of the
    # short window below `window_clear`); "cusum" = the per-tick Δχ² CUSUM on position fixes (the rule
    # before issue 16, kept for comparison benchmarks).
    breach_test: str = "window"
    window_threshold: float = 13.0
    window_clear: float = 2.0
    # Start-up: receiver floors, calibration and band gains are still being learned and their spread is
    # underestimated; the null runs' only false breaches above the threshold came in the first ~2 min.
    # A pipeline restored from its learned state runs without it (`learned_state.drop_startup_margin`).
    window_startup_s: float = 90.0
    window_startup_extra: float = 3.0
    window_startup_fade_s: float = 60.0  # ... then fades to 0 over this (0: ends at once)
    # Stillness cannot be judged from a handful of adverts: no `no_motion` while the band's adverts
    # arrive on average further apart than this (an escapee far away, heard now and then).
    no_motion_max_gap_s: float = 3.0
    left_zone_max_err_m: float = 10.0  # a fix this good, 1 m inside, names the zone a person was in
    restricted_max_err_m: float = 4.0  # a restricted-zone claim needs a position this good
    gap_s: float = 3.0  # an unsure second or two does not restart a dwell; longer does
    fever_window_s: float = 180.0
    fever_min_readings: int = 3
    fever_min_span_s: float = 60.0
    fever_clear_hysteresis_c: float = 0.3
    sos_clear_s: float = 10.0
    security_clear_s: float = 300.0

    def __post_init__(self) -> None:
        check_bounds(self, _RULE_BOUNDS)

    @classmethod
    def from_rules(cls, rules: Rules, **overrides: Any) -> RuleParams:
        """Build from a SiteConfig `rules:` block."""
        return cls(
            breach_dwell_s=rules.breach_dwell_s, restricted_dwell_s=rules.restricted_dwell_s,
            clear_dwell_s=rules.clear_dwell_s, missing_after_s=rules.missing_after_s, fever_c=rules.fever_c,
            low_battery_pct=rules.low_battery_pct, no_motion_s=rules.no_motion_s, **overrides,
        )


class Fix(NamedTuple):
    """A position estimate as the rules see it (a NamedTuple: 500 are built per tick, cheaply).

    `out_m` is the signed distance to the band's allowed area (positive outside), `restricted`
    the restricted zone the estimate lies in (or None), `zone` the zone for display.
    """

    ts: float
    x: float
    y: float
    err_m: float
    out_m: float
    restricted: str | None
    zone: str | None
    evidence: float = 0.0  # likelihood-ratio evidence (Δχ²) that the band is outside its allowed area
    silent: bool = False  # no position: the evidence is the band's silence at every live receiver


@dataclass(slots=True)
class _Dwell:
    """Time a condition has held, tolerating gaps shorter than `gap_s`."""

    since: float | None = None
    last: float | None = None

    def update(self, ts: float, holds: bool, gap_s: float) -> float:
        """Feed one observation; return how long the condition has held (0 if it does not)."""
        if holds:
            if self.since is None or self.last is None or ts - self.last > gap_s:
                self.since = ts
            self.last = ts
            return ts - self.since
        if self.last is not None and (ts - self.last > gap_s or gap_s <= 1.5):
            self.since = self.last = None
        return 0.0

    def reset(self) -> None:
        self.since = self.last = None


@dataclass
class BandRules:
    """Every alert rule of one band. Feed facts in time order; collect the decisions."""

    band: int
    p: RuleParams
    active: set[str] = field(default_factory=set)
    _breach_out: _Dwell = field(default_factory=_Dwell)
    _breach_restricted: _Dwell = field(default_factory=_Dwell)
    _back_inside: _Dwell = field(default_factory=_Dwell)
    _evidence: float = 0.0  # CUSUM of outside-vs-inside log-likelihood ratio (Δχ² units)
    _recent: deque[tuple[float, float]] = field(default_factory=deque)  # (ts, Δχ² counted) of the last fixes
    _moving: float = 0.5  # running share of adverts with the moving flag (unknown at first)
    _last_fix: Fix | None = None
    _last_heard: float | None = None
    _heard: bool = False
    _strap_run: int = 0
    _closed_run: int = 0
    _sos_last: float | None = None
    _temps: deque[tuple[float, float]] = field(default_factory=deque)
    _last_motion: float | None = None
    _gap: float = 1.0  # running mean time between verified adverts
    _left_zone: str | None = None  # the allowed zone the band was last confidently in
    _clear_dwell: _Dwell = field(default_factory=_Dwell)
    _started: float | None = None
    _security_last: dict[str, float] = field(default_factory=dict)

    def _set(self, type_: str, raised: bool, ts: float, detail: dict[str, Any], out: list[Decision]) -> None:
        if raised and type_ not in self.active:
            self.active.add(type_)
            out.append(Decision(type_, "raised", ts, detail))
        elif not raised and type_ in self.active:
            self.active.discard(type_)
            out.append(Decision(type_, "cleared", ts, detail))

    # -- adverts -----------------------------------------------------------------------------
    def on_advert(self, ts: float, flags: int, battery: int | None, temp_c: float | None) -> list[Decision]:
        """A new verified advert (not a duplicate) with its status fields."""
        out: list[Decision] = []
        if self._last_motion is None:
            self._last_motion = ts
        if self._last_heard is not None and self._heard and ts > self._last_heard:
            self._gap += (min(ts - self._last_heard, 60.0) - self._gap) / self.p.motion_tau_adverts
        self._last_heard = ts
        self._heard = True
        self._moving += (float(bool(flags & FLAG_MOVING)) - self._moving) / self.p.motion_tau_adverts
        active = self.active
        if "band_missing" in active:
            self._set("band_missing", False, ts, {}, out)
        self._tamper(ts, flags, out)
        self._sos(ts, flags, out)
        self._battery(ts, flags, battery, out)
        self._motion(ts, flags, out)
        if temp_c is not None:
            self._fever(ts, temp_c, out)
        return out

    def _tamper(self, ts: float, flags: int, out: list[Decision]) -> None:
        if flags & FLAG_STRAP_OPEN:
            self._strap_run, self._closed_run = self._strap_run + 1, 0
        else:
            self._strap_run, self._closed_run = 0, self._closed_run + 1
        # Membership is checked before building a detail dict: this runs for every advert of every band.
        if self._strap_run >= 2:
            if "band_tamper" not in self.active:
                self._set("band_tamper", True, ts, {"strap_open": True}, out)
        elif self._closed_run >= 2 and "band_tamper" in self.active:
            self._set("band_tamper", False, ts, {"strap_open": False}, out)

    def _sos(self, ts: float, flags: int, out: list[Decision]) -> None:
        if flags & FLAG_SOS:
            self._sos_last = ts
            self._set("sos", True, ts, {}, out)
        elif self._sos_last is not None and ts - self._sos_last >= self.p.sos_clear_s:
            self._set("sos", False, ts, {}, out)

    def _battery(self, ts: float, flags: int, battery: int | None, out: list[Decision]) -> None:
        charging = bool(flags & FLAG_CHARGING)
        if charging or (battery is not None and battery > self.p.low_battery_pct + 5):
            if "low_battery" in self.active:
                self._set("low_battery", False, ts, {"battery": battery, "charging": charging}, out)
        elif (battery is not None and battery <= self.p.low_battery_pct) or (
            battery is None and flags & FLAG_LOW_BATTERY
        ):
            self._set("low_battery", True, ts, {"battery": battery}, out)

    def _motion(self, ts: float, flags: int, out: list[Decision]) -> None:
        # Strap open: the band is off the wrist (that is tamper), so stillness means nothing.
        if flags & (FLAG_MOVING | FLAG_STRAP_OPEN):
            self._last_motion = ts
            if "no_motion" in self.active:
                self._set("no_motion", False, ts, {}, out)
        elif (self._last_motion is not None and ts - self._last_motion >= self.p.no_motion_s
              and self._gap <= self.p.no_motion_max_gap_s):
            self._set("no_motion", True, ts, {"still_s": round(ts - self._last_motion, 1)}, out)

    def _fever(self, ts: float, temp_c: float, out: list[Decision]) -> None:
        temps = self._temps
        if temps and ts - temps[-1][0] < 5.0:
            return  # one reading per 5 s is plenty for a slow signal and keeps the median cheap
        temps.append((ts, temp_c))
        while temps and temps[0][0] < ts - self.p.fever_window_s:
            temps.popleft()
        if len(temps) < self.p.fever_min_readings or temps[-1][0] - temps[0][0] < self.p.fever_min_span_s:
            return
        med = statistics.median(t for _, t in temps)
        detail = {"temp_c": round(med, 2), "readings": len(temps)}
        if med >= self.p.fever_c:
            self._set("fever", True, ts, detail, out)
        elif med < self.p.fever_c - self.p.fever_clear_hysteresis_c:
            self._set("fever", False, ts, detail, out)

    # -- security (from the verifier) -------------------------------------------------------
    def on_security(self, ts: float, alarm: str, detail: dict[str, Any]) -> list[Decision]:
        """The verifier raised advert_forgery or advert_replay for this band."""
        out: list[Decision] = []
        self._security_last[alarm] = ts
        self._set(alarm, True, ts, detail, out)
        return out

    # -- position ----------------------------------------------------------------------------
    def on_fix(self, fix: Fix) -> list[Decision]:
        """A new position estimate."""
        self._last_fix = fix
        if fix.out_m <= -1.0 and fix.err_m <= self.p.left_zone_max_err_m and fix.zone is not None:
            self._left_zone = fix.zone
        if self.p.breach_test == "window":
            return self._restricted(fix)
        return self._geofence(fix.ts, self._accumulate(fix))

    def on_window(self, ts: float, lr: float, clear_lr: float, where: tuple[float, float, float]) -> list[Decision]:
        """The window test's result this tick (NaN = not tested): long-window and clear-window 2·ln LR,
        and the best outside position (x, y, metres beyond the allowed area)."""
        out: list[Decision] = []
        p = self.p
        if "geofence_breach" not in self.active:
            if lr >= p.window_threshold + self._startup_extra(ts):
                self._clear_dwell.reset()
                x, y, out_m = where
                fix = self._last_fix
                detail = {"x": round(x, 2), "y": round(y, 2), "zone": None,
                          "err_m": round(fix.err_m, 2) if fix else None, "out_m": round(out_m, 2),
                          "evidence": round(lr, 1), "reason": "outside", **self._where(out_m)}
                self._set("geofence_breach", True, ts, detail, out)
            return out
        if clear_lr != clear_lr:
            return out  # not tested or nothing heard: the breach stands
        fix = self._last_fix
        inside = (clear_lr <= p.window_clear and (fix is None or fix.restricted is None)
                  and not lr >= p.window_threshold)
        in_s = self._clear_dwell.update(ts, inside, 1.5)
        if inside and in_s >= p.clear_dwell_s:
            self._breach_restricted.reset()
            detail = self._detail(fix) if fix else {}
            self._set("geofence_breach", False, ts, {**detail, "evidence": round(clear_lr, 1)}, out)
        return out

    def _where(self, out_m: float) -> dict[str, Any]:
        """The detail keys the dashboard and the daily report read: how far out, and from which zone."""
        return {"outside_m": round(max(out_m, 0.0), 1), "left_zone": self._left_zone}

    def _restricted(self, fix: Fix) -> list[Decision]:
        """Window mode: the restricted-zone part of the geofence rule (the window test does the rest)."""
        out: list[Decision] = []
        p = self.p
        in_restricted = fix.restricted is not None and fix.err_m <= p.restricted_max_err_m
        r_s = self._breach_restricted.update(fix.ts, in_restricted, p.gap_s)
        if "geofence_breach" not in self.active and in_restricted and r_s >= p.restricted_dwell_s:
            self._clear_dwell.reset()
            self._set("geofence_breach", True, fix.ts, {**self._detail(fix), "reason": "restricted",
                                                        "restricted": fix.restricted, **self._where(fix.out_m)}, out)
        return out

    def _accumulate(self, fix: Fix) -> Fix:
        """Fold one fix's Δχ² into the CUSUM and the recent-support window; returns the fix."""
        p = self.p
        drift = p.evidence_drift if fix.out_m > 0 else p.evidence_drift_inside
        gain = min(fix.evidence, p.evidence_cap) if fix.out_m > p.min_margin_m else 0.0
        weight = p.evidence_weight * (p.still_weight + (1.0 - p.still_weight) * self._moving)
        self._evidence = min(max(0.0, self._evidence + (gain - drift) * weight), p.evidence_max)
        recent = self._recent
        recent.append((fix.ts, gain))
        while recent and recent[0][0] <= fix.ts - p.support_s:
            recent.popleft()
        return fix

    def _support(self) -> float:
        """Mean Δχ² of the fixes in the last `support_s`: what the data say NOW."""
        return sum(g for _, g in self._recent) / len(self._recent) if self._recent else 0.0

    def _geofence(self, ts: float, fix: Fix) -> list[Decision]:
        out: list[Decision] = []
        p = self.p
        # "Outside by more than the error margin" as a sequential likelihood-ratio test: each tick
        # adds how much worse the best explanation of the RSSI inside the allowed area is than the
        # best one anywhere (Δχ²), weighted for the overlap of successive filter windows (CUSUM).
        # Unlike an error radius this uses the direction of the error, and evidence builds up over
        # the independent shadowing of successive windows.
        # The CUSUM alone would let the dwell complete on evidence gathered while a fade lasted, with
        # the estimate now hovering just outside and the data no longer saying so: the current window
        # must support "outside" too.
        outside = (self._evidence >= p.evidence_chi2 and fix.out_m > p.min_margin_m
                   and self._support() >= p.support_chi2)
        out_s = self._breach_out.update(ts, outside, p.gap_s)
        in_restricted = fix.restricted is not None and fix.err_m <= p.restricted_max_err_m
        r_s = self._breach_restricted.update(ts, in_restricted, p.gap_s)
        if "geofence_breach" not in self.active:
            if outside and out_s >= p.breach_dwell_s:
                self._back_inside.reset()
                reason = "silent" if fix.silent else "outside"
                self._set("geofence_breach", True, ts, {**self._detail(fix), "reason": reason,
                                                        **self._where(fix.out_m)}, out)
            elif in_restricted and r_s >= p.restricted_dwell_s:
                self._back_inside.reset()
                self._set("geofence_breach", True, ts, {**self._detail(fix), "reason": "restricted",
                                                        "restricted": fix.restricted, **self._where(fix.out_m)}, out)
            return out
        inside = fix.out_m <= 0 and fix.restricted is None and self._evidence < p.evidence_chi2 / 3
        # No gap tolerance beyond one tick here: any doubt restarts the clear dwell, so an edge band
        # cannot flap.
        in_s = self._back_inside.update(ts, inside, 1.5)
        if inside and in_s >= p.clear_dwell_s:
            self._evidence = 0.0
            self._breach_out.reset()
            self._breach_restricted.reset()
            self._set("geofence_breach", False, ts, self._detail(fix), out)
        return out

    def _startup_extra(self, ts: float) -> float:
        """What the window threshold is raised by this long after the start of monitoring."""
        p = self.p
        if self._started is None:
            return 0.0
        age = ts - self._started
        if age < p.window_startup_s:
            return p.window_startup_extra
        if age < p.window_startup_s + p.window_startup_fade_s:
            return p.window_startup_extra * (1.0 - (age - p.window_startup_s) / p.window_startup_fade_s)
        return 0.0

    def _detail(self, fix: Fix) -> dict[str, Any]:
        """Alert detail for a position decision (built only when a decision is made: it is the slow part)."""
        return {"x": round(fix.x, 2), "y": round(fix.y, 2), "zone": fix.zone, "err_m": round(fix.err_m, 2),
                "out_m": round(fix.out_m, 2), "evidence": round(self._evidence, 1)}

    # -- clock -------------------------------------------------------------------------------
    def prime(self, now: float) -> None:
        """Start of monitoring: a band never heard from now on goes missing after missing_after_s."""
        if self._started is None:
            self._started = now
        if self._last_heard is None:
            self._last_heard = now

    def on_tick(self, now: float, fixed: bool, silence: float | None = None) -> list[Decision]:
        """Once a second. `fixed` says whether on_fix was called for this tick.

        `silence` (only when not fixed): the Δχ² that the band is outside, from its silence at every
        live receiver (the caller decides when silence counts, see `edge.bands.silence`). It is
        accumulated like a fix's evidence, at the last known position pushed just past the margin
        (a band nobody hears is not where its last fix was), when it says more than the last fix did;
        otherwise the last fix is carried forward (a breach that started outside still completes).
        """
        out: list[Decision] = []
        if self._last_heard is not None and now - self._last_heard >= self.p.missing_after_s:
            fix = self._last_fix
            where = {"x": round(fix.x, 2), "y": round(fix.y, 2), "zone": fix.zone} if fix else {}
            seen = round(self._last_heard, 3) if self._heard else None
            self._set("band_missing", True, now, {"last_seen": seen, **where}, out)
        if not fixed and self._last_fix is not None and self.p.breach_test != "window":
            # Unheard: presume the band is where it was last seen, so walking out of radio range
            # still completes a breach dwell that started outside.
            last = self._last_fix
            if silence is not None and silence > last.evidence:
                carried = Fix(now, last.x, last.y, last.err_m, max(last.out_m, self.p.min_margin_m + 0.01), None,
                              last.zone, silence, silent=True)
                out += self._geofence(now, self._accumulate(carried))
            else:
                out += self._geofence(now, Fix(now, last.x, last.y, last.err_m, last.out_m, last.restricted,
                                               last.zone, last.evidence))
        for alarm, last_ts in list(self._security_last.items()):
            if now - last_ts >= self.p.security_clear_s:
                del self._security_last[alarm]
                self._set(alarm, False, now, {}, out)
        return out
