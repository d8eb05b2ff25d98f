"""`qwatch-edge replay`: run the wristband pipeline over an observation log (PROTOCOL.md §2).

Alerts go to stdout as JSON lines, with observation time as the clock, so the same log always
gives the same output. The summary of drop reasons, bad lines (with line numbers) and the
progress bar (only on a terminal) go to stderr.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from edge.bands.pipeline import BandPipeline
from protocols.errors import ConfigError, PayloadError
from protocols.observation import RawObservation, parse_observation_line
from protocols.payloads import Alert
from protocols.site_config import SiteConfig, load_band_keys, load_site_config

TICK_S = 1.0
GAP_JUMP_S = 3600.0  # a silence longer than this is not ticked through second by second
GAP_TICKS_S = 600.0  # ... only its first 10 minutes are (enough for every dwell and band_missing)
MAX_BAD_LINES_SHOWN = 50


# The exact layout RawObservation.to_json_line writes (the recorder and the simulator use it).
# Lines in that layout skip the generic JSON path; anything else, or anything out of range,
# goes through protocols' parse_observation_line, which also produces the error messages.
_CANONICAL = re.compile(
    r'\{"ts": (-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?), "rx": "([A-Za-z0-9][A-Za-z0-9._:-]{0,63})", '
    r'"rssi": (-?[0-9]{1,3}), "company_id": ([0-9]{1,5}), "data": "((?:[0-9a-fA-F]{2}){0,64})"\}\s*$'
)


def parse_line(line: str) -> RawObservation:
    """Parse one observation line: a fast path for the canonical layout, else the full parser."""
    m = _CANONICAL.match(line)
    if m is not None:
        ts = float(m.group(1))
        rssi = int(m.group(3))
        cid = int(m.group(4))
        if math.isfinite(ts) and -127 <= rssi <= 20 and cid <= 0xFFFF:
            return RawObservation(ts, m.group(2), rssi, cid, bytes.fromhex(m.group(5)))
    return parse_observation_line(line)


@dataclass
class ReplayResult:
    """What a replay did: counts for the summary."""

    lines: int = 0
    observations: int = 0
    bad_lines: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    gaps: int = 0
    first_ts: float | None = None
    last_ts: float | None = None


def run_replay(
    pipeline: BandPipeline,
    lines: Iterable[str],
    emit: Callable[[Alert], None],
    *,
    on_bad: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Feed observation-log lines through `pipeline`, ticking once per second of observation time."""
    res = ReplayResult()
    next_tick = math.inf
    observe = pipeline.observe
    for lineno, line in enumerate(lines, 1):
        res.lines = lineno
        if on_progress is not None:
            on_progress(len(line))
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obs = parse_line(line)
        except PayloadError as exc:
            res.bad_lines += 1
            res.bad_reasons[exc.reason] = res.bad_reasons.get(exc.reason, 0) + 1
            if on_bad is not None:
                on_bad(lineno, str(exc))
            continue
        ts = obs.ts
        if res.first_ts is None:
            res.first_ts = ts
            next_tick = math.floor(ts / TICK_S) * TICK_S + TICK_S
        # Ticks for every whole second passed before this observation: the live agent's 1 Hz timer.
        # A long silence (node off, or a wild timestamp) is ticked for its first minutes only, so
        # one bad `ts` cannot make the replay spin through years of empty seconds.
        if ts - next_tick > GAP_JUMP_S:
            gap_end = next_tick + GAP_TICKS_S
            while next_tick < gap_end:
                for alert in pipeline.tick(next_tick):
                    res.alerts += 1
                    emit(alert)
                next_tick += TICK_S
            next_tick = math.floor(ts / TICK_S) * TICK_S
            res.gaps += 1
        while ts >= next_tick:
            for alert in pipeline.tick(next_tick):
                res.alerts += 1
                emit(alert)
            next_tick += TICK_S
        res.last_ts = ts if res.last_ts is None else max(res.last_ts, ts)
        res.observations += 1
        for alert in observe(ts, obs.rx, obs.rssi, obs.company_id, obs.data):
            res.alerts += 1
            emit(alert)
    if res.last_ts is not None:
        for alert in pipeline.tick(next_tick):
            res.alerts += 1
            emit(alert)
    return res


def summary(res: ReplayResult, counters: dict[str, int]) -> dict[str, Any]:
    """The stderr summary: adverts by outcome, bad lines by reason, alert count, time span."""
    return {
        "lines": res.lines,
        "observations": res.observations,
        "bad_lines": res.bad_lines,
        "bad_line_reasons": dict(sorted(res.bad_reasons.items())),
        "adverts": dict(sorted(counters.items())),
        "alerts": res.alerts,
        "time_gaps_skipped": res.gaps,
        "span_s": round((res.last_ts or 0.0) - (res.first_ts or 0.0), 3),
    }


def _open(obs: Path) -> TextIO:
    if str(obs) == "-":
        return sys.stdin
    try:
        return obs.open("r", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(str(obs), "", f"cannot read observation log: {exc.strerror}") from None


def _progress_lines(fh: TextIO, obs: Path) -> tuple[Any, Iterator[str], Callable[[int], None] | None]:
    """A rich progress bar over the file's bytes when stderr is a terminal, else nothing."""
    if not sys.stderr.isatty() or str(obs) == "-":
        return nullcontext(), iter(fh), None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = progress.add_task("replay", total=obs.stat().st_size)
    pending = [0]

    def advance(n: int) -> None:
        pending[0] += n
        if pending[0] >= 1 << 20:
            progress.advance(task, pending[0])
            pending[0] = 0

    return progress, iter(fh), advance


def replay(
    obs: Annotated[Path, typer.Argument(help="observation log, JSON Lines (PROTOCOL.md §2); - for stdin")],
    config: Annotated[Path, typer.Option("--config", help="site YAML (PROTOCOL.md §3)")],
    keys: Annotated[Path, typer.Option("--keys", help="band key file, JSON")],
    node: Annotated[str, typer.Option("--node", help="node ID written into the alerts")] = "replay",
) -> None:
    """Replay an observation log through the wristband pipeline; alerts as JSON lines on stdout."""
    try:
        site: SiteConfig = load_site_config(config)
        band_keys = load_band_keys(keys)
        fh = _open(obs)
    except ConfigError as err:
        typer.echo(f"qwatch-edge: configuration error: {err}", err=True)
        raise typer.Exit(2) from None
    pipeline = BandPipeline(site, band_keys, node=node)
    out = sys.stdout
    shown = [0]

    def emit(alert: Alert) -> None:
        out.write(alert.to_json() + "\n")

    def bad(lineno: int, msg: str) -> None:
        shown[0] += 1
        if shown[0] <= MAX_BAD_LINES_SHOWN:
            print(f"{obs}:{lineno}: bad observation, skipped: {msg}", file=sys.stderr)
        elif shown[0] == MAX_BAD_LINES_SHOWN + 1:
            print(f"{obs}: more bad lines; see the summary for counts", file=sys.stderr)

    progress, lines, advance = _progress_lines(fh, obs)
    with fh if fh is not sys.stdin else nullcontext(), progress:
        res = run_replay(pipeline, lines, emit, on_bad=bad, on_progress=advance)
    out.flush()
    print(json.dumps({"replay_summary": summary(res, pipeline.counters())}), file=sys.stderr)
