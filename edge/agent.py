"""The edge agent: sources -> BandPipeline -> alerts -> outbox -> MQTT, plus cameras and telemetry.

Threads: each observation source and camera worker runs its own thread and only enqueues
(observations) or commits to the outbox (camera events, which is thread-safe). The agent
thread owns the pipeline: it drains observations, runs rule ticks, publishes band telemetry
once a second and node telemetry every `node_telemetry_s`, and handles cloud commands.
The MQTT link has its own pump thread. SIGTERM/SIGINT stop everything in order.

Development tools inject through `AgentHooks` (edge/agent_options.py; the product runs with none).
With an alert source and a site that has no receivers, that source is the only input; otherwise it
runs on top of the real pipeline. Node telemetry is built in edge/agent_telemetry.py.
"""

from __future__ import annotations

import logging
import math
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from edge import config_store
from edge.agent_options import AGENT_BOUNDS as AGENT_BOUNDS  # re-exported: the CLI's bounds
from edge.agent_options import AgentHooks as AgentHooks
from edge.agent_options import AgentOptions as AgentOptions
from edge.agent_options import AlertSource as AlertSource
from edge.agent_telemetry import TelemetrySaver, TickTimes
from edge.agent_telemetry import build_node_telemetry as build_node_telemetry  # re-exported
from edge.bands.recorder import ObservationRecorder
from edge.config_store import validate_push
from edge.health import HealthErrors, HostMetrics
from edge.mqtt_link import Command, LinkConfig, MqttLink
from edge.outbox import Outbox
from edge.state import CounterSaver, active_key, restore_alerts
from protocols.cli_errors import EXIT_NO_BROKER
from protocols.credentials import load_node_credentials
from protocols.errors import ConfigError, PayloadError
from protocols.observation import RawObservation
from protocols.payloads import (
    COMMANDS,
    Alert,
    CameraEvent,
    CommandResult,
    ConfigCommand,
    parse_payload,
)
from protocols.site_config import SiteConfig, load_band_keys, load_site_config
from protocols.topics import NodeTopics
from protocols.ulid import new_ulid

log = logging.getLogger("qwatch.edge.agent")

VERSION = "0.1.0"
OBS_QUEUE_MAX = 50_000  # observations waiting for the agent thread; beyond it new ones are dropped and counted


class Agent:
    """One edge node. Build with `Agent(opts, site, keys)`, then `run(stop_event)`."""

    def __init__(self, opts: AgentOptions, site: SiteConfig, keys: Mapping[int, bytes],
                 hooks: AgentHooks | None = None, config_version: int | None = None) -> None:
        self.opts = opts
        self.hooks = hooks or AgentHooks()
        self.site = site
        self.keys = keys
        self.config_version = config_version
        self.node = opts.node
        self.topics = NodeTopics(site.site.id, opts.node)
        self.boot_id = new_ulid()
        self.health = HealthErrors(opts.node)
        self.host = HostMetrics(opts.data_dir)
        opts.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(opts.data_dir)
        self.telemetry_saver = TelemetrySaver(opts.data_dir)
        self.link = MqttLink(
            LinkConfig(opts.broker_host, opts.broker_port, keepalive_s=opts.keepalive_s,
                       reconnect_max_s=opts.reconnect_max_s, max_inflight=opts.max_inflight,
                       telemetry_buffer=opts.telemetry_buffer, will_delay_s=opts.will_delay_s,
                       credentials=None if opts.credentials is None else load_node_credentials(
                           opts.credentials, site=site.site.id, node=opts.node)),
            self.topics, self.outbox, boot_id=self.boot_id, version=VERSION,
        )
        # SimpleQueue (C, one lock) rather than Queue (three conditions, Python): every advert crosses it,
        # ~1,400 a second on a 500-band site. Its bound is checked in `_sink` (OBS_QUEUE_MAX).
        self.obs: queue.SimpleQueue[RawObservation] = queue.SimpleQueue()
        self.counters: dict[str, int] = {"obs_dropped": 0, "alerts": 0, "camera_events": 0,
                                         "loop_errors": 0, "loops": 0}
        self.max_lag_ms = 0.0
        self.tick_times = TickTimes()
        self._band_second: int | None = None  # the wall-clock second the band pipeline last ticked in
        self.pipeline: Any = None
        self.learned: Any = None  # edge.learned_state.Keeper, with the pipeline
        self.sources: list[Any] = []
        self.cameras: dict[str, Any] = {}
        self.alert_source = None if self.hooks.alert_source is None else self.hooks.alert_source(opts, site)
        self.recorder: ObservationRecorder | None = None
        self._counter_saver = CounterSaver(self.outbox)
        self.last_counts: dict[str, int] = {}
        self.started_mono = time.monotonic()

    # ------------------------------------------------------------------ start / stop
    def start(self) -> None:
        """Connect, then start the pipeline, sources and cameras (injected alert source alone: none)."""
        self.link.start()
        self.health.sync("outbox_", self.outbox.health_errors())
        if self.alert_source is not None:
            log.info("event=alert_source_start node=%s %s", self.node, self.alert_source.describe())
            if not self.site.receivers:
                self._restore_state()
                return  # the injected source alone: no radio, no pipeline (fault-injection suite)
        from edge.bands.pipeline import BandPipeline
        from edge.learned_state import Keeper

        self.pipeline = BandPipeline(self.site, self.keys, node=self.node)
        # What the detector learned before a restart (power cut): a file that does not fit is refused, cold start.
        self.learned = Keeper(self.opts.data_dir, self.node)
        self.learned.restore(self.pipeline, time.time(), time.monotonic())
        self._restore_state()
        if self.opts.record is not None:
            self.recorder = ObservationRecorder(self.opts.record)
        self._start_sources()
        if self.opts.cameras:
            for cam in self.site.cameras:
                self._start_camera(cam)

    def _restore_state(self) -> None:
        """Before the first advert: the saved band counters (anti-replay) and the active alerts."""
        if self.pipeline is not None:
            n = self.pipeline.verifier.restore_counters(self.outbox.band_counters())
            self.counters["counters_restored"] = n
        for clear in restore_alerts(self.outbox.active_alerts(), self.pipeline, time.time()):
            self.emit_alert(clear)
        if self.pipeline is not None:
            self.counters["alerts_adopted"] = len(self.pipeline.active_alerts())

    def _start_sources(self) -> None:
        from edge.sources import open_sources

        scenario = None if self.hooks.scenario is None else self.hooks.scenario(self.site)
        self.sources = list(open_sources(self.site, self.keys, sim_seed=self.opts.sim_seed, scenario=scenario,
                                         sim_start_ts=self.opts.sim_start_ts))
        for src in self.sources:
            try:
                src.start(self._sink)
                log.info("event=source_started node=%s rx=%s", self.node, src.receiver_id)
            except Exception as exc:  # a dead radio must not take the node down
                self.health.set(f"source_{src.receiver_id}", f"cannot start: {exc}")

    def _start_camera(self, cam: Any) -> None:
        try:
            from edge.camera.worker import CameraWorker

            worker = CameraWorker(cam, site=self.site.site.id, node=self.node, on_event=self.on_camera_event,
                                  on_alert=self.emit_alert, on_snapshot=self.on_snapshot,
                                  snapshot_dir=self.opts.data_dir / "snapshots")
            worker.start()
            self.cameras[cam.id] = worker
        except Exception as exc:
            self.health.set(f"camera_{cam.id}", f"cannot start: {exc}")

    def stop(self) -> None:
        """Stop inputs first, then give the link a moment to drain, then close the outbox."""
        for src in self.sources:
            try:
                src.stop()
            except Exception:
                log.exception("event=source_stop_error node=%s rx=%s", self.node, src.receiver_id)
        for cam_id, worker in self.cameras.items():
            try:
                worker.stop()
            except Exception:
                log.exception("event=camera_stop_error node=%s camera=%s", self.node, cam_id)
        self._counter_saver.maybe_save(self._verifier(), time.monotonic(), time.time(), force=True)
        if self.learned is not None:
            self.learned.maybe_save(self.pipeline, time.time(), time.monotonic(), force=True)
        self.link.stop(drain_s=2.0)
        self.outbox.close()
        if self.recorder is not None:
            self.recorder.close()
        log.info("event=agent_stopped node=%s boot_id=%s", self.node, self.boot_id)

    # ------------------------------------------------------------------ inputs (other threads)
    def _sink(self, obs: RawObservation) -> None:
        # Sources run on their own threads: the size check and the put are not one step, so the bound
        # may be passed by one observation per source at most.
        if self.obs.qsize() >= OBS_QUEUE_MAX:
            self.counters["obs_dropped"] += 1
        else:
            self.obs.put_nowait(obs)

    def _verifier(self) -> Any:
        return None if self.pipeline is None else self.pipeline.verifier

    def _emit_untracked(self, alert: Alert) -> None:
        """An injected source's alerts (fault suite, benchmarks) are its own business, not restored."""
        self.emit_alert(alert, track=False)

    def emit_alert(self, alert: Alert, *, track: bool = True) -> None:
        """Commit the alert to the outbox (durable) and to the active set, then wake the publisher."""
        key = active_key(alert) if track else None
        row = self.outbox.put("alert", self.topics.alert, alert.to_json().encode(), alert.alert_id,
                              active_key=key, active=alert.state == "raised")
        self.link.notify()
        self.counters["alerts"] += 1
        subj = alert.subject.model_dump()
        log.info("event=alert node=%s alert_id=%s type=%s state=%s subject=%s seq=%d durable=%s",
                 self.node, alert.alert_id, alert.type, alert.state,
                 ",".join(f"{k}={v}" for k, v in subj.items()), row.seq, row.durable)

    def on_camera_event(self, ev: CameraEvent) -> None:
        """Camera events are durable too (same outbox, same order guarantees)."""
        topic = self.topics.camera_event(ev.camera)
        self.outbox.put("camera_event", topic, ev.to_json().encode(), f"{ev.camera}:{ev.kind}:{ev.frame}")
        self.link.notify()
        self.counters["camera_events"] += 1

    def on_snapshot(self, camera_id: str, alert_id: str, jpeg: bytes) -> None:
        """Snapshots skip the outbox: large, and the alert itself is what must not be lost."""
        self.link.publish_direct(self.topics.snapshot(camera_id, alert_id), jpeg, qos=1)

    # ------------------------------------------------------------------ main loop
    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set (or --duration elapses)."""
        t_end = time.monotonic() + self.opts.duration_s if self.opts.duration_s > 0 else float("inf")
        next_tick = next_bands = time.monotonic()
        next_node = time.monotonic() + min(1.0, self.opts.node_telemetry_s)
        while not stop.is_set() and time.monotonic() < t_end:
            self.counters["loops"] += 1
            try:
                self._drain_observations(deadline=time.monotonic() + self.opts.tick_s)
                mono, now = time.monotonic(), time.time()
                if self.alert_source is not None:
                    self.alert_source.step(mono, self._emit_untracked)
                if mono >= next_tick:
                    self.max_lag_ms = max(self.max_lag_ms, (mono - next_tick) * 1000)
                    next_tick = mono + self.opts.tick_s
                    self._tick(now)
                if mono >= next_bands:
                    next_bands = mono + 1.0
                    self._band_telemetry(now)
                if mono >= next_node:
                    next_node = mono + self.opts.node_telemetry_s
                    self._node_telemetry(now)
                self._handle_commands()
            except Exception:  # the agent never exits on a bad input or a bug in one step
                self.counters["loop_errors"] += 1
                log.exception("event=loop_error node=%s", self.node)
                time.sleep(0.1)

    def _drain_observations(self, deadline: float) -> None:
        timeout = 0.05 if self.alert_source is None else 0.01
        while True:
            try:
                obs = self.obs.get(timeout=timeout)
            except queue.Empty:
                return
            timeout = 0.0
            if self.recorder is not None:
                self.recorder.write(obs)
            for alert in self.pipeline.observe(obs.ts, obs.rx, obs.rssi, obs.company_id, obs.data):
                self.emit_alert(alert)
            if time.monotonic() >= deadline:
                return

    def _tick(self, now: float) -> None:
        # The band pipeline ticks once per whole second, at the agent's first tick in it: its rules and
        # window test are built and measured on the 1 Hz clock replay and the quality benchmarks use
        # (docs/bands.md, "Replay"), and more often costs CPU for no measured gain (docs/benchmarks.md,
        # the live node). The outbox, health and counters below keep the faster tick.
        second = math.floor(now)
        if self.pipeline is not None and second != self._band_second:
            self._band_second = second
            t0 = time.perf_counter()
            alerts = self.pipeline.tick(now)
            self.tick_times.add(time.perf_counter() - t0)
            for alert in alerts:
                self.emit_alert(alert)
        self._counter_saver.maybe_save(self._verifier(), time.monotonic(), now)
        if self.learned is not None:
            self.learned.maybe_save(self.pipeline, now, time.monotonic())
        self.outbox.retry_persist()
        self.health.sync("outbox_", self.outbox.health_errors())
        refusal = self.link.refusal
        self.health.sync("mqtt_puback", {"mqtt_puback_refused": refusal} if refusal else {})
        if self.recorder is not None:
            self.recorder.flush()

    def _band_telemetry(self, now: float) -> None:
        if self.pipeline is None:
            return
        tel = self.pipeline.telemetry(now)
        self.link.publish_telemetry(self.topics.telemetry_bands, tel.model_dump_json(by_alias=True).encode())

    def _node_telemetry(self, now: float) -> None:
        tel = build_node_telemetry(self, now)
        self.telemetry_saver.maybe_save(tel, now)
        self.link.publish_telemetry(self.topics.telemetry_node, tel.model_dump_json(by_alias=True).encode())

    # ------------------------------------------------------------------ commands
    def _handle_commands(self) -> None:
        while True:
            try:
                cmd = self.link.commands.get_nowait()
            except queue.Empty:
                return
            self.link.reply(self.handle_command(cmd))

    def handle_command(self, cmd: Command) -> CommandResult:
        """Validate and apply one cloud command; always returns a result (never raises)."""
        model = COMMANDS.get(cmd.name)
        if model is None:
            log.warning("event=cmd_unknown node=%s name=%s", self.node, cmd.name)
            return CommandResult(cmd_id="unknown", ok=False, error=f"unknown command {cmd.name!r}; "
                                 f"allowed: {', '.join(sorted(COMMANDS))}")
        try:
            parsed: Any = parse_payload(model, cmd.payload)
        except PayloadError as exc:
            log.warning("event=cmd_invalid node=%s name=%s error=%r", self.node, cmd.name, str(exc))
            return CommandResult(cmd_id="unknown", ok=False, error=str(exc))
        try:
            error = self._apply_command(cmd.name, parsed)
        except Exception as exc:
            log.exception("event=cmd_failed node=%s name=%s cmd_id=%s", self.node, cmd.name, parsed.cmd_id)
            error = f"{type(exc).__name__}: {exc}"
        log.info("event=cmd node=%s name=%s cmd_id=%s ok=%s", self.node, cmd.name, parsed.cmd_id, error is None)
        return CommandResult(cmd_id=parsed.cmd_id, ok=error is None, error=error,
                             config_version=self.config_version if cmd.name == "config" else None)

    def _apply_command(self, name: str, cmd: Any) -> str | None:
        if name == "ack":
            log.info("event=alert_acknowledged node=%s alert_id=%s by=%r", self.node, cmd.alert_id, cmd.by)
            return None
        if name == "snapshot":
            worker = self.cameras.get(cmd.camera)
            snap: Callable[[], None] | None = getattr(worker, "request_snapshot", None)
            if snap is None:
                return f"camera {cmd.camera!r} not running here or cannot take snapshots"
            snap()
            return None
        return self._apply_config(cmd)

    def _apply_config(self, cmd: ConfigCommand) -> str | None:
        """Validate a pushed config whole, save it as the last good one, then switch to it.

        The bands pipeline is rebuilt and takes over the old one's state (`BandPipeline.adopt`):
        alerts already raised are in the outbox and stay there; dwell timers of unchanged bands
        continue; a retired band's open alerts are cleared. Receivers are not restarted (a new
        receiver needs an agent restart); cameras are reconfigured or started.
        """
        try:
            pushed = validate_push(cmd, site_id=self.site.site.id, running_version=self.config_version)
        except ConfigError as exc:
            log.warning("event=config_refused node=%s version=%s error=%r", self.node, cmd.version, str(exc))
            return str(exc)
        if pushed.version is not None and pushed.version == self.config_version:
            return None  # a redelivered (retained) copy of what runs
        keys = dict(pushed.keys) if pushed.keys is not None else dict(self.keys)
        new = pushed.site
        fresh: Any = None
        if self.pipeline is not None and ((new.zones, new.bands, new.rules, new.receivers, new.beacons) != (
                self.site.zones, self.site.bands, self.site.rules, self.site.receivers, self.site.beacons)
                or keys != dict(self.keys)):
            from edge.bands.pipeline import BandPipeline

            fresh = BandPipeline(new, keys, node=self.node)  # built before anything is saved or swapped
        try:
            config_store.save(self.opts.data_dir, pushed, keys)
        except OSError as exc:
            return f"cannot save the config under {self.opts.data_dir}: {exc.strerror}; nothing was changed"
        if fresh is not None:
            for alert in fresh.adopt(self.pipeline, time.time()):
                self.emit_alert(alert)
            from edge.learned_state import copy_into

            # Learned values carry over by band and receiver id unless the push moved receivers, beacons or radio.
            carried = copy_into(self.pipeline, fresh, self.node, time.time())
            log.info("event=learned_state_carried node=%s bands=%s receivers=%s", self.node,
                     *(carried if carried is not None else ("cold", "cold")))
            self.pipeline = fresh
            log.warning("event=pipeline_reloaded node=%s reason=config_command version=%s bands=%d keys=%d",
                        self.node, pushed.version, len(new.bands), len(keys))
        for cam in new.cameras:
            worker = self.cameras.get(cam.id)
            if worker is not None:
                worker.reconfigure(cam)
            elif self.opts.cameras:
                self._start_camera(cam)
        self.site, self.keys, self.config_version = new, keys, pushed.version
        log.info("event=config_applied node=%s version=%s", self.node, pushed.version)
        return None


def run_agent(opts: AgentOptions, hooks: AgentHooks | None = None) -> int:
    """Load config and keys (ConfigError propagates to the CLI), run until a signal, stop cleanly."""
    site = load_site_config(opts.config)
    # Keys must be readable by the agent alone (docs/protocol.md §1): refuse a group/world-readable file.
    # An injected alert source may run without a key file (it hears no band).
    injected = hooks is not None and hooks.alert_source is not None
    keys = load_band_keys(opts.keys, require_private=True) if not injected or opts.keys.exists() else {}
    version: int | None = None
    pushed = config_store.load(opts.data_dir, site.site.id)
    if pushed is not None:
        # The cloud's last good push wins over the files it was first installed with.
        site, keys, version = pushed
        log.info("event=config_pushed_in_use node=%s version=%s dir=%s", opts.node, version,
                 opts.data_dir / config_store.DIR)
    try:
        opts.data_dir.mkdir(parents=True, exist_ok=True)
        probe = opts.data_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError("command line", "--data-dir", f"cannot write to {opts.data_dir}: {exc.strerror}") from None
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("event=signal node=%s signal=%s", opts.node, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    agent = Agent(opts, site, keys, hooks, config_version=version)
    log.info("event=agent_start node=%s site=%s boot_id=%s data_dir=%s", opts.node, site.site.id,
             agent.boot_id, opts.data_dir)
    agent.start()
    try:
        agent.run(stop)
    finally:
        agent.stop()
    if not agent.link.counters.get("connects"):
        log.error("event=never_connected node=%s broker=%s:%d reason=%r", opts.node, opts.broker_host,
                  opts.broker_port, agent.link.last_connect_error or "no answer")
        return EXIT_NO_BROKER
    return 0
