"""Camera test fixtures: generated H.264 clips with ground truth, and the real RTSP server.

ffmpeg and the GStreamer RTSP server are real dependencies here: when missing, tests FAIL
under CI=true and skip otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools import video_synth as synth
from tests.camera.rtsp_server import RtspServer, gst_rtsp_available

ClipFactory = Callable[..., tuple[Path, synth.GroundTruth]]


def _missing(what: str) -> None:
    msg = f"camera tests need {what} (Debian packages)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg + " — CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def ffmpeg_required() -> None:
    """ffmpeg (libx264) makes the test clips."""
    if shutil.which("ffmpeg") is None:
        _missing("ffmpeg")


@pytest.fixture(scope="session")
def rtsp_required(ffmpeg_required: None) -> None:
    """The GStreamer RTSP server under the system python."""
    missing = gst_rtsp_available()
    if missing:
        _missing(missing)


@pytest.fixture(scope="session")
def make_clip(ffmpeg_required: None, tmp_path_factory: pytest.TempPathFactory) -> ClipFactory:
    """Render (once per session and spec) a scene to H.264; returns (path, ground truth)."""
    root = tmp_path_factory.mktemp("clips")
    cache: dict[synth.SceneSpec, tuple[Path, synth.GroundTruth]] = {}

    def make(kind: str, **kw: object) -> tuple[Path, synth.GroundTruth]:
        params: dict[str, object] = {"seconds": 14.0, "width": 320, "height": 180, "fps": 10, "seed": 3}
        params.update(kw)
        spec = synth.SceneSpec(kind=kind, **params)  # type: ignore[arg-type]
        if spec not in cache:
            path = root / f"{kind}-{len(cache)}.mp4"
            cache[spec] = (path, synth.encode(spec, path))
        return cache[spec]

    return make


@pytest.fixture
def site_yaml(tmp_path: Path) -> Callable[[str], Path]:
    """Write the synthetic site config pointing the camera at `url`."""

    def write(url: str) -> Path:
        p = tmp_path / "site.yaml"
        p.write_text(synth.site_yaml(url=url), encoding="utf-8")
        return p

    return write


@pytest.fixture
def rtsp_factory(rtsp_required: None, tmp_path: Path) -> Iterator[Callable[[dict[str, Path]], RtspServer]]:
    """Start RTSP servers on free loopback ports; all are stopped at teardown."""
    servers: list[RtspServer] = []

    def start(mounts: dict[str, Path]) -> RtspServer:
        srv = RtspServer(mounts, log_path=tmp_path / f"rtsp-{len(servers)}.log").start()
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop()
