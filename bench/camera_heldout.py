"""Camera pipeline on the held-out video model (bench/camera_video_alt.py + _set.py), through the public CLI.

Every clip goes through `qwatch-edge camera-test --config SITE --camera cam-alt --source CLIP`
exactly as an outside harness calls it; only stdout (PROTOCOL §6 events) is scored.

Scoring:
- zone recall: a ground-truth interval (person covers >= the zone's min_area, gaps < 1 s merged,
  >= 1 s long) is found when a motion event of that zone is open at some time within
  [enter - 0.5 s, enter + LATENCY]; the delay is from entering to the event's start (0 if the
  zone was already in motion).
- false zone events: zone motion_start that overlaps no interval in which a person touches
  that zone (widened by -1/+3 s) and no tamper interval; the rate is per hour of video in
  which no person is in the picture.
- tamper: tamper_start within [start, start + 10 s]; any other tamper_start is false.

`--impl name=ROOT` runs the CLI from another source tree (e.g. a copy of the code before a
change) in the same run, so before/after numbers come from the same clips and machine load.

Run: .venv/bin/python -m bench.camera_heldout --clips /tmp/qwatch_heldout [--render]
     [--impl baseline=/tmp/qwatch_base] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import camera_video_alt_set as alt

LATENCY = 2.0  # s from entering the zone
STARTUP_S = 3.0  # the model's camera powers up at t=0: its AE settles in the first seconds
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Score:
    """Counts for one group of clips and one implementation."""

    clips: int = 0
    media_s: float = 0.0
    empty_s: float = 0.0  # seconds with nobody in the picture (and no tamper)
    gt: int = 0
    hits: int = 0
    delays: list[float] = field(default_factory=list)
    false_zone: int = 0
    startup_false: int = 0  # zone events in a clip's first STARTUP_S (AE settling from power-on)
    gt_tamper: int = 0
    tamper_hits: int = 0
    tamper_delays: list[float] = field(default_factory=list)
    false_tamper: int = 0
    motion_ms: list[float] = field(default_factory=list)

    def add(self, o: Score) -> None:
        """Accumulate another group."""
        for k, v in o.__dict__.items():
            setattr(self, k, getattr(self, k) + v)


def cli_command(impl_root: Path | None) -> list[str]:
    """The camera-test command line of the installed CLI, or of another source tree."""
    if impl_root is None:
        exe = Path(sys.executable).parent / "qwatch-edge"
        return [str(exe), "camera-test"] if exe.exists() else [sys.executable, "-m", "edge.cli", "camera-test"]
    boot = f"import sys; sys.path.insert(0, {str(impl_root)!r}); from edge.cli import main; main()"
    return [sys.executable, "-c", boot, "camera-test"]


def run_clip(cmd: list[str], site: Path, clip: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One clip through the CLI: (events, stats)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([*cmd, "--config", str(site), "--camera", "cam-alt", "--source", str(clip)],
                          capture_output=True, text=True, timeout=900, cwd="/tmp", env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{clip.name}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    stats_line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("camera-test stats: "))
    return events, json.loads(stats_line.removeprefix("camera-test stats: "))


def _merge(iv: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(iv):
        if out and a - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _motion_spans(events: list[dict[str, Any]], zone: str, end_ts: float) -> list[tuple[float, float]]:
    spans, start = [], None
    for e in events:
        if e["zone"] != zone:
            continue
        if e["kind"] == "motion_start":
            start = e["ts"]
        elif e["kind"] == "motion_end" and start is not None:
            spans.append((start, e["ts"]))
            start = None
    if start is not None:
        spans.append((start, end_ts))
    return spans


def score_clip(gt: dict[str, Any], events: list[dict[str, Any]], stats: dict[str, Any],
               zones: tuple[str, ...] = tuple(alt.ZONES)) -> Score:
    """Score one clip's §6 events against its ground truth (zone ids: the first model's by default)."""
    s = Score(clips=1)
    dur = float(gt["clip"]["seconds"])
    s.media_s = dur
    s.motion_ms.append(float(stats.get("motion_ms_per_frame", 0.0)))
    tampers = [(a, dur if b is None else b) for a, b in gt["tamper_intervals"]]
    busy = _merge([(a, b) for a, b in gt["person_intervals"]] + tampers, 0.0)
    s.empty_s = dur - STARTUP_S - sum(max(b, STARTUP_S) - max(a, STARTUP_S) for a, b in busy)
    for zone in zones:
        spans = _motion_spans(events, zone, dur)
        for a, b in _merge([(a, b) for z, a, b in gt["zone_intervals"] if z == zone], 1.0):
            if b - a < 1.0:
                continue  # too brief to require (the zone needs dwell frames of coverage)
            s.gt += 1
            cover = [(x, y) for x, y in spans if x <= a + LATENCY and y >= a - 0.5]
            if cover:
                s.hits += 1
                s.delays.append(max(0.0, min(x for x, _ in cover) - a))
        touch = [(a - 1.0, b + 3.0) for z, a, b in gt["touch_intervals"] if z == zone]
        blind = [(a - 3.0, b + 3.0) for a, b in tampers]
        for e in events:
            if (e["zone"] == zone and e["kind"] == "motion_start"
                    and not any(a <= e["ts"] <= b for a, b in touch + blind)):
                if e["ts"] < STARTUP_S:
                    s.startup_false += 1
                else:
                    s.false_zone += 1
    starts = [e["ts"] for e in events if e["kind"] == "tamper_start"]
    used: set[int] = set()
    for a, _b in tampers:
        s.gt_tamper += 1
        hit = next((i for i, ts in enumerate(starts) if a <= ts <= a + 10.0 and i not in used), None)
        if hit is not None:
            used.add(hit)
            s.tamper_hits += 1
            s.tamper_delays.append(starts[hit] - a)
    s.false_tamper = len(starts) - len(used)
    return s


def group_of(name: str) -> tuple[str, str]:
    """(section, group) of a clip name like person-crawl-dusk-0."""
    kind, *rest = name.rsplit("-", 1)[0].split("-", 2)
    if kind == "person":
        return "person", f"{rest[0]} ({rest[1]})"
    return kind, "-".join(rest).replace("_", " ")


def evaluate(cmd: list[str], site: Path, clips: list[Path], log: Console) -> dict[str, dict[str, Score]]:
    """Every clip through one implementation; scores by section and group."""
    out: dict[str, dict[str, Score]] = defaultdict(dict)
    for clip in clips:
        gt = json.loads(clip.with_suffix(".truth.json").read_text(encoding="utf-8"))
        events, stats = run_clip(cmd, site, clip)
        sc = score_clip(gt, events, stats)
        sec, grp = group_of(clip.stem)
        out[sec].setdefault(grp, Score()).add(sc)
        log.print(f"  {clip.stem}: hits {sc.hits}/{sc.gt} false {sc.false_zone} tamper {sc.tamper_hits}/"
                  f"{sc.gt_tamper} false tamper {sc.false_tamper} motion {sc.motion_ms[0]:.3f} ms/frame")
    return out


def _fmt(s: Score) -> dict[str, str]:
    hours = s.empty_s / 3600
    return {
        "recall": f"{s.hits}/{s.gt}" if s.gt else "-",
        "delay": f"{sum(s.delays) / len(s.delays):.2f}/{max(s.delays):.2f}" if s.delays else "-",
        "false": str(s.false_zone),
        "startup": str(s.startup_false),
        "false/h": f"{s.false_zone / hours:.0f}" if hours > 0 else "-",
        "tamper": f"{s.tamper_hits}/{s.gt_tamper}" if s.gt_tamper else "-",
        "tdelay": f"{sum(s.tamper_delays) / len(s.tamper_delays):.1f}" if s.tamper_delays else "-",
        "ftamper": str(s.false_tamper),
    }


def report(results: dict[str, dict[str, dict[str, Score]]], console: Console) -> list[list[str]]:
    """One table: groups as rows; each cell holds the implementations' values in --impl order."""
    impls = list(results)
    t = Table(title=f"Held-out camera set through `qwatch-edge camera-test`; cells: {' -> '.join(impls)}"
                    f" (zone hit: event within {LATENCY:.0f} s of entering)")
    heads = ["group", "clips", "no-person min", "zone recall", "delay s mean/max", "false zone", "false/h",
             "start-up zone ev.",
             "tamper found", "tamper delay s", "false tamper"]
    for h in heads:
        t.add_column(h, justify="left" if h == "group" else "right")
    rows = []
    first = results[impls[0]]
    for sec in first:
        total = {name: Score() for name in impls}
        for grp in first[sec]:
            for name in impls:
                total[name].add(results[name][sec][grp])
            rows.append(_row(f"{sec}: {grp}", {n: results[n][sec][grp] for n in impls}, impls))
        rows.append(_row(f"{sec}: all", total, impls))
    for r in rows:
        t.add_row(*r)
    console.print(t)
    return [heads, *rows]


def _row(label: str, by_impl: dict[str, Score], impls: list[str]) -> list[str]:
    s0 = by_impl[impls[0]]
    fm = {n: _fmt(by_impl[n]) for n in impls}
    cells = [label, str(s0.clips), f"{s0.empty_s / 60:.1f}"]
    for key in ("recall", "delay", "false", "false/h", "startup", "tamper", "tdelay", "ftamper"):
        vals = [fm[n][key] for n in impls]
        cells.append(vals[0] if len(set(vals)) == 1 else " -> ".join(vals))
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, default=Path("/tmp/qwatch_heldout"))
    ap.add_argument("--render", action="store_true", help="render missing clips first (slow)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--only", default="", help="substring of clip names")
    ap.add_argument("--names", type=Path, default=None, help="file with the clip names to run, one a line")
    ap.add_argument("--impl", action="append", default=[], help="name=ROOT: also run this source tree")
    ap.add_argument("--no-current", action="store_true", help="only the --impl trees")
    ap.add_argument("--perspective", action="store_true", help="give the camera its perspective in the site config")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="report --json files of separate runs")
    args = ap.parse_args()
    console = Console(width=260)
    args.clips.mkdir(parents=True, exist_ok=True)
    clips = []
    names = set(args.names.read_text(encoding="utf-8").split()) if args.names else None
    for clip in alt.heldout_set(args.seeds):
        if (args.only and args.only not in clip.name) or (names is not None and clip.name not in names):
            continue
        path = args.clips / f"{clip.name}.mp4"
        if not path.with_suffix(".truth.json").exists():
            if not args.render:
                continue
            alt.encode(clip, path)
        clips.append(path)
    site = args.clips / "site.yaml"
    site.write_text(alt.site_yaml("unused.mp4", perspective=args.perspective), encoding="utf-8")
    if args.merge:
        merged: dict[str, dict[str, dict[str, Score]]] = {}
        for f in args.merge:
            for name, secs in json.loads(f.read_text(encoding="utf-8"))["scores"].items():
                for sec, grp in secs.items():  # runs over different clips of one implementation add up
                    for g, v in grp.items():
                        merged.setdefault(name, {}).setdefault(sec, {}).setdefault(g, Score()).add(Score(**v))
        _finish(args, merged, console, os.getloadavg())
        return
    impls: list[tuple[str, Path | None]] = [(n, Path(r)) for n, r in (i.split("=", 1) for i in args.impl)]
    if not args.no_current:
        impls.append(("current", None))
    load0 = os.getloadavg()
    results: dict[str, dict[str, dict[str, Score]]] = {}
    for name, root in impls:
        console.print(f"[b]{name}[/b]: {len(clips)} clips")
        t0 = time.monotonic()
        results[name] = evaluate(cli_command(root), site, clips, console)
        console.print(f"  {time.monotonic() - t0:.0f} s")
    _finish(args, results, console, load0)


def _finish(args: argparse.Namespace, results: dict[str, dict[str, dict[str, Score]]], console: Console,
            load0: tuple[float, float, float]) -> None:
    rows = report(results, console)
    for name in results:
        ms = [m for sec in results[name].values() for s in sec.values() for m in s.motion_ms]
        ms.sort()
        console.print(f"{name}: motion ms/frame median {ms[len(ms) // 2]:.3f} (clips {len(ms)})")
    console.print(f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "scores": {
            n: {sec: {g: s.__dict__ for g, s in grp.items()} for sec, grp in r.items()} for n, r in results.items()}},
            indent=1))
    if args.markdown:
        md = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        args.markdown.write_text("\n".join(md) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
