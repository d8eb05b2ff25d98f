"""Each receiver's loss burstiness, learned from the bands' own adverts: how much one miss is worth.

The window test counts every advert a listening receiver missed as independent evidence through that
receiver's hearing curve. Real links lose adverts in bursts (a body or a van in the way, a busy scanner,
Wi-Fi next door): then ten misses in a row are one event, not ten, and a fence-stander's short fade on the
inside receiver reads as strong evidence of "far from it", i.e. outside. The size of that error is the
dispersion D of a window's miss count against the binomial's: 1 for independent losses, about 2-3 for
3 s bursts that take 70 % of adverts a fifth of the time.

D is measured where the level cannot explain a miss: links whose heard level stays well above the
hearing curve's knee over the whole span (as the plateau loss, `window_loss`). Per such link, the last
`span_s` seconds are cut into blocks of `block_s`; with h the link's share heard in the span and n_j the
adverts sent in block j, D = Σ_j (k_j − n_j·h)² / (Σ_j n_j·h·(1−h) · (J−1)/J) (the (J−1)/J: h is taken
from the same blocks). Pooled per receiver with a prior of D = 1, forgotten over `memory_s`. The window
test then weighs each miss of receiver r by 1/D_r (a quasi-likelihood: the miss term's log-likelihood
divided by its dispersion), so a radio whose losses are independent is left exactly as it was.

D at the block scale underestimates D over a window a few blocks long when bursts outlast a block: the
misses are then still counted somewhat more than they are worth, never less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BurstParams:
    """Selection, prior and bounds of the burstiness learner."""

    learn: bool = True
    span_s: float = 56.0  # the seconds looked at per link (the advert bins keep 64)
    block_s: float = 8.0
    # A link counts when its heard level over the span is this far above the plateau learner's cut (the
    # knee + 3 per-packet sds): a walker's level changes by several dB in a minute.
    margin_db: float = 6.0
    min_heard_share: float = 0.3  # and it heard at least this share of the span's adverts (a link, not a stray)
    prior: float = 200.0  # weight of D = 1, in adverts' binomial variance (≈ 1,000 adverts at h 0.8)
    # At start-up D is not taken as 1 but at least `start_d`, a floor that falls to 1 as the strong links are
    # measured (weight `start_weight` against theirs) or over `start_s`, whichever is first: at start-up a
    # fence-stander's fade on the inside receiver is otherwise full evidence for "outside" (the alt radio's null
    # runs: 17 of 23 false breaches in the first 120 s). Two looks at a dozen strong links per receiver outweigh
    # it; on a site with few (48 bands at σ 8: minutes) the time limit stops it costing escapes long after.
    start_d: float = 3.0
    start_weight: float = 30.0
    start_s: float = 120.0
    memory_s: float = 900.0
    max_d: float = 4.0


@dataclass(frozen=True, slots=True)
class BurstState:
    """Each receiver's discounted observed and binomial variances of block miss counts, for a restart."""

    obs: F64
    binom: F64
    age_s: float  # from the first look to the last: how far the start-up floor has faded


class BurstLearner:
    """Per receiver: the observed and the binomial variance of block miss counts (discounted sums)."""

    def __init__(self, n_rx: int, above_floor_db: float, params: BurstParams | None = None) -> None:
        self.p = params or BurstParams()
        self.above_floor_db = above_floor_db  # the plateau learner's cut (knee + its sds); margin_db on top
        self.obs = np.zeros(n_rx)
        self.binom = np.zeros(n_rx)
        self._t = -math.inf  # the last look
        self._t0 = math.nan  # the first
        self._age0 = 0.0  # the learner's age before a restart (`restore`)

    @property
    def blocks(self) -> int:
        return max(2, round(self.p.span_s / self.p.block_s))

    def add(self, now: float, kb: F64, xbar: F64, nsb: F64, floor: F64, listen: NDArray[np.bool_]) -> None:
        """Fold the span of bands due a look: heard per block kb (M, R, J), the span's mean level xbar (M, R),
        adverts sent per block nsb (M, J)."""
        if not self.p.learn:
            return
        if math.isnan(self._t0):
            self._t0 = now
        if math.isfinite(self._t):
            decay = math.exp(-max(now - self._t, 0.0) / self.p.memory_s)
            self.obs *= decay
            self.binom *= decay
        self._t = now
        if not len(kb):
            return
        n_blk = kb.shape[2]
        full = np.asarray((nsb > 0.5).all(axis=1))  # heard from before the span: every block had adverts to hear
        k = kb.sum(axis=2)
        n = nsb.sum(axis=1)[:, None]
        h = np.clip(k / np.maximum(n, 1.0), 0.0, 1.0)
        use = (full[:, None] & listen[None, :] & (h >= self.p.min_heard_share) & (h < 1.0)
               & (xbar >= floor[None, :] + self.above_floor_db + self.p.margin_db))
        dev = ((kb - nsb[:, None, :] * h[:, :, None]) ** 2).sum(axis=2)
        var = n * h * (1.0 - h) * (n_blk - 1) / n_blk
        self.obs += np.where(use, dev, 0.0).sum(axis=0)
        self.binom += np.where(use, var, 0.0).sum(axis=0)

    def value(self) -> F64:
        """(R,) dispersion of each receiver's misses (≥ 1: a receiver whose losses look independent keeps 1).

        A receiver with few strong links (an outside one: the residents are far from it) takes the site's
        pooled value: the radio environment is shared, and leaving it at 1 would weigh its misses (evidence
        against "near it", i.e. against outside) above the inside receivers' (evidence for outside)."""
        if not self.p.learn:
            return np.ones(len(self.obs))
        w = self.p.prior
        d = np.maximum((self.obs + w * self._site()) / (self.binom + w), self._start_floor())
        return np.asarray(np.clip(d, 1.0, self.p.max_d))

    def _site(self) -> float:
        """The site's pooled dispersion (all receivers' sums, the same prior)."""
        return float((self.obs.sum() + self.p.prior) / (self.binom.sum() + self.p.prior))

    def _measured(self) -> float:
        """How far the site's strong links are measured: 0 at the start, → 1 (their weight against `start_weight`)."""
        data = float(self.binom.sum())
        return data / (data + self.p.start_weight)

    def _start_floor(self) -> float:
        """D at least this while the links are not measured: `start_d` at the start, → 1 as they are, or by
        `start_s` after the first look."""
        age = self._age0 + (self._t - self._t0 if math.isfinite(self._t0) else 0.0)
        fade = max(1.0 - age / self.p.start_s, 0.0) if self.p.start_s > 0 else 0.0
        return 1.0 + (self.p.start_d - 1.0) * min(1.0 - self._measured(), fade)

    def state(self) -> dict[str, float]:
        """The site's pooled dispersion, the largest receiver's and how much of the site's value is measured
        (the share of its weight from the links, not from `start_d`; node telemetry `watchdogs.breach_null`)."""
        if not self.p.learn:
            return {"miss_dispersion": 1.0, "miss_dispersion_max": 1.0, "miss_dispersion_measured": 0.0}
        d = self.value()
        site = float(np.clip(max(self._site(), self._start_floor()), 1.0, self.p.max_d))
        return {"miss_dispersion": round(site, 3), "miss_dispersion_max": round(float(d.max()) if len(d) else 1.0, 3),
                "miss_dispersion_measured": round(self._measured(), 3)}

    def snapshot(self) -> BurstState:
        age = self._age0 + (self._t - self._t0 if math.isfinite(self._t0) else 0.0)
        return BurstState(self.obs.copy(), self.binom.copy(), age)

    def restore(self, s: BurstState) -> None:
        """Start from `s`, not discounted for the time the node was off (as `LossLearner.restore`). The start-up
        floor's clock starts again at the first look, but the restored sums count as measured links, so the floor
        is where the restored age and sums put it."""
        if s.obs.shape != self.obs.shape or s.binom.shape != self.binom.shape:
            raise ValueError(f"burst state for {len(s.obs)} receivers, this site has {len(self.obs)}")
        self.obs = np.maximum(np.asarray(s.obs, dtype=np.float64), 0.0)
        self.binom = np.maximum(np.asarray(s.binom, dtype=np.float64), 0.0)
        self._t, self._t0 = -math.inf, math.nan
        self._age0 = max(float(s.age_s), 0.0) if math.isfinite(s.age_s) else 0.0
