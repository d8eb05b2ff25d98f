"""Motion detector CPU per detect frame, two source trees A/B on the same frames, interleaved.

Each measurement runs in a fresh process importing `edge.camera.motion` from the given tree,
so a copy of the code before a change can be compared with the working tree in the same run
and machine load. Prints the median of the per-run medians and the spread.

Run: .venv/bin/python -m bench.camera_cost_ab --clip X.mp4 [--clip Y.mp4] --impl base=/tmp/qwatch_base
     [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time, json, statistics
sys.path.insert(0, sys.argv[1])
import cv2
from edge.camera.motion import DetectorSpec, MotionDetector, ZoneSpec
zones = (ZoneSpec("a", ((0.02, 0.3), (0.98, 0.3), (0.98, 0.5), (0.02, 0.5)), 0.004, 3),
         ZoneSpec("b", ((0.3, 0.66), (0.7, 0.66), (0.78, 0.99), (0.22, 0.99)), 0.01, 3))
spec = DetectorSpec(320, 180, 5.0, zones=zones, masks=(((0.0, 0.0), (0.42, 0.0), (0.42, 0.07), (0.0, 0.07)),))
frames = []
for path in sys.argv[2:]:
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, round(fps / 5.0))
    i = 0
    while cap.grab():
        if i % step == 0:
            _, f = cap.retrieve()
            frames.append(cv2.cvtColor(cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY))
        i += 1
runs = []
for _ in range(3):
    det = MotionDetector(spec)
    t0 = time.process_time()
    for k, g in enumerate(frames):
        det.process(g, k / 5.0, k)
    runs.append(1000 * (time.process_time() - t0) / len(frames))
print(json.dumps({"ms": statistics.median(runs), "frames": len(frames)}))
"""


def measure(root: Path, clips: list[str]) -> float:
    """Median ms per detect frame of one tree (3 runs in one fresh process)."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), *clips], capture_output=True, text=True,
                         check=True, timeout=900, cwd="/tmp")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", required=True)
    ap.add_argument("--impl", action="append", default=[], help="name=ROOT (the working tree is 'current')")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    trees = [(n, Path(r)) for n, r in (i.split("=", 1) for i in args.impl)] + [("current", ROOT)]
    res: dict[str, list[float]] = {n: [] for n, _ in trees}
    for _ in range(args.rounds):
        for name, root in trees:  # interleaved, so load changes hit both
            res[name].append(measure(root, args.clip))
    for name, ms in res.items():
        print(f"{name:10s} median {statistics.median(ms):.3f} ms/frame  min {min(ms):.3f}  max {max(ms):.3f}"
              f"  ({len(ms)} rounds x 3 runs)")


if __name__ == "__main__":
    main()
