"""`qwatch-edge` command line: config errors are one clear line and exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from protocols.cli_errors import parse_hostport
from protocols.errors import ConfigError
from protocols.site_config import write_band_keys

GOOD_SITE = "site: {id: s1}\nzones:\n  - {id: a, kind: permitted, polygon: [[0,0],[1,0],[1,1]]}\n"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    site, keys = tmp_path / "site.yaml", tmp_path / "keys.json"
    site.write_text(GOOD_SITE)
    write_band_keys(keys, {})  # 0600: the agent refuses a key file others can read
    return site, keys


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["run", *args])
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


def test_unknown_key_in_site_config_names_file_and_key(files: tuple[Path, Path], tmp_path: Path) -> None:
    site, keys = files
    site.write_text(GOOD_SITE + "rulez: {}\n")
    code, out = _run("--config", str(site), "--keys", str(keys), "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert str(site) in out and "rulez" in out and "unknown key" in out
    assert "Traceback" not in out


def test_bad_enum_lists_allowed_values(files: tuple[Path, Path], tmp_path: Path) -> None:
    site, keys = files
    site.write_text(GOOD_SITE.replace("permitted", "allowed"))
    code, out = _run("--config", str(site), "--keys", str(keys), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "zones[0].kind" in out and "permitted" in out and "restricted" in out


def test_bad_key_file_and_bad_broker(files: tuple[Path, Path], tmp_path: Path) -> None:
    site, keys = files
    keys.write_text('{"1001": "nothex"}')  # write_text keeps the file's 0600 mode
    code, out = _run("--config", str(site), "--keys", str(keys), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and str(keys) in out and "nothex" not in out  # never echo key material
    keys.write_text("{}")
    code, out = _run("--config", str(site), "--keys", str(keys), "--broker", "localhost", "--data-dir",
                     str(tmp_path / "d"))
    assert code == 2 and "--broker" in out and "HOST:PORT" in out


def test_missing_config_file(tmp_path: Path) -> None:
    code, out = _run("--config", str(tmp_path / "nope.yaml"), "--keys", str(tmp_path / "k.json"))
    assert code == 2 and "nope.yaml" in out and "cannot read" in out


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:1883") == ("127.0.0.1", 1883)
    assert parse_hostport("[::1]:8883") == ("::1", 8883)
    for bad in ("host", "host:0", "host:70000", ":1883", "host:abc"):
        with pytest.raises(ConfigError):
            parse_hostport(bad)


def test_help_lists_run() -> None:
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0 and "run" in res.output


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_group_or_world_readable_key_file_is_refused(files: tuple[Path, Path], tmp_path: Path, mode: int) -> None:
    site, keys = files
    keys.chmod(mode)
    # --duration: should the check regress, the agent must not run forever here.
    code, out = _run("--config", str(site), "--keys", str(keys), "--data-dir", str(tmp_path / "d"),
                     "--duration", "1", "--broker", "127.0.0.1:9")
    assert code == 2, out
    assert str(keys) in out and f"chmod 600 {keys}" in out and f"{mode:04o}" in out
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_run_passes_sim_start_ts_and_will_delay(files: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import edge.agent

    seen: list[edge.agent.AgentOptions] = []

    def fake_run_agent(opts: edge.agent.AgentOptions, hooks: object = None) -> int:
        seen.append(opts)
        return 0

    monkeypatch.setattr(edge.agent, "run_agent", fake_run_agent)
    site, keys = files
    code, out = _run("--config", str(site), "--keys", str(keys), "--data-dir", str(tmp_path / "d"),
                     "--sim-start-ts", "1627300000.5", "--will-delay", "7")
    assert code == 0, out
    assert seen[0].sim_start_ts == 1627300000.5 and seen[0].will_delay_s == 7
    code, _ = _run("--config", str(site), "--keys", str(keys), "--data-dir", str(tmp_path / "d"))
    assert code == 0 and seen[1].sim_start_ts is None and seen[1].will_delay_s == 5
