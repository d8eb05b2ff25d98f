"""Camera path through the agent: CameraWorker -> outbox -> real Mosquitto (events, camera_motion, health)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from devtools import video_synth as synth
from devtools.services import ServiceProcess
from protocols.site_config import write_band_keys
from tests.faults.edge_harness import BIN, Child, TopicRecorder, last_node_telemetry, wait_until

pytestmark = pytest.mark.integration


def test_camera_motion_reaches_the_broker_through_the_outbox(mosquitto: ServiceProcess, tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is required to render the synthetic clip (Debian package ffmpeg)")
    clip = tmp_path / "crossing.mp4"
    synth.encode(synth.SceneSpec(kind="crossing", seconds=12.0, width=320, height=180, fps=10, event_at=3.0), clip)
    site = tmp_path / "site.yaml"
    site.write_text(synth.site_yaml("cam-synth", str(clip), fps=5))
    keys = tmp_path / "keys.json"
    write_band_keys(keys, {})  # 0600: the agent refuses a key file others can read
    rec = TopicRecorder(mosquitto.address, client_id="rec-cam")
    agent = Child("edge", [str(BIN / "qwatch-edge"), "run", "--config", str(site), "--keys", str(keys), "--node",
                           "edge-cam", "--broker", mosquitto.address, "--data-dir", str(tmp_path / "data"),
                           "--node-telemetry-s", "1"], tmp_path / "edge.log").start()
    try:
        wait_until(lambda: any(json.loads(p)["kind"] == "motion_start" for _t, _tp, p in
                               rec.of("/camera/cam-synth/event")), 40, "a motion_start camera event")
        wait_until(lambda: any(json.loads(p)["type"] == "camera_motion" for _t, _tp, p in rec.of("/alert")), 20,
                   "a camera_motion alert")
        tel = last_node_telemetry(rec, "edge-cam")
        assert tel is not None and "cam-synth" in tel["cameras"] and "camera:cam-synth" in tel["watchdogs"]
        assert agent.alive(), agent.log_tail()
    finally:
        code = agent.stop()
        rec.close()
    assert code == 0, agent.log_tail()
