"""`qwatch-edge replay`: run the wristband pipeline over an observation log (docs/protocol.md §2).

Alerts go to stdout as JSON lines, with observation time as the clock, so the same log always
gives the same output. The summary of drop reasons, bad lines (with line numbers) and the
progress bar (only on a terminal) go to stderr.
"""

from __future__ import annotations

import gc
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, TextIO, cast

import typer

from edge.bands.pipeline import BandPipeline
from edge.replay_clock import Bad, Obs, ReplayClock, ReplayResult, Tick
from edge.replay_parse import Block, blocks_from_handle, blocks_from_lines
from edge.replay_parse import parse_block as parse_block  # re-exported: benchmarks time it here
from edge.replay_parse import parse_line as parse_line  # re-exported: the replay's line parser
from protocols.cli_errors import id_option
from protocols.errors import ConfigError
from protocols.payloads import Alert
from protocols.site_config import SiteConfig, load_band_keys, load_site_config

MAX_BAD_LINES_SHOWN = 50


class ReplayBack:
    """Executes replay steps on the pipeline and emits what they produce (counts alerts in `res`)."""

    def __init__(self, pipeline: BandPipeline, res: ReplayResult, emit: Callable[[Alert], None],
                 on_bad: Callable[[int, str], None] | None) -> None:
        self.pipeline = pipeline
        self.res = res
        self.emit = emit
        self.on_bad = on_bad

    def send(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.res.alerts += 1
            self.emit(alert)

    def tick(self, now: float) -> None:
        self.send(self.pipeline.tick(now))

    def bad(self, step: Bad) -> None:
        if self.on_bad is not None:
            self.on_bad(step.lineno, step.message)


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Keep everything alive now (modules, config, the pipeline) out of the collector's full passes.

    It lives to the end of the replay; without this the collector walks it again and again as the
    blocks' rows come and go (measured: ~40 % of the parsing time with numba and pydantic loaded).
    """
    gc.collect()  # what is garbage already must not be frozen with the rest
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def blocks_of(lines: Iterable[str] | TextIO) -> Iterator[Block]:
    """A text handle read in blocks, or an iterable of lines grouped into blocks."""
    # hasattr() does not narrow `Iterable[str] | TextIO` (a TextIO is an Iterable[str] too), hence the cast.
    return blocks_from_handle(cast(TextIO, lines)) if hasattr(lines, "read") else blocks_from_lines(lines)


def run_replay(
    pipeline: BandPipeline,
    lines: Iterable[str] | TextIO,
    emit: Callable[[Alert], None],
    *,
    on_bad: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    jobs: int = 1,
) -> ReplayResult:
    """Feed an observation log through `pipeline`, ticking once per second of observation time.

    `lines` is a text handle (read in blocks) or an iterable of lines. Alerts, their order and
    the bad-line reports are exactly those of observing line by line (`BandPipeline.observe`).
    `jobs=2` parses and verifies in a second process (`edge.replay_jobs`), with the same output.
    """
    if jobs > 1:
        from edge.replay_jobs import run_replay_two

        return run_replay_two(pipeline, lines, emit, on_bad=on_bad, on_progress=on_progress)
    clock = ReplayClock()
    back = ReplayBack(pipeline, clock.res, emit, on_bad)
    observe = pipeline.observe_batch
    with frozen_gc():
        for block in blocks_of(lines):
            if on_progress is not None:
                on_progress(len(block.text))
            rows, n_lines = parse_block(block)
            clock.res.lines += n_lines
            for step in clock.steps(rows):
                if type(step) is Obs:
                    a, b = step.start, step.end
                    back.send(observe(rows.ts[a:b], rows.rx[a:b], rows.rssi[a:b], rows.company_id[a:b],
                                      rows.data_hex[a:b]))
                elif type(step) is Tick:
                    back.tick(step.now)
                else:
                    back.bad(cast(Bad, step))
        last = clock.closing()
        if last is not None:
            back.tick(last.now)
    return clock.res


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
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=2,
                                      help="2: parse and verify in a second process (same output)")] = 1,
    learned_in: Annotated[Path | None, typer.Option(
        "--learned-state", help="start from this learned-state.json (a node's data dir; any age) instead of cold")
    ] = None,
    learned_out: Annotated[Path | None, typer.Option(
        "--save-learned-state", help="write what the detector learned here at the end (atomically)")] = None,
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
    if learned_in is not None:
        _restore_learned(pipeline, learned_in)
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
        res = run_replay(pipeline, fh, emit, on_bad=bad, on_progress=advance, jobs=jobs)
    out.flush()
    if learned_out is not None:
        _save_learned(pipeline, learned_out, node)
    print(json.dumps({"replay_summary": summary(res, pipeline.counters())}), file=sys.stderr)
    if res.bad_lines and not res.observations:
        print(f"qwatch-edge: {obs}: none of its {res.bad_lines} lines is an observation (docs/protocol.md §2 JSON "
              "Lines: ts, rx, rssi, company_id, data); is it the right file?", file=sys.stderr)
        raise typer.Exit(2)


def _restore_learned(pipeline: BandPipeline, path: Path) -> None:
    """--learned-state: asked for by name, so a file that does not fit is an error, not a cold start."""
    from edge.learned_state import Refused, apply, read

    try:
        bands, rxs = apply(pipeline, read(path, pipeline.site, None))
    except (Refused, ValueError) as exc:
        typer.echo(f"qwatch-edge: --learned-state refused: {exc}", err=True)
        raise typer.Exit(2) from None
    print(f"{path}: learned state of {bands} bands and {rxs} receivers restored, no start-up margin",
          file=sys.stderr)


def _save_learned(pipeline: BandPipeline, path: Path, node: str) -> None:
    """--save-learned-state, time-stamped with the log's last heard advert (the replay's clock)."""
    from edge.learned_state import capture, dump, write_atomic

    heard = [t for t in pipeline.tracker.rx_last if math.isfinite(t)]
    f = capture(pipeline, node, max(heard) if heard else 0.0)
    if f is None:
        print(f"{path}: not written: this site runs no window breach test (nothing learned)", file=sys.stderr)
        return
    try:
        write_atomic(path, dump(f))
    except OSError as exc:
        typer.echo(f"qwatch-edge: cannot write {path}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
