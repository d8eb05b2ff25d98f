"""CameraWorker: capture + motion for one camera, turned into camera events, alerts and snapshots.

The agent creates one worker per configured camera. Events (docs/protocol.md §6) go to
`on_event`; `camera_motion` (zones with `alert: true`), `camera_tamper` and `camera_offline`
alerts go to `on_alert`, and their `cleared` message reuses the alert_id. Every
`camera_motion` alert gets one JPEG at full stream resolution with the bbox drawn, handed
to `on_snapshot(camera_id, alert_id, jpeg)` and kept on disk under a size cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge.camera.capture import Capture, CaptureOptions, Sample, is_stream_url
from edge.camera.events import detector_spec, to_camera_event
from edge.camera.motion import MOTION_END, MOTION_START, TAMPER_END, TAMPER_START, MotionDetector, MotionEvent
from protocols.payloads import Alert, CameraEvent, new_alert
from protocols.site_config import CameraConfig
from protocols.ulid import new_ulid

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_CAP_BYTES = 64 * 1024 * 1024


class SnapshotStore:
    """JPEGs on disk under `root/<camera>/<alert_id>.jpg`, oldest deleted past `cap_bytes`."""

    def __init__(self, root: Path, cap_bytes: int = DEFAULT_SNAPSHOT_CAP_BYTES) -> None:
        self.root = root
        self.cap_bytes = cap_bytes
        self.deleted = 0
        self._lock = threading.Lock()

    def save(self, camera: str, alert_id: str, jpeg: bytes) -> Path:
        """Write one snapshot, then trim the store to the cap."""
        path = self.root / camera / f"{alert_id}.jpg"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(jpeg)
            tmp.replace(path)
            self._trim(keep=path)
        return path

    def _trim(self, keep: Path) -> None:
        files = sorted((p for p in self.root.glob("*/*.jpg") if p != keep), key=lambda p: p.stat().st_mtime)
        files.append(keep)  # the newest goes last and is never deleted
        total = sum(p.stat().st_size for p in files)
        while len(files) > 1 and total > self.cap_bytes:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)
            self.deleted += 1


def render_snapshot(full: np.ndarray, bbox: tuple[float, float, float, float] | None, label: str,
                    path: tuple[tuple[float, float], ...] = ()) -> bytes:
    """The full-resolution frame with the bbox, a label and the track's path drawn, as JPEG bytes.

    `path`: the track's foot points (relative), oldest first, so a guard sees where it came from.
    """
    img = full.copy()
    h, w = img.shape[:2]
    thick = max(2, w // 320)
    if len(path) >= 2:
        pts = np.array([[int(x * w), int(y * h)] for x, y in path], np.int32)
        cv2.polylines(img, [pts], False, (0, 255, 255), thick, cv2.LINE_AA)
        cv2.circle(img, (int(pts[0][0]), int(pts[0][1])), thick * 2, (0, 255, 255), -1)
    if bbox is not None:
        x, y, bw, bh = bbox
        p0 = (int(x * w), int(y * h))
        p1 = (int((x + bw) * w), int((y + bh) * h))
        cv2.rectangle(img, p0, p1, (0, 0, 255), thick)
        cv2.putText(img, label, (p0[0], max(12, p0[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.4, w / 1600), (0, 0, 255), max(1, thick // 2))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class CameraWorker:
    """One camera: capture thread, motion detector, alerts, snapshots."""

    def __init__(
        self,
        cam: CameraConfig,
        *,
        site: str,
        node: str,
        on_event: Callable[[CameraEvent], None],
        on_alert: Callable[[Alert], None],
        on_snapshot: Callable[[str, str, bytes], None],
        snapshot_dir: Path | None = None,
        snapshot_cap_bytes: int = DEFAULT_SNAPSHOT_CAP_BYTES,
        capture_options: CaptureOptions | None = None,
    ) -> None:
        self.cam = cam
        self.site = site
        self.node = node
        self._on_event = on_event
        self._on_alert = on_alert
        self._on_snapshot = on_snapshot
        self._store = SnapshotStore(snapshot_dir, snapshot_cap_bytes) if snapshot_dir else None
        base = capture_options or CaptureOptions()
        self._opts = replace(base, width=cam.detect.width, height=cam.detect.height, fps=cam.detect.fps,
                             media_time=False, pace=base.pace or not is_stream_url(cam.url))
        self._lock = threading.Lock()
        self._detector = MotionDetector(detector_spec(cam))
        self._capture: Capture | None = None
        self._open_alerts: dict[tuple[str, str | None], Alert] = {}
        self._snapshot_requested = threading.Event()
        self.counters: dict[str, int] = {"events": 0, "alerts": 0, "snapshots": 0, "callback_errors": 0,
                                         "detector_restarts": 0}

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start capturing in a background thread."""
        self._capture = Capture(self.cam.url, self._opts, on_sample=self._on_sample,
                                on_state=self._on_state, name=self.cam.id)
        self._capture.start()
        log.info("camera=%s event=started url_kind=%s", self.cam.id,
                 "stream" if is_stream_url(self.cam.url) else "file")

    def stop(self) -> None:
        """Stop the capture thread (open alerts stay open: the condition was not observed to end)."""
        if self._capture is not None:
            self._capture.stop()
            self._capture = None

    def reconfigure(self, cam: CameraConfig) -> None:
        """New masks/zones/detect settings: restart only this camera's detector (and capture if needed)."""
        if cam == self.cam:
            return  # the config command re-sends every camera; unchanged ones keep running untouched
        restart_capture = cam.url != self.cam.url or cam.detect != self.cam.detect
        with self._lock:
            self.cam = cam
            self._detector = MotionDetector(detector_spec(cam))
            self.counters["detector_restarts"] += 1
            # Motion alerts of zones that no longer exist (or of the old detector) are cleared now.
            for key, alert in list(self._open_alerts.items()):
                if key[0] == "camera_motion":
                    self._emit_alert(alert.cleared(time.time(), {**alert.detail, "reason": "reconfigured"}))
                    del self._open_alerts[key]
        if restart_capture and self._capture is not None:
            self._opts = replace(self._opts, width=cam.detect.width, height=cam.detect.height, fps=cam.detect.fps)
            self.stop()
            self.start()
        log.info("camera=%s event=reconfigured zones=%d masks=%d", cam.id, len(cam.zones), len(cam.masks))

    def request_snapshot(self) -> None:
        """On-demand snapshot (`cmd/snapshot`): the next full frame goes to on_snapshot under a fresh ULID."""
        self._snapshot_requested.set()

    def stats(self) -> dict[str, float | int]:
        """fps_in, fps_proc, skipped, reconnects, online and error counters."""
        cap = self._capture.stats() if self._capture is not None else {
            "fps_in": 0.0, "fps_proc": 0.0, "skipped": 0, "reconnects": 0, "online": 0}
        with self._lock:
            det = dict(self._detector.counters)
        return {**cap, **{f"motion_{k}": v for k, v in det.items()}, **self.counters}

    # ------------------------------------------------------------------ capture callbacks
    def _on_sample(self, s: Sample) -> None:
        with self._lock:
            events = self._detector.process(s.gray, s.ts, s.index, s.chroma)
        for ev in events:
            self._handle(ev, s)
        if self._snapshot_requested.is_set() and s.full is not None:
            self._snapshot_requested.clear()
            self._deliver_snapshot(new_ulid(), render_snapshot(s.full, None, ""))

    def _on_state(self, kind: str, ts: float, reason: str) -> None:
        frame = self._capture.processed if self._capture is not None else 0
        self._emit_event(CameraEvent.model_validate(
            {"schema": "qwatch.camera_event/1", "camera": self.cam.id, "zone": None, "kind": kind,
             "ts": ts, "frame": frame, "bbox": None, "score": 0.0}))
        if kind == "offline":
            self._raise("camera_offline", None, ts, {"reason": reason})
        elif kind == "online":
            self._clear("camera_offline", None, ts)

    def _handle(self, ev: MotionEvent, s: Sample) -> None:
        self._emit_event(to_camera_event(self.cam.id, ev))
        zone_alert = {z.id: z.alert for z in self.cam.zones}
        if ev.kind == MOTION_START and ev.zone is not None and zone_alert.get(ev.zone, False):
            alert = self._raise("camera_motion", ev.zone, ev.ts,
                                {"bbox": list(ev.bbox or ()), "score": ev.score, "frame": ev.frame})
            if alert is not None and s.full is not None:
                self._snapshot(alert, s.full, ev)
        elif ev.kind == MOTION_END and ev.zone is not None:
            self._clear("camera_motion", ev.zone, ev.ts)
        elif ev.kind == TAMPER_START:
            self._raise("camera_tamper", None, ev.ts, {"reason": ev.reason})
        elif ev.kind == TAMPER_END:
            self._clear("camera_tamper", None, ev.ts)

    # ------------------------------------------------------------------ outputs
    def _raise(self, kind: str, zone: str | None, ts: float, detail: dict[str, object]) -> Alert | None:
        key = (kind, zone)
        if key in self._open_alerts:
            return None
        alert = new_alert(site=self.site, node=self.node, type=kind,
                          subject={"camera": self.cam.id, "zone": zone}, ts=ts, detail=detail)
        self._open_alerts[key] = alert
        self._emit_alert(alert)
        return alert

    def _clear(self, kind: str, zone: str | None, ts: float) -> None:
        alert = self._open_alerts.pop((kind, zone), None)
        if alert is not None:
            self._emit_alert(alert.cleared(ts))

    def _snapshot(self, alert: Alert, full: np.ndarray, ev: MotionEvent) -> None:
        try:
            jpeg = render_snapshot(full, ev.bbox, f"{ev.zone} {ev.score:.3f}", ev.path)
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("camera=%s alert=%s event=snapshot_failed", self.cam.id, alert.alert_id)
            return
        self._deliver_snapshot(alert.alert_id, jpeg)

    def _deliver_snapshot(self, alert_id: str, jpeg: bytes) -> None:
        try:
            if self._store is not None:
                self._store.save(self.cam.id, alert_id, jpeg)
            self._on_snapshot(self.cam.id, alert_id, jpeg)
            self.counters["snapshots"] += 1
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("camera=%s alert=%s event=snapshot_failed", self.cam.id, alert_id)

    def _emit_event(self, ev: CameraEvent) -> None:
        self.counters["events"] += 1
        try:
            self._on_event(ev)
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("camera=%s event=on_event_failed kind=%s", self.cam.id, ev.kind)

    def _emit_alert(self, alert: Alert) -> None:
        self.counters["alerts"] += 1
        log.info("camera=%s alert=%s type=%s state=%s", self.cam.id, alert.alert_id, alert.type, alert.state)
        try:
            self._on_alert(alert)
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("camera=%s alert=%s event=on_alert_failed", self.cam.id, alert.alert_id)
