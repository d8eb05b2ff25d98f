"""Camera detection quality on the generated scenario set (devtools.video_synth), 640x360 25 fps H.264.

Reports, per scene group: zone-event recall (a fence-zone motion_start while the blob is in the
zone), start delay (motion_start ts - first in-zone frame), false zone events (zone motion_start
not overlapping a ground-truth interval) per hour of video, and tamper detection + delay.
Each clip goes through the real capture path (FFmpeg decode, grab/retrieve at 5 fps) and detector.

Run: .venv/bin/python -m bench.camera_quality [--seeds 3] [--seconds 14]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from devtools import video_synth as synth
from edge.camera.capture import Capture, CaptureOptions, Sample
from edge.camera.motion import DetectorSpec, MotionDetector, MotionEvent, ZoneSpec

SPEC = DetectorSpec(320, 180, 5.0, zones=(ZoneSpec("fence-north", synth.FENCE_ZONE, synth.ZONE_MIN_AREA,
                                                    synth.ZONE_DWELL),), masks=(synth.MASK_TOP,))

# group -> list of (kind, extra SceneSpec fields)
GROUPS: dict[str, list[tuple[str, dict[str, object]]]] = {
    "crossing (clear)": [("crossing", {})],
    "crossing (rain)": [("crossing", {"rain": 1.0})],
    "crossing (noisy night)": [("crossing", {"noise_sigma": 7.0, "blob_contrast": 0.6})],
    "crossing (small, far)": [("crossing", {"blob_scale": 0.6})],
    "lighting": [("ramp", {}), ("ir_switch", {}), ("clouds", {})],
    "noise + rain": [("noise", {}), ("rain", {}), ("rain", {"rain": 3.0})],
    "outside zones only": [("outside", {})],
    "quiet": [("quiet", {})],
    "tamper": [("covered", {"seconds": 17.0}), ("turned", {}), ("rolled", {}),
               ("defocus", {"seconds": 17.0})],
}
# Long distractor clips for the false-event rate (cheaper 320x180 @ 10 fps render; one seed).
_LONG: dict[str, object] = {"seconds": 120.0, "width": 320, "height": 180, "fps": 10, "event_at": 10.0,
                            "event_len": 40.0}
LONG_GROUP: list[tuple[str, dict[str, object]]] = [
    ("ramp", _LONG), ("ir_switch", _LONG), ("clouds", _LONG), ("noise", _LONG), ("rain", _LONG),
    ("rain", {**_LONG, "rain": 2.0}), ("quiet", {**_LONG, "noise_sigma": 5.0}),
]


@dataclass
class GroupResult:
    clips: int = 0
    media_s: float = 0.0
    gt_events: int = 0
    hits: int = 0
    delays: list[float] = field(default_factory=list)
    false_zone: int = 0
    gt_tamper: int = 0
    tamper_hits: int = 0
    tamper_delays: list[float] = field(default_factory=list)
    false_tamper: int = 0
    global_changes: int = 0


def detect(path: Path) -> tuple[list[MotionEvent], MotionDetector]:
    """The clip through capture + detector, media time."""
    det = MotionDetector(SPEC)
    events: list[MotionEvent] = []

    def on_sample(s: Sample) -> None:
        events.extend(det.process(s.gray, s.ts, s.index))

    Capture(str(path), CaptureOptions(media_time=True, loop_files=False, keep_full=False),
            on_sample=on_sample, name="quality").run()
    return events, det


def score(res: GroupResult, gt: synth.GroundTruth, events: list[MotionEvent], det: MotionDetector) -> None:
    res.clips += 1
    res.media_s += float(gt.spec["seconds"])  # type: ignore[arg-type]
    res.global_changes += det.counters["global_changes"]
    starts = [e for e in events if e.kind == "motion_start" and e.zone is not None]
    matched: set[int] = set()
    for _zone, t_in, t_out in gt.zone_intervals:
        res.gt_events += 1
        hit = next((i for i, e in enumerate(starts) if t_in - 0.5 <= e.ts <= t_out + 0.5 and i not in matched),
                   None)
        if hit is not None:
            matched.add(hit)
            res.hits += 1
            res.delays.append(starts[hit].ts - t_in)
    res.false_zone += len(starts) - len(matched)
    tampers = [e for e in events if e.kind == "tamper_start"]
    for t0, _t1 in gt.tamper_intervals:
        res.gt_tamper += 1
        hit_t = next((e for e in tampers if e.ts >= t0), None)
        if hit_t is not None:
            res.tamper_hits += 1
            res.tamper_delays.append(hit_t.ts - t0)
    res.false_tamper += max(0, len(tampers) - len(gt.tamper_intervals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=14.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--long", action="store_true", help="also 14 min of 2-minute distractor clips")
    ap.add_argument("--only-long", action="store_true", help="only the long distractor clips")
    args = ap.parse_args()
    results: dict[str, GroupResult] = {}
    groups = {} if args.only_long else dict(GROUPS)
    if args.long or args.only_long:
        groups["long distractors (2 min each)"] = LONG_GROUP
    with tempfile.TemporaryDirectory() as tmp:
        for group, scenes in groups.items():
            res = results.setdefault(group, GroupResult())
            for seed in range(1 if group.startswith("long") else args.seeds):
                for kind, extra in scenes:
                    params: dict[str, object] = {"seconds": args.seconds, "seed": 100 + seed, **extra}
                    spec = synth.SceneSpec(kind=kind, **params)  # type: ignore[arg-type]
                    path = Path(tmp) / f"{kind}-{seed}.mp4"
                    gt = synth.encode(spec, path)
                    events, det = detect(path)
                    score(res, gt, events, det)
                    path.unlink()
    t = Table(title=f"Camera detection quality ({args.seeds} seeds per scene, 640x360 25 fps, detect 320x180 @ 5 fps)")
    for col in ("scenes", "clips", "video min", "zone recall", "start delay s (mean/max)", "false zone ev.",
                "false/hour", "tamper found", "tamper delay s", "false tamper", "re-learns"):
        t.add_column(col, justify="right" if col != "scenes" else "left")
    out = {}
    for group, r in results.items():
        hours = r.media_s / 3600
        recall = f"{r.hits}/{r.gt_events}" if r.gt_events else "-"
        delay = f"{sum(r.delays) / len(r.delays):.2f}/{max(r.delays):.2f}" if r.delays else "-"
        tam = f"{r.tamper_hits}/{r.gt_tamper}" if r.gt_tamper else "-"
        tdel = f"{sum(r.tamper_delays) / len(r.tamper_delays):.1f}" if r.tamper_delays else "-"
        t.add_row(group, str(r.clips), f"{r.media_s / 60:.1f}", recall, delay, str(r.false_zone),
                  f"{r.false_zone / hours:.1f}", tam, tdel, str(r.false_tamper), str(r.global_changes))
        out[group] = {**r.__dict__, "false_per_hour": r.false_zone / hours}
    Console(width=200).print(t)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
