"""`make demo`, headless: the demo entry point runs ~20 s and a geofence_breach reaches the cloud."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.services import require_binary
from protocols.site_config import load_site_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_headless_and_a_breach_reaches_the_cloud(tmp_path: Path) -> None:
    require_binary("mosquitto")
    require_binary("victoria-metrics")
    workdir = tmp_path / "demo"
    res = subprocess.run(
        # Already outside at the start: the window test's start-up threshold (receiver floors and
        # calibration are still being learned) makes that breach come ~30 s in, not ~20.
        [sys.executable, "-m", "devtools.demo", "--duration", "45", "--escape-at=-20",
         "--require-alert", "geofence_breach", "--workdir", str(workdir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out + (workdir / "edge.log").read_text(errors="replace")[-3000:]
    assert "dashboard: http://127.0.0.1:" in out
    assert "geofence_breach" in out  # printed in the terminal as it arrived
    assert "no child process left running" in out
    # The agent refuses a key file others can read, and git does not keep 0600: the demo runs
    # from a private copy. The cloud took the site's escalation time from the demo site config.
    assert (workdir / "keys.json").stat().st_mode & 0o777 == 0o600
    site = load_site_config(REPO / "config" / "examples" / "demo-site.yaml")
    want = f"event=escalation site={site.site.id} after_s={site.rules.escalate_after_s:g}"
    assert want in (workdir / "cloud.log").read_text(errors="replace")
    con = sqlite3.connect(workdir / "cloud" / "qwatch.db")
    n = con.execute("SELECT COUNT(*) FROM alerts WHERE type = 'geofence_breach'").fetchone()[0]
    con.close()
    assert n >= 1
