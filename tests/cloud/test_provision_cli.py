"""The technician's commands: `qwatch-cloud pki init`, `provision-node`, `list-nodes`, `revoke-node`."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from cloud.cli import app
from devtools.services import require_binary
from protocols.credentials import load_credentials


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))
    return res.exit_code, res.output


def test_technician_workflow(tmp_path: Path) -> None:
    require_binary("mosquitto_passwd")
    d = str(tmp_path / "prov")
    code, out = _cli("pki", "init", "--dir", d, "--province", "kiengiang", "--broker-host", "mqtt.kg.example",
                     "--broker-host", "10.20.0.5")
    assert code == 0, out
    assert "created CA" in out and "cloud ingest credentials" in out
    code, out = _cli("provision-node", "--dir", d, "--site", "kg-01", "--node", "edge-07")
    assert code == 0, out
    bundle = tmp_path / "prov" / "bundles" / "kg-01" / "edge-07.json"
    assert str(bundle) in out.replace("\n", "") and stat.S_IMODE(bundle.stat().st_mode) == 0o600
    creds = load_credentials(bundle)
    assert creds.password.get_secret_value() not in out
    assert (creds.broker_host, creds.broker_port, creds.username) == ("mqtt.kg.example", 8883, "kg-01/edge-07")
    code, out = _cli("provision-node", "--dir", d, "--site", "kg-01", "--node", "edge-07")
    assert code == 1 and "already provisioned" in out and "--rotate" in out, out
    code, out = _cli("provision-node", "--dir", d, "--site", "kg-01", "--node", "edge-07", "--rotate")
    assert code == 0 and "rotated" in out, out
    assert load_credentials(bundle).password != creds.password
    code, out = _cli("list-nodes", "--dir", d)
    assert code == 0, out
    assert "kg-01/edge-07" in out and "qwatch-cloud" in out and "MISSING" not in out
    code, out = _cli("revoke-node", "--dir", d, "--site", "kg-01", "--node", "edge-07")
    assert code == 0 and "reload" in out, out
    code, out = _cli("list-nodes", "--dir", d)
    assert "edge-07" not in out
    code, out = _cli("pki", "init", "--dir", d, "--province", "kiengiang", "--broker-host", "mqtt.kg.example")
    assert code == 1 and "--reissue" in out, out


def test_errors_tell_the_technician_what_to_do(tmp_path: Path) -> None:
    require_binary("mosquitto_passwd")
    code, out = _cli("provision-node", "--dir", str(tmp_path / "nowhere"), "--site", "kg-01", "--node", "e1")
    assert code == 1 and "qwatch-cloud pki init --dir" in out, out
    code, out = _cli("pki", "init", "--dir", str(tmp_path / "p"), "--province", "kg", "--broker-host", "bad_host")
    assert code == 1 and "neither an IP address nor a DNS host name" in out, out
    d = str(tmp_path / "p2")
    assert _cli("pki", "init", "--dir", d, "--province", "kg", "--broker-host", "127.0.0.1")[0] == 0
    code, out = _cli("provision-node", "--dir", d, "--site", "kg 01", "--node", "e1")
    assert code == 1 and "--site 'kg 01' must match" in out, out
    # The cloud refuses a node's bundle: it would connect as that node, confined to its prefix.
    assert _cli("provision-node", "--dir", d, "--site", "kg-01", "--node", "e1")[0] == 0
    node_bundle = Path(d) / "bundles" / "kg-01" / "e1.json"
    code, out = _cli("ingest", "--db", str(tmp_path / "x.db"), "--credentials", str(node_bundle))
    assert code == 2 and "role: is 'node'" in out, out


def test_systemd_units_only_use_flags_the_clis_have() -> None:
    import shlex

    import typer

    from edge.cli import app as edge_app

    apps = {"qwatch-edge": edge_app, "qwatch-cloud": app}
    units = sorted((Path(__file__).resolve().parents[2] / "config" / "systemd").glob("*.service"))
    assert units
    for unit in units:
        text = unit.read_text().replace("\\\n", " ")
        [exec_line] = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
        argv = shlex.split(exec_line.removeprefix("ExecStart="))
        group = typer.main.get_command(apps[Path(argv[0]).name])
        command = group.commands[argv[1]]  # type: ignore[attr-defined]
        known = {o for p in command.params for o in p.opts}
        used = {a for a in argv[2:] if a.startswith("--")}
        assert used <= known, f"{unit.name}: unknown flags {used - known}"
        if argv[1] in ("run", "serve"):
            assert "--credentials" in used, f"{unit.name}: production must use TLS + credentials"
