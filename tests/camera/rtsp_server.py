"""A real RTSP camera for tests: the GStreamer RTSP server streaming H.264 files.

Two halves in one file, both stdlib-only on import:
- `main()` runs under the *system* python (`/usr/bin/python3`, which has PyGObject and
  `gir1.2-gst-rtsp-server-1.0`; the venv does not): `rtsp_server.py --port N --mount /cam=clip.mp4`.
  Each client gets its own pipeline from the start of the file, paced in real time.
- `RtspServer` (used from the venv) starts that as a child process on a free loopback port,
  waits until it accepts connections, and can `kill()` and `restart()` it on the same port.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gst_rtsp_available() -> str | None:
    """None if the RTSP server can run here, else what is missing (Debian package names)."""
    if not Path(SYSTEM_PYTHON).exists():
        return "system python3 (/usr/bin/python3)"
    probe = ("import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
             "('qtdemux','h264parse','rtph264pay')) else 3)")
    rc = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60).returncode
    if rc != 0:
        return "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
    if shutil.which("ffmpeg") is None:
        return "ffmpeg"
    return None


def _pdeathsig() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RtspServer:
    """The GStreamer RTSP server as a child process on a loopback port."""

    def __init__(self, mounts: dict[str, Path], *, port: int | None = None, log_path: Path | None = None) -> None:
        self.mounts = {m if m.startswith("/") else "/" + m: Path(p) for m, p in mounts.items()}
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, mount: str) -> str:
        """rtsp:// URL of a mount point."""
        return f"rtsp://127.0.0.1:{self.port}{mount if mount.startswith('/') else '/' + mount}"

    def start(self, timeout: float = 20.0) -> RtspServer:
        """Start the server and wait (with a deadline) until it accepts TCP connections."""
        args = [SYSTEM_PYTHON, __file__, "--port", str(self.port)]
        for m, p in self.mounts.items():
            args += ["--mount", f"{m}={p}"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode} (log: {self.log_path})")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"RTSP server did not listen on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the server (a camera losing power) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self) -> RtspServer:
        """Start again on the same port (the camera coming back)."""
        self.kill()
        return self.start()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """Server process entry point (system python with PyGObject)."""
    import argparse

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mount", action="append", default=[], help="/path=file.mp4")
    args = ap.parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mount:
        mount, _, path = spec.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        demux = "matroskademux" if path.endswith(".mkv") else "qtdemux"
        factory.set_launch(f"( filesrc location={path} ! {demux} ! h264parse ! "
                           "rtph264pay name=pay0 pt=96 config-interval=1 )")
        factory.set_shared(False)
        mounts.add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"cannot bind port {args.port}", file=sys.stderr, flush=True)
        return 1
    print(f"READY {args.port}", flush=True)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda *_: loop.quit() or False)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
