"""Helpers for the operations tests: `qwatch-cloud serve` as a real process, a real local HTTP server that
receives webhooks, and a real local SMTP server (aiosmtpd) that receives e-mail."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.services import ServiceProcess, free_port
from tests.cloud.cloud_harness import wait_for

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Serve:
    """A running `qwatch-cloud serve`."""

    url: str
    log: Path
    proc: subprocess.Popen[bytes]
    headers: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers=self.headers, timeout=10)

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.headers if headers is None else headers,
                          timeout=10)


@contextmanager
def serve(tmp_path: Path, mq: ServiceProcess, vm: ServiceProcess, *extra: str, db: Path | None = None
          ) -> Iterator[Serve]:
    """`python -m cloud.cli serve` on a free port, until /healthz answers 200; terminated afterwards."""
    port = free_port()
    log = tmp_path / f"cloud-{port}.log"
    argv = [sys.executable, "-m", "cloud.cli", "serve", "--db", str(db or tmp_path / f"{port}.db"),
            "--mqtt", mq.address, "--vm", vm.url, "--port", str(port), "--log-level", "DEBUG", *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    s = Serve(f"http://127.0.0.1:{port}", log, proc)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{s.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, 0.2, "serve /healthz")
        yield s
    finally:
        proc.terminate()
        proc.wait(15)


class WebhookServer:
    """A real HTTP server on a free loopback port. ``/ok`` answers 200; ``/flaky`` answers 503 to its first
    ``fail_first`` requests, then 200. Every request body is kept, by path."""

    def __init__(self, fail_first: int = 2) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with outer.lock:
                    got = outer.received.setdefault(self.path, [])
                    got.append(body)
                    outer.headers.setdefault(self.path, []).append(dict(self.headers))
                    n = len(got)
                status = 503 if self.path == "/flaky" and n <= outer.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received.get(path, []))


class SmtpServer:
    """aiosmtpd's SMTP server on a free loopback port, in its own thread; keeps each message parsed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
                assert isinstance(msg, EmailMessage)
                outer.messages.append(msg)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()
