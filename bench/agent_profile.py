"""The agent under a profiler: `qwatch-edge run` in this process, its CPU split by thread and by stage.

Used by `bench.edge_live_node --profile` (it replaces `python -m edge.cli` with `python -m
bench.agent_profile`; the arguments are the CLI's). Set by the environment:

- `QWATCH_PROFILE_OUT`: the JSON written at exit (per-thread CPU seconds, and the stages below);
- `QWATCH_PROFILE_AFTER_S`: the warm-up left out of every figure (default 60 s);
- `QWATCH_PROFILE_CPROFILE=1`: also a cProfile of every Python thread, on each thread's own CPU clock
  (`time.thread_time`, so time blocked in a queue or a sleep does not count), from the end of the
  warm-up. It slows Python-heavy code down, so its figures are read as shares of each thread's CPU,
  which the plain run (without it) measures.

Per-thread CPU comes from /proc/self/task/*/stat (all threads, native ones too: FFmpeg's decoder
threads, OpenCV's pool), snapshotted every 2 s so that threads ended at shutdown still count;
Python threads are named from `threading.enumerate()`.
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")

# Stages of the agent thread: (name, file suffix, function). Cumulative CPU of the entry function;
# A nested stage is taken out of its parent; the rest of the thread (its loop, queue gets) is what is left
# (`Agent.run` itself was entered before the profile started, so cProfile has no cumulative time for it).
AGENT_STAGES: list[tuple[str, str, str]] = [
    ("window test (once a second)", "edge/bands/pipeline.py", "_window"),
    ("per-tick band work (5/s): tracker, fixes, rules, silence", "edge/bands/pipeline.py", "tick"),
    ("per-advert path (verify, dedupe, track)", "edge/bands/pipeline.py", "observe"),
    ("alerts to the outbox", "edge/agent.py", "emit_alert"),
    ("band telemetry (1/s)", "edge/agent.py", "_band_telemetry"),
    ("node telemetry", "edge/agent.py", "_node_telemetry"),
    ("tick housekeeping (counters, outbox retry, health)", "edge/agent.py", "_tick"),
    ("commands", "edge/agent.py", "_handle_commands"),
]


# Stage timers (every run): (stage, "module:Class.method", parent stage). Each call's CPU on its own
# thread's clock is added to its stage, and taken out of its parent's (exclusive figures). Wrapping costs
# two clock reads per call (≈ 1 µs; ≈ 1,400 calls/s at most): small next to what is measured.
STAGE_TIMERS: list[tuple[str, str, str | None]] = [
    ("agent: drain loop (queue get)", "edge.agent:Agent._drain_observations", None),
    ("agent: per-advert path (verify, dedupe, track)", "edge.bands.pipeline:BandPipeline.observe",
     "agent: drain loop (queue get)"),
    ("agent: tick, other (counters, outbox retry, health)", "edge.agent:Agent._tick", None),
    ("agent: band tick (rules on_fix/on_tick loop)", "edge.bands.pipeline:BandPipeline.tick",
     "agent: tick, other (counters, outbox retry, health)"),
    ("agent: band tick: tracker estimate", "edge.bands.tracker:Tracker.estimate",
     "agent: band tick (rules on_fix/on_tick loop)"),
    ("agent: band tick: fixes from the estimate", "edge.bands.pipeline:BandPipeline._fixes_from",
     "agent: band tick (rules on_fix/on_tick loop)"),
    ("agent: band tick: window test (1/s)", "edge.bands.pipeline:BandPipeline._window",
     "agent: band tick (rules on_fix/on_tick loop)"),
    ("agent: band tick: silence evidence", "edge.bands.pipeline:BandPipeline._silence_evidence",
     "agent: band tick (rules on_fix/on_tick loop)"),
    ("agent: alerts to the outbox", "edge.agent:Agent.emit_alert", None),
    ("agent: band telemetry (1/s)", "edge.agent:Agent._band_telemetry", None),
    ("agent: node telemetry", "edge.agent:Agent._node_telemetry", None),
    ("camera: retrieve, resize, chroma", "edge.camera.capture:Capture._deliver", None),
    ("camera: motion, tracks, events", "edge.camera.worker:CameraWorker._on_sample",
     "camera: retrieve, resize, chroma"),
]


class StageTimers:
    """CPU per stage from wrapped methods (see STAGE_TIMERS); exclusive of nested stages."""

    def __init__(self) -> None:
        self.inclusive: dict[str, float] = {}
        self.base: dict[str, float] | None = None
        self._lock = threading.Lock()

    def install(self) -> None:
        import importlib

        for stage, target, _parent in STAGE_TIMERS:
            module, _, qual = target.partition(":")
            cls_name, meth = qual.split(".")
            cls = getattr(importlib.import_module(module), cls_name)
            setattr(cls, meth, self._wrap(stage, getattr(cls, meth)))
            self.inclusive[stage] = 0.0

    def _wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock, lock, acc = time.thread_time, self._lock, self.inclusive

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = clock() - t0
                with lock:
                    acc[stage] += dt
        return timed

    def mark(self) -> None:
        with self._lock:
            self.base = dict(self.inclusive)

    def report(self) -> dict[str, float]:
        """Exclusive CPU s per stage since `mark` (only methods that return often: a call that spans
        the mark counts whole)."""
        base = self.base or {}
        inc = {k: v - base.get(k, 0.0) for k, v in self.inclusive.items()}
        out = dict(inc)
        for stage, _target, parent in STAGE_TIMERS:
            if parent is not None:
                out[parent] -= inc[stage]
        return out


def _thread_names() -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def _task_cpu() -> dict[int, tuple[str, float]]:
    """{tid: (comm, CPU s)} of every thread of this process."""
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                raw = f.read()
        except OSError:
            continue  # ended between listdir and open
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


class ThreadCpu:
    """Per-thread CPU since the end of the warm-up, kept across thread ends (last snapshot wins)."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.base: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.t_base = self.t_last = 0.0
        self.proc_base = self.proc_last = 0.0

    def snap(self, *, base: bool = False) -> None:
        self.names.update(_thread_names())
        cpu = _task_cpu()
        tms = os.times()
        self.last.update(cpu)
        self.t_last, self.proc_last = time.monotonic(), tms.user + tms.system
        if base:
            self.base = {tid: c for tid, (_, c) in cpu.items()}
            self.t_base, self.proc_base = self.t_last, self.proc_last

    def report(self) -> dict[str, Any]:
        groups: dict[str, float] = {}
        for tid, (comm, cpu) in self.last.items():
            name = self.names.get(tid, f"native:{comm}")
            group = name.rstrip("0123456789-") if name.startswith(("Thread-", "native:")) else name
            groups[group] = groups.get(group, 0.0) + cpu - self.base.get(tid, 0.0)
        return {"wall_s": self.t_last - self.t_base, "process_cpu_s": self.proc_last - self.proc_base,
                "threads_cpu_s": dict(sorted(groups.items(), key=lambda kv: -kv[1]))}


class ThreadProfiles:
    """One cProfile per Python thread, each started by the thread itself once `start` is set."""

    def __init__(self) -> None:
        self.start = threading.Event()
        self.profiles: dict[str, cProfile.Profile] = {}
        self._lock = threading.Lock()

    def hook(self, _frame: Any, _event: str, _arg: Any) -> None:
        # A cheap profile function until the warm-up ends; then this thread's own cProfile replaces it.
        if not self.start.is_set():
            return
        prof = cProfile.Profile(time.thread_time)
        name = threading.current_thread().name
        with self._lock:
            key, n = name, 1
            while key in self.profiles:
                n += 1
                key = f"{name}#{n}"
            self.profiles[key] = prof
        prof.enable()

    def install(self) -> None:
        threading.setprofile(self.hook)
        sys.setprofile(self.hook)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, prof in self.profiles.items():
            raw: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
            total = sum(tt for (_cc, _nc, tt, _ct, _callers) in raw.values())
            top = sorted(((tt, ct, nc, f"{Path(f).name}:{ln}:{fn}") for (f, ln, fn), (_cc, nc, tt, ct, _c)
                          in raw.items()), reverse=True)[:25]
            out[name] = {"total_s": total, "stages": _stages(raw, total) if name == "MainThread" else {},
                         "top_tottime": [{"func": f, "tottime_s": tt, "cumtime_s": ct, "calls": nc}
                                         for tt, ct, nc, f in top]}
        return out


def _cum(raw: dict[Any, Any], suffix: str, func: str) -> float:
    return sum(v[3] for (f, _ln, fn), v in raw.items() if fn == func and f.endswith(suffix))


def _stages(raw: dict[Any, Any], total: float) -> dict[str, float]:
    """The agent thread's CPU by stage (cumulative seconds, nested stages taken out of their parents)."""
    c = {name: _cum(raw, suffix, func) for name, suffix, func in AGENT_STAGES}
    window, tick, advert, emit, btel, ntel, house, cmds = (s[0] for s in AGENT_STAGES)
    out = {window: c[window], tick: c[tick] - c[window], advert: c[advert], emit: c[emit], btel: c[btel],
           ntel: c[ntel], house: c[house] - c[tick], cmds: c[cmds]}
    out["agent loop (queue get, timing)"] = total - sum(out.values())
    return out


def _all_stages(threads: dict[str, float], timed: dict[str, float]) -> dict[str, float]:
    """The timed stages plus what each thread spent outside them (its loop, the camera's grab = decode)."""
    out = dict(timed)
    agent = sum(v for k, v in timed.items() if k.startswith("agent:"))
    out["agent: loop rest (waits, commands, timing)"] = threads.get("MainThread", 0.0) - agent
    cams = sum(v for k, v in threads.items() if k.startswith("capture-"))
    out["camera: grab (decode every frame), pacing"] = cams - sum(v for k, v in timed.items()
                                                                  if k.startswith("camera:"))
    for name, sec in threads.items():
        if name != "MainThread" and not name.startswith("capture-"):
            out[f"thread {name}"] = sec
    return out


def _sampler(cpu: ThreadCpu, timers: StageTimers, profiles: ThreadProfiles | None, after_s: float,
             stop: threading.Event) -> None:
    stop.wait(after_s)
    cpu.snap(base=True)
    timers.mark()
    if profiles is not None:
        profiles.start.set()
    while not stop.wait(2.0):
        cpu.snap()


def main() -> None:
    out = Path(os.environ.get("QWATCH_PROFILE_OUT", "agent-profile.json"))
    after_s = float(os.environ.get("QWATCH_PROFILE_AFTER_S", "60"))
    profiles = ThreadProfiles() if os.environ.get("QWATCH_PROFILE_CPROFILE") == "1" else None
    cpu, timers, stop = ThreadCpu(), StageTimers(), threading.Event()
    timers.install()
    sampler = threading.Thread(target=_sampler, args=(cpu, timers, profiles, after_s, stop), name="profile-sampler",
                               daemon=True)
    sampler.start()

    def _write() -> None:
        cpu.snap()
        threads = cpu.report()
        doc = {"cpu": threads, "stages": _all_stages(threads["threads_cpu_s"], timers.report()),
               "cprofile": profiles.report() if profiles is not None else None}
        out.write_text(json.dumps(doc, indent=1))

    atexit.register(_write)
    if profiles is not None:
        profiles.install()
    from edge.cli import app

    run: Callable[..., Any] = app
    run(args=sys.argv[1:], prog_name="bench.agent_profile")


if __name__ == "__main__":
    main()
