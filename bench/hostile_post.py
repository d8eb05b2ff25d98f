"""A 300 MB unauthenticated POST against a real `qwatch-cloud serve` (issue 9, item 6): what it costs.

The cloud runs as a separate process with a users file (sign-in on). The script sends the body to
`POST /api/v1/alerts/{id}/ack` with no token, once with a declared Content-Length and once chunked
(no length), as fast as the socket takes it, and reports the status, how much the client managed to
send before the server stopped reading, the time, and the server's resident memory before and after
(peak from /proc/PID/status VmHWM).

Run: ``.venv/bin/python -m bench.hostile_post [--mb 300]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cloud.users import add_user
from devtools.services import free_port

PATH = "/api/v1/alerts/01JAAAAAAAAAAAAAAAAAAAAAAA/ack"


def _mem_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _post(port: int, total: int, chunked: bool) -> tuple[int, float, int]:
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    piece = b"x" * (1 << 16)
    chunk = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head.encode())
    sent = 0
    try:
        while sent < total:
            s.sendall(chunk)
            sent += len(piece)
    except OSError:
        pass  # the server stopped reading and closed: the point of the exercise
    data = b""
    try:
        while b"\r\n" not in data:
            more = s.recv(4096)
            if not more:
                break
            data += more
    except OSError:
        pass
    s.close()
    status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/") else 0
    return status, time.monotonic() - t0, sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=300)
    args = ap.parse_args()
    total = args.mb << 20
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users.yaml"
        add_user(users, "cc", "command", [])
        port = free_port()
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "qwatch-cloud"), "serve", "--db", f"{tmp}/c.db", "--mqtt",
             "127.0.0.1:9", "--vm", "http://127.0.0.1:9", "--port", str(port), "--users", str(users),
             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            rss0 = _mem_mb(proc.pid, "VmRSS")
            rows = []
            for chunked in (False, True):
                status, took, sent = _post(port, total, chunked)
                rows.append(("chunked" if chunked else "Content-Length", status, sent / (1 << 20), took,
                             _mem_mb(proc.pid, "VmRSS"), _mem_mb(proc.pid, "VmHWM")))
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs (shared, loaded); body {args.mb} MB, no token")
    print(f"server RSS before: {rss0:.0f} MB")
    print(f"{'body':<16}{'status':>7}{'MB sent':>10}{'seconds':>9}{'RSS after MB':>14}{'peak RSS MB':>13}")
    for name, status, mb, took, rss, hwm in rows:
        print(f"{name:<16}{status:>7}{mb:>10.1f}{took:>9.2f}{rss:>14.0f}{hwm:>13.0f}")


if __name__ == "__main__":
    main()
