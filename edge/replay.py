"""`qwatch-edge replay`: run the wristband pipeline over an observation log (docs/protocol.md §2).

Alerts go to stdout as JSON lines, with observation time as the clock, so the same log always
gives the same output. The summary of drop reasons, bad lines (with line numbers) and the
progress bar (only on a terminal) go to stderr.
"""

from __future__ import annotations

import gc
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar, cast

import numpy as np
import typer

from edge.bands.pipeline import BandPipeline
from protocols.cli_errors import id_option
from protocols.errors import ConfigError, PayloadError
from protocols.observation import RawObservation, parse_observation_line
from protocols.payloads import Alert
from protocols.site_config import SiteConfig, load_band_keys, load_site_config

TICK_S = 1.0
GAP_JUMP_S = 3600.0  # a silence longer than this is not ticked through second by second
GAP_TICKS_S = 600.0  # ... only its first 10 minutes are (enough for every dwell and band_missing)
MAX_BAD_LINES_SHOWN = 50
_T = TypeVar("_T")


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


# One pass of this over a block of lines yields exactly one match per line: the canonical layout
# with lowercase hex (what the recorder and the simulator write) in five groups, or, for any other
# line, the empty groups. Non-canonical rows then go through `parse_line` one by one, so they get
# exactly the treatment (values, error messages) lines always had.
_BLOCK_LINE = re.compile(
    r'\{"ts": (-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?), "rx": "([A-Za-z0-9][A-Za-z0-9._:-]{0,63})", '
    r'"rssi": (-?[0-9]{1,3}), "company_id": ([0-9]{1,5}), "data": "([0-9a-f]{44}|(?:[0-9a-f]{2}){0,64})"\}[^\S\n]*\n'
    r'|[^\n]*\n'
)  # the 44-digit branch only speeds up the usual 22-byte payload; the language is the same
BLOCK_CHARS = 1 << 19  # ~4,000 lines per block: amortises the per-block work; 4x larger only costs memory


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


@dataclass(slots=True)
class _Block:
    """Whole lines of the log (each ending in a newline); `original` holds the true text of lines
    that are not verbatim in `text` (an unterminated last line, an item with an inner newline)."""

    text: str
    first_lineno: int
    original: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Rows:
    """A block's observations as columns, in line order, and its bad lines.

    `bad` holds (number of observations before the bad line, line number, reason, message)."""

    ts: list[float]
    rx: list[str]
    rssi: list[int]
    company_id: list[int]
    data_hex: list[str]
    bad: list[tuple[int, int, str, str]]


def _blocks_from_handle(fh: TextIO) -> Iterator[_Block]:
    """Read a text handle in large blocks cut at line ends (line ends as the handle translates them)."""
    lineno = 1
    rest = ""
    while True:
        chunk = fh.read(BLOCK_CHARS)
        if not chunk:
            break
        text = rest + chunk
        cut = text.rfind("\n") + 1
        if cut == 0:
            rest = text
            continue
        rest = text[cut:]
        block = _Block(text[:cut], lineno)
        lineno += text.count("\n", 0, cut)
        yield block
    if rest:
        yield _Block(rest + "\n", lineno, {0: rest})


def _blocks_from_lines(lines: Iterable[str], size: int = 16384) -> Iterator[_Block]:
    """Group an iterable of lines (with or without their newline) into blocks; one item is one line."""
    parts: list[str] = []
    original: dict[int, str] = {}
    lineno = 1
    for line in lines:
        if not line.endswith("\n") or "\n" in line[:-1]:
            original[len(parts)] = line
            line = "\n"
        parts.append(line)
        if len(parts) >= size:
            yield _Block("".join(parts), lineno, original)
            lineno += len(parts)
            parts, original = [], {}
    if parts:
        yield _Block("".join(parts), lineno, original)


def _parse_block(block: _Block) -> tuple[_Rows, int]:
    """Columns of a block's observations, its bad lines, and its line count."""
    rows = _BLOCK_LINE.findall(block.text)
    n = len(rows)
    if n == 0:
        return _Rows([], [], [], [], [], []), 0
    ts_s, rx_s, rssi_s, cid_s, data_s = (list(col) for col in zip(*rows, strict=True))
    odd = [i for i, v in enumerate(ts_s) if not v] if "" in ts_s else []
    for i in odd:
        ts_s[i] = rssi_s[i] = cid_s[i] = "0"
    ts = np.array(ts_s, dtype=np.float64)
    rssi = np.array(rssi_s, dtype=np.int64)
    cid = np.array(cid_s, dtype=np.int64)
    out_of_range = ~np.isfinite(ts) | (rssi < -127) | (rssi > 20) | (cid > 0xFFFF)
    if out_of_range.any():
        odd = sorted(set(odd) | set(np.flatnonzero(out_of_range).tolist()))
    cols = _Rows(ts.tolist(), rx_s, rssi.tolist(), cid.tolist(), data_s, [])
    if odd:
        _parse_odd_rows(block, odd, cols)
    return cols, n


def _parse_odd_rows(block: _Block, odd: list[int], cols: _Rows) -> None:
    """Lines outside the canonical layout: skipped, parsed one by one, or reported as bad."""
    lines = block.text.split("\n")
    drop: list[int] = []
    for i in odd:
        line = block.original.get(i)
        if line is None:
            line = lines[i] + "\n"
        if not line.strip() or line.lstrip().startswith("#"):
            drop.append(i)
            continue
        try:
            obs = parse_line(line)
        except PayloadError as exc:
            cols.bad.append((i - len(drop), block.first_lineno + i, exc.reason, str(exc)))
            drop.append(i)
            continue
        cols.ts[i], cols.rx[i], cols.rssi[i], cols.company_id[i] = obs.ts, obs.rx, obs.rssi, obs.company_id
        cols.data_hex[i] = obs.data.hex()
    if drop:
        gone = set(drop)
        cols.ts = _without(cols.ts, gone)
        cols.rx = _without(cols.rx, gone)
        cols.rssi = _without(cols.rssi, gone)
        cols.company_id = _without(cols.company_id, gone)
        cols.data_hex = _without(cols.data_hex, gone)


def _without(col: list[_T], gone: set[int]) -> list[_T]:
    return [v for i, v in enumerate(col) if i not in gone]


class _Replayer:
    """The replay clock: a tick at every whole second of observation time, batches in between."""

    def __init__(self, pipeline: BandPipeline, emit: Callable[[Alert], None],
                 on_bad: Callable[[int, str], None] | None) -> None:
        self.pipeline = pipeline
        self.emit = emit
        self.on_bad = on_bad
        self.res = ReplayResult()
        self.next_tick = math.inf

    def _send(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.res.alerts += 1
            self.emit(alert)

    def _bad(self, lineno: int, reason: str, message: str) -> None:
        res = self.res
        res.bad_lines += 1
        res.bad_reasons[reason] = res.bad_reasons.get(reason, 0) + 1
        if self.on_bad is not None:
            self.on_bad(lineno, message)

    def _ticks_before(self, ts: float) -> None:
        """Ticks for every whole second passed before an observation at `ts`: the agent's 1 Hz timer."""
        tick = self.pipeline.tick
        # A long silence (node off, or a wild timestamp) is ticked for its first minutes only, so
        # one bad `ts` cannot make the replay spin through years of empty seconds.
        if ts - self.next_tick > GAP_JUMP_S:
            gap_end = self.next_tick + GAP_TICKS_S
            while self.next_tick < gap_end:
                self._send(tick(self.next_tick))
                self.next_tick += TICK_S
            self.next_tick = math.floor(ts / TICK_S) * TICK_S
            self.res.gaps += 1
        while ts >= self.next_tick:
            self._send(tick(self.next_tick))
            self.next_tick += TICK_S

    def feed(self, rows: _Rows) -> None:
        """Observe a block's rows in order, ticking where the clock passes a second, bad lines in place."""
        res = self.res
        n = len(rows.ts)
        running_max = np.maximum.accumulate(np.array(rows.ts, dtype=np.float64)) if n else np.zeros(0)
        bad = rows.bad
        b = 0
        pos = 0
        while True:
            while b < len(bad) and bad[b][0] <= pos:
                self._bad(*bad[b][1:])
                b += 1
            if pos >= n:
                return
            if res.first_ts is None:
                res.first_ts = rows.ts[pos]
                self.next_tick = math.floor(rows.ts[pos] / TICK_S) * TICK_S + TICK_S
            if rows.ts[pos] >= self.next_tick:
                self._ticks_before(rows.ts[pos])
            # Up to the next observation that moves the clock past a tick, or the next bad line.
            end = int(np.searchsorted(running_max, self.next_tick, side="left"))
            if b < len(bad):
                end = min(end, bad[b][0])
            batch_max = float(running_max[end - 1])
            res.last_ts = batch_max if res.last_ts is None else max(res.last_ts, batch_max)
            res.observations += end - pos
            self._send(self.pipeline.observe_batch(rows.ts[pos:end], rows.rx[pos:end], rows.rssi[pos:end],
                                                   rows.company_id[pos:end], rows.data_hex[pos:end]))
            pos = end

    def finish(self) -> ReplayResult:
        """The closing tick after the last observation."""
        if self.res.last_ts is not None:
            self._send(self.pipeline.tick(self.next_tick))
        return self.res


def run_replay(
    pipeline: BandPipeline,
    lines: Iterable[str] | TextIO,
    emit: Callable[[Alert], None],
    *,
    on_bad: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Feed an observation log through `pipeline`, ticking once per second of observation time.

    `lines` is a text handle (read in blocks) or an iterable of lines. Alerts, their order and
    the bad-line reports are exactly those of observing line by line (`BandPipeline.observe`).
    """
    rep = _Replayer(pipeline, emit, on_bad)
    # hasattr() does not narrow `Iterable[str] | TextIO` (a TextIO is an Iterable[str] too), hence the cast.
    blocks = _blocks_from_handle(cast(TextIO, lines)) if hasattr(lines, "read") else _blocks_from_lines(lines)
    total = 0
    # Everything alive now (modules, config, the pipeline) lives to the end: keep it out of the
    # collector's full passes, which otherwise walk it again and again as the blocks' rows come and
    # go (measured: ~40 % of the parsing time with numba and pydantic loaded).
    gc.collect()  # what is garbage already must not be frozen with the rest
    gc.freeze()
    try:
        for block in blocks:
            if on_progress is not None:
                on_progress(len(block.text))
            rows, n_lines = _parse_block(block)
            total += n_lines
            rep.res.lines = total
            rep.feed(rows)
        return rep.finish()
    finally:
        gc.unfreeze()


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


def _progress(obs: Path) -> tuple[Any, Callable[[int], None] | None]:
    """A rich progress bar over the file's bytes when stderr is a terminal, else nothing."""
    if not sys.stderr.isatty() or str(obs) == "-":
        return nullcontext(), None
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

    return progress, advance


def replay(
    obs: Annotated[Path, typer.Argument(help="observation log, JSON Lines (docs/protocol.md §2); - for stdin")],
    config: Annotated[Path, typer.Option("--config", help="site YAML (docs/protocol.md §3)")],
    keys: Annotated[Path, typer.Option("--keys", help="band key file, JSON")],
    node: Annotated[str, typer.Option("--node", help="node ID written into the alerts",
                                      callback=id_option("node ID"))] = "replay",
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

    progress, advance = _progress(obs)
    with fh if fh is not sys.stdin else nullcontext(), progress:
        res = run_replay(pipeline, fh, emit, on_bad=bad, on_progress=advance)
    out.flush()
    print(json.dumps({"replay_summary": summary(res, pipeline.counters())}), file=sys.stderr)
    if res.bad_lines and not res.observations:
        print(f"qwatch-edge: {obs}: none of its {res.bad_lines} lines is an observation (docs/protocol.md §2 JSON "
              "Lines: ts, rx, rssi, company_id, data); is it the right file?", file=sys.stderr)
        raise typer.Exit(2)
