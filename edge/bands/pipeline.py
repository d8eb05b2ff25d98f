"""The wristband pipeline of one site: verify → track → rules → alerts.

`BandPipeline` is the pure core the agent, `replay` and the benchmarks share. It takes
observations with their own timestamps and a `now` for ticks; it never reads the clock, so
a replay of a field log produces exactly the alerts the live agent would have.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge.bands.geometry import ZoneMap, ZoneShape, as_points, grid_over, sample_region
from edge.bands.ingest_batch import Accepted, AdvertFront, Event, FrontBatch
from edge.bands.kernel_warmup import warm_up
from edge.bands.rules import BandRules, Decision, Fix, RuleParams
from edge.bands.silence import DEFAULT_SILENCE, SilenceEvidence, SilenceParams
from edge.bands.tracker import Tracker, TrackerParams
from edge.bands.window_detector import WindowDetector
from edge.bands.window_test import WindowParams
from protocols.observation import RawObservation
from protocols.payloads import DEFAULT_SEVERITY, Alert, BandState, BandSubject, BandTelemetry
from protocols.site_config import SiteConfig
from protocols.ulid import seeded_ulid
from protocols.verify import AdvertVerifier

log = logging.getLogger("qwatch.edge.bands")

# Alert types whose rules know how to clear a raise they did not see happen (BandRules).
_ADOPTABLE = frozenset({"geofence_breach", "band_missing", "band_tamper", "sos", "fever", "low_battery",
                        "no_motion", "advert_forgery", "advert_replay"})



def deterministic_ulid(ts: float, seed: str) -> str:
    """A ULID whose time part is `ts` and whose random part is a hash of `seed` (replay is repeatable)."""
    return seeded_ulid(int(ts * 1000), seed)


@dataclass(slots=True)
class _Status:
    """Latest verified advert fields of a band, for telemetry."""

    ts: float = 0.0
    flags: int = 0
    battery: int | None = None
    temp_c: float | None = None


class BandPipeline:
    """Verify, track and apply the rules for every band of one site."""

    def __init__(self, site: SiteConfig, keys: Mapping[int, bytes], *, node: str,
                 tracker_params: TrackerParams | None = None, rule_params: RuleParams | None = None,
                 silence_params: SilenceParams | None = DEFAULT_SILENCE,
                 window_params: WindowParams | None = None) -> None:
        self.site = site
        self.node = node
        self.verifier = AdvertVerifier(keys, site.company_id)
        self.band_ids = [b.id for b in site.bands]
        self.beacon_ids = {b.id for b in site.beacons}
        extra = sorted(set(keys) - set(self.band_ids) - self.beacon_ids)
        self.tracker = Tracker(site, self.band_ids + sorted(self.beacon_ids) + extra, tracker_params)
        self._rules_params = rule_params or RuleParams.from_rules(site.rules)
        self.rules = {b.id: BandRules(b.id, self._rules_params) for b in site.bands}
        self.zones = ZoneMap([ZoneShape(z.id, z.kind, as_points(z.polygon)) for z in site.zones])
        zid = [z.id for z in site.zones]
        self._allowed = np.array([[z in b.allowed_zones for z in zid] for b in site.bands], dtype=bool).reshape(
            len(site.bands), len(zid))
        self._restricted = np.array([z.kind == "restricted" for z in site.zones], dtype=bool)
        self._init_candidates(site)
        self._n_bands = len(self.band_ids)
        window = self._rules_params.breach_test == "window"
        # The window test decides breaches itself (silence included: every missed advert counts).
        self._silence: SilenceEvidence | None = (
            SilenceEvidence(site, self.tracker.rx_pos, silence_params)
            if silence_params is not None and len(site.receivers) and site.bands and not window else None)
        wp = window_params or WindowParams()
        wp = replace(wp, threshold=self._rules_params.window_threshold,
                     clear_threshold=self._rules_params.window_clear)
        self.detector: WindowDetector | None = (
            WindowDetector(site, self.tracker, self._n_bands, self._rules_params.breach_dwell_s, wp)
            if window and len(site.receivers) and self._n_bands else None)
        self._person = {b.id: b.person for b in site.bands}
        self._allowed_of = {b.id: list(b.allowed_zones) for b in site.bands}
        self._status: dict[int, _Status] = {}
        self._fixes: dict[int, Fix] = {}
        self._est_extra: dict[int, tuple[int, float]] = {}
        self._active: dict[tuple[int, str], Alert] = {}
        self._counts: dict[str, int] = {}
        self.front = AdvertFront(self.verifier, self.tracker.index, self.tracker.rx_index, site.company_id)
        self._started: float | None = None
        self._window_second: int | None = None  # the whole second the window test last ran in
        self._seq = 0

    def _init_candidates(self, site: SiteConfig) -> None:
        """Candidate points per distinct allowed-zone set, and a site-wide grid, for the breach test."""
        polys = {z.id: as_points(z.polygon) for z in site.zones}
        self._group_of: list[int] = []
        self._group_pts: list[np.ndarray] = []
        seen: dict[tuple[str, ...], int] = {}
        for b in site.bands:
            key = tuple(sorted(b.allowed_zones))
            if key not in seen:
                seen[key] = len(self._group_pts)
                # The best inside explanation of an outside-looking band lies almost always on the
                # boundary; a coarse interior grid covers the rest.
                self._group_pts.append(sample_region([polys[z] for z in key], spacing=4.0, edge_spacing=1.0))
            self._group_of.append(seen[key])
        np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
        self._local_offsets = grid_over((-6.0, -6.0, 6.0, 6.0), 3.0)
        self._hl_cache: dict[tuple[int, float], np.ndarray] = {}
        self._hl_stack: tuple[np.ndarray, np.ndarray] | None = None
        if self.tracker.locate_params.compiled:
            warm_up()  # compile / load the tick kernels now, not in the first tick

    def _hl(self, key: int, pts: np.ndarray, model: Any) -> np.ndarray:
        """½·ln(d²) of a candidate set (key -1 = site-wide grid), cached: receivers do not move."""
        hl = self._hl_cache.get((key, 0.0))
        if hl is None:
            hl = self._hl_cache[(key, 0.0)] = model.half_log_d2(pts)
        return hl

    def _hl_sets(self, model: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every group's candidate ½·ln(d²) stacked (N, R) with row bounds (G + 1,), for the compiled test."""
        if self._hl_stack is None:
            parts = [self._hl(g, pts, model) for g, pts in enumerate(self._group_pts)]
            bounds = np.cumsum([0] + [len(h) for h in parts]).astype(np.int64)
            stacked = np.concatenate(parts) if parts else np.zeros((0, model.rx_pos.shape[0]))
            self._hl_stack = (np.ascontiguousarray(stacked, dtype=np.float64), bounds)
        return self._hl_stack

    def _evidence(self, rows: list[int], band_idx: list[int], est: Any) -> dict[int, float]:
        """Δχ² between the best fit inside each band's allowed area and the best fit anywhere."""
        out: dict[int, float] = {}
        model = est.model
        if model is None or not rows:
            return out
        r = np.array(rows, dtype=np.int64)
        if model.p.compiled:
            sets = self._hl_sets(model)
            groups_of = np.array([self._group_of[i] for i in band_idx], dtype=np.int64)
            return dict(zip(rows, model.delta_chi2(r, est.xy, self._local_offsets, sets[0], sets[1],
                                                   groups_of).tolist(), strict=True))
        # "Anywhere": the fitted estimate and a local grid around it (the fit is a local minimum).
        local = est.xy[r][:, None, :] + self._local_offsets[None, :, :]
        hl_local = model.half_log_d2(local.reshape(-1, 2)).reshape(len(r), len(self._local_offsets), -1)
        anywhere = model.cost(r, hl_local).min(axis=1)
        groups: dict[int, list[int]] = {}
        for k, i in zip(rows, band_idx, strict=True):
            groups.setdefault(self._group_of[i], []).append(k)
        best = dict(zip(rows, anywhere.tolist(), strict=True))
        for g, ks in groups.items():
            inside = model.cost(np.array(ks, dtype=np.int64), self._hl(g, self._group_pts[g], model)).min(axis=1)
            for k, c in zip(ks, inside.tolist(), strict=True):
                out[k] = max(c - best[k], 0.0)
        return out

    # -- observations ---------------------------------------------------------------------------
    def observe_raw(self, obs: RawObservation) -> list[Alert]:
        """`observe` for a RawObservation."""
        return self.observe(obs.ts, obs.rx, obs.rssi, obs.company_id, obs.data)

    def observe(self, ts: float, rx: str, rssi: int, company_id: int, data: bytes) -> list[Alert]:
        """One advert as one receiver heard it. Never raises for bad input; returns new alerts."""
        events: list[Event] = []
        counts: dict[str, int] = {}
        sample = self.front.one(ts, rx, company_id, data, events, counts)
        self.add_counts(counts)
        if sample is not None:
            self.tracker.add(sample[0], sample[1], ts, rssi, sample[2])
        return self._events(events) if events else []

    def observe_batch(self, ts: Sequence[float], rx: Sequence[str], rssi: Sequence[int],
                      company_id: Sequence[int], data_hex: Sequence[str]) -> list[Alert]:
        """Observations between two ticks, in arrival order; `data_hex` = payloads in lowercase hex.

        Exactly `observe` on each in turn (alerts, counters, verifier, filter and rule state); see
        `edge.bands.ingest_batch` for why. Used by `replay`; the live agent calls `observe`.
        """
        return self.apply(self.front.batch(ts, rx, rssi, company_id, data_hex))

    def apply(self, batch: FrontBatch) -> list[Alert]:
        """The back half of `observe_batch`: a front batch's events to the rules, its samples to the tracker."""
        alerts = self._events(batch.events) if batch.events else []
        self.add_counts(batch.counts)
        if len(batch.band_idx):
            self.tracker.add_many(batch.band_idx, batch.rx_idx, batch.ts, batch.rssi, batch.power)
        return alerts

    def _events(self, events: list[Event]) -> list[Alert]:
        alerts: list[Alert] = []
        for ev in events:
            if isinstance(ev, Accepted):
                i = self.tracker.index.get(ev.band)
                if i is not None:  # a band's adverts sent in a window are counted at its own interval
                    self.tracker.bins.note_counter(i, ev.ts, ev.counter)
                found = self._accepted(ev.ts, ev.band, ev.flags, ev.battery, ev.temp_c)
            else:
                found = self._security(ev.ts, ev.band, ev.alarm, ev.outcome)
            if found:
                alerts += found
        return alerts

    def _accepted(self, ts: float, band: int, flags: int, battery: int | None, temp_c: float | None) -> list[Alert]:
        st = self._status.get(band)
        if st is None:
            st = self._status[band] = _Status()
        st.ts, st.flags, st.battery, st.temp_c = ts, flags, battery, temp_c
        rules = self.rules.get(band)
        if rules is None:
            return []
        decisions = rules.on_advert(ts, flags, battery, temp_c)
        return self._alerts(band, decisions) if decisions else []

    def _security(self, ts: float, band: int, alarm: str, outcome: str) -> list[Alert]:
        rules: BandRules | None = self.rules.get(band)
        if rules is None:
            if band in self.beacon_ids or band in self.tracker.index:
                rules = self.rules[band] = BandRules(band, self._rules_params)
            else:
                return []
        log.warning("event=advert_alarm band=%s alarm=%s outcome=%s", band, alarm, outcome)
        return self._alerts(band, rules.on_security(ts, alarm, {"reason": outcome}))

    # -- clock --------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Alert]:
        """Once a second: re-estimate positions, run dwell and missing rules."""
        if self._started is None:
            self._started = now
            # The log line's own time stamp is when the node started deciding (cold-start benchmark).
            log.info("event=first_tick node=%s bands=%d", self.node, self._n_bands)
            for rules in self.rules.values():
                rules.prime(now)
        est = self.tracker.estimate(now)
        fixed: set[int] = set()
        alerts: list[Alert] = []
        if len(est.idx):
            for band, fix, rx_count, rssi in self._fixes_from(now, est):
                self._fixes[band] = fix
                self._est_extra[band] = (rx_count, rssi)
                band_rules = self.rules.get(band)
                if band_rules is not None:
                    fixed.add(band)
                    decisions = band_rules.on_fix(fix)
                    if decisions:
                        alerts += self._alerts(band, decisions)
        alerts += self._window(now)
        silence = self._silence_evidence(now, fixed)
        for band, rules in self.rules.items():
            decisions = rules.on_tick(now, band in fixed, silence.get(band))
            if decisions:  # nearly always empty: skip the call
                alerts += self._alerts(band, decisions)
        return alerts

    def _window(self, now: float) -> list[Alert]:
        """Run the window breach test on the bands due this second and feed the rules its results.

        Once per whole second, at the first tick in it: the test's windows are whole seconds of advert
        counts (`AdvertBins`) and its schedule (`WindowDetector.due`) is per second, so the agent's
        faster ticks (every `tick_s` = 0.2 s) would test the same bands on the same windows again,
        five times the CPU for a fraction of a second's more adverts. Ticks on whole seconds (replay,
        the benchmarks) are each a new second: unchanged.
        """
        det = self.detector
        if det is None:
            return []
        second = math.floor(now)
        if second == self._window_second:
            return []
        self._window_second = second
        index = self.tracker.index
        out_m: dict[int, float] = {}
        rx_count: dict[int, int] = {}
        for band, fix in self._fixes.items():
            i = index[band]
            if i < self._n_bands and fix.ts >= now - 2.0:
                out_m[i] = fix.out_m
                rx_count[i] = self._est_extra.get(band, (0, 0.0))[0]
        active = {index[b] for (b, t) in self._active if t == "geofence_breach"}
        rows = det.due(now, out_m, rx_count, active)
        clear_rows = np.array(sorted(active), dtype=np.int64)
        verdicts = det.tick(now, rows, clear_rows, out_m)
        alerts: list[Alert] = []
        for i, v in verdicts.items():
            band = self.band_ids[i]
            decisions = self.rules[band].on_window(now, v.lr, v.clear_lr, (v.x, v.y, v.out_m))
            if decisions:
                alerts += self._alerts(band, decisions)
        return alerts

    def _silence_evidence(self, now: float, fixed: set[int]) -> dict[int, float]:
        """Δχ² from silence of bands nobody hears (edge.bands.silence decides when it counts)."""
        tr = self.tracker
        if self._silence is None:
            return {}
        lp = tr.locate_params
        cal_var = tr.calibration_var_db2()
        censor_var = lp.censor_sigma_db**2 + (cal_var if cal_var is not None else np.zeros(len(tr.rx_ids)))
        return self._silence.evaluate(now, band_ids=self.band_ids, last_sample=tr.last_sample, power=tr.power,
                                      window_s=tr.p.max_age_s, rx_last=tr.rx_last, fixes=self._fixes,
                                      status=self._status, low_battery_pct=self._rules_params.low_battery_pct,
                                      exponent=tr.calibration.exponent, threshold_dbm=lp.heard_threshold_dbm,
                                      censor_var_db2=censor_var)

    def _fixes_from(self, now: float, est: Any) -> list[tuple[int, Fix, int, float]]:
        zones, out_all, restricted = self._zone_facts(est)
        out: list[tuple[int, Fix, int, float]] = []
        ids = self.tracker.ids
        idx = est.idx.tolist()
        n = self._n_bands
        outs = out_all.tolist()
        margin = self._rules_params.min_margin_m
        suspects = [k for k, i in enumerate(idx) if i < n and outs[k] > margin]
        evidence = self._evidence(suspects, [idx[k] for k in suspects], est)
        xs, ys = est.xy[:, 0].tolist(), est.xy[:, 1].tolist()
        errs = est.err_m.tolist()
        counts, rssis = est.rx_count.tolist(), est.rssi.tolist()
        for k, i in enumerate(idx):
            fix = Fix(now, xs[k], ys[k], errs[k], outs[k], restricted[k], zones[k], evidence.get(k, 0.0))
            out.append((ids[i], fix, int(counts[k]), rssis[k]))
        return out

    def _zone_facts(self, est: Any) -> tuple[list[str | None], np.ndarray, list[str | None]]:
        """Per estimate: the zone it is in, its signed distance to its band's allowed area (0 for
        beacons) and the restricted zone it is in that its band may not enter (or None)."""
        is_band = est.idx < self._n_bands
        allowed = np.zeros((len(est.idx), len(self.zones.zones)), dtype=bool)
        allowed[is_band] = self._allowed[est.idx[is_band]]
        zone_ids: list[str | None] = [z.id for z in self.zones.zones]
        if self.tracker.locate_params.compiled:
            _, zone, out_all, first_r = self.zones.classify(est.xy, allowed, self._restricted, is_band)
            names = [*zone_ids, None]  # index -1 = none
            return [names[z] for z in zone.tolist()], out_all, [names[r] for r in first_r.tolist()]
        sd = self.zones.signed_distances(est.xy)
        out_all = np.zeros(len(est.idx))
        if is_band.any():
            out_all[is_band] = self.zones.union_signed_distance(sd[is_band], allowed[is_band])
        in_restricted = (sd < 0) & self._restricted[None, :] & ~allowed & is_band[:, None]
        first_r = np.argmax(in_restricted, axis=1).tolist()
        any_r = in_restricted.any(axis=1).tolist()
        restricted = [zone_ids[f] if a else None for f, a in zip(first_r, any_r, strict=True)]
        return self.zones.containing(sd), out_all, restricted

    # -- alerts -------------------------------------------------------------------------------
    def _alerts(self, band: int, decisions: list[Decision]) -> list[Alert]:
        out: list[Alert] = []
        for d in decisions:
            key = (band, d.type)
            if d.state == "raised":
                detail = self._band_detail(band, d)
                self._seq += 1
                alert = Alert.model_validate({
                    "schema": "qwatch.alert/1",
                    "alert_id": deterministic_ulid(d.ts, f"{self.site.site.id}|{self.node}|{band}|{d.type}|"
                                                         f"{d.ts:.3f}|{self._seq}"),
                    "site": self.site.site.id, "node": self.node, "type": d.type,
                    "severity": DEFAULT_SEVERITY.get(d.type, "major"), "state": "raised",
                    "subject": {"band": band}, "ts": d.ts, "detail": detail,
                })
                self._active[key] = alert
                self._count("alerts_raised")
                log.info("event=alert_raised band=%s type=%s alert=%s", band, d.type, alert.alert_id)
                out.append(alert)
            else:
                raised = self._active.pop(key, None)
                if raised is None:
                    continue
                self._count("alerts_cleared")
                log.info("event=alert_cleared band=%s type=%s alert=%s", band, d.type, raised.alert_id)
                out.append(raised.cleared(d.ts, d.detail))
        return out

    def _band_detail(self, band: int, d: Decision) -> dict[str, Any]:
        """A raised alert's detail plus `person` (the site's pseudonymous label) and, for a breach with no
        confident zone yet, `left_zone` = the allowed zone nearest to where the band is."""
        detail = dict(d.detail)
        person = self._person.get(band)
        if person is None:
            return detail
        detail["person"] = person
        if d.type == "geofence_breach" and detail.get("left_zone") is None:
            x, y = detail.get("x"), detail.get("y")
            zones = self._allowed_of.get(band, [])
            if isinstance(x, float) and isinstance(y, float) and zones:
                pt = np.array([[x, y]])
                sd = self.zones.signed_distances(pt)[0]
                ids = [z.id for z in self.zones.zones]
                detail["left_zone"] = min(zones, key=lambda z: float(sd[ids.index(z)]))
            elif zones:
                detail["left_zone"] = zones[0]
        return detail

    def active_alerts(self) -> list[Alert]:
        """Alerts raised and not yet cleared."""
        return list(self._active.values())

    def adopt_alert(self, alert: Alert, now: float) -> Alert | None:
        """Take over an alert raised before a restart (from the outbox database).

        The band's rules start in the raised state for that type, so the alert keeps its alert_id and
        is cleared by the usual rule once its condition ends (security alarms and SOS: after their
        usual quiet time from `now`). An alert this pipeline cannot own (band or type no longer in
        the config) is cleared at once: the returned `cleared` message goes to the outbox.
        """
        band = alert.subject.band if isinstance(alert.subject, BandSubject) else -1
        rules = self.rules.get(band)
        if rules is None or alert.state != "raised" or alert.type not in _ADOPTABLE:
            self._count("alerts_cleared_on_restart")
            return alert.cleared(now, {"reason": "node_restart", "note": "no longer monitored after a restart"})
        rules.active.add(alert.type)
        if alert.type == "sos":
            rules._sos_last = now
        elif alert.type in ("advert_forgery", "advert_replay"):
            rules._security_last[alert.type] = now
        self._active[(band, alert.type)] = alert
        self._count("alerts_adopted")
        log.info("event=alert_adopted band=%s type=%s alert=%s", band, alert.type, alert.alert_id)
        return None

    # -- reporting ----------------------------------------------------------------------------
    def telemetry(self, now: float) -> BandTelemetry:
        """`…/telemetry/bands`: every enrolled band heard within `missing_after_s`."""
        bands: list[BandState] = []
        horizon = now - self._rules_params.missing_after_s
        for band in self.band_ids:
            st = self._status.get(band)
            if st is None or st.ts < horizon:
                continue
            fix = self._fixes.get(band)
            rx_count, rssi = self._est_extra.get(band, (0, float("nan")))
            fresh = fix is not None and fix.ts >= now - 10.0
            bands.append(BandState(
                band=band, ts=st.ts,
                x=round(fix.x, 2) if fix and fresh else None, y=round(fix.y, 2) if fix and fresh else None,
                err_m=round(fix.err_m, 2) if fix and fresh else None, zone=fix.zone if fix and fresh else None,
                rssi=round(rssi, 1) if fresh and rssi == rssi else None, rx_count=rx_count if fresh else 0,
                battery=st.battery, temp_c=st.temp_c, flags=st.flags,
            ))
        return BandTelemetry.model_validate({"schema": "qwatch.bands/1", "ts": now, "bands": bands})

    def add_counts(self, counts: Mapping[str, int]) -> None:
        """Add to the advert counters (a batch adds its unknown-receiver and duplicate counts once)."""
        for key, n in counts.items():
            if n:
                self._counts[key] = self._counts.get(key, 0) + n

    def fix(self, band: int) -> Fix | None:
        """The latest position estimate of a band (or beacon)."""
        return self._fixes.get(band)

    def _count(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def counters(self) -> dict[str, int]:
        """Adverts by outcome (accepted, duplicate, drop reasons) and alert counts."""
        out = dict(self._counts)
        out["active_alerts"] = len(self._active)
        return out

    def receivers(self, now: float) -> dict[str, dict[str, float | int | str]]:
        """Per receiver: learned floor, gain residual and state (ok, gain_off, deaf, silent), or {}."""
        return self.detector.receivers(now) if self.detector is not None else {}

    def breach_null(self) -> dict[str, float | int]:
        """The window statistic's dispersion learned from the site's bands (`empirical_null`) and the receivers'
        loss burstiness (`miss_bursts`), the band-gain learner's counts and whether its gains are in use, or {}."""
        if self.detector is None:
            return {}
        det = self.detector
        return {**det.null.state(), **det.bursts.state(), **det.gain_state()}

    def calibration(self) -> dict[str, Any]:
        """The self-calibration state: exponent and receiver biases (dB)."""
        cal = self.tracker.calibration
        return {"path_loss_exponent": round(cal.exponent, 3),
                "rx_bias_db": {r: round(float(b), 2) for r, b in zip(self.tracker.rx_ids, cal.rx_bias, strict=True)}}

    # -- config change ------------------------------------------------------------------------
    def adopt(self, old: BandPipeline, now: float) -> list[Alert]:
        """Take over `old`'s state after a config change; returns the alerts to send for it.

        Kept: counters and the alert sequence; the anti-replay state of every band that still
        has a key (a band's CMAC context is rebuilt, its key may be new); the rule state (dwell
        timers, open alerts) of every band whose allowed zones and rule parameters did not change.
        Cleared with ``detail.cleared_by = "config"``: the open alerts of a band that was retired
        (no longer in the site) or whose zones or rules changed; its rules start afresh and raise
        again after the dwell if the condition still holds. Not kept: RSSI windows and position
        fixes (band indices change), so positions come back after a few seconds of adverts.
        """
        self._counts = dict(old._counts)
        self._seq = old._seq
        self._started = old._started
        keyed = set(self.verifier._keys)
        for band, state in old.verifier._bands.items():
            if band in keyed:
                state.mac = None
                self.verifier._bands[band] = state
        same_rules = self._rules_params == old._rules_params
        old_zones = {b.id: b.allowed_zones for b in old.site.bands}
        new_zones = {b.id: b.allowed_zones for b in self.site.bands}
        out: list[Alert] = []
        for band, rules in old.rules.items():
            if same_rules and band in self.rules and old_zones.get(band) == new_zones.get(band):
                self.rules[band] = rules
                continue
            for type_ in sorted(rules.active):
                raised = old._active.get((band, type_))
                if raised is not None:
                    self._count("alerts_cleared")
                    out.append(raised.cleared(now, {**raised.detail, "cleared_by": "config"}))
        for (band, type_), alert in old._active.items():
            if self.rules.get(band) is old.rules.get(band) and band in self.rules:
                self._active[(band, type_)] = alert
        if self._started is not None:
            for band, rules in self.rules.items():
                if rules is not old.rules.get(band):
                    rules.prime(now)
        return out
