"""Against the real GStreamer RTSP server: CameraWorker alerts + snapshots, the watchdog
reconnecting after the server is killed and restarted, and `camera-test` on an rtsp:// URL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.camera.capture import CaptureOptions
from edge.camera.worker import CameraWorker
from protocols.payloads import Alert, CameraEvent
from protocols.site_config import parse_site_config


class Sink:
    """Collects what the worker emits; wait_for() polls a condition with a deadline."""

    def __init__(self) -> None:
        self.events: list[CameraEvent] = []
        self.alerts: list[Alert] = []
        self.snapshots: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()

    def on_event(self, ev: CameraEvent) -> None:
        with self.lock:
            self.events.append(ev)

    def on_alert(self, a: Alert) -> None:
        with self.lock:
            self.alerts.append(a)

    def on_snapshot(self, cam: str, alert_id: str, jpeg: bytes) -> None:
        with self.lock:
            self.snapshots.append((cam, alert_id, jpeg))

    def wait_for(self, cond: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = cond()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; events={self.events}")


def alerts_of(sink: Sink, kind: str, state: str) -> list[Alert]:
    return [a for a in sink.alerts if a.type == kind and a.state == state]


def test_worker_motion_alert_snapshot_and_reconnect(
    make_clip: Callable[..., Any], rtsp_factory: Callable[..., Any], tmp_path: Path
) -> None:
    clip, _ = make_clip("crossing", seconds=30.0, width=640, height=360, event_at=1.0, event_len=4.0)
    srv = rtsp_factory({"/cam": clip})
    from devtools import video_synth as synth

    cam = parse_site_config(synth.site_yaml(url=srv.url("/cam"))).camera("cam-synth")
    sink = Sink()
    opts = CaptureOptions(stall_s=2.0, open_timeout_s=2.0, backoff_initial_s=0.3, backoff_max_s=1.0)
    worker = CameraWorker(cam, site="synth-site", node="edge-01", on_event=sink.on_event,
                          on_alert=sink.on_alert, on_snapshot=sink.on_snapshot,
                          snapshot_dir=tmp_path / "snaps", capture_options=opts)
    worker.start()
    try:
        # 1. The blob crosses the fence zone: camera_motion raised with a full-resolution snapshot.
        raised = sink.wait_for(lambda: alerts_of(sink, "camera_motion", "raised"), 20, "camera_motion")[0]
        assert raised.subject.model_dump() == {"camera": "cam-synth", "zone": "fence-north"}
        cam_id, alert_id, jpeg = sink.wait_for(lambda: sink.snapshots, 5, "snapshot")[0]
        assert (cam_id, alert_id) == ("cam-synth", raised.alert_id)
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (360, 640)  # full stream resolution, not the 320x180 detect size
        assert (tmp_path / "snaps" / "cam-synth" / f"{alert_id}.jpg").read_bytes() == jpeg
        cleared = sink.wait_for(lambda: alerts_of(sink, "camera_motion", "cleared"), 15, "motion cleared")[0]
        assert cleared.alert_id == raised.alert_id
        stats = worker.stats()
        assert stats["online"] == 1 and stats["skipped"] > 0 and stats["reconnects"] == 0

        # 2. The camera dies: the watchdog reconnects, camera_offline is raised, then cleared.
        srv.kill()
        off = sink.wait_for(lambda: alerts_of(sink, "camera_offline", "raised"), 15, "camera_offline")[0]
        assert off.subject.model_dump() == {"camera": "cam-synth", "zone": None}
        assert any(e.kind == "offline" for e in sink.events)
        processed_before = worker.stats()["processed"]
        srv.restart()
        back = sink.wait_for(lambda: alerts_of(sink, "camera_offline", "cleared"), 20, "offline cleared")[0]
        assert back.alert_id == off.alert_id
        assert [e.kind for e in sink.events if e.kind in ("offline", "online")] == ["offline", "online"]
        sink.wait_for(lambda: worker.stats()["processed"] > processed_before + 5, 10, "frames after restart")
        assert worker.stats()["reconnects"] >= 2

        # 3. On-demand snapshot (cmd/snapshot): the next frame, under a fresh ULID.
        worker.request_snapshot()
        sink.wait_for(lambda: len(sink.snapshots) >= 2, 5, "on-demand snapshot")
        assert sink.snapshots[1][1] != raised.alert_id and sink.snapshots[1][2][:2] == b"\xff\xd8"

        # 4. New zones through reconfigure: only the detector restarts, the stream stays up.
        reconnects = worker.stats()["reconnects"]
        new_cam = cam.model_copy(update={"zones": []})
        worker.reconfigure(new_cam)
        n = worker.stats()["processed"]
        sink.wait_for(lambda: worker.stats()["processed"] > n + 5, 10, "frames after reconfigure")
        assert worker.stats()["detector_restarts"] == 1
        assert worker.stats()["reconnects"] == reconnects
    finally:
        worker.stop()
    json.dumps(worker.stats())  # telemetry-ready: plain numbers only


def test_camera_test_cli_on_rtsp(make_clip: Callable[..., Any], rtsp_factory: Callable[..., Any],
                                 site_yaml: Callable[[str], Path]) -> None:
    clip, _ = make_clip("crossing", seconds=14.0, event_at=2.5, event_len=3.0)
    srv = rtsp_factory({"/cam": clip})
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "camera-test", "--config", str(site_yaml("x.mp4")),
                           "--camera", "cam-synth", "--source", srv.url("/cam"), "--max-seconds", "9"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [CameraEvent.model_validate_json(line) for line in proc.stdout.splitlines()]
    starts = [e for e in events if e.kind == "motion_start" and e.zone == "fence-north"]
    assert starts, proc.stdout + proc.stderr
    assert t0 < starts[0].ts < time.time()  # live stream: Unix time, not media time
    assert "camera-test stats:" in proc.stderr
