"""Agent core without a broker: commands, storm determinism/resume, node telemetry, alert path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from devtools.storm import AlertStorm, storm_alert_id, storm_message
from edge.agent import Agent, AgentOptions, build_node_telemetry
from edge.mqtt_link import Command
from protocols.payloads import Alert, NodeTelemetry
from protocols.site_config import parse_site_config
from protocols.ulid import is_ulid

SITE = "site: {id: s1}\nzones:\n  - {id: a, kind: permitted, polygon: [[0,0],[10,0],[10,10]]}\n"


def _opts(tmp_path: Path, **kw: object) -> AgentOptions:
    base: dict[str, object] = dict(config=tmp_path / "site.yaml", keys=tmp_path / "k.json", node="n1",
                                   broker_host="127.0.0.1", broker_port=1, data_dir=tmp_path / "data")
    base.update(kw)
    return AgentOptions(**base)  # type: ignore[arg-type]


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(_opts(tmp_path), parse_site_config(SITE), {})


def test_storm_ids_are_deterministic_valid_and_ordered() -> None:
    ids = [storm_alert_id("s", "n1", k) for k in range(50)]
    assert all(is_ulid(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert ids[3] == storm_alert_id("s", "n1", 3) != storm_alert_id("s", "n2", 3)
    raised, cleared = storm_message("s1", "n1", "s", 6, 1.0), storm_message("s1", "n1", "s", 7, 2.0)
    assert raised.alert_id == cleared.alert_id and (raised.state, cleared.state) == ("raised", "cleared")


def test_storm_resumes_after_restart_from_progress_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    def storm() -> AlertStorm:
        return AlertStorm(total=10, rate=1000.0, storm_id="storm", site="s1", node="n1", data_dir=tmp_path / "data")

    st = storm()
    for i in (0, 1, 2):
        st.committed(i)
    again = storm()
    assert again.next_i == 3
    assert again.due(again._t0 + 100)[0] == 3 and again.due(again._t0 + 100)[-1] == 9


def test_alert_is_committed_to_outbox_even_when_broker_is_unreachable(agent: Agent) -> None:
    alert = storm_message("s1", "n1", "s", 0, 1.0)
    agent.emit_alert(alert)
    rows = agent.outbox.pending_after(0, 10)
    assert len(rows) == 1 and rows[0].durable
    assert Alert.model_validate_json(rows[0].payload) == alert
    assert rows[0].topic == "qwatch/v1/s1/n1/alert"


def test_commands_never_raise_and_always_answer(agent: Agent) -> None:
    r = agent.handle_command(Command("reboot", b"{}"))
    assert not r.ok and "allowed" in (r.error or "") and "ack" in (r.error or "")
    r = agent.handle_command(Command("ack", b"not json"))
    assert not r.ok
    ok = agent.handle_command(Command("ack", json.dumps(
        {"cmd_id": "c1", "alert_id": storm_alert_id("s", "n1", 0), "by": "guard-7"}).encode()))
    assert ok.ok and ok.cmd_id == "c1"
    snap = agent.handle_command(Command("snapshot", b'{"cmd_id": "c2", "camera": "cam-x"}'))
    assert not snap.ok and "cam-x" in (snap.error or "")


def test_config_command_validates_site_and_applies(agent: Agent, tmp_path: Path) -> None:
    bad = agent.handle_command(Command("config", json.dumps({"cmd_id": "c3", "site_yaml": "zones: 3"}).encode()))
    assert not bad.ok and "cmd/config" in (bad.error or "")
    other = SITE.replace("id: s1", "id: s2")
    wrong = agent.handle_command(Command("config", json.dumps({"cmd_id": "c4", "site_yaml": other}).encode()))
    assert not wrong.ok and "s2" in (wrong.error or "")
    good = agent.handle_command(Command("config", json.dumps({"cmd_id": "c5", "site_yaml": SITE}).encode()))
    assert good.ok
    from edge import config_store

    saved = config_store.load(tmp_path / "data", "s1")
    assert saved is not None and saved[0] == parse_site_config(SITE)


def test_node_telemetry_is_a_valid_contract_message(agent: Agent) -> None:
    agent.emit_alert(storm_message("s1", "n1", "s", 0, 1.0))
    tel = build_node_telemetry(agent, 123.0)
    again = NodeTelemetry.model_validate_json(tel.model_dump_json(by_alias=True))
    assert again.outbox_depth == 1
    assert {"mqtt", "outbox", "agent"} <= set(again.watchdogs)
    assert again.watchdogs["outbox"]["depth"] == 1
    assert again.mem_rss_mb > 0


def test_sim_start_ts_reaches_the_sim_source(tmp_path: Path) -> None:
    """`--sim-start-ts` puts the sim receivers in a given simulated world (shared with a serial sim)."""
    site = parse_site_config(SITE + "receivers:\n  - {id: rx-s, position: [5, 5], source: sim}\n")
    for start_ts in (1_627_300_000.0, None):
        agent = Agent(_opts(tmp_path, sim_start_ts=start_ts), site, {})
        agent._start_sources()
        try:
            [src] = agent.sources
            sim = src.simulator
            assert sim is not None
            if start_ts is None:
                assert abs(sim.start_ts - time.time()) < 60  # default: now
            else:
                assert sim.start_ts == start_ts
        finally:
            for s in agent.sources:
                s.stop()
            agent.outbox.close()


def test_node_telemetry_is_saved_for_doctor_and_plan_at_most_once_a_minute(agent: Agent, tmp_path: Path) -> None:
    from edge.agent_telemetry import NODE_TELEMETRY_FILE

    path = tmp_path / "data" / NODE_TELEMETRY_FILE
    agent._node_telemetry(1000.0)
    first = NodeTelemetry.model_validate_json(path.read_bytes())
    assert first.ts == 1000.0 and first.schema_ == "qwatch.node/1"
    agent._node_telemetry(1030.0)  # not due: an SD card is not written every few seconds
    assert NodeTelemetry.model_validate_json(path.read_bytes()).ts == 1000.0
    agent._node_telemetry(1061.0)
    assert NodeTelemetry.model_validate_json(path.read_bytes()).ts == 1061.0
    assert not path.with_suffix(".tmp").exists()


def test_the_band_pipeline_ticks_once_per_whole_second_at_the_first_agent_tick_in_it(agent: Agent) -> None:
    # Its rules and window test run on a 1 Hz clock, as in replay; the agent itself ticks every tick_s (0.2 s).
    class Pipeline:
        verifier = None

        def __init__(self) -> None:
            self.ticks: list[float] = []

        def tick(self, now: float) -> list[Alert]:
            self.ticks.append(now)
            return []

    pipe = Pipeline()
    agent.pipeline = pipe
    for now in (1000.0, 1000.2, 1000.4, 1000.8, 1001.05, 1001.25, 1002.9, 1003.0, 1003.2):
        agent._tick(now)
    assert pipe.ticks == [1000.0, 1001.05, 1002.9, 1003.0]
    assert agent.tick_times.summary()["tick_n"] == 4
    agent.outbox.close()


def test_observations_beyond_the_queue_bound_are_dropped_and_counted(agent: Agent,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from edge import agent as agent_module
    from protocols.observation import RawObservation

    monkeypatch.setattr(agent_module, "OBS_QUEUE_MAX", 3)
    for i in range(5):
        agent._sink(RawObservation(float(i), "rx-1", -60, 0xFFFF, b""))
    assert agent.obs.qsize() == 3 and agent.counters["obs_dropped"] == 2
    assert agent.obs.get_nowait().ts == 0.0
    agent.outbox.close()
