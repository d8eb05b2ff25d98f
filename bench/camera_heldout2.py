"""Camera pipeline on the extended held-out model (bench/camera_video_alt2.py): per condition.

Three parts, each optional:

- `--clips`: person and tamper clips per condition, rendered at 320x180 / 5 fps straight into
  the detector (`direct`), scored like bench/camera_heldout.py (zone hit: an event of that zone
  open within [entry - 0.5 s, entry + 2 s]; false zone event: a start that overlaps no
  interval in which a person touches the zone (-1/+3 s) and no tamper; tamper hit: a
  tamper_start within 10 s).
- `--encoded DIR`: the same clips rendered at 640x360 / 12 fps, encoded with libx264 at their
  bitrate (200 kbit/s, GOP 2 s) and run through `qwatch-edge camera-test` (the public CLI).
- `--hours-night H --hours-day H`: false-event streams with nobody in the picture, rendered
  at 320x180 / 5 fps straight into the detector (no encoding: hours of H.264 would take the
  shared machine days), as 30-minute segments with their own scene, each with a fresh
  detector (its first 3 s are start-up and not counted); conditions cycle every 10 minutes.
  Reports zone events per hour and the one-sided 95 % upper bound of the rate (Poisson:
  0 events in T hours bound the rate at 3.0 / T).

`--impl NAME=ROOT` runs another source tree (e.g. the code before the change) in the same
process order on the same frames (direct parts only; the CLI part uses --impl of
camera_heldout.py's style).

Run: .venv/bin/python -m bench.camera_heldout2 --clips --seeds 2 [--perspective] [--impl base=/tmp/base]
     .venv/bin/python -m bench.camera_heldout2 --hours-night 3 --hours-day 15 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench import camera_heldout as ch
from bench import camera_video_alt2 as a2
from bench.camera_video_alt2 import Clip2, Person

CONDITIONS: dict[str, dict[str, Any]] = {
    "day": {"bushes": 2.0},
    "day wind shake+clouds+bushes": {"shake": 2.0, "clouds": 0.35, "bushes": 6.0},
    "day AE steps": {"ae_steps": True, "clouds": 0.15, "bushes": 2.0},
    "night IR insects+rain": {"night": True, "insects": 2.0, "drops": 8.0, "streaks": 0.6},
    "night IR shake+insects+rain": {"night": True, "insects": 3.0, "drops": 12.0, "streaks": 1.0, "shake": 2.0},
}


def scenarios(seed: int) -> dict[str, tuple[Person, ...]]:
    """Person scenarios: sizes follow the perspective (20 m: ~8x20 px, 4.5 m: ~40x100 px at 320x180)."""
    rng = np.random.default_rng(7000 + seed)
    sd = 1.0 if rng.random() < 0.5 else -1.0

    def along(d: float, v: float, gait: str, c: float, t0: float = 3.0) -> Person:
        half = 0.72 * d  # just outside the picture's edge at that distance
        dur = 2 * half / v
        return Person(t0, t0 + dur, -sd * half, d, sd * half, d, gait, c)
    normal = float(rng.uniform(14, 24))
    return {
        "far walker (20 m)": (along(float(rng.uniform(18, 21)), 1.3, "walk", normal),),
        "near walker (4.5 m)": (along(4.5, 1.3, "walk", normal),),
        "towards camera": (Person(3.0, 14.0, sd * 2.0, 20.0, -sd * 1.0, 6.0, "walk", normal),),
        "low contrast (12 m)": (along(12.0, 1.3, "walk", float(rng.uniform(6, 10))),),
        "slow walker (10 m)": (along(10.0, 0.5, "slow", normal),),
        "crawler at the fence (14 m)": (along(14.0, 0.35, "crawl", normal),),
    }


TAMPERS = ("knock", "cover", "defocus", "turn")


def clip_set(seeds: int) -> list[tuple[str, str, Clip2]]:
    """(condition, scenario, clip) for every condition x scenario x seed, then tamper clips."""
    out: list[tuple[str, str, Clip2]] = []
    for seed in range(seeds):
        for ci, (cond, kw) in enumerate(CONDITIONS.items()):
            for si, (scen, people) in enumerate(scenarios(seed * 31 + ci).items()):
                dur = max(p.t1 for p in people) + 3.0
                out.append((cond, scen, Clip2(f"{cond}|{scen}|{seed}", min(dur, 45.0), seed=seed * 1000 + ci * 10 + si,
                                              people=people, **kw)))
        for night in (False, True):
            for ti, tam in enumerate(TAMPERS):
                kw = {"night": True, "insects": 2.0, "drops": 6.0, "streaks": 0.5} if night else {"bushes": 3.0}
                out.append(("tamper " + ("night" if night else "day"), tam,
                            Clip2(f"tamper|{tam}|{seed}", 22.0, seed=seed * 1000 + 500 + ti + 10 * night,
                                  tamper=tam, tamper_at=9.0, **kw)))
    return out


# ---------------------------------------------------------------------------- truth
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


def truth(clip: Clip2, w: int, h: int, fps: float) -> dict[str, Any]:
    """Ground truth as bench/camera_heldout.py scores it (zone, touch, person, tamper intervals)."""
    zm = {}
    for zid, (poly, _a, _d) in a2.ZONES.items():
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.array([[x * (w - 1), y * (h - 1)] for x, y in poly], np.int32)], 1)
        zm[zid] = m
    times = [i / fps for i in range(round(clip.seconds * fps))]
    inside: dict[str, list[bool]] = {z: [] for z in zm}
    touch: dict[str, list[bool]] = {z: [] for z in zm}
    present = []
    blind = clip.tamper in ("knock", "turn")
    for t in times:
        pm = a2.person_mask(clip, t, w, h)
        if blind and t >= clip.tamper_at:
            pm[:] = 0
        present.append(bool(pm.any()))
        for z, m in zm.items():
            ov = int((pm & m).sum())
            inside[z].append(ov >= a2.ZONES[z][1] * int(m.sum()))
            touch[z].append(ov > 0)
    gt: dict[str, Any] = {"clip": {"seconds": clip.seconds}, "zone_intervals": [], "touch_intervals": []}
    for z in zm:
        gt["zone_intervals"] += [(z, a, b) for a, b in _intervals(inside[z], times)]
        gt["touch_intervals"] += [(z, a, b) for a, b in _intervals(touch[z], times)]
    gt["person_intervals"] = _intervals(present, times)
    gt["tamper_intervals"] = []
    if clip.tamper is not None:
        end = None if clip.tamper in ("knock", "turn") else clip.tamper_at + clip.tamper_len
        gt["tamper_intervals"].append((clip.tamper_at, end))
    return gt


# ---------------------------------------------------------------------------- running a detector
def site_yaml(url: str, perspective: bool) -> str:
    """Site config of the extended model's camera."""
    lines = ["site: {id: heldout2, name: extended held-out camera}",
             "zones:\n  - {id: yard, kind: permitted, polygon: [[0,0],[40,0],[40,20],[0,20]]}",
             "cameras:", "  - id: cam-alt2", f"    url: {json.dumps(url)}",
             "    detect: {width: 320, height: 180, fps: 5}",
             f"    masks: [{json.dumps([list(p) for p in a2.MASK_OSD])}]"]
    if perspective:
        lines.append("    perspective: [" + ", ".join(f"{{row: {r}, person_h: {h}}}" for r, h in a2.PERSPECTIVE) + "]")
    lines.append("    zones:")
    for zid, (poly, area, dwell) in a2.ZONES.items():
        lines.append(f"      - {{id: {zid}, polygon: {json.dumps([list(p) for p in poly])}, min_area: {area},"
                     f" dwell_frames: {dwell}, alert: true}}")
    return "\n".join(lines) + "\n"


class Impl:
    """One source tree's detector, loaded in this process (its own module objects)."""

    def __init__(self, name: str, root: Path | None, site: Path, plain_site: Path,
                 overrides: Mapping[str, float | str] | None = None) -> None:
        self.name = name
        self.overrides = dict(overrides or {})
        saved = {k: v for k, v in sys.modules.items() if k == "edge" or k.startswith(("edge.", "protocols"))}
        for k in saved:
            del sys.modules[k]
        if root is not None:
            sys.path.insert(0, str(root))
        try:
            self.motion = importlib.import_module("edge.camera.motion")
            self.events = importlib.import_module("edge.camera.events")
            sc = importlib.import_module("protocols.site_config")
            try:
                self.cam = sc.load_site_config(site).camera("cam-alt2")
            except Exception:  # an older tree that has no perspective key
                self.cam = sc.load_site_config(plain_site).camera("cam-alt2")
        finally:
            if root is not None:
                sys.path.remove(str(root))
            for k in [k for k in sys.modules if k == "edge" or k.startswith(("edge.", "protocols"))]:
                del sys.modules[k]
            sys.modules.update(saved)
        self.chroma = _chroma_fn() if "chroma" in inspect.signature(self.motion.MotionDetector.process).parameters \
            else (lambda _bgr: None)

    def new(self) -> Any:
        spec = self.events.detector_spec(self.cam)
        if self.overrides:
            # A variant of the same tree: DetectorSpec fields by name, TrackParams fields as tp.NAME.
            tp = {k[3:]: v for k, v in self.overrides.items() if k.startswith("tp.")}
            top = {k: v for k, v in self.overrides.items() if not k.startswith("tp.")}
            if tp:
                top["track_params"] = dataclasses.replace(spec.track_params, **tp)
            spec = dataclasses.replace(spec, **top)
        return self.motion.MotionDetector(spec)

    def run(self, frames: Any, end_ts: float) -> tuple[list[dict[str, Any]], float, dict[str, int]]:
        """(events as §6 dicts, detector CPU ms per frame, counters) for (t, BGR frame) pairs."""
        det = self.new()
        evs: list[dict[str, Any]] = []
        cpu = 0.0
        n = 0
        for i, (t, bgr) in enumerate(frames):
            g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            c = self.chroma(bgr)
            t0 = time.process_time()
            out = det.process(g, t, i, c) if c is not None else det.process(g, t, i)
            cpu += time.process_time() - t0
            n += 1
            evs += [json.loads(self.events.to_camera_event("cam-alt2", e).to_json()) for e in out]
        evs += [json.loads(self.events.to_camera_event("cam-alt2", e).to_json()) for e in det.finish(end_ts, n)]
        return evs, 1000 * cpu / max(n, 1), dict(det.counters)


def _chroma_fn() -> Callable[[np.ndarray], float | None]:
    try:
        from edge.camera.capture import chroma_of
    except ImportError:  # an older tree without night mode: frames are grey to it anyway
        return lambda _bgr: None
    return chroma_of


# ---------------------------------------------------------------------------- parts
def run_clips(impls: list[Impl], seeds: int, log: Callable[[str], None],
              only: str = "") -> dict[str, dict[str, ch.Score]]:
    """Direct clips: {impl: {group: Score}} with groups 'condition' and 'condition: scenario'."""
    res: dict[str, dict[str, ch.Score]] = {im.name: {} for im in impls}
    zones = tuple(a2.ZONES)
    for cond, scen, clip in clip_set(seeds):
        if only and only not in cond:
            continue
        gt = truth(clip, 320, 180, 5.0)
        frames = list(a2.frames(clip, 320, 180, 5.0))
        for im in impls:
            evs, ms, _ = im.run(frames, clip.seconds)
            sc = ch.score_clip(gt, evs, {"motion_ms_per_frame": ms}, zones)
            own = own_hits(clip, gt, evs)
            OWN.setdefault(im.name, {}).setdefault(cond, [0, 0])
            OWN[im.name][cond][0] += own
            OWN[im.name][cond][1] += sc.gt
            for grp in (cond, f"{cond}: {scen}"):
                res[im.name].setdefault(grp, ch.Score()).add(sc)
            log(f"  {im.name} {clip.name}: hits {sc.hits}/{sc.gt} (own box {own}) false {sc.false_zone} tamper "
                f"{sc.tamper_hits}/{sc.gt_tamper} false tamper {sc.false_tamper} {ms:.2f} ms")
    return res


# impl -> condition -> [crossings found by an event whose box is on the person, crossings]
OWN: dict[str, dict[str, list[int]]] = {}


def own_hits(clip: Clip2, gt: dict[str, Any], events: list[dict[str, Any]]) -> int:
    """Crossings found by a motion_start of that zone in [entry - 0.5 s, entry + 2 s] whose box touches
    the person's silhouette (dilated by 3 px) at that time. The standard score counts any event open in
    that window, so a false event (an insect) at the right time counts as a hit there, and rejecting it
    looks like a lost person; this one does not."""
    n = 0
    ker = np.ones((7, 7), np.uint8)
    for zone in a2.ZONES:
        for a, b in ch._merge([(a, b) for z, a, b in gt["zone_intervals"] if z == zone], 1.0):
            if b - a < 1.0:
                continue
            for e in events:
                if e["kind"] != "motion_start" or e["zone"] != zone or not a - 0.5 <= e["ts"] <= a + ch.LATENCY:
                    continue
                bx, by, bw, bh = e["bbox"] or (0.0, 0.0, 0.0, 0.0)
                pm = cv2.dilate(a2.person_mask(clip, e["ts"], 320, 180), ker)
                x0, y0 = int(bx * 320), int(by * 180)
                if pm[y0:int((by + bh) * 180) + 1, x0:int((bx + bw) * 320) + 1].any():
                    n += 1
                    break
    return n


def _own_lines() -> list[str]:
    if not OWN:
        return []
    names = list(OWN)
    conds = list(OWN[names[0]])
    lines = ["### Zone recall by an event on the person's own box (a false event at the right time is not a hit)", "",
             "| group | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c in conds:
        lines.append(f"| {c} | " + " | ".join(f"{OWN[n][c][0]}/{OWN[n][c][1]}" for n in names) + " |")
    return [*lines, ""]


def run_encoded(out: Path, seeds: int, perspective: bool, impl_roots: list[tuple[str, Path | None]],
                log: Callable[[str], None]) -> dict[str, dict[str, ch.Score]]:
    """640x360 12 fps clips, libx264 at the clip's bitrate, through `qwatch-edge camera-test`."""
    out.mkdir(parents=True, exist_ok=True)
    site = out / ("site-p.yaml" if perspective else "site.yaml")
    site.write_text(site_yaml("unused.mp4", perspective), encoding="utf-8")
    plain = out / "site.yaml"
    plain.write_text(site_yaml("unused.mp4", False), encoding="utf-8")
    res: dict[str, dict[str, ch.Score]] = {n: {} for n, _ in impl_roots}
    for cond, scen, clip in clip_set(seeds):
        path = out / (clip.name.replace("|", "_").replace(" ", "-").replace("+", "") + ".mp4")
        tj = path.with_suffix(".truth.json")
        if not tj.exists():
            _encode(clip, path)
            tj.write_text(json.dumps(truth(clip, 640, 360, 12.0)), encoding="utf-8")
        gt = json.loads(tj.read_text(encoding="utf-8"))
        for name, root in impl_roots:
            cmd = ch.cli_command(root)
            proc = subprocess.run([*cmd, "--config", str(site), "--camera", "cam-alt2", "--source", str(path)],
                                  capture_output=True, text=True, timeout=900, cwd="/tmp")
            if proc.returncode == 2 and "perspective" in proc.stderr:  # an older tree without the key
                proc = subprocess.run([*cmd, "--config", str(plain), "--camera", "cam-alt2", "--source", str(path)],
                                      capture_output=True, text=True, timeout=900, cwd="/tmp")
            if proc.returncode != 0:
                raise RuntimeError(f"{path.name}: {proc.stderr[-1500:]}")
            evs = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
            st = json.loads(next(x for x in proc.stderr.splitlines()
                                 if x.startswith("camera-test stats: ")).removeprefix("camera-test stats: "))
            sc = ch.score_clip(gt, evs, st, tuple(a2.ZONES))
            for grp in (cond, f"{cond}: {scen}"):
                res[name].setdefault(grp, ch.Score()).add(sc)
            log(f"  {name} {path.name}: hits {sc.hits}/{sc.gt} false {sc.false_zone} tamper {sc.tamper_hits}/"
                f"{sc.gt_tamper}")
    return res


def _encode(clip: Clip2, path: Path) -> None:
    gop = 24
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "640x360", "-r", "12",
           "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{clip.bitrate_k}k", "-maxrate",
           f"{clip.bitrate_k}k", "-bufsize", f"{clip.bitrate_k}k", "-g", str(gop), "-keyint_min", str(gop),
           "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for _t, f in a2.frames(clip, 640, 360, 12.0):
        proc.stdin.write(f.tobytes())
    proc.stdin.close()
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"ffmpeg failed for {path}")


NIGHT_BLOCKS: tuple[tuple[float, dict[str, float]], ...] = (
    (600.0, {"insects": 3.0, "drops": 6.0, "streaks": 0.5, "shake": 0.0}),
    (600.0, {"insects": 1.0, "drops": 20.0, "streaks": 1.5, "shake": 2.0}),
    (600.0, {"insects": 6.0, "drops": 0.0, "streaks": 0.0, "shake": 1.0}),
)
DAY_BLOCKS: tuple[tuple[float, dict[str, float]], ...] = (
    (600.0, {"clouds": 0.35, "bushes": 6.0, "shake": 2.0, "ae": 1.0}),
    (600.0, {"clouds": 0.1, "bushes": 2.0, "shake": 0.0, "ae": 1.0}),
    (600.0, {"clouds": 0.45, "bushes": 8.0, "shake": 3.0, "ae": 0.0, "drops": 4.0, "streaks": 0.5}),
)


def run_hours(impls: list[Impl], night: bool, hours: float, seg_s: float, log: Callable[[str], None],
              progress: Path | None) -> dict[str, dict[str, float]]:
    """False zone events (and tampers) in `hours` of empty video; per implementation."""
    res = {im.name: {"hours": 0.0, "zone_events": 0.0, "tamper_events": 0.0, "startup_events": 0.0,
                     "ms_per_frame": 0.0, "night_frames": 0.0, "frames": 0.0} for im in impls}
    n_seg = max(1, math.ceil(hours * 3600 / seg_s))
    for k in range(n_seg):
        clip = Clip2(f"{'night' if night else 'day'}-stream-{k}", seg_s, seed=90000 + 2 * k + int(night), night=night,
                     blocks=NIGHT_BLOCKS if night else DAY_BLOCKS,
                     **({"insects": 3.0} if night else {"bushes": 4.0}))  # type: ignore[arg-type]
        # Each segment starts at a different place in the block cycle.
        offset = (k * 600.0) % 1800.0
        r = a2.Render2(clip)
        frames = ((t, r.frame(t + offset)) for t in (i / 5.0 for i in range(round(seg_s * 5))))
        cached = list(frames) if len(impls) > 1 else frames
        for im in impls:
            evs, ms, ctr = im.run(cached, seg_s)
            z = [e for e in evs if e["kind"] == "motion_start" and e["zone"] is not None]
            rr = res[im.name]
            rr["zone_events"] += sum(1 for e in z if e["ts"] >= ch.STARTUP_S)
            rr["startup_events"] += sum(1 for e in z if e["ts"] < ch.STARTUP_S)
            rr["tamper_events"] += sum(1 for e in evs if e["kind"] == "tamper_start")
            rr["hours"] += (seg_s - ch.STARTUP_S) / 3600
            rr["ms_per_frame"] += ms * seg_s * 5
            rr["frames"] += seg_s * 5
            rr["night_frames"] += ctr.get("night_frames", 0)
            log(f"  {im.name} {clip.name}: zone events {len(z)} "
                f"{[(e['zone'], round(e['ts'], 1)) for e in z][:6]} tamper "
                f"{sum(1 for e in evs if e['kind'] == 'tamper_start')} {ms:.2f} ms")
        if progress is not None:
            progress.write_text(json.dumps(res, indent=1), encoding="utf-8")
    return res


# ---------------------------------------------------------------------------- report
def _table(res: dict[str, dict[str, ch.Score]], title: str) -> list[str]:
    names = list(res)
    groups = list(res[names[0]])
    lines = [f"### {title}", "", "cells: " + " -> ".join(names), "",
             "| group | clips | zone recall | delay s mean/max | false zone | tamper found | tamper delay s | "
             "false tamper | motion ms/frame |", "|---|---|---|---|---|---|---|---|---|"]
    for g in sorted(groups, key=lambda x: (x.split(":")[0], ":" in x, x)):
        cells: list[list[str]] = []
        for n in names:
            s = res[n][g]
            cells.append([
                f"{s.hits}/{s.gt}" + (f" ({100 * s.hits / s.gt:.0f} %)" if s.gt else "") if s.gt else "-",
                f"{sum(s.delays) / len(s.delays):.2f}/{max(s.delays):.2f}" if s.delays else "-",
                str(s.false_zone), f"{s.tamper_hits}/{s.gt_tamper}" if s.gt_tamper else "-",
                f"{sum(s.tamper_delays) / len(s.tamper_delays):.1f}" if s.tamper_delays else "-",
                str(s.false_tamper), f"{float(np.median(s.motion_ms)):.2f}" if s.motion_ms else "-"])
        merged = [c[0] if len({x[i] for x in cells}) == 1 else " -> ".join(x[i] for x in cells)
                  for i, c in enumerate(zip(*cells, strict=True))]
        label = g if ":" in g else f"**{g}**"
        lines.append(f"| {label} | {res[names[0]][g].clips} | " + " | ".join(merged) + " |")
    return lines


def _hours_lines(kind: str, res: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"| implementation | {kind} hours | zone events | per hour | 95 % upper bound /h | tamper events |"
             " start-up events | night frames | motion ms/frame |", "|---|---|---|---|---|---|---|---|---|"]
    for n, r in res.items():
        h = max(r["hours"], 1e-9)
        ub = _poisson_upper(int(r["zone_events"])) / h
        lines.append(f"| {n} | {r['hours']:.2f} | {int(r['zone_events'])} | {r['zone_events'] / h:.2f} | {ub:.2f} | "
                     f"{int(r['tamper_events'])} | {int(r['startup_events'])} | "
                     f"{100 * r['night_frames'] / max(r['frames'], 1):.0f} % | "
                     f"{r['ms_per_frame'] / max(r['frames'], 1):.2f} |")
    return lines


def _poisson_upper(k: int, conf: float = 0.95) -> float:
    """One-sided upper confidence bound of a Poisson mean after k events (exact, by bisection)."""
    lo, hi = 0.0, 10.0 + 10.0 * k
    for _ in range(100):
        mid = (lo + hi) / 2
        # In logs: mid ** i overflows a float for a few hundred events.
        cdf = sum(math.exp(-mid + i * math.log(max(mid, 1e-300)) - math.lgamma(i + 1)) for i in range(k + 1))
        lo, hi = (mid, hi) if cdf > 1 - conf else (lo, mid)
    return hi


def _value(x: str) -> int | float | str:
    """A --variant value: a number if it is one, else the text (e.g. shake_register=off)."""
    try:
        f = float(x)
    except ValueError:
        return x
    return int(f) if f.is_integer() else f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", action="store_true", help="person and tamper clips, straight into the detector")
    ap.add_argument("--encoded", type=Path, default=None, help="also: 640x360 H.264 clips in DIR through the CLI")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--only", default="", help="only the conditions whose name contains this")
    ap.add_argument("--perspective", action="store_true", help="give the camera its perspective")
    ap.add_argument("--impl", action="append", default=[], help="NAME=ROOT: also run this source tree")
    ap.add_argument("--no-current", action="store_true")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:KEY=V,KEY=V: also run the current tree with these DetectorSpec values"
                    " (tp.KEY: TrackParams)")
    ap.add_argument("--hours-night", type=float, default=0.0)
    ap.add_argument("--hours-day", type=float, default=0.0)
    ap.add_argument("--segment-s", type=float, default=1800.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    roots: list[tuple[str, Path | None]] = [(n, Path(r)) for n, r in (i.split("=", 1) for i in args.impl)]
    if not args.no_current:
        roots.append(("current", None))
    tmp = Path(tempfile.mkdtemp(prefix="qwatch_heldout2_"))
    site = tmp / "site.yaml"
    site.write_text(site_yaml("unused.mp4", args.perspective), encoding="utf-8")
    plain = tmp / "site-plain.yaml"
    plain.write_text(site_yaml("unused.mp4", False), encoding="utf-8")
    impls = [Impl(n, r, site, plain) for n, r in roots]
    for v in args.variant:
        name, _, kvs = v.partition(":")
        over = {k: _value(x) for k, x in (kv.split("=", 1) for kv in kvs.split(",") if kv)}
        impls.append(Impl(name, None, site, plain, over))
    load0, t0 = os.getloadavg(), time.monotonic()
    md: list[str] = []
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    def log(s: str) -> None:
        print(s, flush=True)
    if args.clips:
        res = run_clips(impls, args.seeds, log, args.only)
        md += [*_table(res, f"Extended model, {args.seeds} seed(s), 320x180 5 fps straight into the detector"
                            f"{' (perspective given)' if args.perspective else ''}"), "", *_own_lines()]
        out["clips"] = {n: {g: asdict(s) for g, s in r.items()} for n, r in res.items()}
    if args.encoded is not None:
        res = run_encoded(args.encoded, args.seeds, args.perspective, roots, log)
        md += [*_table(res, f"Extended model, {args.seeds} seed(s), 640x360 12 fps H.264 at 200 kbit/s through "
                            f"`qwatch-edge camera-test`"), ""]
        out["encoded"] = {n: {g: asdict(s) for g, s in r.items()} for n, r in res.items()}
    for kind, hours in (("night", args.hours_night), ("day", args.hours_day)):
        if hours > 0:
            prog = args.json.with_suffix(f".{kind}.progress.json") if args.json else None
            hr = run_hours(impls, kind == "night", hours, args.segment_s, log, prog)
            md += [f"### False zone events, {kind}, nobody in the picture", "", *_hours_lines(kind, hr), ""]
            out[f"hours_{kind}"] = hr
    md.append(f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}; "
              f"{(time.monotonic() - t0) / 60:.1f} min")
    print("\n".join(md))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text("\n".join(md) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
