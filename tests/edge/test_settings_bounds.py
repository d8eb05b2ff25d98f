"""Runtime settings check their ranges (protocols.bounds), and CLI options share those ranges."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cloud.ingest import INGEST_BOUNDS, IngestConfig
from edge.agent import AGENT_BOUNDS, AgentOptions
from edge.bands.rules import RuleParams
from edge.camera.capture import CaptureOptions
from edge.camera.motion import DetectorSpec, ZoneSpec
from edge.cli import app
from edge.mqtt_link import LinkConfig
from protocols.bounds import Range, SettingError
from protocols.site_config import Detect, Rules


def _opts(tmp_path: Path, **kw: object) -> AgentOptions:
    base: dict[str, object] = dict(config=tmp_path / "s.yaml", keys=tmp_path / "k.json", node="n1",
                                   broker_host="127.0.0.1", broker_port=1883, data_dir=tmp_path)
    base.update(kw)
    return AgentOptions(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("make", "where"), [
    (lambda: RuleParams(missing_after_s=1.0), "RuleParams: missing_after_s: 1.0 is out of range; allowed: 5..86400"),
    (lambda: RuleParams(evidence_weight=math.nan), "RuleParams: evidence_weight: must be a finite number"),
    (lambda: DetectorSpec(320, 180, 0.0), "DetectorSpec: fps: 0.0 is out of range; allowed: > 0 and ≤ 30"),
    (lambda: ZoneSpec("z", ((0, 0), (1, 0), (1, 1)), min_area=2.0), "ZoneSpec: min_area"),
    (lambda: CaptureOptions(stall_s=-1.0), "CaptureOptions: stall_s"),
    (lambda: LinkConfig("h", 1883, reconnect_min_s=5.0, reconnect_max_s=1.0), "LinkConfig: reconnect_max_s"),
    (lambda: LinkConfig("h", 0), "LinkConfig: port: 0 is out of range; allowed: 1..65535"),
    (lambda: IngestConfig("h", 1883, escalate_per_site={"s1": math.inf}), "IngestConfig: escalate_per_site[s1]"),
    (lambda: IngestConfig("h", 1883, receive_maximum=70_000), "IngestConfig: receive_maximum"),
])
def test_out_of_range_settings_are_refused_by_name(make: object, where: str) -> None:
    with pytest.raises(SettingError) as err:
        make()  # type: ignore[operator]
    assert where in str(err.value)
    assert isinstance(err.value, ValueError)


def test_defaults_and_site_config_bounds_agree(tmp_path: Path) -> None:
    RuleParams(), DetectorSpec(320, 180, 5.0), CaptureOptions(), LinkConfig("h", 1883), IngestConfig("h", 1883)
    _opts(tmp_path)
    # The settings that also live in the site config take its bounds.
    for name in ("breach_dwell_s", "missing_after_s", "fever_c", "low_battery_pct", "no_motion_s"):
        field = Rules.model_fields[name]
        lo = next(m.ge for m in field.metadata if hasattr(m, "ge"))
        hi = next(m.le for m in field.metadata if hasattr(m, "le"))
        with pytest.raises(SettingError):
            RuleParams(**{name: lo - 1})
        with pytest.raises(SettingError):
            RuleParams(**{name: hi + 1})
    assert Detect.model_fields["fps"].metadata
    with pytest.raises(SettingError):
        DetectorSpec(4000, 180, 5.0)


def _range_of(param: Any) -> Range:
    # Typer vendors its own Click; its options carry the bounds as `min` and `max`.
    assert param.min is not None or param.max is not None, f"{param.name} has no range"
    return Range(ge=param.min, le=param.max)


@pytest.mark.parametrize(("option", "field"), [
    ("keepalive", "keepalive_s"), ("will_delay", "will_delay_s"), ("reconnect_max", "reconnect_max_s"),
    ("max_inflight", "max_inflight"), ("telemetry_buffer", "telemetry_buffer"), ("duration", "duration_s"),
    ("node_telemetry_s", "node_telemetry_s"), ("sim_seed", "sim_seed"), ("sim_start_ts", "sim_start_ts"),
])
def test_run_options_have_the_agent_options_bounds(option: str, field: str) -> None:
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    param = next(p for p in run.params if p.name == option)
    assert _range_of(param) == AGENT_BOUNDS[field]


def test_cloud_options_have_the_ingest_bounds() -> None:
    from cloud.cli import app as cloud_app

    serve = typer.main.get_command(cloud_app).commands["serve"]  # type: ignore[attr-defined]
    got = {p.name: _range_of(p) for p in serve.params if p.name in ("silence_s", "escalate_after_s")}
    assert got == {k: INGEST_BOUNDS[k] for k in got} and len(got) == 2


@pytest.mark.parametrize("args", [["--keepalive", "0"], ["--node-telemetry-s", "nan"], ["--reconnect-max", "0.1"]])
def test_run_refuses_out_of_range_options_without_a_traceback(tmp_path: Path, args: list[str]) -> None:
    res = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "s.yaml"), "--keys", str(tmp_path / "k.json"),
                                   "--data-dir", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
