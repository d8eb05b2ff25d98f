"""`qwatch-edge plan` ranks a fence-line-only layout below a good one, and writes its heat map."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.plan import format_report, make_plan
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
    text = format_report(load_site_config(FENCE_SITE), fence)
    assert "add a receiver" in text and "<- weak" in text  # a weak edge says where the fix goes


def test_plan_cli_prints_report_and_png(tmp_path: Path) -> None:
    png = tmp_path / "plan.png"
    res = subprocess.run([sys.executable, "-m", "edge.cli", "plan", "--config", str(DEMO_SITE), "--out", str(png)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "expected localisation error" in res.stdout and "one more receiver" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_with_a_nodes_reported_receivers_names_them_and_predicts_with_them(tmp_path: Path) -> None:
    from edge.receiver_health import load_receivers
    from tests.edge.receiver_files import save_health

    site = load_site_config(DEMO_SITE)
    rx_ids = [r.id for r in site.receivers]
    tel = save_health(tmp_path, rx_ids, deaf="rx-a", low="rx-b", ts=1.7e9)
    health, _ = load_receivers(tel)
    assert health["rx-a"].state == "deaf" and health["rx-b"].state == "gain_off"
    sound = make_plan(site, seed=1, trials=6)
    bad = make_plan(site, seed=1, trials=6, health=health)
    # rx-a is block-a's only inside receiver: deaf, the escapes beyond block-a's fences go unheard by it.
    block_a = [(s.recall, b.recall) for s, b in zip(sound.edges, bad.edges, strict=True) if s.zone == "block-a"]
    assert sum(b for _s, b in block_a) < sum(s for s, _b in block_a) - 0.3
    from typer.testing import CliRunner

    from edge.cli import app

    res = CliRunner().invoke(app, ["plan", "--config", str(DEMO_SITE), "--receivers", str(tel)])
    assert res.exit_code == 0, res.output
    assert f"receivers as the node reported them: {len(rx_ids) - 2} of {len(rx_ids)} ok" in res.stdout
    assert "rx-a: stops hearing at -84 dBm" in res.stdout and "rx-b: reads" in res.stdout
    assert "with rx-a deaf" in res.stdout  # a weak edge says which receiver makes it weak
    assert "breach model as the node measured it: not measured yet" in res.stdout
    # The same node, its empirical null flagging the model as not fitting the site: plan says its false-alarm
    # figures assume otherwise.
    raw = json.loads(tel.read_text())
    raw["watchdogs"] = {"breach_null": {"scale": 1.33, "beta": 140.0, "samples": 900, "tail": 420, "above_cut": 310,
                                        "misfit": 1}}
    tel.write_text(json.dumps(raw))
    res = CliRunner().invoke(app, ["plan", "--config", str(DEMO_SITE), "--receivers", str(tel)])
    assert res.exit_code == 0, res.output
    assert "breach model as the node measured it: the path-loss model does not fit" in res.stdout
    assert "the false-alarm figures above assume the model fits" in res.stdout
    junk = tmp_path / "junk.json"
    junk.write_text('{"receivers": {}}')
    res = CliRunner().invoke(app, ["plan", "--config", str(DEMO_SITE), "--receivers", str(junk)])
    assert res.exit_code == 2 and "not a node telemetry message" in res.output
