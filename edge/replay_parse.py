"""Observation-log parsing for `qwatch-edge replay` (docs/protocol.md §2): blocks of lines into columns.

Lines in the canonical layout (what the recorder and the simulator write) are parsed a block at a
time by one regular expression; any other line goes through protocols' `parse_observation_line`
one by one, which also produces the error messages. Bad lines are reported with their line numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

import numpy as np

from protocols.errors import PayloadError
from protocols.observation import RawObservation, parse_observation_line

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


@dataclass(slots=True)
class Block:
    """Whole lines of the log (each ending in a newline); `original` holds the true text of lines
    that are not verbatim in `text` (an unterminated last line, an item with an inner newline)."""

    text: str
    first_lineno: int
    original: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class Rows:
    """A block's observations as columns, in line order, and its bad lines.

    `bad` holds (number of observations before the bad line, line number, reason, message)."""

    ts: list[float]
    rx: list[str]
    rssi: list[int]
    company_id: list[int]
    data_hex: list[str]
    bad: list[tuple[int, int, str, str]]


def blocks_from_handle(fh: TextIO) -> Iterator[Block]:
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
        block = Block(text[:cut], lineno)
        lineno += text.count("\n", 0, cut)
        yield block
    if rest:
        yield Block(rest + "\n", lineno, {0: rest})


def blocks_from_lines(lines: Iterable[str], size: int = 16384) -> Iterator[Block]:
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
            yield Block("".join(parts), lineno, original)
            lineno += len(parts)
            parts, original = [], {}
    if parts:
        yield Block("".join(parts), lineno, original)


def parse_block(block: Block) -> tuple[Rows, int]:
    """Columns of a block's observations, its bad lines, and its line count."""
    rows = _BLOCK_LINE.findall(block.text)
    n = len(rows)
    if n == 0:
        return Rows([], [], [], [], [], []), 0
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
    cols = Rows(ts.tolist(), rx_s, rssi.tolist(), cid.tolist(), data_s, [])
    if odd:
        _parse_odd_rows(block, odd, cols)
    return cols, n


def _parse_odd_rows(block: Block, odd: list[int], cols: Rows) -> None:
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
