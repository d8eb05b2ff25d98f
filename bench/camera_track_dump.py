"""Per-track dump on the extended held-out model: what the confirmed tracks are, and how they behave.

For every track the current detector *confirms* (the ones that can raise a zone event), one
JSON line: what it really was (from the renderer's own state at that frame: a person's
silhouette, an insect at the lens, a raindrop sliding down, or "other" = rain streaks / noise /
bushes), and what it looked like over its life up to confirmation (age, size against the
perspective, aspect, speed, path speed, straightness, heading changes, outline sharpness,
contrast over the noise, polarity, where it was born against the zone border). Plus, per
zone motion_start, the same cause attribution, so the false events of a night stream can be
counted by cause.

Run: .venv/bin/python -m bench.camera_track_dump --night-min 10 --clips night --seeds 2 --out /tmp/tracks.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench import camera_heldout2 as h2
from bench import camera_video_alt2 as a2
from bench.camera_video_alt2 import Clip2

W, H, FPS = 320, 180, 5.0


def _cause(r: a2.Render2, clip: Clip2, t: float, box: tuple[float, float, float, float]) -> str:
    """What was in the box (x, y, w, h in detect px) at time t, by the renderer's state."""
    x, y, w, h = box
    pm = a2.person_mask(clip, t, W, H) if clip.people else None
    if pm is not None and pm[int(y):int(y + h) + 1, int(x):int(x + w) + 1].any():
        return "person"
    pad = 6.0
    for b in r.bugs:
        if x - pad - b[3] <= b[1] <= x + w + pad + b[3] and y - pad - b[3] <= b[2] <= y + h + pad + b[3]:
            return "insect"
    for d in r.drops:
        dy = d[3] + d[5] * (t - d[0])
        if x - pad - d[4] <= d[2] <= x + w + pad + d[4] and y - pad - d[4] <= dy <= y + h + pad + d[4]:
            return "drop"
    return "other"


def _features(det: Any, tr: Any, night: bool) -> dict[str, Any]:
    """What a confirmed track looked like over its life (from its history)."""
    hist = list(tr.hist)
    tk = det.tracker
    ts = hist[-1][0]
    href = [tk.expected_h(y, bh) for _, _, y, _, bh in hist]
    steps = [(b[1] - a[1], b[2] - a[2]) for a, b in itertools.pairwise(hist)]
    turns = []
    for (ax, ay), (bx, by) in itertools.pairwise(steps):
        if math.hypot(ax, ay) > 0.5 and math.hypot(bx, by) > 0.5:
            d = math.atan2(by, bx) - math.atan2(ay, ax)
            turns.append(abs((d + math.pi) % (2 * math.pi) - math.pi))
    path = sum(math.hypot(*s) for s in steps)
    net = math.hypot(hist[-1][1] - hist[0][1], hist[-1][2] - hist[0][2])
    dur = max(ts - hist[0][0], 1e-3)
    mh = float(np.median(href))
    b = tr.blob
    diff = det._diff_edge if det._diff_edge is not None else det._diff
    fg = det.last_fg
    contrast = pol = fill = 0.0
    if b is not None and diff is not None and fg is not None:
        m = fg[b.y:b.y + b.h, b.x:b.x + b.w]
        contrast = float(cv2.mean(diff[b.y:b.y + b.h, b.x:b.x + b.w], mask=m)[0]) / max(det.noise.sigma_px, 1e-3)
        fill = float(cv2.countNonZero(m)) / max(1, b.w * b.h)
        bg = det.background.bg
        if bg is not None:
            cur = det._last_gray[b.y:b.y + b.h, b.x:b.x + b.w].astype(np.float32)
            pol = float(cv2.mean(cur - bg[b.y:b.y + b.h, b.x:b.x + b.w], mask=m)[0])
    x0, y0 = hist[0][1] / W, hist[0][2] / H
    return {
        "age": round(ts - tr.first_ts, 2), "n": len(hist), "seen": round(tr.seen / max(tr.frames, 1), 2),
        "size": round(float(np.median([max(w, h) / e for (_, _, _, w, h), e in zip(hist, href, strict=True)])), 2),
        "aspect": round(float(np.median([h / max(w, 1) for *_, w, h in hist])), 2),
        "speed_h": round(net / dur / mh, 2), "path_h": round(path / dur / mh, 2),
        "straight": round(net / max(path, 1e-3), 2), "turn": round(float(np.median(turns)), 2) if turns else -1,
        "edge": round(tr.edge, 2), "walk": round(tr.walk, 2), "contrast_sigma": round(contrast, 2),
        "polarity": round(pol, 1),
        "fill": round(fill, 2), "born": [round(x0, 3), round(y0, 3)], "href_px": round(mh, 1),
        "box": [b.x, b.y, b.w, b.h] if b is not None else None, "night": night,
        "sigma_px": round(det.noise.sigma_px, 2),
        "path": [[round(x, 1), round(y, 1)] for _, x, y, _, _ in hist],
        "wh": [[w, h] for *_, w, h in hist],
    }


def run(clip: Clip2, offset: float, impl: h2.Impl, sink: Any, tag: str) -> Counter[str]:
    """One clip through the current detector; dumps confirmed tracks and zone events; causes of events."""
    det = impl.new()
    r = a2.Render2(clip)
    chroma = impl.chroma
    seen: set[int] = set()
    causes: Counter[str] = Counter()
    alive: dict[int, tuple[Any, str]] = {}  # unconfirmed tracks: id -> (track, cause of its last blob)
    for i in range(round(clip.seconds * FPS)):
        t = i / FPS
        bgr = r.frame(t + offset)
        g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        det._last_gray = g
        c = chroma(bgr)
        evs = det.process(g, t, i, c)
        night = det.night.night
        now = {tr.id for tr in det.tracker.tracks}
        for tid, (tr, cause) in list(alive.items()):
            if tid not in now:  # ended (or the scene was re-learnt) without being confirmed
                del alive[tid]
                if tr.id not in seen and len(tr.hist) >= 3:
                    age = round(tr.hist[-1][0] - tr.first_ts, 2)
                    sink.write(json.dumps({"tag": tag, "clip": clip.name, "t": round(t, 1), "kind": "lost",
                                           "cause": cause, "reason": tr.reason, "age": age, "n": len(tr.hist)}) + "\n")
        for tr in det.tracker.tracks:
            if not tr.confirmed and tr.blob is not None:
                b = tr.blob
                alive[tr.id] = (tr, _cause(r, clip, t, (b.x, b.y, b.w, b.h)) if clip.people else "-")
        for tr in det.tracker.tracks:
            if tr.confirmed and tr.id not in seen and tr.blob is not None:
                seen.add(tr.id)
                b = tr.blob
                rec = {"tag": tag, "clip": clip.name, "t": round(t, 1), "kind": "track",
                       "cause": _cause(r, clip, t + offset if not clip.people else t, (b.x, b.y, b.w, b.h)),
                       **_features(det, tr, night)}
                sink.write(json.dumps(rec) + "\n")
        for e in evs:
            if e.kind == "motion_start" and e.zone is not None and t >= 3.0:
                bx, by, bw, bh = e.bbox or (0, 0, 1, 1)
                cause = _cause(r, clip, t + offset if not clip.people else t, (bx * W, by * H, bw * W, bh * H))
                causes[cause] += 1
                sink.write(json.dumps({"tag": tag, "clip": clip.name, "t": round(t, 1), "kind": "event",
                                       "zone": e.zone, "cause": cause, "bbox": e.bbox}) + "\n")
    return causes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--night-min", type=float, default=0.0, help="minutes of each night stream block")
    ap.add_argument("--day-min", type=float, default=0.0)
    ap.add_argument("--clips", default="", help="also the person clips of conditions containing this")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], help="KEY=V DetectorSpec override (tp.KEY: TrackParams)")
    args = ap.parse_args()
    tmp = args.out.with_suffix(".site.yaml")
    tmp.write_text(h2.site_yaml("unused.mp4", True), encoding="utf-8")
    over = {k: h2._value(v) for k, v in (x.split("=", 1) for x in args.set)}
    impl = h2.Impl("current", None, tmp, tmp, over)
    total: Counter[str] = Counter()
    with args.out.open("w", encoding="utf-8") as sink:
        for kind, minutes, blocks in (("night", args.night_min, h2.NIGHT_BLOCKS), ("day", args.day_min, h2.DAY_BLOCKS)):
            if minutes <= 0:
                continue
            for bi, (_p, block) in enumerate(blocks):
                clip = Clip2(f"{kind}-block{bi}", minutes * 60, seed=77000 + bi, night=kind == "night",
                             blocks=((1e9, block),), **({"insects": 3.0} if kind == "night" else {"bushes": 4.0}))  # type: ignore[arg-type]
                c = run(clip, 0.0, impl, sink, f"{kind}-stream")
                total.update({f"{kind} block{bi} {k}": v for k, v in c.items()})
                print(kind, bi, block, dict(c), flush=True)
        if args.clips:
            for cond, scen, clip in h2.clip_set(args.seeds):
                if args.clips in cond and not cond.startswith("tamper"):
                    c = run(clip, 0.0, impl, sink, cond)
                    print(cond, scen, clip.seed, dict(c), flush=True)
    print(dict(total))


if __name__ == "__main__":
    main()
