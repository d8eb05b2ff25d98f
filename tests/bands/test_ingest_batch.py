"""`BandPipeline.observe_batch` / the block replay are exactly `observe` line by line.

A simulated log with every kind of trouble goes through the reference path (each line parsed on its
own, `observe` per observation, a tick at every whole second) and through `run_replay` (block
parsing, `observe_batch` between ticks). Alerts (JSON, order, IDs), bad-line reports, counters and
the whole verifier, tracker and rule state must be identical.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.bands.pipeline import BandPipeline
from edge.replay import parse_line, run_replay
from edge.sim import Simulator
from edge.sim.scenarios import demo_scenario, with_events
from protocols.advert import encode_status
from protocols.errors import PayloadError
from protocols.observation import RawObservation
from protocols.site_config import SiteConfig

T0 = 1_700_000_000.0


def _troubled_log(site: SiteConfig, keys: dict[int, bytes], seconds: float = 90.0) -> list[str]:
    """Simulator output with forgeries, replays, strangers, junk, disorder, gaps and odd layouts."""
    sc = demo_scenario(site, escape_band=1001, escape_at_s=25.0)
    b2, b3 = site.bands[1].id, site.bands[2].id
    base = sc.script(b2, lambda b: sc.scripts[1001])
    sc.scripts[b2] = with_events(base, strap_open=((5.0, 15.0),), sos=((8.0, 12.0),), silent=((18.0, 99.0),))
    sim = Simulator(site, keys, seed=4, start_ts=T0 + 0.37, scenario=sc)
    obs = sim.advance(T0 + seconds)
    rnd = random.Random(11)
    cid = site.company_id
    extra: list[RawObservation] = []
    for i in range(4):  # forged tags for an enrolled band: advert_forgery
        extra.append(RawObservation(T0 + 20 + i, "rx-a", -60, cid, encode_status(
            band_id=b3, counter=10**6 + i, key=b"\x02" * 16, company_id=cid)))
    heard = {o.data: o for o in obs if int.from_bytes(o.data[1:5], "little") == 1001}
    early = [o for o in heard.values() if o.ts < T0 + 9]
    for i in range(4):  # band 1001's old adverts sent again later: advert_replay
        extra.append(RawObservation(T0 + 30 + i, "rx-b", -61, cid, early[i].data))
    late = next(o for o in obs if o.ts > T0 + 60)
    # b2's last advert before it falls silent, heard again 1.9 s (duplicate) and 2.5 s (replay) later
    last_b2 = [o for o in obs if int.from_bytes(o.data[1:5], "little") == b2][-1]
    extra.append(RawObservation(last_b2.ts + 2.5, "rx-c", -70, cid, last_b2.data))
    extra.append(RawObservation(last_b2.ts + 1.9, "rx-c", -70, cid, last_b2.data))
    extra.append(RawObservation(T0 + 40, "rx-nowhere", -60, cid, late.data))  # unknown receiver
    extra.append(RawObservation(T0 + 41, "rx-a", -60, cid, encode_status(  # unknown band
        band_id=424242, counter=1, key=b"\x03" * 16, company_id=cid)))
    extra.append(RawObservation(T0 + 42, "rx-a", -60, cid ^ 1, late.data))  # wrong company
    for junk in (b"", b"\x11" * 21, bytes(22), b"\x12" + late.data[1:], late.data[:9] + b"\xe0" + late.data[10:]):
        extra.append(RawObservation(T0 + 43 + rnd.random(), "rx-b", -66, cid, junk))
    merged = sorted(obs + extra, key=lambda o: o.ts)
    for i in range(200, len(merged) - 1, 97):  # out-of-order arrivals
        merged[i], merged[i + 1] = merged[i + 1], merged[i]
    merged.insert(3000, RawObservation(merged[3000].ts - 1.5, "rx-d", -80, cid, merged[2990].data))
    lines: list[str] = []
    for i, o in enumerate(merged):
        line = o.to_json_line()
        r = rnd.random()
        if r < 0.01:
            line = json.dumps(json.loads(line), separators=(",", ":"))
        elif r < 0.02:
            line = json.dumps(dict(reversed(list(json.loads(line).items()))))
        elif r < 0.03:
            line = line.replace(o.data.hex(), o.data.hex().upper())
        elif r < 0.035:
            line += "  \r"
        lines.append(line)
        if i % 1500 == 7:
            lines.append(rnd.choice(["", "# note", "  ", "{bad", '{"ts": 1}', '[1]', '{"ts": "x", "rx": 1}',
                                     '{"ts": 5, "rx": "rx-a", "rssi": -500, "company_id": 1, "data": ""}',
                                     '{"ts": 5, "rx": "rx-a", "rssi": -50, "company_id": 1, "data": "zz"}']))
    return lines


def _reference(pipe: BandPipeline, lines: Sequence[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """The replay as it was: each line on its own, `observe` per observation, 1 Hz ticks."""
    alerts: list[str] = []
    bad: list[tuple[int, str]] = []
    next_tick = math.inf
    started = False
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            o = parse_line(line)
        except PayloadError as exc:
            bad.append((lineno, str(exc)))
            continue
        if not started:
            started, next_tick = True, math.floor(o.ts) + 1.0
        while o.ts >= next_tick:
            alerts += [a.to_json() for a in pipe.tick(next_tick)]
            next_tick += 1.0
        alerts += [a.to_json() for a in pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)]
    alerts += [a.to_json() for a in pipe.tick(next_tick)]
    return alerts, bad


def _state(pipe: BandPipeline) -> dict[str, Any]:
    """Everything the observation path writes, in comparable form."""
    tr, w = pipe.tracker, pipe.tracker.windows
    ver = {b: (s.last_counter, s.last_ts, s.last_payload, list(s.bad_tags), list(s.replays))
           for b, s in pipe.verifier._bands.items()}
    return {
        "counters": pipe.counters(), "verifier_counts": pipe.verifier.counts, "verifier": ver,
        "rssi": w.rssi.tobytes(), "ts": w.ts.tobytes(), "pos": w.pos.tolist(), "hist": tr.rssi_hist.tolist(),
        "power": tr.power.tolist(), "rx_last": list(tr.rx_last), "last_sample": tr.last_sample.tolist(),
        "rules": {b: repr(r) for b, r in pipe.rules.items()}, "status": {b: repr(s) for b, s in pipe._status.items()},
        "dup": dict(pipe.front.dup), "last_payload": dict(pipe.front.last_payload),
        "fixes": {b: repr(f) for b, f in pipe._fixes.items()}, "active": sorted(pipe._active),
    }


def test_block_replay_equals_line_by_line_observe(demo_site: SiteConfig, demo_keys: dict[int, bytes]) -> None:
    lines = _troubled_log(demo_site, demo_keys)
    ref = BandPipeline(demo_site, demo_keys, node="t")
    want_alerts, want_bad = _reference(ref, lines)
    got = BandPipeline(demo_site, demo_keys, node="t")
    alerts: list[str] = []
    bad: list[tuple[int, str]] = []
    res = run_replay(got, lines, lambda a: alerts.append(a.to_json()), on_bad=lambda n, m: bad.append((n, m)))
    counts = ref.counters()
    # the log really exercises what it claims to
    assert counts["bad_tag"] >= 4 and counts["replay"] >= 4 and counts["unknown_rx"] >= 1 and counts["duplicate"]
    assert counts["unknown_band"] >= 1 and counts["wrong_company"] >= 1 and counts["length"] >= 2
    assert {"advert_forgery", "advert_replay", "band_tamper", "sos", "band_missing"} <= {
        json.loads(a)["type"] for a in want_alerts}
    assert len(want_bad) >= 3
    assert alerts == want_alerts
    assert bad == want_bad and res.bad_lines == len(want_bad)
    assert _state(got) == _state(ref)


def _random_obs(rnd: random.Random, site: SiteConfig, keys: dict[int, bytes], n: int) -> list[RawObservation]:
    """Adverts of a few bands heard by several receivers, with repeats, reorderings and strangers."""
    bands = [b.id for b in site.bands[:4]]
    rxs = [r.id for r in site.receivers[:4]] + ["rx-unknown"]
    counters = dict.fromkeys(bands, 100)
    out: list[RawObservation] = []
    t = T0
    sent: list[bytes] = []
    while len(out) < n:
        t += rnd.choice([0.0, 0.05, 0.3, 1.1, 2.6])
        b = rnd.choice(bands)
        counters[b] += rnd.choice([0, 1, 1, 3])
        data = encode_status(band_id=b, counter=counters[b], key=keys[b], company_id=site.company_id,
                             flags=rnd.choice([0, 0, 8, 1]), battery=rnd.choice([None, 5, 80]),
                             measured_power=rnd.choice([-59, -61]))
        if rnd.random() < 0.1 and sent:
            data = rnd.choice(sent)  # an old advert again
        if rnd.random() < 0.05:
            data = data[:14] + bytes(8)  # forged tag
        sent.append(data)
        for _ in range(rnd.randint(1, 12)):  # >8 receptions: the ring buffer wraps within one batch
            out.append(RawObservation(t + rnd.choice([0.0, 0.01, -0.5]), rnd.choice(rxs), rnd.randint(-99, -40),
                                      site.company_id if rnd.random() > 0.03 else 1, data))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 400), min_size=1, max_size=12))
def test_observe_batch_equals_observe_for_any_split(demo_site: SiteConfig, demo_keys: dict[int, bytes],
                                                      seed: int, cuts: list[int]) -> None:
    """Random streams cut into random batches (ticks in between) match `observe` one by one."""
    rnd = random.Random(seed)
    obs = _random_obs(rnd, demo_site, demo_keys, 400)
    ref = BandPipeline(demo_site, demo_keys, node="h")
    got = BandPipeline(demo_site, demo_keys, node="h")
    want: list[str] = []
    have: list[str] = []
    bounds = sorted({0, len(obs), *(c for c in cuts if c < len(obs))})
    for a, b in itertools.pairwise(bounds):
        chunk = obs[a:b]
        for o in chunk:
            want += [x.to_json() for x in ref.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)]
        have += [x.to_json() for x in got.observe_batch([o.ts for o in chunk], [o.rx for o in chunk],
                                                        [o.rssi for o in chunk], [o.company_id for o in chunk],
                                                        [o.data.hex() for o in chunk])]
        now = math.floor(chunk[-1].ts) + 1.0
        want += [x.to_json() for x in ref.tick(now)]
        have += [x.to_json() for x in got.tick(now)]
    assert have == want
    assert _state(got) == _state(ref)


def test_ring_buffer_add_many_equals_add() -> None:
    from edge.bands.rssi_filter import RssiWindows

    rnd = np.random.default_rng(3)
    seq, bat = RssiWindows(5, 3, 8), RssiWindows(5, 3, 8)
    for _ in range(30):
        n = int(rnd.integers(0, 40))
        band, rx = rnd.integers(0, 5, n), rnd.integers(0, 3, n)
        ts, val = rnd.random(n), rnd.random(n)
        for i in range(n):
            seq.add(int(band[i]), int(rx[i]), float(ts[i]), float(val[i]))
        bat.add_many(band, rx, ts, val)
        assert np.array_equal(seq.rssi, bat.rssi, equal_nan=True) and np.array_equal(seq.ts, bat.ts)
        assert np.array_equal(seq.pos, bat.pos)
