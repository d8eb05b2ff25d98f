"""Why a zone crossing of the extended held-out model was missed: the first stage that lost the person.

For every person clip of the chosen conditions the current detector is run frame by frame (the
same frames and scoring as `bench.camera_heldout2 --clips`), and for each crossing that is not hit
(no event of that zone open within [entry - 0.5 s, entry + 2 s]) the frames of that window are
followed through the pipeline, from the renderer's own silhouette of the person:

- `threshold`: share of the silhouette whose |difference| passes the per-pixel threshold, the
  threshold there and what sets it (floor, k * sigma, Weber term), the person's mean |difference|;
- `mask`: share left after the 3x3 opening and the persistence test (the change mask);
- `blob` / `track`: the tracks whose blob touches the silhouette, their age and why each is not
  (yet) confirmed (tracks.py reasons: small, large, rigid, fast, erratic, young, static, ...);
- `zone`: the confirmed boxes' cover of the zone against `min_area`; frozen frames (global change).

A miss is put under the first stage that fails in *every* frame of its window (mask < 10 % of the
silhouette -> `no mask`; no blob -> `no blob`; never confirmed -> `track: REASON` with the reason
seen most often; confirmed but the zone did not fire -> `zone`); an event for the crossing that
came after the 2 s is `late` (with its delay). `--frames` prints the per-frame rows of each miss.

Run: .venv/bin/python -m bench.camera_miss_trace --only day --seeds 2 [--frames] [--set KEY=V]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import cv2
import numpy as np

from bench import camera_heldout as ch
from bench import camera_heldout2 as h2
from bench import camera_video_alt2 as a2

W, H, FPS = 320, 180, 5.0


def _zone_masks() -> dict[str, np.ndarray]:
    out = {}
    for zid, (poly, _a, _d) in a2.ZONES.items():
        m = np.zeros((H, W), np.uint8)
        cv2.fillPoly(m, [np.array([[x * (W - 1), y * (H - 1)] for x, y in poly], np.int32)], 1)
        out[zid] = m
    return out


def _frame_row(det: Any, pm: np.ndarray, zm: dict[str, np.ndarray], t: float, globals0: int) -> dict[str, Any]:
    """What the pipeline made of the person (silhouette pm) in this frame."""
    n = int(pm.sum())
    row: dict[str, Any] = {"t": round(t, 1), "person_px": n, "frozen": det._settle > 0 or
                           det.counters.get("global_changes", 0) != globals0}
    diff, thr, fg, opened = det._diff, det.noise.map, det.last_fg, det.change_mask.opened
    if n == 0 or diff is None or thr is None or fg is None:
        return row
    on = pm > 0
    d = diff[on].astype(np.float32)
    th = thr[on].astype(np.float32)
    sig_thr = min(max(det.spec.min_threshold, det.spec.noise_k * det.noise.sigma), 45.0)
    row.update({
        "diff_mean": round(float(d.mean()), 1), "diff_p90": round(float(np.percentile(d, 90)), 1),
        "thr": round(float(np.median(th)), 1), "sigma": round(det.noise.sigma, 2),
        "thr_by": "weber" if float(np.median(th)) > round(sig_thr) else
                  ("sigma" if det.spec.noise_k * det.noise.sigma > det.spec.min_threshold else "floor"),
        "raw": round(float((d > th).mean()), 3),
        "opened": round(float((opened[on] > 0).mean()), 3) if opened is not None else 0.0,
        "mask": round(float((fg[on] > 0).mean()), 3),
    })
    tracks = []
    for tr in det.tracker.tracks:
        b = tr.blob
        if b is None or not pm[b.y:b.y + b.h, b.x:b.x + b.w].any():
            continue
        href = det.tracker.expected_h(b.fy, b.h)
        tracks.append({"id": tr.id, "age": round(tr.hist[-1][0] - tr.first_ts, 1), "reason": tr.reason,
                       "conf": tr.confirmed, "box": [b.x, b.y, b.w, b.h], "size": round(max(b.w, b.h) / href, 2),
                       "edge": round(tr.edge, 2)})
    row["tracks"] = tracks
    person = det._person
    for z, m in zm.items():
        zone_px = int(m.sum())
        row[f"cover_{z}"] = round(float(((person > 0) & (m > 0)).sum()) / zone_px, 4) if person is not None else 0.0
        row[f"in_{z}"] = round(float((on & (m > 0)).sum()) / zone_px, 4)
    return row


def _classify(rows: list[dict[str, Any]], zone: str, min_area: float) -> str:
    win = [r for r in rows if r.get(f"in_{zone}", 0) > 0 or r.get("tracks")]
    if not win:
        return "no frame"
    if all(r["frozen"] for r in win):
        return "frozen (global change)"
    if all(r.get("mask", 0.0) < 0.10 for r in win):
        return "no mask (per-pixel threshold)" if all(r.get("raw", 0.0) < 0.10 for r in win) \
            else "no mask (opening / persistence)"
    if not any(r.get("tracks") for r in win):
        return "no blob"
    if not any(t["conf"] for r in win for t in r["tracks"]):
        reasons = Counter(t["reason"] for r in win for t in r["tracks"])
        return "track: " + reasons.most_common(1)[0][0]
    if all(r.get(f"cover_{zone}", 0.0) < min_area for r in win):
        return "zone: confirmed box outside the zone / below min_area"
    return "zone: dwell"


def trace_clip(cond: str, scen: str, clip: a2.Clip2, impl: h2.Impl, frames_out: bool) -> list[dict[str, Any]]:
    """Misses of one clip, classified (and hits, with their delay)."""
    gt = h2.truth(clip, W, H, FPS)
    zm = _zone_masks()
    det = impl.new()
    r = a2.Render2(clip)
    rows: list[dict[str, Any]] = []
    evs: list[dict[str, Any]] = []
    n = 0
    for i in range(round(clip.seconds * FPS)):
        t = i / FPS
        bgr = r.frame(t)
        g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        g0 = det.counters.get("global_changes", 0)
        out = det.process(g, t, i, impl.chroma(bgr))
        evs += [json.loads(impl.events.to_camera_event("cam-alt2", e).to_json()) for e in out]
        rows.append(_frame_row(det, a2.person_mask(clip, t, W, H), zm, t, g0))
        n += 1
    evs += [json.loads(impl.events.to_camera_event("cam-alt2", e).to_json()) for e in det.finish(clip.seconds, n)]
    res = []
    for zone in a2.ZONES:
        spans = ch._motion_spans(evs, zone, clip.seconds)
        for a, b in ch._merge([(a, b) for z, a, b in gt["zone_intervals"] if z == zone], 1.0):
            if b - a < 1.0:
                continue
            cover = [(x, y) for x, y in spans if x <= a + ch.LATENCY and y >= a - 0.5]
            rec: dict[str, Any] = {"cond": cond, "scen": scen, "clip": clip.name, "zone": zone,
                                   "enter": round(a, 1), "leave": round(b, 1)}
            if cover:
                rec.update(kind="hit", delay=round(max(0.0, min(x for x, _ in cover) - a), 1))
            else:
                later = [x for x, y in spans if x > a + ch.LATENCY and x <= b]
                win = [w for w in rows if a - 0.5 - 1e-6 <= w["t"] <= a + ch.LATENCY + 1e-6]
                cause = _classify(win, zone, a2.ZONES[zone][1])
                if later:
                    cause = f"late ({later[0] - a:.1f} s; in 2 s: {cause})"
                rec.update(kind="miss", cause=cause)
                if frames_out:
                    rec["frames"] = [w for w in rows if a - 1.5 - 1e-6 <= w["t"] <= a + ch.LATENCY + 1e-6]
            res.append(rec)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="day", help="conditions whose name contains this")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--scenario", default="", help="only scenarios whose name contains this")
    ap.add_argument("--frames", action="store_true", help="print the per-frame rows of each miss")
    ap.add_argument("--no-perspective", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="KEY=V DetectorSpec override (tp.KEY: TrackParams)")
    ap.add_argument("--json", default="", help="write every record here")
    args = ap.parse_args()
    import tempfile
    from pathlib import Path
    tmp = Path(tempfile.mkdtemp(prefix="qwatch_misstrace_")) / "site.yaml"
    tmp.write_text(h2.site_yaml("unused.mp4", not args.no_perspective), encoding="utf-8")
    over = {k: h2._value(v) for k, v in (x.split("=", 1) for x in args.set)}
    impl = h2.Impl("current", None, tmp, tmp, over)
    recs: list[dict[str, Any]] = []
    for cond, scen, clip in h2.clip_set(args.seeds):
        if args.only not in cond or cond.startswith("tamper") or args.scenario not in scen:
            continue
        for rec in trace_clip(cond, scen, clip, impl, args.frames):
            recs.append(rec)
            head = f"{rec['kind']:4} {rec['clip']} {rec['zone']} enter {rec['enter']}"
            print(head + (f" delay {rec['delay']}" if rec["kind"] == "hit" else f" -> {rec['cause']}"), flush=True)
            for w in rec.get("frames", []):
                print("    ", json.dumps(w), flush=True)
    by: Counter[tuple[str, str]] = Counter()
    for rec in recs:
        if rec["kind"] == "miss":
            by[(rec["cond"], rec["cause"])] += 1
    print("\n| condition | cause | misses |\n|---|---|---|")
    for (cond, cause), k in sorted(by.items()):
        print(f"| {cond} | {cause} | {k} |")
    hits = sum(1 for r in recs if r["kind"] == "hit")
    print(f"\nhits {hits}/{len(recs)}")
    if args.json:
        Path(args.json).write_text(json.dumps(recs, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
