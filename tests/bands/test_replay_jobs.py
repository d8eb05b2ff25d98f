"""`replay --jobs 2` (front in a second process) gives exactly the one-process replay's output.

The log has forgeries, replays, strangers, junk, comments, odd layouts, out-of-order lines and a
gap (`_troubled_log`). Compared: every alert's JSON in order, the bad-line reports, the result
counts and the pipeline's counters.
"""

from __future__ import annotations

import io
import json
from typing import Any

from edge.bands.pipeline import BandPipeline
from edge.replay import run_replay
from protocols.site_config import SiteConfig

from .test_ingest_batch import _troubled_log


def _run(site: SiteConfig, keys: dict[int, bytes], log: Any, jobs: int) -> tuple[list[str], list[Any], Any, Any]:
    pipe = BandPipeline(site, keys, node="j")
    alerts: list[str] = []
    bad: list[tuple[int, str]] = []
    res = run_replay(pipe, log, lambda a: alerts.append(a.to_json()), on_bad=lambda n, m: bad.append((n, m)),
                     jobs=jobs)
    return alerts, bad, res, pipe.counters()


def test_two_processes_give_the_one_process_output(demo_site: SiteConfig, demo_keys: dict[int, bytes]) -> None:
    lines = _troubled_log(demo_site, demo_keys)
    one = _run(demo_site, demo_keys, lines, 1)
    alerts, bad, res, counters = one
    types = {json.loads(a)["type"] for a in alerts}
    assert {"advert_forgery", "advert_replay", "band_tamper", "sos", "geofence_breach"} <= types
    assert counters["bad_tag"] >= 4 and counters["replay"] >= 4 and len(bad) >= 3 and res.alerts == len(alerts)
    assert _run(demo_site, demo_keys, lines, 2) == one  # lines as an iterable
    text = "\n".join(lines) + "\n"
    assert _run(demo_site, demo_keys, io.StringIO(text), 2) == _run(demo_site, demo_keys, io.StringIO(text), 1)
