"""The edge agent with a credentials bundle: TLS + username/password to a real, secured Mosquitto.

End to end: `Agent` (alert storm, no sources) → TLS → Mosquitto (password file + ACL) → cloud
`Ingest` with its own bundle → SQLite alert store. Plus the bundle's validation, and the
errors a technician sees for a refused password or an untrusted broker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from cloud.alert_store import AlertStore
from cloud.ingest import Ingest, IngestConfig
from cloud.provision import Province
from devtools.services import require_binary
from devtools.storm import AlertStorm, storm_alert_id
from edge.agent import Agent, AgentHooks, AgentOptions
from edge.cli import app
from protocols.credentials import load_credentials, load_node_credentials, parse_credentials, write_credentials
from protocols.errors import ConfigError
from protocols.site_config import parse_site_config
from tests.cloud.provision_harness import SITE, SecureBroker, start_secure_broker
from tests.helpers import wait_for

SITE_YAML = f"site: {{id: {SITE}}}\nzones:\n  - {{id: a, kind: permitted, polygon: [[0,0],[10,0],[10,10]]}}\n"


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    sb = start_secure_broker(tmp_path, nodes=("edge-01",))
    try:
        yield sb
    finally:
        sb.stop()


def _storm(total: int, rate: float) -> AgentHooks:
    return AgentHooks(alert_source=lambda opts, site: AlertStorm(
        total=total, rate=rate, storm_id="storm", site=site.site.id, node=opts.node, data_dir=opts.data_dir))


def _agent(tmp_path: Path, sb: SecureBroker, bundle: Path, hooks: AgentHooks | None = None, **kw: object) -> Agent:
    base: dict[str, object] = dict(config=tmp_path / "site.yaml", keys=tmp_path / "none.json", node="edge-01",
                                   broker_host="127.0.0.1", broker_port=sb.broker.port,
                                   data_dir=tmp_path / "edge-data", credentials=bundle, keepalive_s=5,
                                   reconnect_max_s=1.0, node_telemetry_s=0.5)
    base.update(kw)
    return Agent(AgentOptions(**base), parse_site_config(SITE_YAML), {}, hooks)  # type: ignore[arg-type]


def _run(agent: Agent) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    agent.start()
    t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def _finish(agent: Agent, stop: threading.Event, t: threading.Thread) -> None:
    stop.set()
    t.join(5)
    agent.stop()


@pytest.mark.integration
def test_agent_alerts_reach_the_cloud_ingest_over_tls(secure: SecureBroker, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = AlertStore(tmp_path / "cloud.db")
    ingest = Ingest(IngestConfig(host="127.0.0.1", port=secure.broker.port, client_id="ingest-tls",
                                 credentials=secure.creds("cloud")), store, None)
    ingest.start()
    agent = _agent(tmp_path, secure, secure.bundles["edge-01"], hooks=_storm(40, 400.0))
    stop, t = _run(agent)
    try:
        wait_for(lambda: len(store.events(node="edge-01")) >= 40, 20, what="40 alert events in the cloud store")
        stored = {(e["alert_id"], e["state"]) for e in store.events(node="edge-01")}
        want = {(storm_alert_id("storm", "edge-01", i // 2), "raised" if i % 2 == 0 else "cleared")
                for i in range(40)}
        assert stored == want
        # The birth (retained status, over the same TLS link) registered this boot at the cloud.
        rec = wait_for(lambda: ingest.liveness.records.get((SITE, "edge-01")), 5, what="node birth at the ingest")
        assert rec is not None and rec.boot_id == agent.boot_id
        assert agent.link.counters["connect_refused"] == 0 and agent.link.counters["connects"] >= 1
    finally:
        _finish(agent, stop, t)
        ingest.stop()
        store.close()
    secrets = [secure.creds(n).password.get_secret_value() for n in ("edge-01", "cloud")]
    assert not any(s in caplog.text for s in secrets), "a password reached the log"
    assert "tls=True user=kg-01/edge-01" in caplog.text


@pytest.mark.integration
def test_refused_password_and_untrusted_broker_are_explained(secure: SecureBroker, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    good = load_credentials(secure.bundles["edge-01"])
    wrong = tmp_path / "wrong.json"
    write_credentials(wrong, good.model_copy(update={"password": SecretStr("y" * 43)}))
    agent = _agent(tmp_path / "a", secure, wrong)
    agent.link.start()
    try:
        wait_for(lambda: agent.link.counters["connect_refused"] >= 1, 10, what="CONNACK refusal")
        assert not agent.link.connected
        assert "rotated or the node was revoked" in caplog.text and "--rotate" in caplog.text
    finally:
        agent.link.stop(drain_s=0)
        agent.outbox.close()
    # A bundle from another province: the TLS check fails, and the log says why.
    other = Province(tmp_path / "other")
    other.init("other", ["127.0.0.1"])
    foreign_bundle = other.provision_node(SITE, "edge-01")
    agent = _agent(tmp_path / "b", secure, foreign_bundle)
    agent.link.start()
    try:
        wait_for(lambda: agent.link.last_connect_error, 10, what="diagnosed connect failure")
        assert "not trusted" in str(agent.link.last_connect_error)
        assert agent.link.counters["connects"] == 0
    finally:
        agent.link.stop(drain_s=0)
        agent.outbox.close()


def _bundle_text(tmp_path: Path) -> dict[str, object]:
    require_binary("mosquitto_passwd")
    prov = Province(tmp_path / "p")
    prov.init("kg", ["127.0.0.1"])
    return dict(json.loads(prov.provision_node(SITE, "edge-01").read_text()))


def test_bundle_validation_names_file_key_and_allowed(tmp_path: Path) -> None:
    data = _bundle_text(tmp_path)
    ok = parse_credentials(json.dumps(data), "b.json")
    password = str(data["password"])
    assert password not in repr(ok) and password not in str(ok)
    cases = [
        ({**data, "passwd": "x"}, "passwd", "allowed keys: schema, role, site"),
        ({**data, "broker_port": 0}, "broker_port", "greater than or equal to 1"),
        ({**data, "role": "admin"}, "role", "'node' or 'cloud'"),
        ({**data, "ca_pem": "junk"}, "ca_pem", "not a PEM certificate"),
        ({**data, "username": "kg-01/edge-02"}, "", "username must be 'kg-01/edge-01'"),
        ({**data, "schema": "x/1"}, "schema", "qwatch.mqtt-credentials/1"),
    ]
    for bad, key, allowed in cases:
        with pytest.raises(ConfigError) as err:
            parse_credentials(json.dumps(bad), "b.json")
        assert err.value.file == "b.json" and (not key or err.value.key == key) and allowed in str(err.value), err
        assert password not in str(err.value)


def test_bundle_file_mode_and_node_match_are_checked(tmp_path: Path) -> None:
    data = _bundle_text(tmp_path)
    path = tmp_path / "mqtt.json"
    path.write_text(json.dumps(data))
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=f"must be 0600 \\(fix: chmod 600 {path}\\)"):
        load_credentials(path)
    os.chmod(path, 0o600)
    assert load_node_credentials(path, site=SITE, node="edge-01").username == "kg-01/edge-01"
    with pytest.raises(ConfigError) as err:
        load_node_credentials(path, site=SITE, node="edge-09")
    assert err.value.key == "node" and "--node is 'edge-09'" in str(err.value)


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    """`run` installs SIGTERM/SIGINT handlers before it builds the agent: put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("keep_signal_handlers")
def test_edge_cli_rejects_a_bundle_for_another_node(tmp_path: Path) -> None:
    data = _bundle_text(tmp_path)
    bundle = tmp_path / "mqtt.json"
    write_credentials(bundle, parse_credentials(json.dumps(data)))
    (tmp_path / "site.yaml").write_text(SITE_YAML)
    res = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "site.yaml"), "--keys", str(tmp_path / "k.json"),
                                   "--node", "edge-02", "--credentials", str(bundle),
                                   "--data-dir", str(tmp_path / "d"), "--duration", "0.1"], obj=_storm(1, 50.0))
    assert res.exit_code == 2, res.output
    assert f"{bundle}: node: the bundle is for node 'edge-01'" in res.output
    os.chmod(bundle, 0o640)
    res = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "site.yaml"), "--keys", str(tmp_path / "k.json"),
                                   "--credentials", str(bundle), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 2 and "chmod 600" in res.output, res.output
