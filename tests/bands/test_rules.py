"""Pure unit tests of the alert rules: every type raises and clears, and nothing flaps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.bands.rules import BandRules, Decision, Fix, RuleParams
from protocols.advert import FLAG_CHARGING, FLAG_MOVING, FLAG_SOS, FLAG_STRAP_OPEN

# The geofence tests here exercise the position-fix CUSUM rule, kept as the "cusum" variant for comparison;
# the default window test has its own tests (test_window_rules.py).
P = RuleParams(breach_dwell_s=20, restricted_dwell_s=5, clear_dwell_s=10, missing_after_s=60, fever_c=37.8,
               low_battery_pct=15, no_motion_s=1800, breach_test="cusum")


def fix(ts: float, out_m: float, evidence: float, *, restricted: str | None = None, err: float = 3.0) -> Fix:
    return Fix(ts, 0.0, -out_m, err, out_m, restricted, None, evidence)


def states(decisions: list[Decision], type_: str) -> list[tuple[str, float]]:
    return [(d.state, d.ts) for d in decisions if d.type == type_]


def run_fixes(rules: BandRules, fixes: list[Fix]) -> list[Decision]:
    out: list[Decision] = []
    for f in fixes:
        out += rules.on_advert(f.ts, FLAG_MOVING, 80, 36.5)
        out += rules.on_fix(f)
        out += rules.on_tick(f.ts, True)
    return out


def test_breach_raises_after_dwell_and_clears_after_clear_dwell() -> None:
    r = BandRules(1, P)
    fixes = [fix(t, -5, 0) for t in range(0, 10)] + [fix(t, 12, 50) for t in range(10, 60)]
    fixes += [fix(t, -4, 0) for t in range(60, 90)]
    got = states(run_fixes(r, fixes), "geofence_breach")
    # Evidence builds up over ~2 ticks (CUSUM), then the 20 s dwell runs.
    assert [s for s, _ in got] == ["raised", "cleared"]
    # Clearing waits for the outside evidence to fade (≤ 12 s from saturation), then clear_dwell_s.
    assert 30.0 <= got[0][1] <= 33.0 and 70.0 <= got[1][1] <= 85.0


def test_weak_evidence_outside_never_breaches() -> None:
    r = BandRules(1, P)
    # Estimate outside, but each window's likelihood test is below the drift: no alert however long.
    got = run_fixes(r, [fix(t, 8, 0.4) for t in range(0, 600)])
    assert states(got, "geofence_breach") == []


def test_short_gaps_do_not_restart_the_dwell_but_long_ones_do() -> None:
    r = BandRules(1, P)
    fixes = [fix(t, 10, 50 if t % 5 else 0) for t in range(0, 40)]  # one unsure second in five
    assert 20.0 <= states(run_fixes(r, fixes), "geofence_breach")[0][1] <= 24.0
    r2 = BandRules(1, P)
    # 8 s strongly outside, 8 s back inside, repeatedly: the dwell restarts every time.
    fixes2 = [fix(t, 10, 50) if (t // 8) % 2 == 0 else fix(t, -3, 0) for t in range(0, 200)]
    assert states(run_fixes(r2, fixes2), "geofence_breach") == []


def test_restricted_zone_breach_needs_a_good_fix() -> None:
    r = BandRules(1, P)
    got = run_fixes(r, [fix(t, -1, 0, restricted="gate", err=2.0) for t in range(0, 10)])
    assert states(got, "geofence_breach") == [("raised", 5.0)]
    vague = BandRules(2, P)
    got = run_fixes(vague, [fix(t, -1, 0, restricted="gate", err=12.0) for t in range(0, 60)])
    assert states(got, "geofence_breach") == []


def test_no_flapping_on_the_zone_edge() -> None:
    """A band standing on the fence for 6 h, its estimate noisy around the edge, alerts at most once."""
    rng = np.random.default_rng(7)
    r = BandRules(1, P)
    out_m = rng.normal(0.0, 3.0, 6 * 3600)
    evidence = np.where(out_m > 1, rng.exponential(4.0, out_m.size), 0.0)
    got = run_fixes(r, [fix(t, float(o), float(e)) for t, (o, e) in enumerate(zip(out_m, evidence, strict=True))])
    transitions = states(got, "geofence_breach")
    assert len(transitions) <= 1


def test_no_flapping_once_breached_until_clearly_back() -> None:
    r = BandRules(1, P)
    fixes = [fix(t, 15, 60) for t in range(0, 30)]
    # Back at the fence, estimates alternate in and out every few seconds: stays raised.
    fixes += [fix(t, -1.0 if (t // 4) % 2 else 2.0, 0) for t in range(30, 600)]
    got = states(run_fixes(r, fixes), "geofence_breach")
    assert [s for s, _ in got] == ["raised"] and got[0][1] <= 23.0


def test_missing_raises_when_unheard_and_clears_when_heard() -> None:
    r = BandRules(1, P)
    r.prime(0.0)
    out = r.on_advert(1.0, FLAG_MOVING, 80, None)
    for t in range(2, 62):
        out += r.on_tick(float(t), False)
    assert states(out, "band_missing") == [("raised", 61.0)]
    out = r.on_advert(70.0, FLAG_MOVING, 80, None)
    assert states(out, "band_missing") == [("cleared", 70.0)]


def test_never_heard_band_goes_missing() -> None:
    r = BandRules(1, P)
    r.prime(100.0)
    out = [d for t in range(100, 170) for d in r.on_tick(float(t), False)]
    assert states(out, "band_missing") == [("raised", 160.0)]
    assert out[0].detail["last_seen"] is None


def test_tamper_needs_two_adverts_in_a_row() -> None:
    r = BandRules(1, P)
    out = r.on_advert(0, FLAG_STRAP_OPEN, 80, None) + r.on_advert(1, 0, 80, None)
    out += r.on_advert(2, FLAG_STRAP_OPEN, 80, None)
    assert states(out, "band_tamper") == []
    out = r.on_advert(3, FLAG_STRAP_OPEN, 80, None)
    assert states(out, "band_tamper") == [("raised", 3)]
    out = r.on_advert(4, 0, 80, None) + r.on_advert(5, 0, 80, None)
    assert states(out, "band_tamper") == [("cleared", 5)]


def test_sos_on_first_advert_and_clear_after_flag_gone() -> None:
    r = BandRules(1, P)
    out = r.on_advert(0, 0, 80, None) + r.on_advert(1, FLAG_SOS, 80, None)
    assert states(out, "sos") == [("raised", 1)]
    out = [d for t in range(2, 20) for d in r.on_advert(float(t), 0, 80, None)]
    assert states(out, "sos") == [("cleared", 11.0)]


def test_fever_needs_three_readings_over_60_s_and_has_hysteresis() -> None:
    r = BandRules(1, P)
    out = [d for t in range(0, 50) for d in r.on_advert(float(t), FLAG_MOVING, 80, 38.5)]
    assert states(out, "fever") == []  # less than 60 s of readings
    out = [d for t in range(50, 80) for d in r.on_advert(float(t), FLAG_MOVING, 80, 38.5)]
    assert states(out, "fever") == [("raised", 60.0)]
    out = [d for t in range(80, 400) for d in r.on_advert(float(t), FLAG_MOVING, 80, 37.7)]
    assert states(out, "fever") == []  # below threshold but inside the hysteresis band
    out = [d for t in range(400, 700) for d in r.on_advert(float(t), FLAG_MOVING, 80, 36.8)]
    assert [s for s, _ in states(out, "fever")] == ["cleared"]


def test_low_battery_clears_above_threshold_plus_5_or_when_charging() -> None:
    r = BandRules(1, P)
    out = r.on_advert(0, 0, 16, None) + r.on_advert(1, 0, 15, None)
    assert states(out, "low_battery") == [("raised", 1)]
    out = r.on_advert(2, 0, 19, None) + r.on_advert(3, 0, 20, None)
    assert states(out, "low_battery") == []
    assert states(r.on_advert(4, 0, 21, None), "low_battery") == [("cleared", 4)]
    r.on_advert(5, 0, 10, None)
    assert states(r.on_advert(6, FLAG_CHARGING, 10, None), "low_battery") == [("cleared", 6)]


def test_no_motion_with_strap_closed_only() -> None:
    r = BandRules(1, P)
    # An advert every 2 s: heard well enough to judge stillness (adverts 10 s apart no longer are).
    out = [d for t in range(0, 1900, 2) for d in r.on_advert(float(t), 0, 80, None)]
    assert states(out, "no_motion") == [("raised", 1800.0)]
    assert states(r.on_advert(1901, FLAG_MOVING, 80, None), "no_motion") == [("cleared", 1901)]
    off = BandRules(2, P)
    out = [d for t in range(0, 4000, 10) for d in off.on_advert(float(t), FLAG_STRAP_OPEN, 80, None)]
    assert states(out, "no_motion") == []


def test_no_motion_not_for_a_band_heard_only_now_and_then() -> None:
    """Stillness cannot be judged from a handful of adverts (issue 16): a far escapee heard every ~10 s."""
    r = BandRules(1, P)
    out = [d for t in range(0, 4000, 10) for d in r.on_advert(float(t), 0, 80, None)]
    assert states(out, "no_motion") == []
    # Heard well again and still for no_motion_s: now it counts.
    out = [d for t in range(4000, 6000) for d in r.on_advert(float(t), 0, 80, None)]
    assert [s for s, _ in states(out, "no_motion")] == ["raised"]


def test_security_alarm_raises_and_clears_after_quiet_period() -> None:
    r = BandRules(1, P)
    assert states(r.on_security(10, "advert_forgery", {}), "advert_forgery") == [("raised", 10)]
    assert r.on_security(20, "advert_forgery", {}) == []
    out = [d for t in range(21, 400) for d in r.on_tick(float(t), False)]
    assert states(out, "advert_forgery") == [("cleared", 320.0)]


def test_breach_dwell_needs_current_evidence_not_only_the_cusum() -> None:
    """The diagnosed false breach: a fade builds the CUSUM, then the estimate hovers just outside with weak data."""
    r = BandRules(1, P)
    fixes = [fix(t, 8, 6.0) for t in range(0, 12)]  # a slow fade: the CUSUM passes 9
    fixes += [fix(t, 1.5, 0.5) for t in range(12, 60)]  # just outside, the data no longer say so
    assert states(run_fixes(r, fixes), "geofence_breach") == []
    # Without the support check (the old rule) the same fixes breach on the CUSUM reached earlier.
    old = BandRules(1, replace(P, support_chi2=0.0, evidence_drift=0.5, still_weight=1.0))
    assert [s for s, _ in states(run_fixes(old, fixes), "geofence_breach")] == ["raised"]


def test_sustained_outside_evidence_still_breaches_within_the_dwell() -> None:
    r = BandRules(1, P)
    got = states(run_fixes(r, [fix(t, 12, 12.0) for t in range(0, 60)]), "geofence_breach")
    assert [s for s, _ in got] == ["raised"] and got[0][1] <= P.breach_dwell_s + 5


def _silent_run(r: BandRules, last: Fix, silence: float | None, until: int) -> list[Decision]:
    out = run_fixes(r, [last])
    for t in range(int(last.ts) + 1, until):
        out += r.on_tick(float(t), False, silence)
    return out


def test_silence_at_live_receivers_breaches_as_silent() -> None:
    r = BandRules(1, P)
    out = _silent_run(r, fix(0, -1.0, 0.0), 12.0, 60)
    got = [d for d in out if d.type == "geofence_breach"]
    assert [d.state for d in got] == ["raised"] and got[0].detail["reason"] == "silent"
    assert got[0].ts <= P.breach_dwell_s + 5


def test_weak_or_no_silence_evidence_keeps_the_old_carry_forward() -> None:
    # Last fix inside, silence says little (poorly covered area): no breach, however long.
    assert states(_silent_run(BandRules(1, P), fix(0, -1.0, 0.0), 0.4, 300), "geofence_breach") == []
    # Last fix strongly outside, no silence evidence given (low battery, dead receivers): the dwell completes.
    r = BandRules(2, P)
    out = run_fixes(r, [fix(t, 12, 30.0) for t in range(0, 8)])
    for t in range(8, 40):
        out += r.on_tick(float(t), False, None)
    assert [s for s, _ in states(out, "geofence_breach")] == ["raised"]


def test_a_band_standing_still_needs_more_evidence_than_a_walking_one() -> None:
    """Correlated windows: a still band keeps its place-bound shadow, so weak steady evidence counts for less."""
    def first_raise(flags: int) -> float | None:
        r = BandRules(1, P)
        out: list[Decision] = []
        for t in range(0, 120):
            out += r.on_advert(float(t), flags, 80, 36.5)
            out += r.on_fix(fix(t, 6, 2.5))
            out += r.on_tick(float(t), True)
        got = states(out, "geofence_breach")
        return got[0][1] if got else None

    walking, still = first_raise(FLAG_MOVING), first_raise(0)
    assert walking is not None
    assert still is None or still > walking + 5
