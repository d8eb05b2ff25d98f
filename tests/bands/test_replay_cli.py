"""`qwatch-edge replay` end to end: a real subprocess over a simulated log with bad, forged and replayed lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.bands.recorder import ObservationRecorder
from edge.sim import Simulator
from edge.sim.obslog import write_log
from edge.sim.scenarios import demo_scenario
from protocols.advert import encode_status
from protocols.observation import RawObservation, parse_observation_line
from protocols.site_config import SiteConfig, write_band_keys

from .conftest import DEMO_SITE


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "replay", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_replay_prints_alerts_rejects_forgery_and_replay_and_reports_bad_lines(
        tmp_path: Path, demo_site: SiteConfig, demo_keys: dict[int, bytes]) -> None:
    keys = tmp_path / "keys.json"
    write_band_keys(keys, demo_keys)
    sim = Simulator(demo_site, demo_keys, seed=0, start_ts=1_700_000_000.0,
                    scenario=demo_scenario(demo_site, escape_band=1001, escape_at_s=30.0))
    log = tmp_path / "obs.jsonl"
    with log.open("w") as fh:
        write_log(sim, fh, 110.0)
    lines = log.read_text().splitlines()
    cid = demo_site.company_id
    t = 1_700_000_050.0
    forged = [RawObservation(t + i, "rx-a", -60, cid, encode_status(band_id=1003, counter=10**7 + i,
                                                                     key=b"\x01" * 16, company_id=cid))
              for i in range(3)]
    stale = parse_observation_line(next(ln for ln in lines if '"rx-a"' in ln))  # an early advert, resent later
    replays = [RawObservation(t + 10 + i, "rx-b", -60, stale.company_id, stale.data) for i in range(3)]
    injected = [o.to_json_line() for o in forged + replays]
    insert_at = next(i for i, ln in enumerate(lines) if json.loads(ln)["ts"] > t + 12)
    assert insert_at > 2000
    lines[insert_at:insert_at] = injected
    lines[2000:2000] = ["# a comment", "", "{not json", '{"ts": 1, "rx": "rx-a"}']
    log.write_text("\n".join(lines) + "\n")

    res = _cli("--config", str(DEMO_SITE), "--keys", str(keys), str(log))
    assert res.returncode == 0, res.stderr
    alerts = [json.loads(ln) for ln in res.stdout.splitlines()]
    kinds = {(a["type"], a["subject"]["band"]) for a in alerts}
    assert ("advert_forgery", 1003) in kinds
    assert ("advert_replay", decode_band(stale.data)) in kinds
    assert ("geofence_breach", 1001) in kinds
    assert all(a["schema"] == "qwatch.alert/1" and a["site"] == demo_site.site.id for a in alerts)
    assert "obs.jsonl:2003: bad observation" in res.stderr and "obs.jsonl:2004: bad observation" in res.stderr
    summary = json.loads(res.stderr.strip().splitlines()[-1])["replay_summary"]
    assert summary["bad_lines"] == 2 and summary["adverts"]["bad_tag"] == 3 and summary["adverts"]["replay"] == 3

    # Observation time is the clock: deterministic, and the same bytes with the front in a second process.
    again = _cli("--config", str(DEMO_SITE), "--keys", str(keys), "--jobs", "2", str(log))
    assert again.returncode == 0, again.stderr
    assert again.stdout == res.stdout and again.stderr == res.stderr


def decode_band(data: bytes) -> int:
    return int.from_bytes(data[1:5], "little")


def test_replay_config_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("site: {id: x}\nzones: []\nbogus: 1\n")
    res = _cli("--config", str(bad), "--keys", str(tmp_path / "none.json"), str(tmp_path / "obs.jsonl"))
    assert res.returncode == 2 and "site.yaml" in res.stderr


def test_recorder_rotates_and_replays(tmp_path: Path) -> None:
    rec = ObservationRecorder(tmp_path / "obs.jsonl", max_bytes=2000, backups=2)
    for i in range(100):
        rec.write(RawObservation(float(i), "rx-a", -70, 65535, bytes(22)))
    rec.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["obs.jsonl", "obs.jsonl.1", "obs.jsonl.2"]
    assert rec.stats()["rotations"] >= 2 and rec.stats()["errors"] == 0
    for p in tmp_path.iterdir():
        for line in p.read_text().splitlines():
            parse_observation_line(line)


def test_replay_survives_a_wild_timestamp(demo_site: SiteConfig, demo_keys: dict[int, bytes]) -> None:
    """A far-future ts must not make the replay tick through centuries; bands then go missing."""
    import time as _time

    from edge.bands.pipeline import BandPipeline
    from edge.replay import run_replay
    from protocols.payloads import Alert

    sim = Simulator(demo_site, demo_keys, seed=3, start_ts=1_700_000_000.0)
    lines = [o.to_json_line() for o in sim.advance(1_700_000_030.0)]
    lines.append(RawObservation(1e12, "rx-a", -70, 65535, bytes(22)).to_json_line())
    alerts: list[Alert] = []
    t0 = _time.perf_counter()
    res = run_replay(BandPipeline(demo_site, demo_keys, node="t"), lines, alerts.append)
    assert _time.perf_counter() - t0 < 30
    assert res.gaps == 1
    assert {a.type for a in alerts} == {"band_missing"}


def test_fast_line_parser_agrees_with_the_protocol_parser() -> None:
    import random

    import pytest

    from edge.replay import parse_line
    from protocols.errors import PayloadError

    rnd = random.Random(5)
    for i in range(500):
        o = RawObservation(round(rnd.uniform(0, 2e9), 3), f"rx-{i % 7}", rnd.randint(-127, 20),
                           rnd.randint(0, 65535), rnd.randbytes(rnd.randint(0, 30)))
        line = o.to_json_line()
        assert parse_line(line) == parse_observation_line(line) == o
    for bad in ('{"ts": 1e400, "rx": "a", "rssi": -1, "company_id": 1, "data": ""}',
                '{"ts": 1, "rx": "a", "rssi": -128, "company_id": 1, "data": ""}',
                '{"ts": 1, "rx": "a", "rssi": 5, "company_id": 70000, "data": "0"}'):
        with pytest.raises(PayloadError):
            parse_line(bad)


def test_replay_saves_and_starts_from_learned_state(tmp_path: Path, demo_site: SiteConfig,
                                                    demo_keys: dict[int, bytes]) -> None:
    keys = tmp_path / "keys.json"
    write_band_keys(keys, demo_keys)
    sim = Simulator(demo_site, demo_keys, seed=1, start_ts=1_700_000_000.0,
                    scenario=demo_scenario(demo_site, escape_band=1001, escape_at_s=40.0))
    log = tmp_path / "obs.jsonl"
    with log.open("w") as fh:
        write_log(sim, fh, 90.0)
    base = ("--config", str(DEMO_SITE), "--keys", str(keys), str(log))
    plain = _cli(*base)
    state = tmp_path / "learned-state.json"
    saved = _cli(*base, "--save-learned-state", str(state))
    assert saved.returncode == 0 and saved.stdout == plain.stdout  # saving changes nothing of the replay
    doc = json.loads(state.read_text())
    assert doc["schema"] == "qwatch.learned/1" and doc["site"] == demo_site.site.id
    warm = _cli(*base, "--learned-state", str(state))
    assert warm.returncode == 0, warm.stderr
    assert "learned state of" in warm.stderr
    doc["site"] = "elsewhere"
    state.write_text(json.dumps(doc))
    refused = _cli(*base, "--learned-state", str(state))
    assert refused.returncode == 2 and "other_site" in refused.stderr and refused.stdout == ""
