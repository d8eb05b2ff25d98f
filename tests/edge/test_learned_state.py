"""Learned site state kept across restarts (`edge/learned_state.py`): real files, real pipelines, a real agent."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge import learned_state as ls
from edge.agent import Agent, AgentOptions, build_node_telemetry
from edge.bands.pipeline import BandPipeline
from edge.sim import Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import walking
from edge.sim.sites import layout_site
from protocols.site_config import SiteConfig
from tests.helpers import small_tmpfs

START = 1_700_000_000.0
NOW = START + 400.0


def _learn(pipe: BandPipeline, site: SiteConfig, seconds: int) -> None:
    """`seconds` of a simulated site (walkers) into `pipe`, band gains learned."""
    assert pipe.detector is not None
    pipe.detector.gains.p = dataclasses.replace(pipe.detector.gains.p, learn=True)
    sim = Simulator(site, site_demo_keys(site), seed=3, start_ts=START, scenario=walking(site, 3))
    for s in range(1, seconds + 1):
        for o in sim.advance(START + s):
            pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
        pipe.tick(START + s)


@pytest.fixture(scope="module")
def site() -> SiteConfig:
    return layout_site("demo", 40, shadowing_db=6.0)


@pytest.fixture(scope="module")
def learned(site: SiteConfig) -> BandPipeline:
    pipe = BandPipeline(site, site_demo_keys(site), node="n1")
    _learn(pipe, site, 240)
    return pipe


def _fresh(site: SiteConfig) -> BandPipeline:
    return BandPipeline(site, site_demo_keys(site), node="n1")


def _state(pipe: BandPipeline) -> tuple[Any, Any]:
    assert pipe.detector is not None
    return pipe.tracker.snapshot(), pipe.detector.snapshot()


def _same(a: Any, b: Any, tol: float = 0.0) -> bool:
    """Dataclass trees equal, arrays included (NaN equal to NaN). The beacon fit's log-likelihoods are kept to 0.01 in
    the file (`learned_state`), so they are equal to within half of that."""
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return all(_same(getattr(a, f.name), getattr(b, f.name), 0.00501 if f.name == "loglik" else 0.0)
                   for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if tol:
            return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=0.0, atol=tol, equal_nan=True))
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _good(learned: BandPipeline) -> dict[str, Any]:
    f = ls.capture(learned, "n1", NOW)
    assert f is not None
    doc: dict[str, Any] = json.loads(ls.dump(f))
    return doc


def test_round_trip_restores_every_learner(tmp_path: Path, site: SiteConfig, learned: BandPipeline) -> None:
    f = ls.capture(learned, "n1", NOW)
    assert f is not None and f.bands and len(f.receivers) == len(site.receivers)
    assert learned.detector is not None and learned.detector.gains.updates.sum() > 0  # it did learn gains
    ls.write_atomic(tmp_path / ls.FILE, ls.dump(f))
    fresh = _fresh(site)
    assert not _same(_state(fresh), _state(learned))
    keeper = ls.Keeper(tmp_path, "n1")
    assert keeper.restore(fresh, NOW + 60.0, 0.0)
    assert _same(_state(fresh), _state(learned))
    assert keeper.stats()["restored"] == 1 and keeper.stats()["bands"] == len(f.bands)
    # The receiver-gain correction is recomputed from what was restored: the same as the learned pipeline's.
    fresh.tick(NOW + 61.0)
    learned_det, fresh_det = learned.detector, fresh.detector
    assert fresh_det is not None
    want = learned_det.hearing.corrections(learned.tracker.calibration.link_var_db2())
    assert np.allclose(fresh_det._gain[0], want[0]) and np.allclose(fresh_det._gain[1], want[1])
    # And so are the floors: what the learned pipeline's own hearing gives from its state now (its stored floors
    # are from its last floor round, before the residuals it gathered since).
    hearing = copy.deepcopy(learned_det.hearing)
    hearing.update_floors(learned.tracker.rx_hist, learned.tracker.floor_dbm,
                          learned.tracker.calibration.rx_bias + want[0])
    assert np.array_equal(fresh_det.hearing.floor, hearing.floor)


def _hostile(case: str, doc: dict[str, Any]) -> bytes:
    """A bad file of each kind, from a good document."""
    rx = next(iter(doc["receivers"]))
    if case == "corrupt":
        return b"\x00\xffnot json at all"
    if case == "truncated":
        return json.dumps(doc).encode()[:5000]
    if case == "nan":
        doc["receivers"][rx]["bias_db"] = float("nan")
        return json.dumps(doc).encode()  # json writes a bare NaN: the parser reads it, the model refuses it
    if case == "huge_array":
        doc["receivers"][rx]["levels"] = [1] * 100_000
    elif case == "short_evidence":
        doc["bands"][next(iter(doc["bands"]))]["evidence"] = [0.0] * 12  # valid JSON, another grid
    elif case == "extra_key":
        doc["site_state"]["debug"] = 1
    elif case == "too_large":
        return b" " * (ls.MAX_FILE_BYTES + 1)
    elif case == "schema":
        doc["schema"] = "qwatch.learned/2"
    elif case == "other_site":
        doc["site"] = "elsewhere"
    elif case == "too_old":
        doc["saved_at"] = NOW - ls.MAX_AGE_S - 1.0
    elif case == "from_future":
        doc["saved_at"] = NOW + 2 * ls.MAX_AHEAD_S
    return json.dumps(doc).encode()


HOSTILE = {"corrupt": "corrupt", "truncated": "corrupt", "nan": "invalid", "huge_array": "invalid",
           "extra_key": "invalid", "short_evidence": "mismatch", "too_large": "too_large", "schema": "schema",
           "other_site": "other_site",
           "too_old": "too_old", "from_future": "from_future"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_bad_file_is_refused_counted_and_the_node_starts_cold(case: str, tmp_path: Path, site: SiteConfig,
                                                              learned: BandPipeline) -> None:
    (tmp_path / ls.FILE).write_bytes(_hostile(case, _good(learned)))
    pipe, cold = _fresh(site), _fresh(site)
    keeper = ls.Keeper(tmp_path, "n1")
    assert not keeper.restore(pipe, NOW, 0.0)
    assert keeper.counters == {f"refused_{HOSTILE[case]}": 1}
    assert keeper.stats()["refused"] == HOSTILE[case] and keeper.stats()["restored"] == 0
    assert _same(_state(pipe), _state(cold))
    assert pipe.tick(NOW + 1.0) == []  # and it runs


def test_missing_file_and_changed_receivers_are_refused(tmp_path: Path, site: SiteConfig,
                                                        learned: BandPipeline) -> None:
    keeper = ls.Keeper(tmp_path, "n1")
    assert not keeper.restore(_fresh(site), NOW, 0.0) and keeper.counters == {"refused_missing": 1}
    (tmp_path / ls.FILE).write_bytes(json.dumps(_good(learned)).encode())
    rx = [r.model_dump() for r in site.receivers]
    rx[0]["position"] = [rx[0]["position"][0] + 3.0, rx[0]["position"][1]]  # a receiver moved
    moved = site.model_copy(update={"receivers": type(site.receivers)(type(site.receivers[0])(**r) for r in rx)})
    pipe = BandPipeline(moved, site_demo_keys(site), node="n1")
    assert not keeper.restore(pipe, NOW, 0.0)
    assert keeper.counters == {"refused_missing": 1, "refused_site_changed": 1}


def test_bands_added_since_are_cold_and_removed_ones_dropped(tmp_path: Path, site: SiteConfig,
                                                             learned: BandPipeline) -> None:
    f = ls.capture(learned, "n1", NOW)
    assert f is not None
    ls.write_atomic(tmp_path / ls.FILE, ls.dump(f))
    kept = list(site.bands[10:])
    new = [b.model_copy(update={"id": 9001 + k}) for k, b in enumerate(site.bands[:5])]
    other = site.model_copy(update={"bands": type(site.bands)(kept + new)})
    keys = {**site_demo_keys(site), **{b.id: bytes(16) for b in new}}
    pipe = BandPipeline(other, keys, node="n1")
    assert ls.Keeper(tmp_path, "n1").restore(pipe, NOW, 0.0)
    det, old = pipe.detector, learned.detector
    assert det is not None and old is not None
    for i, b in enumerate(pipe.band_ids):
        if b >= 9001:
            assert det.gains.updates[i] == 0 and det.gains.mean[i] == 0.0  # cold
        else:
            j = learned.band_ids.index(b)
            assert det.gains.updates[i] == old.gains.updates[j] and det.gains.mean[i] == old.gains.mean[j]
    assert pipe.tick(NOW + 1.0) == []


def test_a_write_cut_before_the_rename_leaves_the_old_file(tmp_path: Path, site: SiteConfig,
                                                           learned: BandPipeline) -> None:
    path = tmp_path / ls.FILE
    old = ls.capture(learned, "n1", NOW - 300.0)
    assert old is not None
    ls.write_atomic(path, ls.dump(old))
    tmp = ls.write_temp(path, ls.dump(old)[:1000])  # the power is cut here: written, never renamed
    assert tmp.exists()
    assert ls.read(path, site, NOW).saved_at == NOW - 300.0
    assert ls.Keeper(tmp_path, "n1").restore(_fresh(site), NOW, 0.0)


def test_a_full_card_keeps_the_old_file_and_counts_the_failed_save(tmp_path: Path, site: SiteConfig,
                                                                   learned: BandPipeline) -> None:
    data = tmp_path / "data"
    with small_tmpfs(data, "128k"):
        keeper = ls.Keeper(data, "n1")
        assert keeper.maybe_save(learned, NOW, 0.0, force=True)
        before = (data / ls.FILE).read_bytes()
        free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
        (data / "filler").write_bytes(b"x" * max(free - 4096, 0))
        assert not keeper.maybe_save(learned, NOW + 300.0, 300.0, force=True)
        assert keeper.counters == {"saves": 1, "save_errors": 1}
        assert (data / ls.FILE).read_bytes() == before and not (data / (ls.FILE + ".tmp")).exists()


def _agent(tmp_path: Path, site: SiteConfig) -> Agent:
    opts = AgentOptions(config=tmp_path / "site.yaml", keys=tmp_path / "k.json", node="n1", broker_host="127.0.0.1",
                        broker_port=1, data_dir=tmp_path / "data", reconnect_max_s=60.0)
    return Agent(opts, site, site_demo_keys(site))


def _run(agent: Agent, body: Callable[[Agent], None]) -> None:
    agent.start()
    try:
        body(agent)
    finally:
        agent.stop()


def test_agent_saves_at_stop_and_restores_at_start(tmp_path: Path, site: SiteConfig) -> None:
    first = _agent(tmp_path, site)
    _run(first, lambda a: _learn(a.pipeline, site, 120))
    saved = _state(first.pipeline)
    assert first.learned.counters.get("saves") == 1 and (tmp_path / "data" / ls.FILE).exists()
    assert first.learned.stats()["refused"] == "missing"  # the first start had no file: cold, counted

    def check(a: Agent) -> None:
        assert _same(_state(a.pipeline), saved)
        tel = build_node_telemetry(a, a.started_mono)
        assert tel.watchdogs["learned_state"]["restored"] == 1
        assert tel.watchdogs["learned_state"]["receivers"] == len(site.receivers)
        assert tel.watchdogs["learned_state"]["startup_margin"] == "off"
        assert all(r.p.window_startup_extra == 0.0 for r in a.pipeline.rules.values())

    _run(_agent(tmp_path, site), check)


def test_agent_with_a_hostile_file_starts_cold(tmp_path: Path, site: SiteConfig) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ls.FILE).write_text('{"schema": "qwatch.learned/1", "site": [1e999]}', encoding="utf-8")

    def check(a: Agent) -> None:
        assert _same(_state(a.pipeline), _state(_fresh(site)))
        assert build_node_telemetry(a, a.started_mono).watchdogs["learned_state"]["refused_invalid"] == 1
        assert all(r.p.window_startup_extra == 3.0 for r in a.pipeline.rules.values())  # cold: the margin kept
        a._tick(a.started_mono)  # the agent's own tick runs on

    _run(_agent(tmp_path, site), check)


def test_doctor_row_shows_age_and_content_or_why_refused(tmp_path: Path, site: SiteConfig,
                                                         learned: BandPipeline) -> None:
    from edge.learned_state_health import check_learned_state

    (row,) = check_learned_state(tmp_path, site, NOW)
    assert row.status == "pass" and "not written yet" in row.detail
    f = ls.capture(learned, "n1", NOW - 600.0)
    assert f is not None
    ls.write_atomic(tmp_path / ls.FILE, ls.dump(f))
    (row,) = check_learned_state(tmp_path, site, NOW)
    assert row.status == "pass" and "saved 10 min ago" in row.detail
    assert f"{len(site.receivers)} receivers, {len(f.bands)} bands" in row.detail
    assert "a restart resumes from it, without the start-up margin" in row.detail
    doc = _good(learned)
    doc["saved_at"] = NOW - 8 * 86400.0
    (tmp_path / ls.FILE).write_text(json.dumps(doc), encoding="utf-8")
    (row,) = check_learned_state(tmp_path, site, NOW)
    assert row.status == "warn" and "refused (too_old)" in row.detail and "8.0 days" in row.detail
    assert "re-learns" in row.fix
    (tmp_path / ls.FILE).write_bytes(b"{")
    (row,) = check_learned_state(tmp_path, site, NOW)
    assert row.status == "warn" and "corrupt" in row.detail and str(tmp_path / ls.FILE) in row.fix


def test_a_config_push_carries_the_state_over_unless_the_receivers_moved(site: SiteConfig,
                                                                        learned: BandPipeline) -> None:
    fresh = _fresh(site)
    assert ls.copy_into(learned, fresh, "n1", NOW) == (len(site.bands), len(site.receivers))
    assert _same(_state(fresh), _state(learned))
    rx = [r.model_dump() for r in site.receivers]
    rx[1]["rssi_offset"] = 4.0
    other = site.model_copy(update={"receivers": type(site.receivers)(type(site.receivers[0])(**r) for r in rx)})
    pushed = BandPipeline(other, site_demo_keys(site), node="n1")
    assert ls.copy_into(learned, pushed, "n1", NOW) is None
    assert _same(_state(pushed), _state(BandPipeline(other, site_demo_keys(site), node="n1")))


def test_without_startup_margin_touches_only_the_margin(site: SiteConfig) -> None:
    before = next(iter(_fresh(site).rules.values())).p
    assert before.window_startup_extra > 0.0
    assert ls.without_startup_margin(before) == dataclasses.replace(before, window_startup_extra=0.0)
    assert before.window_startup_extra > 0.0  # pure: the given parameters are unchanged


def _raised_at_start(pipe: BandPipeline, lr: float) -> list[int]:
    """The bands whose rules raise a breach for a window statistic `lr` 5 s after the pipeline's first tick (the
    start-up margin's hold: threshold 13, +3 with the margin)."""
    pipe.tick(NOW + 1.0)
    return [band for band, rules in pipe.rules.items()
            if any(d.type == "geofence_breach" and d.state == "raised"
                   for d in rules.on_window(NOW + 6.0, lr, math.nan, (0.0, 0.0, 20.0)))]


def test_a_restored_pipeline_has_no_startup_margin(tmp_path: Path, site: SiteConfig, learned: BandPipeline) -> None:
    f = ls.capture(learned, "n1", NOW)
    assert f is not None
    ls.write_atomic(tmp_path / ls.FILE, ls.dump(f))
    keeper = ls.Keeper(tmp_path, "n1")
    pipe = _fresh(site)
    assert keeper.restore(pipe, NOW, 0.0)
    assert keeper.stats()["startup_margin"] == "off"
    assert all(r.p.window_startup_extra == 0.0 for r in pipe.rules.values())
    threshold = next(iter(pipe.rules.values())).p.window_threshold
    assert _raised_at_start(pipe, threshold + 1.5) == pipe.band_ids  # 14.5 raises from the first second


def test_a_cold_pipeline_keeps_the_startup_margin(tmp_path: Path, site: SiteConfig) -> None:
    keeper = ls.Keeper(tmp_path, "n1")
    pipe = _fresh(site)
    assert not keeper.restore(pipe, NOW, 0.0)  # no file: cold
    assert "startup_margin" not in keeper.stats()
    p = next(iter(pipe.rules.values())).p
    assert p.window_startup_extra == 3.0
    assert _raised_at_start(pipe, p.window_threshold + 1.5) == []  # 14.5 < 13 + 3
    assert _raised_at_start(_fresh(site), p.window_threshold + 3.5) == pipe.band_ids  # 16.5 raises


@pytest.mark.parametrize("case", ["too_old", "short_evidence", "other_site"])
def test_a_pipeline_whose_file_was_refused_keeps_the_startup_margin(case: str, tmp_path: Path, site: SiteConfig,
                                                                   learned: BandPipeline) -> None:
    (tmp_path / ls.FILE).write_bytes(_hostile(case, _good(learned)))
    keeper = ls.Keeper(tmp_path, "n1")
    pipe = _fresh(site)
    assert not keeper.restore(pipe, NOW, 0.0)  # short_evidence: read, then refused by `apply` (mismatch)
    assert "startup_margin" not in keeper.stats()
    assert all(r.p.window_startup_extra == 3.0 for r in pipe.rules.values())
    assert _raised_at_start(pipe, next(iter(pipe.rules.values())).p.window_threshold + 1.5) == []


def test_a_config_push_that_carries_the_state_drops_the_margin_one_that_does_not_keeps_it(
        site: SiteConfig, learned: BandPipeline) -> None:
    fresh = _fresh(site)
    assert ls.copy_into(learned, fresh, "n1", NOW) is not None
    assert all(r.p.window_startup_extra == 0.0 for r in fresh.rules.values())
    rx = [r.model_dump() for r in site.receivers]
    rx[1]["rssi_offset"] = 4.0
    other = site.model_copy(update={"receivers": type(site.receivers)(type(site.receivers[0])(**r) for r in rx)})
    pushed = BandPipeline(other, site_demo_keys(site), node="n1")
    assert ls.copy_into(learned, pushed, "n1", NOW) is None
    assert all(r.p.window_startup_extra == 3.0 for r in pushed.rules.values())


def test_censored_beacon_fit_round_trips(tmp_path: Path, site: SiteConfig) -> None:
    """The censored beacon fit's pairs (`beacon_exponent`, off by default) are kept, missed-only pairs too."""
    def on(pipe: BandPipeline) -> BandPipeline:
        assert pipe.detector is not None
        pipe.detector.beacon_fit.p = dataclasses.replace(pipe.detector.beacon_fit.p, learn=True)
        return pipe

    learned = on(_fresh(site))
    _learn(learned, site, 120)
    det = learned.detector
    assert det is not None and det.beacon_fit.ready()
    f = ls.capture(learned, "n1", NOW)
    assert f is not None and f.site_state.beacon_fit_rounds == det.beacon_fit.rounds
    ls.write_atomic(tmp_path / ls.FILE, ls.dump(f))
    fresh = on(_fresh(site))
    assert ls.Keeper(tmp_path, "n1").restore(fresh, NOW + 60.0, 0.0)
    got = fresh.detector
    assert got is not None and got.beacon_fit.rounds == det.beacon_fit.rounds
    assert np.allclose(got.beacon_fit.loglik, det.beacon_fit.loglik, atol=0.006)  # kept to 0.01
    rows = np.asarray(learned.tracker.calibration.beacon_idx)
    power = learned.tracker.power[rows]
    for d in (det, got):
        d.beacon_fit.fits = 0  # both search the whole range
        d.beacon_fit.fit(power, 3.0)
    assert abs(got.beacon_fit.n - det.beacon_fit.n) < 0.01
    # A file written by a version with another level grid is refused whole, not half restored.
    doc = json.loads(ls.dump(f))
    pair = next(p for rx in doc["receivers"].values() for p in rx["pairs"].values() if p.get("fit"))
    pair["fit"] = pair["fit"][:-1]
    ls.write_atomic(tmp_path / ls.FILE, json.dumps(doc).encode())
    assert not ls.Keeper(tmp_path, "n1").restore(on(_fresh(site)), NOW + 60.0, 0.0)
