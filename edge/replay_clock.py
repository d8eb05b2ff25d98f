"""The replay clock: a tick at every whole second of observation time, batches of observations between.

`ReplayClock.steps(rows)` turns a parsed block into the steps a replay performs, in order: `Tick(now)`,
`Obs(start, end)` (a run of the block's observations with no tick inside) and `Bad` (a bad line, in
place). The clock depends on nothing but the observation times and the bad lines, so the same steps
drive the one-process replay (`edge.replay`) and the two-process one (`edge.replay_jobs`), where the
front process runs them and the back process only executes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from edge.replay_parse import Rows

TICK_S = 1.0
GAP_JUMP_S = 3600.0  # a silence longer than this is not ticked through second by second
GAP_TICKS_S = 600.0  # ... only its first 10 minutes are (enough for every dwell and band_missing)


@dataclass
class ReplayResult:
    """What a replay did: counts for the summary."""

    lines: int = 0
    observations: int = 0
    bad_lines: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    gaps: int = 0
    first_ts: float | None = None
    last_ts: float | None = None


class Tick(NamedTuple):
    """Run the pipeline's 1 Hz tick at `now`."""

    now: float


class Obs(NamedTuple):
    """Observe the block's rows [start, end) (no tick falls inside them)."""

    start: int
    end: int


class Bad(NamedTuple):
    """Report a bad line."""

    lineno: int
    reason: str
    message: str


Step = Tick | Obs | Bad


class ReplayClock:
    """Plans the steps of a replay block by block; counts lines, observations, bad lines and gaps."""

    def __init__(self) -> None:
        self.res = ReplayResult()
        self.next_tick = math.inf

    def _ticks_before(self, ts: float, out: list[Step]) -> None:
        """Ticks for every whole second passed before an observation at `ts`: the agent's 1 Hz timer."""
        # A long silence (node off, or a wild timestamp) is ticked for its first minutes only, so
        # one bad `ts` cannot make the replay spin through years of empty seconds.
        if ts - self.next_tick > GAP_JUMP_S:
            gap_end = self.next_tick + GAP_TICKS_S
            while self.next_tick < gap_end:
                out.append(Tick(self.next_tick))
                self.next_tick += TICK_S
            self.next_tick = math.floor(ts / TICK_S) * TICK_S
            self.res.gaps += 1
        while ts >= self.next_tick:
            out.append(Tick(self.next_tick))
            self.next_tick += TICK_S

    def _bad(self, bad: tuple[int, int, str, str], out: list[Step]) -> None:
        res = self.res
        res.bad_lines += 1
        res.bad_reasons[bad[2]] = res.bad_reasons.get(bad[2], 0) + 1
        out.append(Bad(bad[1], bad[2], bad[3]))

    def steps(self, rows: Rows) -> list[Step]:
        """A block's rows in order, a tick wherever the clock passes a second, bad lines in place."""
        res = self.res
        out: list[Step] = []
        n = len(rows.ts)
        running_max = np.maximum.accumulate(np.array(rows.ts, dtype=np.float64)) if n else np.zeros(0)
        bad = rows.bad
        b = 0
        pos = 0
        while True:
            while b < len(bad) and bad[b][0] <= pos:
                self._bad(bad[b], out)
                b += 1
            if pos >= n:
                return out
            if res.first_ts is None:
                res.first_ts = rows.ts[pos]
                self.next_tick = math.floor(rows.ts[pos] / TICK_S) * TICK_S + TICK_S
            if rows.ts[pos] >= self.next_tick:
                self._ticks_before(rows.ts[pos], out)
            # Up to the next observation that moves the clock past a tick, or the next bad line.
            end = int(np.searchsorted(running_max, self.next_tick, side="left"))
            if b < len(bad):
                end = min(end, bad[b][0])
            batch_max = float(running_max[end - 1])
            res.last_ts = batch_max if res.last_ts is None else max(res.last_ts, batch_max)
            res.observations += end - pos
            out.append(Obs(pos, end))
            pos = end

    def closing(self) -> Tick | None:
        """The closing tick after the last observation (None if there was none)."""
        return Tick(self.next_tick) if self.res.last_ts is not None else None
