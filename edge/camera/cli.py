"""`qwatch-edge camera-test`: run one camera's pipeline and print its events as JSON lines.

Technicians use it on site to tune zones and masks. stdout carries only camera events
(docs/protocol.md §6, one JSON object per line); the stats summary goes to stderr. For files,
`ts` is media time and the file is processed as fast as it decodes; for live streams, `ts`
is Unix time and the command runs until --max-seconds or Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from edge.camera.capture import Capture, CaptureOptions, Sample, is_stream_url
from edge.camera.events import detector_spec, to_camera_event
from edge.camera.motion import MotionDetector
from protocols.errors import ConfigError
from protocols.payloads import CameraEvent
from protocols.site_config import load_site_config


class _Runner:
    """Capture -> detector -> JSON lines; stops itself at the media-time limit for files."""

    def __init__(self, camera: str, source: str, det: MotionDetector, opts: CaptureOptions,
                 max_seconds: float | None) -> None:
        self.camera = camera
        self.det = det
        self.max_seconds = max_seconds
        self.is_file = not is_stream_url(source)
        self.capture = Capture(source, opts, on_sample=self.on_sample, on_state=self.on_state, name=camera)
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.last_index = 0
        self.events = 0
        self.motion_cpu_s = 0.0
        self._out_lock = threading.Lock()

    def emit(self, ev: CameraEvent) -> None:
        with self._out_lock:
            sys.stdout.write(ev.to_json() + "\n")
            sys.stdout.flush()
            self.events += 1

    def on_sample(self, s: Sample) -> None:
        if self.first_ts is None:
            self.first_ts = s.ts
        if self.is_file and self.max_seconds is not None and s.ts - self.first_ts >= self.max_seconds:
            self.capture.stop()
            return
        t0 = time.process_time()
        events = self.det.process(s.gray, s.ts, s.index, s.chroma)
        self.motion_cpu_s += time.process_time() - t0
        self.last_ts, self.last_index = s.ts, s.index
        for ev in events:
            self.emit(to_camera_event(self.camera, ev))

    def on_state(self, kind: str, ts: float, reason: str) -> None:
        self.emit(CameraEvent.model_validate(
            {"schema": "qwatch.camera_event/1", "camera": self.camera, "zone": None, "kind": kind,
             "ts": round(ts, 3), "frame": self.capture.processed, "bbox": None, "score": 0.0}))

    def finish(self) -> None:
        for ev in self.det.finish(self.last_ts, self.last_index):
            self.emit(to_camera_event(self.camera, ev))


def camera_test(
    config: Annotated[Path, typer.Option("--config", help="site YAML (docs/protocol.md §3)")],
    camera: Annotated[str, typer.Option("--camera", help="camera ID from the site config")],
    source: Annotated[
        str | None, typer.Option("--source", help="RTSP URL or video file (default: the camera's url)")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="stop after N s (media time for files)")
    ] = None,
    stall_s: Annotated[float, typer.Option("--stall-s", help="watchdog: no frame this long -> reconnect")] = 20.0,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING")] = "WARNING",
) -> None:
    """Print a camera's events (§6) as JSON lines on stdout and a stats summary on stderr."""
    from edge.cli import setup_logging  # imported late: edge.cli imports this module

    setup_logging(log_level)
    try:
        site = load_site_config(config)
        cam = site.camera(camera)
        spec = detector_spec(cam)
    except ConfigError as err:
        typer.echo(f"qwatch-edge: configuration error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyError as err:
        typer.echo(f"qwatch-edge: configuration error: {config}: cameras: {err.args[0]}", err=True)
        raise typer.Exit(2) from None
    src = source or cam.url
    is_file = not is_stream_url(src)
    if is_file and not source and not Path(src.removeprefix("file://")).exists():
        near_config = config.parent / src.removeprefix("file://")
        src = str(near_config) if near_config.exists() else src  # a url relative to the config file
    if is_file and not Path(src.removeprefix("file://")).exists():
        typer.echo(f"qwatch-edge: no such video file: {src}", err=True)
        raise typer.Exit(2)
    opts = CaptureOptions(width=cam.detect.width, height=cam.detect.height, fps=cam.detect.fps,
                          stall_s=stall_s, open_timeout_s=min(10.0, stall_s), media_time=is_file,
                          loop_files=False, keep_full=False, backoff_max_s=10.0)
    # What the detector assumes about people's size, so the technician can check it on site.
    assumed = (f"perspective (person height / picture height by foot row): {spec.perspective.describe()}"
               if spec.perspective is not None else
               "perspective: none configured (person size not checked; speed judged by each blob's own height)")
    typer.echo(f"camera-test: camera={cam.id} {assumed}; person_check={cam.person_check}", err=True)
    runner = _Runner(cam.id, src, MotionDetector(spec), opts, max_seconds)
    timer = None
    if not is_file and max_seconds is not None:
        timer = threading.Timer(max_seconds, runner.capture.stop)
        timer.daemon = True
        timer.start()
    wall0, cpu0 = time.monotonic(), time.process_time()
    try:
        runner.capture.run()
    except KeyboardInterrupt:
        pass
    finally:
        if timer is not None:
            timer.cancel()
    runner.finish()
    _print_stats(runner, time.monotonic() - wall0, time.process_time() - cpu0)
    if runner.capture.processed == 0:
        raise typer.Exit(1)


def _print_stats(r: _Runner, wall_s: float, cpu_s: float) -> None:
    cap = r.capture
    proc = max(cap.processed, 1)
    stats = {
        "camera": r.camera,
        "frames_in": cap.frames_in,
        "processed": cap.processed,
        "skipped": cap.skipped,
        "reconnects": cap.reconnects,
        "errors": dict(cap.reasons),
        "events": r.events,
        "media_s": round(r.last_ts - (r.first_ts or 0.0), 2) if r.is_file else None,
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "motion_ms_per_frame": round(1000 * r.motion_cpu_s / proc, 3),
        "detector": r.det.counters,
    }
    typer.echo("camera-test stats: " + json.dumps(stats), err=True)
