"""A pushed site config at the node (no broker): validated whole, refused with the exact error
while the last good one keeps running, saved atomically (keys 0600), survives a restart, and
the bands pipeline hands its state over (open alerts of a retired band are cleared)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edge import config_store
from edge.agent import Agent, AgentOptions, build_node_telemetry
from edge.mqtt_link import Command
from protocols.advert import FLAG_SOS, encode_status
from protocols.site_config import parse_site_config

BASE = """site: {id: s1}
zones:
  - {id: ward, kind: permitted, polygon: [[0,0],[30,0],[30,30],[0,30]]}
receivers:
  - {id: rx-1, position: [0, 0], source: "serial:/dev/null"}
"""
KEY = bytes(range(16))


def _site(bands: list[int]) -> str:
    if not bands:
        return BASE
    return BASE + "bands:\n" + "".join(f"  - {{id: {b}, person: P-{b}, allowed_zones: [ward]}}\n" for b in bands)


def _push(agent: Agent, cmd_id: str, yaml_text: str, version: int | None, keys: dict[int, bytes]) -> dict[str, object]:
    body = {"cmd_id": cmd_id, "site_yaml": yaml_text, "version": version,
            "keys": {str(k): v.hex() for k, v in keys.items()}}
    return agent.handle_command(Command("config", json.dumps(body).encode())).model_dump()


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    opts = AgentOptions(config=tmp_path / "site.yaml", keys=tmp_path / "k.json", node="n1", broker_host="127.0.0.1",
                        broker_port=1, data_dir=tmp_path / "data", cameras=False)
    a = Agent(opts, parse_site_config(_site([])), {})
    from edge.bands.pipeline import BandPipeline

    a.pipeline = BandPipeline(a.site, a.keys, node="n1")
    return a


def test_push_adds_a_band_and_its_key_then_retire_clears_its_alert(agent: Agent, tmp_path: Path) -> None:
    res = _push(agent, "c1", _site([1001]), 1, {1001: KEY})
    assert res["ok"] and res["config_version"] == 1, res
    assert agent.keys == {1001: KEY} and build_node_telemetry(agent, 1.0).config_version == 1
    keys_file = next((tmp_path / "data" / "config").glob("keys-*.json"))
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    sos = agent.pipeline.observe(100.0, "rx-1", -60, 0xFFFF, encode_status(band_id=1001, counter=5, key=KEY,
                                                                            flags=FLAG_SOS))
    assert [(a.type, a.state) for a in sos] == [("sos", "raised")]
    before = agent.outbox.depth()
    res = _push(agent, "c2", _site([]), 2, {})  # the band is retired: gone from bands and keys
    assert res["ok"] and res["config_version"] == 2
    rows = agent.outbox.pending_after(0, 100)
    assert agent.outbox.depth() == before + 1
    cleared = json.loads(rows[-1].payload)
    assert cleared["state"] == "cleared" and cleared["alert_id"] == sos[0].alert_id
    assert cleared["detail"]["cleared_by"] == "config"
    again = agent.pipeline.observe(101.0, "rx-1", -60, 0xFFFF, encode_status(band_id=1001, counter=6, key=KEY,
                                                                              flags=FLAG_SOS))
    assert again == [] and agent.pipeline.counters()["unknown_band"] == 1


def test_unchanged_band_keeps_its_open_alert_and_replay_state(agent: Agent) -> None:
    _push(agent, "c1", _site([1001]), 1, {1001: KEY})
    raised = agent.pipeline.observe(100.0, "rx-1", -60, 0xFFFF, encode_status(band_id=1001, counter=5, key=KEY,
                                                                               flags=FLAG_SOS))
    assert raised
    assert _push(agent, "c2", _site([1001, 1002]), 2, {1001: KEY, 1002: KEY})["ok"]
    assert [a.alert_id for a in agent.pipeline.active_alerts()] == [raised[0].alert_id]
    # The old counter is still known: a replayed advert is not accepted after the handover.
    replay = agent.pipeline.observe(200.0, "rx-1", -60, 0xFFFF, encode_status(band_id=1001, counter=5, key=KEY))
    assert replay == [] and agent.pipeline.counters().get("replay") == 1


@pytest.mark.parametrize(("yaml_text", "version", "keys", "error"), [
    ("zones: 3", 5, {}, "cmd/config"),
    (_site([]).replace("id: s1", "id: s2"), 5, {}, "this node serves 's1'"),
    (_site([]), 1, {}, "older than the running version 2"),
    (_site([]), 5, {4242: KEY}, "not in the site's bands"),
])
def test_invalid_push_is_refused_and_the_last_good_one_keeps_running(
        agent: Agent, tmp_path: Path, yaml_text: str, version: int, keys: dict[int, bytes], error: str) -> None:
    assert _push(agent, "c1", _site([1001]), 2, {1001: KEY})["ok"]
    res = _push(agent, "bad", yaml_text, version, keys)
    assert not res["ok"] and error in str(res["error"]) and res["config_version"] == 2
    assert agent.config_version == 2 and agent.keys == {1001: KEY}
    saved = config_store.load(tmp_path / "data", "s1")
    assert saved is not None and saved[2] == 2 and saved[1] == {1001: KEY}


def test_bad_key_in_payload_is_a_schema_error(agent: Agent) -> None:
    body = {"cmd_id": "c1", "site_yaml": _site([1001]), "version": 1, "keys": {"1001": "zz"}}
    res = agent.handle_command(Command("config", json.dumps(body).encode()))
    assert not res.ok and "keys" in (res.error or "") and agent.config_version is None


def test_damaged_saved_config_is_ignored(agent: Agent, tmp_path: Path) -> None:
    _push(agent, "c1", _site([1001]), 3, {1001: KEY})
    assert config_store.load(tmp_path / "data", "s1") is not None
    assert config_store.load(tmp_path / "data", "other-site") is None
    site_file = next((tmp_path / "data" / "config").glob("site-*.yaml"))
    site_file.write_text(site_file.read_text() + "# edited by hand\n")
    assert config_store.load(tmp_path / "data", "s1") is None
