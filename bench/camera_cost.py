"""Camera pipeline cost: CPU per minute of 640x360 25 fps H.264, vs a naive baseline, same run.

pipeline  = qwatch capture (grab every frame, retrieve + downscale only at 5 fps) + MotionDetector
baseline  = cv2.VideoCapture.read() of every frame + MOG2 on every full frame (OpenCV defaults)
baseline1 = the same baseline with one decoder thread (like the pipeline), for a fair decode cost
Also: motion-only CPU per 320x180 detect frame, and resident memory per extra camera.

Run: .venv/bin/python -m bench.camera_cost [--seconds 30]
     .venv/bin/python -m bench.camera_cost --alt2-night 16   # extended model's night clip, crf 16, with
                                                            # its perspective (night box + walk evidence on)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
from rich.console import Console
from rich.table import Table

from devtools import video_synth as synth
from edge.camera.capture import Capture, CaptureOptions, Sample
from edge.camera.motion import DetectorSpec, MotionDetector, ZoneSpec

SPEC = DetectorSpec(320, 180, 5.0, zones=(ZoneSpec("fence-north", synth.FENCE_ZONE, 0.01, 3),),
                    masks=(synth.MASK_TOP,))


WALK_FRAMES: list[int] = []  # detect frames with walk evidence running (motion-only pass)
STACK_CHECKS: list[int] = []  # coherence checks run (motion-only pass)


def alt2_night_clip(path: Path, crf: int, seconds: float, walks: bool, coherence: float = 0.0) -> None:
    """The extended held-out model's night (IR, insects, rain, 2 px shake, a near walker) at 640x360
    12 fps, libx264 at `crf`; the detector then gets the model's perspective (walk evidence runs)."""
    global SPEC
    from bench import camera_video_alt2 as a2
    from edge.camera.tracks import Perspective, TrackParams
    clip = a2.Clip2("cost-night", seconds, seed=41, night=True, insects=3.0, drops=12.0, streaks=1.0, shake=2.0,
                    people=(a2.Person(3.0, seconds - 3.0, -3.2, 4.5, 3.2, 4.5, "walk", 18.0),))
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "640x360", "-r", "12",
           "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-g", "24", "-pix_fmt", "yuv420p",
           str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for _t, f in a2.frames(clip, 640, 360, 12.0):
        proc.stdin.write(f.tobytes())
    proc.stdin.close()
    if proc.wait(timeout=600) != 0:
        raise RuntimeError("ffmpeg failed")
    SPEC = DetectorSpec(320, 180, 5.0, zones=(ZoneSpec("fence-north", synth.FENCE_ZONE, 0.01, 3),),
                        masks=(synth.MASK_TOP,), perspective=Perspective.fit(a2.PERSPECTIVE), night_walks=walks,
                        track_params=TrackParams(min_coherence_night=coherence))


def run_pipeline(path: Path) -> tuple[float, int, int]:
    """CPU seconds (all threads) for the whole pipeline over the file; (cpu, frames_in, processed)."""
    det = MotionDetector(SPEC)

    def on_sample(s: Sample) -> None:
        det.process(s.gray, s.ts, s.index, s.chroma)

    cap = Capture(str(path), CaptureOptions(media_time=True, loop_files=False, keep_full=False),
                  on_sample=on_sample, name="bench")
    t0 = time.process_time()
    cap.run()
    return time.process_time() - t0, cap.frames_in, cap.processed


def run_baseline(path: Path, threads: int | None) -> tuple[float, int]:
    """Naive: read() + MOG2 on every full-resolution frame."""
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    mog = cv2.createBackgroundSubtractorMOG2(history=500, varThreshold=16, detectShadows=True)
    n = 0
    t0 = time.process_time()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        mog.apply(frame)
        n += 1
    cap.release()
    return time.process_time() - t0, n


def motion_only_ms(path: Path, repeats: int = 5) -> tuple[float, float, float]:
    """Median and best CPU ms per 320x180 detect frame for the detector, and MOG2's median on the same frames."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    i = 0
    while cap.grab():
        if i % 5 == 0:
            _, f = cap.retrieve()
            frames.append(cv2.cvtColor(cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA),
                                       cv2.COLOR_BGR2GRAY))
        i += 1
    runs = []
    for _ in range(repeats):
        det = MotionDetector(SPEC)
        t0 = time.process_time()
        for k, g in enumerate(frames):
            det.process(g, k / 5.0, k, 0.0 if SPEC.perspective is not None else None)  # the night clip is IR grey
        runs.append(1000 * (time.process_time() - t0) / len(frames))
    WALK_FRAMES.append(det.counters.get("walk_frames", 0))
    STACK_CHECKS.append(det.counters.get("stack_checks", 0))
    mog_runs = []
    for _ in range(repeats):
        mog = cv2.createBackgroundSubtractorMOG2(history=500, varThreshold=16, detectShadows=False)
        t0 = time.process_time()
        for g in frames:
            mog.apply(g)
        mog_runs.append(1000 * (time.process_time() - t0) / len(frames))
    return statistics.median(runs), min(runs), statistics.median(mog_runs)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def memory_child(path: str, cameras: int) -> None:
    """Child mode: run N cameras at once (threads) on the file; print 'idle_mb peak_mb'."""
    caps = []
    for c in range(cameras):
        det = MotionDetector(SPEC)

        def feed(s: Sample, d: MotionDetector = det) -> None:
            d.process(s.gray, s.ts, s.index)

        caps.append(Capture(path, CaptureOptions(media_time=True, loop_files=False, keep_full=True, pace=True),
                            on_sample=feed, name=f"c{c}"))
    idle = _rss_mb()
    threads = [threading.Thread(target=c.run) for c in caps]  # each returns at the end of the file
    for t in threads:
        t.start()
    peak = idle
    while any(t.is_alive() for t in threads):
        peak = max(peak, _rss_mb())
        time.sleep(0.1)
    print(f"{idle:.1f} {peak:.1f}")


def memory_per_camera(path: Path) -> tuple[float, float, float]:
    """(RSS added by 1 camera, by 4 cameras, MB per extra camera), fresh processes, paced live."""
    def rss(n: int) -> tuple[float, float]:
        out = subprocess.run([sys.executable, "-m", "bench.camera_cost", "--memory-child", str(path), str(n)],
                             capture_output=True, text=True, check=True, timeout=600,
                             cwd=Path(__file__).resolve().parent.parent)
        idle, peak = out.stdout.strip().splitlines()[-1].split()
        return float(idle), float(peak)

    (i1, p1), (_, p4) = rss(1), rss(4)
    return p1 - i1, p4 - i1, (p4 - p1) / 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length (media seconds)")
    ap.add_argument("--json", action="store_true", help="also print results as JSON")
    ap.add_argument("--clip", type=Path, default=None, help="use this video file instead of a synthetic crossing")
    ap.add_argument("--alt2-night", type=int, default=None, metavar="CRF",
                    help="use the extended model's night clip at this crf, with its perspective")
    ap.add_argument("--no-walks", action="store_true", help="with --alt2-night: walk evidence off (the cost before)")
    ap.add_argument("--coherence", type=float, default=0.0,
                    help="with --alt2-night: TrackParams.min_coherence_night (the night coherence check; 0 = off)")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    cv2.setNumThreads(1)  # OpenCV's own worker pool; the decoder threads are set per capture
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "cost.mp4"
        if args.clip is not None:
            clip = args.clip
            probe = cv2.VideoCapture(str(clip))
            args.seconds = probe.get(cv2.CAP_PROP_FRAME_COUNT) / max(probe.get(cv2.CAP_PROP_FPS), 1.0)
            probe.release()
        elif args.alt2_night is not None:
            alt2_night_clip(clip, args.alt2_night, args.seconds, not args.no_walks, args.coherence)
        else:
            synth.encode(synth.SceneSpec("crossing", seconds=args.seconds, event_at=args.seconds / 3,
                                         event_len=args.seconds / 3, crf=23), clip)
        per_min = 60.0 / args.seconds
        pipe_cpu, frames_in, processed = run_pipeline(clip)
        base_cpu, base_n = run_baseline(clip, None)
        base1_cpu, _ = run_baseline(clip, 1)
        pipe2_cpu, _, _ = run_pipeline(clip)  # second pass: warm caches like the baselines had
        pipe_cpu = min(pipe_cpu, pipe2_cpu)
        med_ms, best_ms, mog_ms = motion_only_ms(clip)
        r1, r4, per_cam = memory_per_camera(clip)
    res = {
        "walk_frames": WALK_FRAMES[-1] if WALK_FRAMES else 0,
        "coherence_checks": STACK_CHECKS[-1] if STACK_CHECKS else 0,
        "machine": f"{platform.processor() or platform.machine()} x{os.cpu_count()}, {platform.platform()}",
        "opencv": cv2.__version__,
        "clip": (f"{args.clip.name}: {args.seconds:.0f} s, {frames_in} frames" if args.clip is not None else
                 f"extended model night, {args.seconds:.0f} s 640x360 12 fps crf {args.alt2_night}, {frames_in} frames"
                 if args.alt2_night is not None else
                 f"{args.seconds:.0f} s 640x360 25 fps H.264 (libx264 crf 23), {frames_in} frames"),
        "pipeline_cpu_s_per_min": round(pipe_cpu * per_min, 2),
        "baseline_cpu_s_per_min": round(base_cpu * per_min, 2),
        "baseline_1thread_cpu_s_per_min": round(base1_cpu * per_min, 2),
        "ratio_vs_baseline": round(pipe_cpu / base_cpu, 3),
        "ratio_vs_baseline_1thread": round(pipe_cpu / base1_cpu, 3),
        "detect_frames": processed,
        "baseline_frames": base_n,
        "motion_ms_per_frame_median": round(med_ms, 3),
        "motion_ms_per_frame_best": round(best_ms, 3),
        "mog2_320x180_ms_per_frame_median": round(mog_ms, 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "rss_added_1_camera_mb": round(r1, 1),
        "rss_added_4_cameras_mb": round(r4, 1),
        "mb_per_extra_camera": round(per_cam, 1),
    }
    t = Table(title="Camera pipeline cost (CPU time per minute of stream, all threads)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in res.items():
        t.add_row(k, str(v))
    Console().print(t)
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
