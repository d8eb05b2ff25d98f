"""`qwatch-edge install` / `uninstall` into a temporary root, checked by the real `systemd-analyze
verify` and `systemctl --root` (no container, nothing outside the temporary directory is touched)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from devtools.services import require_binary
from edge.cli import app
from edge.install import Layout, render_unit

REPO = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("qwatch-edge"))


def _files(tmp_path: Path) -> list[str]:
    site, keys, creds = tmp_path / "in-site.yaml", tmp_path / "in-keys.json", tmp_path / "in-mqtt.json"
    site.write_text("site: {id: s1}\n")
    keys.write_text("{}")
    creds.write_text("{}")
    return ["--site-config", str(site), "--keys", str(keys), "--credentials", str(creds)]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    res = CliRunner().invoke(app, ["install", "--node", "edge-01", "--root", str(root), "--dry-run", "--exe", EXE,
                                   *_files(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "would write unit" in res.output and "would copy" in res.output and "useradd --system" in res.output
    assert list(root.iterdir()) == []


def test_install_verify_uninstall(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    require_binary("systemctl")
    root = tmp_path / "root"
    root.mkdir()
    res = CliRunner().invoke(app, ["install", "--node", "edge-07", "--root", str(root), "--exe", EXE,
                                   *_files(tmp_path)])
    assert res.exit_code == 0, res.output
    unit = root / "etc/systemd/system/qwatch-edge.service"
    text = unit.read_text()
    assert f"ExecStart={EXE} run" in text and "QWATCH_NODE=edge-07" in text and "--data-dir /var/lib/qwatch" in text
    assert _mode(root / "etc/qwatch") == 0o750 and _mode(root / "var/lib/qwatch") == 0o750
    assert _mode(root / "etc/qwatch/keys.json") == 0o600 and _mode(root / "etc/qwatch/mqtt.json") == 0o600
    wants = root / "etc/systemd/system/multi-user.target.wants/qwatch-edge.service"
    assert wants.is_symlink()
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The check is real: a unit whose program does not exist fails it.
    broken = tmp_path / "broken" / "qwatch-edge.service"
    broken.parent.mkdir()
    broken.write_text(text.replace(EXE, "/nonexistent/qwatch-edge"))
    bad = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "not executable" in bad.stdout + bad.stderr

    res = CliRunner().invoke(app, ["uninstall", "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert not unit.exists() and not wants.exists()
    assert (root / "etc/qwatch/keys.json").exists()  # kept without --purge
    res = CliRunner().invoke(app, ["uninstall", "--root", str(root), "--purge"])
    assert res.exit_code == 0, res.output
    assert not (root / "etc/qwatch").exists() and not (root / "var/lib/qwatch").exists()


def test_install_refuses_a_missing_file(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["install", "--node", "edge-01", "--root", str(tmp_path), "--keys",
                                   str(tmp_path / "nope.json")])
    assert res.exit_code == 2 and "nope.json" in res.output


def test_shipped_unit_is_the_rendered_default() -> None:
    shipped = (REPO / "config/systemd/qwatch-edge.service").read_text()
    assert shipped == render_unit(Layout(node="edge-01")), "regenerate config/systemd/qwatch-edge.service"
