"""The held-out clip set of the second video model (bench/camera_video_alt.py): clips, ground truth, encoding.

Ground truth per clip: per-zone intervals while a person covers at least the zone's min_area
(at render resolution), any-overlap intervals, intervals while anyone is in the picture, and
tamper intervals.

Run: .venv/bin/python -m bench.camera_video_alt_set --out /tmp/qwatch_heldout --seed 0 [--reverse]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.camera_video_alt import FPS, MASK_OSD, ZONES, AltClip, H, W, Walker, _roi, person_at, render_frames

__all__ = ["FPS", "ZONES", "AltClip", "AltTruth", "Walker", "encode", "heldout_set", "site_yaml", "truth", "walkers"]


@dataclass(slots=True)
class AltTruth:
    """Ground truth of one clip (media seconds)."""

    clip: dict[str, object]
    zone_intervals: list[tuple[str, float, float]] = field(default_factory=list)
    touch_intervals: list[tuple[str, float, float]] = field(default_factory=list)  # any overlap
    person_intervals: list[tuple[float, float]] = field(default_factory=list)  # anyone in the picture
    tamper_intervals: list[tuple[float, float | None]] = field(default_factory=list)

    def to_json(self) -> str:
        """JSON for the `.truth.json` next to the clip."""
        return json.dumps(asdict(self), indent=1)


# What a technician would measure on this camera: a person at the fence (feet at row 0.46) is
# 0.147 of the picture tall, one on the approach path (row 0.90) 0.397 (the model's geometry:
# height = 1.7 m / 3 m x (row - horizon)).
PERSPECTIVE = ((0.46, 0.147), (0.90, 0.397))


def site_yaml(url: str, camera: str = "cam-alt", perspective: bool = False) -> str:
    """Site config of the held-out camera (zones, the OSD mask and, optionally, the perspective)."""
    lines = ["site: {id: heldout, name: held-out camera set}",
             "zones:\n  - {id: yard, kind: permitted, polygon: [[0,0],[40,0],[40,20],[0,20]]}",
             "cameras:", f"  - id: {camera}", f"    url: {json.dumps(url)}",
             "    detect: {width: 320, height: 180, fps: 5}", f"    masks: [{json.dumps([list(p) for p in MASK_OSD])}]"]
    if perspective:
        lines.append("    perspective: [" + ", ".join(f"{{row: {r}, person_h: {h}}}" for r, h in PERSPECTIVE) + "]")
    lines.append("    zones:")
    for zid, (poly, area, dwell) in ZONES.items():
        lines.append(f"      - {{id: {zid}, polygon: {json.dumps([list(p) for p in poly])}, min_area: {area},"
                     f" dwell_frames: {dwell}, alert: true}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- truth and encoding
def _zone_masks() -> dict[str, np.ndarray]:
    out = {}
    for zid, (poly, _area, _dwell) in ZONES.items():
        m = np.zeros((H, W), np.uint8)
        cv2.fillPoly(m, [np.array([[x * (W - 1), y * (H - 1)] for x, y in poly], np.int32)], 1)
        out[zid] = m
    return out


def _intervals(flags: list[bool], times: list[float]) -> list[tuple[float, float]]:
    out, start = [], None
    for f, t in zip(flags, times, strict=True):
        if f and start is None:
            start = t
        elif not f and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, times[-1]))
    return out


def truth(clip: AltClip) -> AltTruth:
    """Ground truth from the silhouettes alone (no rendering of the scene)."""
    zm = _zone_masks()
    zpx = {z: int(m.sum()) for z, m in zm.items()}
    times = [i / FPS for i in range(round(clip.seconds * FPS))]
    inside: dict[str, list[bool]] = {z: [] for z in zm}
    touch: dict[str, list[bool]] = {z: [] for z in zm}
    present: list[bool] = []
    blind = clip.tamper in ("knock", "spray")
    for t in times:
        person = np.zeros((H, W), np.uint8)
        for wk in clip.people:
            p = person_at(wk, t)
            box = _roi(person, p) if p is not None else None
            if p is not None and box is not None:
                box[0][:] |= p.union()[box[3], box[4]]
        if blind and t >= clip.tamper_at:
            person[:] = 0
        present.append(bool(person.any()))
        for z, m in zm.items():
            ov = int((person & m).sum())
            inside[z].append(ov >= ZONES[z][1] * zpx[z])
            touch[z].append(ov > 0)
    gt = AltTruth(clip=asdict(clip))
    for z in zm:
        gt.zone_intervals += [(z, a, b) for a, b in _intervals(inside[z], times)]
        gt.touch_intervals += [(z, a, b) for a, b in _intervals(touch[z], times)]
    gt.person_intervals = _intervals(present, times)
    if clip.tamper is not None:
        end = None if clip.tamper in ("knock", "spray") else clip.tamper_at + clip.tamper_len
        gt.tamper_intervals.append((clip.tamper_at, end))
    return gt


def encode(clip: AltClip, path: Path) -> AltTruth:
    """Render and encode a clip (libx264, low constant bitrate, GOP 2 s); write `.truth.json`."""
    gop = 2 * FPS
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{W}x{H}",
           "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{clip.bitrate_k}k",
           "-maxrate", f"{clip.bitrate_k}k", "-bufsize", f"{clip.bitrate_k}k", "-g", str(gop),
           "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for _t, frame in render_frames(clip):
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"ffmpeg failed for {path}")
    gt = truth(clip)
    path.with_suffix(".truth.json").write_text(gt.to_json(), encoding="utf-8")
    return gt


# ---------------------------------------------------------------------------- the held-out set
def walkers(kind: str, seed: int, t0: float) -> tuple[Walker, ...]:
    rng = np.random.default_rng(1000 + seed)
    side = 1 if rng.random() < 0.5 else -1
    c = float(rng.uniform(16, 28))
    if kind == "far":  # a small person walking along the strip beyond the fence, 35-45 m away
        d = float(rng.uniform(35, 45))
        return (Walker(t0, t0 + 9, -side * 8, d, side * 8, d, "walk", c, seed),)
    if kind == "fence":  # walks up to the fence from the near side, along it, away
        return (Walker(t0, t0 + 4, -side * 5, 8.0, -side * 3, 13.5, "walk", c, seed),
                Walker(t0 + 4, t0 + 9, -side * 3, 13.5, side * 3, 13.8, "walk", c, seed))
    if kind == "crawl":  # crawling slowly along the fence, 0.4 m/s
        return (Walker(t0, t0 + 10, -side * 2, 14.0, side * 2, 14.0, "crawl", c, seed),)
    if kind == "run":  # running across the approach path
        return (Walker(t0, t0 + 2.2, -side * 3.5, 7.0, side * 3.5, 7.5, "run", c, seed),)
    if kind == "enter":  # walks into the approach path, stands, leaves
        return (Walker(t0, t0 + 3, side * 4, 7.0, 0.0, 7.0, "walk", c, seed),
                Walker(t0 + 3, t0 + 6, 0.0, 7.0, 0.0, 7.0, "stand", c, seed),
                Walker(t0 + 6, t0 + 9, 0.0, 7.0, -side * 4, 7.5, "walk", c, seed))
    raise ValueError(kind)


def heldout_set(seeds: int = 2, long_s: float = 40.0) -> list[AltClip]:
    """The held-out clips: people (several conditions), distractors without people, tamper."""
    clips: list[AltClip] = []
    conds: dict[str, dict[str, object]] = {
        "day": {"wind": 1.5, "clouds": 0.0},
        "wind+clouds+shake": {"wind": 3.0, "clouds": 0.35, "shake": 1.2},
        "dusk": {"light": "dusk", "wb_step": True},
        "night-ir": {"light": "night", "insects": 1},
        "night-ir+rain": {"light": "night", "rain": 1.0, "bitrate_k": 200},
    }
    for seed in range(seeds):
        for cond, kw in conds.items():
            for kind in ("far", "fence", "crawl", "run", "enter"):
                clips.append(AltClip(name=f"person-{kind}-{cond}-{seed}", seconds=18.0, seed=10 * seed + len(clips),
                                     people=walkers(kind, seed * 7 + len(clips), 4.0), **kw))  # type: ignore[arg-type]
    distract: dict[str, dict[str, object]] = {
        "gusts+clouds": {"wind": 4.0, "clouds": 0.45},
        "shake 2px": {"shake": 2.0, "wind": 2.0},
        "dusk+AE/WB steps": {"light": "dusk", "wb_step": True, "wind": 2.0},
        "night IR+insects": {"light": "night", "insects": 3},
        "night IR+headlights": {"light": "night", "headlights": 3},
        "rain near lens": {"rain": 1.5, "clouds": 0.2},
        "night low bitrate": {"light": "night", "bitrate_k": 120, "rain": 0.5},
    }
    for seed in range(seeds):
        for cond, kw in distract.items():
            clips.append(AltClip(name=f"empty-{cond.replace(' ', '_').replace('/', '')}-{seed}", seconds=long_s,
                                 seed=500 + 10 * seed + len(clips), **kw))  # type: ignore[arg-type]
    for seed in range(seeds):
        tampers: list[tuple[str, dict[str, object]]] = [
            ("hand", {}), ("cloth", {}), ("spray", {}), ("knock", {"wind": 2.0}), ("defocus", {}),
            ("hand", {"light": "night"}), ("knock", {"light": "night"})]
        for tam, kw in tampers:
            clips.append(AltClip(name=f"tamper-{tam}-{kw.get('light', 'day')}-{seed}", seconds=20.0,
                                 seed=900 + 10 * seed + len(clips), tamper=tam, **kw))  # type: ignore[arg-type]
    return clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--only", default="", help="substring of clip names to render")
    ap.add_argument("--seed", type=int, default=None, help="render only this seed's clips")
    ap.add_argument("--reverse", action="store_true", help="render from the end of the list (a 2nd worker)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = heldout_set(args.seeds)
    for clip in reversed(todo) if args.reverse else todo:
        if (args.only and args.only not in clip.name) or (args.seed is not None
                                                           and not clip.name.endswith(f"-{args.seed}")):
            continue
        path = args.out / f"{clip.name}.mp4"
        lock = path.with_suffix(".lock")
        if path.with_suffix(".truth.json").exists():
            continue
        try:
            lock.touch(exist_ok=False)  # another worker renders this one
        except FileExistsError:
            continue
        encode(clip, path)
        print(path, flush=True)


if __name__ == "__main__":
    main()
