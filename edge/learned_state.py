"""What the breach detector learned of the site, kept across restarts in `DATA_DIR/learned-state.json`.

The learners (band gains, the receivers' gain errors and beacon calibration, level histograms and so floors,
plateau loss, loss burstiness, exponent, φ, the shadowing's clock) take minutes to hours to learn what is a
property of the hardware and the place. A power cut would otherwise throw it away and restart the detector
cold. Each learner gives a typed snapshot and takes it back (`WindowDetector.snapshot`, `Tracker.snapshot`);
this module turns them into a file keyed by band id and receiver id, writes it atomically, and refuses a file
that does not belong here. Format and guards: docs/protocol.md, "Learned state file"; what is kept and why:
docs/bands.md, "Learned state kept across restarts".

A refused file is logged once with its reason, counted under it (node telemetry `watchdogs.learned_state`),
and the node starts cold: nothing here may stop the agent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.bands.band_gain import GRID_DB, GainState
from edge.bands.beacon_exponent import BeaconFitState
from edge.bands.calibration import CalibrationState
from edge.bands.empirical_null import NullState
from edge.bands.hearing import HearingState
from edge.bands.miss_bursts import BurstState
from edge.bands.pipeline import BandPipeline
from edge.bands.rules import RuleParams
from edge.bands.shadow_clock import ClockState
from edge.bands.tracker import TrackerState
from edge.bands.window_detector import DetectorState
from edge.bands.window_exponent import ExponentState
from edge.bands.window_loss import LossState
from protocols.site_config import SiteConfig

log = logging.getLogger("qwatch.edge.learned")

FILE = "learned-state.json"
SCHEMA = "qwatch.learned/1"
SAVE_EVERY_S = 300.0
# The file is refused when older than this. The site quantities in it (floors, losses, φ) are re-learned within
# their memories (10-30 min) anyway; what an old file risks is what its fingerprint cannot see (a receiver
# turned or moved without a config change, a wristband re-issued under the same id), and a quarantine stay is
# one to two weeks: a week-old file is from another stay, another crowd and maybe another furniture.
MAX_AGE_S = 7 * 86400.0
# A Pi has no real-time clock: after a power cut it starts from the time it last saved until NTP answers, so a
# file a little "from the future" is normal; one more than this ahead means a clock that cannot be trusted.
MAX_AHEAD_S = 3600.0
MAX_FILE_BYTES = 16 << 20  # a 5,000-band site with band gains on writes ~1 MB
HIST_BINS = 141

Reason = Literal["missing", "unreadable", "too_large", "corrupt", "schema", "invalid", "other_site",
                 "site_changed", "too_old", "from_future", "mismatch"]
REASONS: tuple[str, ...] = get_args(Reason)

Fin = Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]
Count = Annotated[float, Field(ge=0.0, le=1e15, allow_inf_nan=False)]
HistCount = Annotated[int, Field(ge=0, le=10**15)]
Key = Annotated[str, Field(min_length=1, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BandLearned(_Model):
    """One band's learned gain (dB added to its advertised power), its sd and the evidence over the gain grid."""

    gain_db: Fin
    gain_sd_db: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
    updates: Annotated[int, Field(ge=1, le=10**12)]
    moved: bool
    evidence: list[Fin] = Field(min_length=1, max_length=64)


class PairLearned(_Model):
    """One beacon × receiver pair of the beacon calibration: averaged level less the beacon's power, level, rounds;
    and, where the censored beacon fit is on, the pair's log-likelihood over the level grid (`beacon_exponent`)."""

    mean_db: Fin
    level_dbm: Fin
    count: Count
    fit: list[Fin] | None = Field(default=None, min_length=1, max_length=1000)


class ReceiverLearned(_Model):
    """One receiver: levels heard, beacon bias, gain error from the bands, loss and burst sums, beacon pairs."""

    levels: list[HistCount] = Field(min_length=HIST_BINS, max_length=HIST_BINS)  # 1 dB bins from -140 dBm
    bias_db: Fin
    resid_db: Fin
    resid_n: Count
    loss_sent: Count
    loss_heard: Count
    burst_obs: Count
    burst_binom: Count
    pairs: dict[Key, PairLearned] = Field(default_factory=dict, max_length=1000)  # by beacon id


class SiteLearned(_Model):
    """What the whole site shares."""

    levels: list[HistCount] = Field(min_length=HIST_BINS, max_length=HIST_BINS)
    exponent: Annotated[float, Field(ge=1.0, le=6.0, allow_inf_nan=False)]
    calibration_updates: Annotated[int, Field(ge=0, le=10**12)]
    # Posterior covariance of (receiver gains in `receiver_order`, exponent).
    covariance: list[Annotated[list[Fin], Field(max_length=1001)]] = Field(max_length=1001)
    receiver_order: list[Key] = Field(max_length=1000)
    band_shared_db: Fin
    burst_age_s: Count  # how long the burst learner had been looking: its start-up floor's age
    exponent_info: Count
    exponent_info_n: Fin
    exponent_windows: Annotated[int, Field(ge=0, le=10**12)]
    null_scale: Annotated[float, Field(ge=0.5, le=10.0, allow_inf_nan=False)]
    null_beta: Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)] | None  # None: not fitted
    null_misfit: bool
    clock_sum: list[Count] = Field(max_length=64)
    clock_pairs: list[Count] = Field(max_length=64)
    clock_tau_s: Annotated[float, Field(gt=0.0, le=1e6, allow_inf_nan=False)] | None  # None: no time-varying part
    clock_var_db2: Count
    beacon_fit_rounds: Annotated[int, Field(ge=0, le=10**12)] = 0  # rounds the censored beacon fit has folded


class LearnedFile(_Model):
    """`learned-state.json` (docs/protocol.md, "Learned state file")."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)
    schema_: Literal["qwatch.learned/1"] = Field(alias="schema")
    site: Key
    node: Key
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    saved_at: Annotated[float, Field(ge=0.0, le=1e11, allow_inf_nan=False)]
    site_state: SiteLearned
    receivers: dict[Key, ReceiverLearned] = Field(max_length=1000)
    bands: dict[Key, BandLearned] = Field(default_factory=dict, max_length=100_000)  # by band id (decimal)


def fingerprint(site: SiteConfig) -> str:
    """What the learned values depend on beyond the bands: site id, receivers (id, position, source, offset),
    beacons (id, position) and the radio model. Bands are not in it: their values are keyed one by one."""
    doc = {"site": site.site.id, "radio": site.radio.model_dump(mode="json"),
           "receivers": [[r.id, list(r.position), r.source, r.rssi_offset] for r in site.receivers],
           "beacons": sorted([b.id, list(b.position)] for b in site.beacons)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------- pipeline <-> file
def capture(pipe: BandPipeline, node: str, now: float) -> LearnedFile | None:
    """The pipeline's learned state as a file (None: it runs no window detector, so learns nothing)."""
    det = pipe.detector
    if det is None:
        return None
    tr, d = pipe.tracker.snapshot(), det.snapshot()
    cal = tr.calibration
    beacons = [str(pipe.tracker.ids[int(i)]) for i in pipe.tracker.calibration.beacon_idx]
    rx_ids = pipe.tracker.rx_ids
    fits = [[_fit_row(d, j * len(rx_ids) + r) for r in range(len(rx_ids))] for j in range(len(beacons))]
    receivers = {rx: ReceiverLearned(
        levels=tr.rx_hist[r].tolist(), bias_db=float(cal.rx_bias[r]), resid_db=float(d.hearing.resid_db[r]),
        resid_n=float(d.hearing.resid_n[r]), loss_sent=float(d.loss.sent[r]), loss_heard=float(d.loss.heard[r]),
        burst_obs=float(d.bursts.obs[r]), burst_binom=float(d.bursts.binom[r]),
        pairs={b: PairLearned(mean_db=float(cal.mean[j, r]), level_dbm=float(cal.level[j, r]),
                              count=float(cal.count[j, r]), fit=fits[j][r])
               for j, b in enumerate(beacons) if cal.count[j, r] > 0 or fits[j][r] is not None})
        for r, rx in enumerate(rx_ids)}
    g = d.gains
    bands = {str(b): BandLearned(gain_db=float(g.mean[i]), gain_sd_db=float(g.sd[i]), updates=int(g.updates[i]),
                                 moved=bool(g.moved[i]), evidence=g.evidence[i].tolist())
             for i, b in enumerate(pipe.band_ids) if g.updates[i] > 0}
    s = SiteLearned(
        levels=tr.rssi_hist.tolist(), exponent=cal.exponent, calibration_updates=cal.updates,
        covariance=cal.cov.tolist(), receiver_order=list(rx_ids), band_shared_db=g.shared_db,
        burst_age_s=d.bursts.age_s, exponent_info=d.exponent.info, exponent_info_n=d.exponent.info_n,
        exponent_windows=d.exponent.windows,
        null_scale=d.null.scale, null_beta=d.null.beta if math.isfinite(d.null.beta) else None,
        null_misfit=d.null.misfit, clock_sum=d.clock.sum.tolist(), clock_pairs=d.clock.pairs.tolist(),
        clock_tau_s=d.clock.tau if math.isfinite(d.clock.tau) else None, clock_var_db2=d.clock.var_v,
        beacon_fit_rounds=d.beacon_fit.rounds)
    return LearnedFile(schema_=SCHEMA, site=pipe.site.site.id, node=node, fingerprint=fingerprint(pipe.site),
                       saved_at=now, site_state=s, receivers=receivers, bands=bands)


def _fit_row(d: DetectorState, pair: int) -> list[float] | None:
    """The censored beacon fit's log-likelihood of one pair (0.01 is far finer than it is read), None if it has none."""
    row = d.beacon_fit.loglik[pair]
    return [round(float(v), 2) for v in row] if d.beacon_fit.rounds and row.any() else None


def apply(pipe: BandPipeline, f: LearnedFile) -> tuple[int, int]:
    """Restore `f` into a fresh pipeline of the site it was checked against (`check`): bands by id (bands added
    since stay cold, removed ones are dropped), receivers by id, and the rules' start-up margin dropped
    (`drop_startup_margin`: the site is learned). Returns (bands, receivers) restored.
    ValueError when the file's shapes do not fit this pipeline (the caller refuses it as `mismatch`); the margin is
    dropped only once everything else was restored."""
    det = pipe.detector
    if det is None:
        return 0, 0
    rx_ids = pipe.tracker.rx_ids
    if sorted(f.receivers) != sorted(rx_ids) or f.site_state.receiver_order != rx_ids:
        raise ValueError("the file's receivers are not this site's")
    tracker = _tracker_state(pipe, f)  # built whole before anything is restored: a bad file changes nothing
    state = _detector_state(pipe, f, det.snapshot())
    pipe.tracker.restore(tracker)
    det.restore(state)
    drop_startup_margin(pipe)
    known = sum(1 for b in pipe.band_ids if str(b) in f.bands)
    return known, len(rx_ids)


def without_startup_margin(p: RuleParams) -> RuleParams:
    """`p` with the rules' start-up margin off (+3 on the window threshold for 90 s, fading over 60 s), all else
    as it was. The margin stands in for floors, receiver gains, burst dispersion and φ still being learned
    (docs/bands.md, "Losses in bursts at start-up"); a restored pipeline starts with them learned. What a restore
    does not bring back (each band's windows) was measured not to need it: docs/bands.md, "Learned state kept
    across restarts"."""
    return replace(p, window_startup_extra=0.0)


def drop_startup_margin(pipe: BandPipeline) -> None:
    """Every band's rules without the start-up margin (`without_startup_margin`): what `apply` does once a file
    was accepted and restored. A cold or refused start keeps the margin."""
    for rules in pipe.rules.values():
        rules.p = without_startup_margin(rules.p)


def _tracker_state(pipe: BandPipeline, f: LearnedFile) -> TrackerState:
    tr = pipe.tracker
    rxs = [f.receivers[r] for r in tr.rx_ids]
    beacons = [str(tr.ids[int(i)]) for i in tr.calibration.beacon_idx]
    shape = (len(beacons), len(rxs))
    mean, level, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for r, rx in enumerate(rxs):
        for j, b in enumerate(beacons):
            p = rx.pairs.get(b)
            if p is not None:
                mean[j, r], level[j, r], count[j, r] = p.mean_db, p.level_dbm, p.count
    s = f.site_state
    cal = CalibrationState(np.array([rx.bias_db for rx in rxs]), s.exponent, np.array(s.covariance, dtype=np.float64),
                           s.calibration_updates, mean, level, count)
    return TrackerState(np.array(s.levels, dtype=np.int64), np.array([rx.levels for rx in rxs], dtype=np.int64)
                        .reshape(len(rxs), HIST_BINS), cal)


def _detector_state(pipe: BandPipeline, f: LearnedFile, cold: DetectorState) -> DetectorState:
    """The file's values over `cold` (the fresh detector's own state: what a band not in the file starts from)."""
    rxs = [f.receivers[r] for r in pipe.tracker.rx_ids]
    g = cold.gains
    mean, sd, updates = g.mean.copy(), g.sd.copy(), g.updates.copy()
    evidence, moved = g.evidence.copy(), g.moved.copy()
    for i, b in enumerate(pipe.band_ids):
        e = f.bands.get(str(b))
        if e is None:
            continue
        if len(e.evidence) != len(GRID_DB):
            raise ValueError(f"band {b}: evidence over {len(e.evidence)} gains, this version has {len(GRID_DB)}")
        mean[i], sd[i], updates[i], moved[i], evidence[i] = e.gain_db, e.gain_sd_db, e.updates, e.moved, e.evidence
    s = f.site_state
    if len(s.clock_sum) != len(cold.clock.sum) or len(s.clock_pairs) != len(cold.clock.pairs):
        raise ValueError(f"shadow clock over {len(s.clock_sum)} lags, this version has {len(cold.clock.sum)}")

    def col(name: str) -> np.ndarray:
        return np.array([float(getattr(rx, name)) for rx in rxs], dtype=np.float64)

    fit = np.zeros_like(cold.beacon_fit.loglik)
    beacons = [str(pipe.tracker.ids[int(i)]) for i in pipe.tracker.calibration.beacon_idx]
    for r, rx in enumerate(rxs):
        for j, beacon in enumerate(beacons):
            pair = rx.pairs.get(beacon)
            if pair is not None and pair.fit is not None:
                if len(pair.fit) != fit.shape[1]:
                    raise ValueError(f"beacon fit over {len(pair.fit)} levels, this version has {fit.shape[1]}")
                fit[j * len(rxs) + r] = pair.fit

    return DetectorState(
        gains=GainState(mean, sd, updates, evidence, moved, s.band_shared_db),
        hearing=HearingState(col("resid_db"), col("resid_n")),
        loss=LossState(col("loss_sent"), col("loss_heard")),
        bursts=BurstState(col("burst_obs"), col("burst_binom"), s.burst_age_s),
        exponent=ExponentState(s.exponent_info, s.exponent_info_n, s.exponent_windows),
        null=NullState(s.null_scale, math.nan if s.null_beta is None else s.null_beta, s.null_misfit),
        clock=ClockState(np.array(s.clock_sum), np.array(s.clock_pairs),
                         math.inf if s.clock_tau_s is None else s.clock_tau_s, s.clock_var_db2),
        beacon_fit=BeaconFitState(fit, s.beacon_fit_rounds))


# ---------------------------------------------------------------------- file
class Refused(Exception):
    """The file cannot be used: `reason` (one of REASONS) and what was found."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


def read(path: Path, site: SiteConfig, now: float | None) -> LearnedFile:
    """The file at `path` if it belongs to `site` and is recent (`now` None: any age, for a replay of an old log);
    `Refused` otherwise."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise Refused("missing", f"{path} does not exist") from None
    except OSError as exc:
        raise Refused("unreadable", f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise Refused("too_large", f"{path} is over {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Refused("corrupt", f"{path} is not JSON: {str(exc)[:200]}") from None
    found = doc.get("schema") if isinstance(doc, dict) else None
    if found != SCHEMA:
        raise Refused("schema", f"{path} has schema {str(found)[:64]!r}, this version reads {SCHEMA!r}")
    try:
        f = LearnedFile.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])[:200]
        raise Refused("invalid", f"{path}: {exc.error_count()} error(s), first at {where}: {first['msg']}") from None
    return check(f, site, now, str(path))


def check(f: LearnedFile, site: SiteConfig, now: float | None, source: str = "learned state") -> LearnedFile:
    """`f` if it is this site's (same fingerprint) and within MAX_AGE_S of `now` (None: any age); `Refused`
    otherwise."""
    if f.site != site.site.id:
        raise Refused("other_site", f"{source} is for site {f.site!r}, this node runs {site.site.id!r}")
    if f.fingerprint != fingerprint(site):
        raise Refused("site_changed", f"{source} was learned with other receivers, beacons or radio settings")
    if now is None:
        return f
    age = now - f.saved_at
    if age > MAX_AGE_S:
        raise Refused("too_old", f"{source} is {age / 86400:.1f} days old (at most {MAX_AGE_S / 86400:.0f})")
    if age < -MAX_AHEAD_S:
        raise Refused("from_future", f"{source} was saved {-age / 3600:.1f} h after this node's clock")
    return f


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part: a temporary file
    beside it, fsync, rename, fsync of the directory (the rename itself must survive the power cut)."""
    commit(write_temp(path, data), path)


def write_temp(path: Path, data: bytes) -> Path:
    """The first half of `write_atomic`: `data` in a synced temporary file beside `path` (removed on failure)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path, path: Path) -> None:
    """The second half: the rename, then the directory synced so the rename survives a power cut."""
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dump(f: LearnedFile) -> bytes:
    return f.model_dump_json(by_alias=True).encode()


# ---------------------------------------------------------------------- the agent's keeper
@dataclass
class Keeper:
    """Loads the state at start, saves it every `every_s` and at a clean stop, and counts what happened."""

    data_dir: Path
    node: str
    every_s: float = SAVE_EVERY_S
    counters: dict[str, int] = field(default_factory=dict)
    restored: dict[str, float | int | str] = field(default_factory=dict)
    _next: float = -math.inf

    @property
    def path(self) -> Path:
        return self.data_dir / FILE

    def restore(self, pipe: BandPipeline, now: float, mono: float) -> bool:
        """Load and restore into `pipe`; on any refusal log once, count it and leave `pipe` cold. Never raises."""
        self._next = mono + self.every_s
        if pipe.detector is None:
            return False
        try:
            f = read(self.path, pipe.site, now)
            bands, rxs = self._apply(pipe, f)
        except Refused as exc:
            self._refused(exc)
            return False
        except Exception as exc:  # a bug here must cost the learned state, never the node
            self._refused(Refused("invalid", f"{type(exc).__name__}: {exc}"))
            return False
        age = round(max(now - f.saved_at, 0.0), 1)
        self.restored = {"restored": 1, "age_s": age, "bands": bands, "receivers": rxs, "startup_margin": "off"}
        log.info("event=learned_state_restored node=%s path=%s age_s=%.0f bands=%d receivers=%d "
                 "startup_margin=off", self.node, self.path, age, bands, rxs)
        return True

    def _apply(self, pipe: BandPipeline, f: LearnedFile) -> tuple[int, int]:
        try:
            return apply(pipe, f)
        except ValueError as exc:
            raise Refused("mismatch", str(exc)) from None

    def _refused(self, exc: Refused) -> None:
        key = f"refused_{exc.reason}"
        self.counters[key] = self.counters.get(key, 0) + 1
        self.restored = {"restored": 0, "refused": exc.reason}
        level = logging.INFO if exc.reason == "missing" else logging.WARNING
        log.log(level, "event=learned_state_refused node=%s reason=%s detail=%r start=cold",
                self.node, exc.reason, exc.detail)

    def maybe_save(self, pipe: BandPipeline | None, now: float, mono: float, *, force: bool = False) -> bool:
        """Save if `every_s` has passed since the last (or `force`). False when not due or it failed (logged)."""
        if pipe is None or (not force and mono < self._next):
            return False
        self._next = mono + self.every_s
        try:
            f = capture(pipe, self.node, now)
            if f is None:
                return False
            write_atomic(self.path, dump(f))
        except Exception as exc:  # a full or read-only card: the detector goes on, the next save tries again
            self.counters["save_errors"] = self.counters.get("save_errors", 0) + 1
            log.warning("event=learned_state_save_failed node=%s path=%s error=%r", self.node, self.path,
                        getattr(exc, "strerror", None) or str(exc)[:200])
            return False
        self.counters["saves"] = self.counters.get("saves", 0) + 1
        return True

    def stats(self) -> dict[str, int | float | str]:
        """For node telemetry `watchdogs.learned_state`."""
        return {**self.restored, **self.counters}


def copy_into(old: BandPipeline, fresh: BandPipeline, node: str, now: float) -> tuple[int, int] | None:
    """A config push rebuilds the pipeline: carry the old one's learned state over by band and receiver id when
    the push kept the receivers, beacons and radio (None otherwise, or if anything in it fails: `fresh` is cold)."""
    try:
        f = capture(old, node, now)
        if f is None or fresh.detector is None:
            return None
        check(f, fresh.site, now)
        return apply(fresh, f)
    except (Refused, ValueError):
        return None
