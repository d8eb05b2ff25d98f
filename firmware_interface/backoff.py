"""Exponential reconnect backoff, shared by every hardware link that must reopen itself.

Pure: it only computes delays. The caller sleeps (or waits on a stop event) so a stop
request never has to wait out a long delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays of initial·factor^n, capped at `maximum`, with ±`jitter` relative randomisation.

    Jitter keeps several adapters (or several nodes on one D-Bus) from retrying in lock step.
    """

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the following one."""
        base = min(self.maximum, self.initial * self.factor ** min(self.attempts, 30))
        self.attempts += 1
        spread = base * self.jitter
        return max(0.0, base + self._rng.uniform(-spread, spread))

    def reset(self) -> None:
        """Call after a link proved healthy, so the next failure retries quickly."""
        self.attempts = 0
