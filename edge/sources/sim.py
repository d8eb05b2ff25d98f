"""Real-time simulator source: every `sim` receiver of the site, paced by the wall clock.

The simulator is deterministic per seed and runs in simulated Unix time; this source maps
that onto the wall clock (start_ts = now) and releases each observation once its time has
come, so the agent sees the same timing it would get from radios.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from edge.sources.base import Sink

if TYPE_CHECKING:
    from edge.sim import Scenario, Simulator
    from protocols.site_config import SiteConfig

log = logging.getLogger("qwatch.edge.sources.sim")


class SimSource:
    """An `ObservationSource` for all `sim` receivers, driving `edge.sim.Simulator` in real time."""

    def __init__(
        self,
        site: SiteConfig,
        keys: Mapping[int, bytes],
        *,
        receivers: Sequence[str] | None = None,
        seed: int = 0,
        scenario: Scenario | None = None,
        start_ts: float | None = None,
        tick_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._site = site
        self._keys = dict(keys)
        self._receivers = list(receivers) if receivers is not None else [
            r.id for r in site.receivers if r.source == "sim"
        ]
        self._seed = seed
        self._scenario = scenario
        self._start_ts = start_ts
        self._tick_s = tick_s
        self._clock = clock
        self._sim: Simulator | None = None
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counts = {"adverts": 0, "ticks": 0, "late_ticks": 0, "sink_errors": 0, "sim_errors": 0}
        self._max_lag_s = 0.0
        self._last_advert_wall = 0.0

    @property
    def receiver_id(self) -> str:
        """``sim``: this one source stands for every simulated receiver."""
        return "sim"

    @property
    def receivers(self) -> list[str]:
        """The receiver IDs this source simulates."""
        return list(self._receivers)

    @property
    def simulator(self) -> Simulator | None:
        """The running simulator (for ground truth in demos and tests); None before start()."""
        return self._sim

    def start(self, sink: Sink) -> None:
        """Build the simulator at the current time and start releasing observations."""
        if self._thread is not None:
            raise RuntimeError("sim source already started")
        from edge.sim import Simulator

        start_ts = self._clock() if self._start_ts is None else self._start_ts
        # Simulate every receiver of the site and keep ours: then a firmware simulator playing a
        # hardware receiver of the same site (same seed and start_ts) hears the very same adverts,
        # instead of an independent run whose counters would look like replays.
        self._sim = Simulator(self._site, self._keys, seed=self._seed, start_ts=start_ts,
                              scenario=self._scenario)
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name="sim-source", daemon=True)
        self._thread.start()
        log.info("rx=sim event=started receivers=%s bands=%d seed=%d",
                 ",".join(self._receivers), len(self._sim.band_ids), self._seed)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the pacing thread. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, int | float]:
        """Counters: adverts released, ticks, ticks that overran, sink and simulator errors, lag."""
        with self._lock:
            out: dict[str, int | float] = dict(self._counts)
        out["max_lag_s"] = round(self._max_lag_s, 4)
        out["last_advert_age_s"] = round(self._clock() - self._last_advert_wall, 3) if self._last_advert_wall else -1.0
        out["thread_alive"] = int(self._thread is not None and self._thread.is_alive())
        return out

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _run(self) -> None:
        assert self._sim is not None and self._sink is not None
        sim, sink = self._sim, self._sink
        ours = set(self._receivers)
        while not self._stopping.is_set():
            t0 = time.monotonic()
            now = self._clock()
            try:
                batch = [o for o in sim.advance(now) if o.rx in ours]
            except Exception:  # a simulator bug must not kill the agent; count it and keep pacing
                self._bump("sim_errors")
                log.exception("rx=sim event=sim_error")
                batch = []
            for obs in batch:
                try:
                    sink(obs)
                except Exception:
                    self._bump("sink_errors")
                    log.exception("rx=%s event=sink_error", obs.rx)
            if batch:
                self._bump("adverts", len(batch))
                self._last_advert_wall = now
                self._max_lag_s = max(self._max_lag_s, now - batch[0].ts)
            self._bump("ticks")
            spent = time.monotonic() - t0
            if spent > self._tick_s:
                self._bump("late_ticks")
            self._stopping.wait(max(0.0, self._tick_s - spent))
