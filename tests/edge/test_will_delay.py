"""MQTT 5 Will Delay against a real Mosquitto: a session takeover sends no offline; a killed agent does.

The takeover is made for real: a loopback TCP proxy between agent and broker goes silent
broker->agent on the current connection and keeps the broker's side open, the way a
half-broken mobile link does. The agent's keepalive gives up and reconnects (same process,
same boot_id) while the broker still thinks the old connection is alive, so the broker
takes the session over. Without the Will Delay Mosquitto sends the Will right there, and
the cloud would see node_offline raised and cleared for a node that never went down.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from devtools.services import ServiceProcess
from tests.faults.edge_harness import TopicRecorder, storm_agent, wait_until

pytestmark = pytest.mark.integration

WILL_DELAY_S = 3


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.muted = False  # broker->client bytes are dropped
        self.hold = False  # when the client hangs up, keep the broker's side open
        self.broker_closed = threading.Event()
        for target in (self._up, self._down):
            threading.Thread(target=target, daemon=True).start()

    def _up(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.client.recv(65536):
                self.upstream.sendall(data)
        if not self.hold:
            self.close()

    def _down(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.upstream.recv(65536):
                if not self.muted:
                    self.client.sendall(data)
        self.broker_closed.set()
        self.close()

    def close(self) -> None:
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # close() alone sends no FIN while a thread is in recv()
            with contextlib.suppress(OSError):
                s.close()


class HalfOpenProxy:
    """Loopback TCP proxy to the broker whose connections can be made half-dead on demand."""

    def __init__(self, broker: ServiceProcess) -> None:
        self.broker = (broker.host, broker.port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.conns: list[_Conn] = []
        # For each accepted connection: which earlier ones the broker still had open at that moment.
        self.open_at_accept: list[list[bool]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                self.open_at_accept.append([not c.broker_closed.is_set() for c in self.conns])
                self.conns.append(_Conn(client, socket.create_connection(self.broker)))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()
        for c in self.conns:
            c.close()


def _statuses(rec: TopicRecorder, node: str) -> list[tuple[float, dict[str, str]]]:
    return [(t, json.loads(p)) for t, topic, p in rec.of("/status") if topic.split("/")[3] == node]


def test_takeover_within_will_delay_sends_no_offline_but_a_killed_agent_goes_offline(
    mosquitto: ServiceProcess, tmp_path: Path
) -> None:
    proxy = HalfOpenProxy(mosquitto)
    rec = TopicRecorder(mosquitto.address, client_id="rec-will-delay")
    agent = storm_agent("wd", proxy.address, tmp_path, total=2, rate=10,
                        extra=["--will-delay", str(WILL_DELAY_S)]).start()
    try:
        wait_until(lambda: bool(_statuses(rec, "wd")) and len(proxy.conns) == 1, 20, "birth")
        boot = _statuses(rec, "wd")[0][1]["boot_id"]
        old = proxy.conns[0]
        old.hold, old.muted = True, True
        # keepalive 2 s: the agent gives up after ~4 s without a PINGRESP and reconnects.
        wait_until(lambda: sum(s["state"] == "online" for _t, s in _statuses(rec, "wd")) >= 2, 20,
                   "the agent's reconnect (second birth)")
        # A real takeover: the broker still had the old connection open when the new one came,
        # and closed it then (not by its own keepalive timeout).
        assert proxy.open_at_accept[1] == [True]
        wait_until(old.broker_closed.is_set, 5, "broker closes the taken-over connection")
        time.sleep(WILL_DELAY_S + 1.5)  # the window in which a (wrongly) delayed Will would arrive
        assert [s for _t, s in _statuses(rec, "wd") if s["state"] == "offline"] == []
        assert {s["boot_id"] for _t, s in _statuses(rec, "wd")} == {boot}
        assert agent.alive(), agent.log_tail()

        killed_at = time.time()
        agent.kill9()
        wait_until(lambda: any(s["state"] == "offline" for _t, s in _statuses(rec, "wd")), WILL_DELAY_S + 10,
                   "the Last Will of the killed agent")
        [(t_off, off)] = [(t, s) for t, s in _statuses(rec, "wd") if s["state"] == "offline"]
        assert off["boot_id"] == boot
        assert WILL_DELAY_S - 0.5 <= t_off - killed_at <= WILL_DELAY_S + 5, t_off - killed_at
    finally:
        agent.stop()
        rec.close()
        proxy.close()
