"""Glue between the site config / wire contracts and the pure motion detector."""

from __future__ import annotations

from edge.camera import personcheck
from edge.camera.motion import DetectorSpec, MotionEvent, ZoneSpec
from edge.camera.tracks import Perspective
from protocols.errors import ConfigError
from protocols.payloads import CameraEvent
from protocols.site_config import CameraConfig


def detector_spec(cam: CameraConfig) -> DetectorSpec:
    """The detector settings for one configured camera (masks, zones, detect size and rate)."""
    zones = tuple(
        ZoneSpec(z.id, tuple((float(x), float(y)) for x, y in z.polygon), z.min_area, z.dwell_frames, z.alert)
        for z in cam.zones
    )
    masks = tuple(tuple((float(x), float(y)) for x, y in m) for m in cam.masks)
    persp = Perspective.fit([(p.row, p.person_h) for p in cam.perspective]) if cam.perspective else None
    if cam.person_check != "off" and not personcheck.available():
        raise ConfigError("site config", f"cameras[{cam.id}].person_check",
                          "this OpenCV build has no HOG people detector (it is in opencv-contrib-python-headless "
                          "of the same version); set person_check: off")
    return DetectorSpec(width=cam.detect.width, height=cam.detect.height, fps=cam.detect.fps,
                        zones=zones, masks=masks, perspective=persp, person_check=cam.person_check)


def _clamp_bbox(b: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
    if b is None:
        return None
    return (min(max(b[0], 0.0), 1.0), min(max(b[1], 0.0), 1.0), min(max(b[2], 0.0), 1.0),
            min(max(b[3], 0.0), 1.0))


def to_camera_event(camera: str, ev: MotionEvent) -> CameraEvent:
    """A detector event as the §6 camera event."""
    return CameraEvent.model_validate(
        {"schema": "qwatch.camera_event/1", "camera": camera, "zone": ev.zone, "kind": ev.kind,
         "ts": round(ev.ts, 3), "frame": ev.frame, "bbox": _clamp_bbox(ev.bbox),
         "score": ev.score if ev.score is not None else 0.0}
    )
