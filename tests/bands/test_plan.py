"""`qwatch-edge plan` ranks a fence-line-only layout below a good one, and writes its heat map."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.plan import make_plan
from protocols.site_config import load_site_config

from .conftest import DEMO_SITE, FENCE_SITE


def test_plan_ranks_fence_line_only_layout_below_good_one() -> None:
    good = make_plan(load_site_config(DEMO_SITE), seed=1, trials=6)
    fence = make_plan(load_site_config(FENCE_SITE), seed=1, trials=6)
    assert good.score > fence.score
    # With the breach detector itself in the loop, the fence-line layout's failure is the false alarms
    # of people standing at a fence (its receivers cannot tell the two sides apart), not recall.
    assert good.false_per_100h < 0.5 < fence.false_per_100h
    assert max(e.false_rate for e in fence.edges) > 100 * max(e.false_rate for e in good.edges)
    assert good.recall > 0.8


def test_plan_cli_prints_report_and_png(tmp_path: Path) -> None:
    png = tmp_path / "plan.png"
    res = subprocess.run([sys.executable, "-m", "edge.cli", "plan", "--config", str(DEMO_SITE), "--out", str(png)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "expected localisation error" in res.stdout and "one more receiver" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
