"""`qwatch-edge replay --jobs 2`: parse and verify in one process, rules and ticks in this one.

The front process (forked) reads the log, parses it block by block, plans the replay clock's steps
(`edge.replay_clock`) and runs the pipeline's advert front (`edge.bands.ingest_batch`: receiver
look-up, duplicate table, decode, AES-CMAC, counter rules) on every run of observations. It sends
each block's steps, with each run of observations replaced by the front's batch, through a pipe.
This process (the back) only executes them: `BandPipeline.apply` (per-advert rules, tracker writes),
ticks, alerts to `emit`, bad lines to `on_bad`.

The same code runs on the same inputs in the same order as in the one-process replay, so the output
is byte-identical (tests/bands/test_replay_jobs.py compares them on a log with attacks, junk and
disorder). The pipe's small buffer is the back-pressure: the front is at most a block or two ahead.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import TextIO, cast

from edge.bands.ingest_batch import AdvertFront, FrontBatch
from edge.bands.pipeline import BandPipeline
from edge.replay import ReplayBack, blocks_of, frozen_gc
from edge.replay_clock import Bad, Obs, ReplayClock, ReplayResult, Step, Tick
from edge.replay_parse import parse_block
from protocols.payloads import Alert

_STEPS, _END, _ERROR = "steps", "end", "error"


def _front_main(front: AdvertFront, lines: Iterable[str] | TextIO, conn: Connection) -> None:
    """The front process: blocks → steps with front batches → the pipe. Never returns."""
    code = 0
    try:
        clock = ReplayClock()
        batch = front.batch
        with frozen_gc():
            for block in blocks_of(lines):
                rows, n_lines = parse_block(block)
                clock.res.lines += n_lines
                out: list[Step | FrontBatch] = []
                for step in clock.steps(rows):
                    if type(step) is Obs:
                        a, b = step.start, step.end
                        out.append(batch(rows.ts[a:b], rows.rx[a:b], rows.rssi[a:b], rows.company_id[a:b],
                                         rows.data_hex[a:b]))
                    else:
                        out.append(step)
                conn.send((_STEPS, len(block.text), out))
        conn.send((_END, clock.res, clock.closing()))
    except BaseException:  # whatever it was, the back must hear of it, not hang
        code = 1
        with contextlib.suppress(OSError):
            conn.send((_ERROR, traceback.format_exc(), None))
    finally:
        conn.close()
        # Exit without the interpreter's shutdown: it would flush stdio buffers inherited from the
        # parent (its alerts would be written twice) and could wait on locks its other threads held.
        os._exit(code)


def run_replay_two(pipeline: BandPipeline, lines: Iterable[str] | TextIO, emit: Callable[[Alert], None], *,
                   on_bad: Callable[[int, str], None] | None = None,
                   on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    """`edge.replay.run_replay` with the front in a second process; the same result and output."""
    if lines is sys.stdin:  # the child's stdin is replaced by /dev/null: hand it its own descriptor
        stdin = cast(TextIO, lines)
        lines = os.fdopen(os.dup(stdin.fileno()), "r", encoding=stdin.encoding,
                          errors=stdin.errors or "strict")
    sys.stdout.flush()
    sys.stderr.flush()
    ctx = multiprocessing.get_context("fork")  # the front inherits the pipeline's verifier and tables
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_front_main, args=(pipeline.front, lines, send), daemon=True,
                       name="qwatch-replay-front")
    proc.start()
    send.close()
    counted = ReplayResult()
    back = ReplayBack(pipeline, counted, emit, on_bad)
    apply = pipeline.apply
    try:
        with frozen_gc():
            while True:
                try:
                    kind, first, second = receive.recv()
                except EOFError:
                    raise RuntimeError("the replay's front process ended without a result") from None
                if kind == _STEPS:
                    if on_progress is not None:
                        on_progress(cast(int, first))
                    for step in cast(list[Step | FrontBatch], second):
                        if type(step) is FrontBatch:
                            back.send(apply(step))
                        elif type(step) is Tick:
                            back.tick(step.now)
                        else:
                            back.bad(cast(Bad, step))
                elif kind == _END:
                    res = cast(ReplayResult, first)
                    if second is not None:
                        back.tick(cast(Tick, second).now)
                    break
                else:
                    raise RuntimeError(f"the replay's front process failed:\n{first}")
    finally:
        receive.close()
        proc.join(timeout=5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    res.alerts = counted.alerts
    return res
