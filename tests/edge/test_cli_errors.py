"""Every `qwatch-edge` and `qwatch-cloud` command, given bad arguments, exits 2 with one or two
lines (what is wrong, where to read more) and never a traceback (docs/technician.md "Exit codes")."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer

from cloud.cli import app as cloud_app
from cloud.cli import main as cloud_main
from devtools.services import ServiceProcess, free_port
from edge.cli import app as edge_app
from edge.cli import main as edge_main
from tests.cloud.provision_harness import SecureBroker, start_secure_broker

GOOD_SITE = "site: {id: s1}\nzones:\n  - {id: a, kind: permitted, polygon: [[0,0],[1,0],[1,1]]}\n"


def _paths(group: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    commands = getattr(group, "commands", None)
    if commands:
        for name, cmd in sorted(commands.items()):
            yield from _paths(cmd, (*prefix, name))
    else:
        yield prefix


EDGE = sorted(_paths(typer.main.get_command(edge_app)))
CLOUD = sorted(_paths(typer.main.get_command(cloud_app)))


def _main(main: Callable[[], None], argv: list[str], capsys: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    code = exc.value.code
    return code if isinstance(code, int) else 1, out.err


def _assert_short_usage_error(code: int, err: str, what: object) -> None:
    assert code == 2, (what, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 2, (what, err)
    assert "error" in lines[0] and "--help" in lines[-1], err


def test_every_command_is_covered() -> None:
    names = {" ".join(p) for p in EDGE + CLOUD}
    assert {"run", "doctor", "enrol", "replay", "install", "uninstall"} <= names
    assert {"serve", "ingest", "provision-node", "band retire", "config push"} <= names


@pytest.mark.parametrize("path", EDGE, ids=lambda p: " ".join(p))
def test_edge_bad_arguments(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _main(edge_main, [*path, "--no-such-option", "1"], capsys, monkeypatch)
    _assert_short_usage_error(code, err, path)
    assert "--no-such-option" in err


@pytest.mark.parametrize("path", CLOUD, ids=lambda p: " ".join(p))
def test_cloud_bad_arguments(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _main(cloud_main, [*path, "--no-such-option", "1"], capsys, monkeypatch)
    _assert_short_usage_error(code, err, path)


@pytest.mark.parametrize("argv", [
    ["run", "--config", "S", "--keys", "K", "--node", "kg/edge-01"],
    ["run", "--config", "S", "--keys", "K", "--node", "edge 01"],
    ["run", "--config", "S", "--keys", "K", "--keepalive", "soon"],
    ["doctor", "--node", "a+b"],
    ["doctor", "--timeout", "0"],
    ["replay", "--config", "S", "--keys", "K", "--node", "#", "obs.jsonl"],
    ["enrol", "--dock", "/dev/null", "--band", "0", "--keys", "k.json"],
    ["run"],
])
def test_edge_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _main(edge_main, argv, capsys, monkeypatch)
    _assert_short_usage_error(code, err, argv)


@pytest.mark.parametrize("argv", [
    ["serve", "--mqtt", "localhost:99999", "--db", "x.db"],
    ["provision-node", "--dir", "d", "--site", "s"],
    ["band", "retire", "notanumber"],
    ["config", "push", "--site", "a/b"],
])
def test_cloud_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _main(cloud_main, argv, capsys, monkeypatch)
    _assert_short_usage_error(code, err, argv)


def test_missing_files_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    code, err = _main(edge_main, ["run", "--config", str(tmp_path / "nope.yaml"), "--keys", "k"], capsys,
                      monkeypatch)
    assert code == 2 and "nope.yaml" in err and len(err.strip().splitlines()) <= 2 and "Traceback" not in err


def test_replay_of_only_bad_lines_fails(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    site, keys, obs = tmp_path / "s.yaml", tmp_path / "k.json", tmp_path / "obs.jsonl"
    site.write_text(GOOD_SITE)
    keys.write_text("{}")
    obs.write_text("not json\n{\"ts\": 1}\n")
    code, err = _main(edge_main, ["replay", "--config", str(site), "--keys", str(keys), str(obs)], capsys,
                      monkeypatch)
    assert code == 2 and "none of its 2 lines" in err and "Traceback" not in err


# ---------------------------------------------------------------------- the agent and a broker it cannot use
@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    sb = start_secure_broker(tmp_path_factory.mktemp("prov"), nodes=("edge-01",))
    yield sb
    sb.stop()


def _run_agent(tmp_path: Path, broker: str, *extra: str) -> tuple[int, str]:
    site, keys = tmp_path / "s.yaml", tmp_path / "k.json"
    site.write_text(GOOD_SITE)
    keys.write_text("{}")
    keys.chmod(0o600)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(site), "--keys", str(keys),
                           "--node", "edge-01", "--broker", broker, "--data-dir", str(tmp_path / "d"),
                           "--duration", "3", "--no-cameras", *extra],
                          capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 60
    return proc.returncode, proc.stderr


def test_agent_wrong_port_no_tls_logs_reason_and_exits_3(tmp_path: Path) -> None:
    code, err = _run_agent(tmp_path, f"127.0.0.1:{free_port()}")
    assert code == 3, err
    assert "event=mqtt_connect_failed" in err and "cannot reach" in err
    assert "never connected to the broker" in err and "Traceback" not in err


def test_agent_plain_mqtt_to_a_tls_listener(tmp_path: Path, province: SecureBroker) -> None:
    b: ServiceProcess = province.broker
    code, err = _run_agent(tmp_path, f"{b.host}:{b.port}")
    assert code == 3, err
    assert "event=mqtt_connect_failed" in err and "needs --credentials" in err, err


def test_agent_refused_names_the_fix(tmp_path: Path, province: SecureBroker) -> None:
    from protocols.credentials import write_credentials

    creds = province.creds("edge-01")
    bundle = tmp_path / "mqtt.json"
    write_credentials(bundle, creds.model_copy(update={"site": "s1", "username": "s1/edge-01"}))
    b = province.broker
    code, err = _run_agent(tmp_path, f"{b.host}:{b.port}", "--credentials", str(bundle))
    assert code == 3, err
    assert "event=mqtt_connect_refused" in err and "provision-node --rotate" in err, err
