"""Each receiver's plateau loss, learned from the bands' windows (for the window test's hearing curves).

The window test counts every advert a listening receiver missed through that receiver's hearing
curve: logistic above its floor, times (1 - plateau loss). A receiver that loses more adverts far
above its floor than the curve assumes (interference bursts, a busy scanner, a body between band
and receiver) makes every band it hears look weaker than it is, i.e. farther away, i.e. outside; and
the exponent learned from those misses reads high. The plateau is measured where the level cannot
explain a miss: on links whose heard adverts average `above_knee_sd` per-packet sds or more above
the curve's knee, the share of adverts heard is 1 - loss. It is pooled per receiver with a prior at the configured
base loss, one look per band per `every_s`, and forgotten over `memory_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LossParams:
    """Selection, prior and memory of the plateau-loss learner."""

    learn: bool = True
    # A link counts when its heard mean is this many per-packet sds above the curve's knee: there the
    # level explains next to no miss (at 12 dB above the floor, σ 6, the default radio's 15 % read 22-28 %).
    above_knee_sd: float = 3.0
    min_heard: float = 3.0
    every_s: float = 20.0
    prior_adverts: float = 200.0  # weight of the configured base loss, in adverts
    memory_s: float = 600.0
    lo: float = 0.02
    hi: float = 0.8


@dataclass(frozen=True, slots=True)
class LossState:
    """Each receiver's discounted adverts sent and heard on strong links (its plateau loss), for a restart."""

    sent: F64
    heard: F64


class LossLearner:
    """Per receiver: adverts sent and heard on links far above its floor (discounted sums)."""

    def __init__(self, n_rx: int, base_loss: float, above_floor_db: float, params: LossParams | None = None) -> None:
        self.p = params or LossParams()
        self.base = base_loss
        self.above_floor_db = above_floor_db  # knee + above_knee_sd × per-packet sd (the caller knows both)
        self.sent = np.zeros(n_rx)
        self.heard = np.zeros(n_rx)
        self._t = -math.inf

    def add(self, now: float, k: F64, xbar: F64, n_sent: F64, floor: F64, listen: NDArray[np.bool_]) -> None:
        """Fold windows (rows; k, xbar (M, R); n_sent (M,)) of bands due a look."""
        if not self.p.learn or not len(k):
            return
        n = np.maximum(n_sent, 1.0)[:, None]
        use = (k >= self.p.min_heard) & (xbar >= floor[None, :] + self.above_floor_db) & listen[None, :] & (k <= n)
        if math.isfinite(self._t):
            decay = math.exp(-max(now - self._t, 0.0) / self.p.memory_s)
            self.sent *= decay
            self.heard *= decay
        self._t = now
        self.sent += np.where(use, n, 0.0).sum(axis=0)
        self.heard += np.where(use, k, 0.0).sum(axis=0)

    def value(self) -> F64:
        """(R,) plateau loss per receiver."""
        w = self.p.prior_adverts
        ok = (self.heard + w * (1.0 - self.base)) / (self.sent + w)
        return np.asarray(np.clip(1.0 - ok, self.p.lo, self.p.hi))

    def snapshot(self) -> LossState:
        return LossState(self.sent.copy(), self.heard.copy())

    def restore(self, s: LossState) -> None:
        """Start from `s`. The time of the last look is not kept: the sums are not discounted for the time the
        node was off (it saw nothing then; a receiver's losses are its hardware's and its place's)."""
        if s.sent.shape != self.sent.shape or s.heard.shape != self.heard.shape:
            raise ValueError(f"loss state for {len(s.sent)} receivers, this site has {len(self.sent)}")
        sent = np.maximum(np.asarray(s.sent, dtype=np.float64), 0.0)
        self.sent, self.heard = sent, np.clip(np.asarray(s.heard, dtype=np.float64), 0.0, sent)
        self._t = -math.inf
