"""Lightweight simulated edge nodes for ``bench.cloud_load``: many MQTT 5 connections in one process.

Each node speaks the real topics and payloads of docs/protocol.md §5 at the edge agent's rates:

- birth: ``…/status`` ``online`` (retained, QoS 1) with a fresh ``boot_id``; the Last Will is the same
  message with ``offline`` and a Will Delay Interval of 5 s (the agent's default ``--will-delay``);
- ``…/telemetry/bands`` (QoS 0) once a second with every band of the site;
- ``…/telemetry/node`` (QoS 0) every 5 s (the agent's ``node_telemetry_s``), with its cameras' health;
- ``…/camera/{camera}/event`` (QoS 1) motion start/end, one pair per camera every ``--camera-every-s``;
- ``…/alert`` (QoS 1) in the background (one raised alert per site every ``--alert-every-s``, cleared
  30 s later) and in bursts: a power cut (below).

A power cut, once per step: the nodes of ``--cut-dead`` sites lose power (their sockets are closed
without DISCONNECT, so the broker publishes their Wills and the cloud raises ``node_offline``; they
come back 15 s later with a new boot_id), and the receivers of ``--cut-sites`` sites on a UPS-backed
node go dark, so that node raises ``band_missing`` for every band of its site, back to back.

Payloads are built once per node from the protocol models (so they validate exactly as the ingest
parses them) and only their timestamps are rewritten when sent. The MQTT 5 client is a minimal one
written for this bench (CONNECT with Will, PUBLISH QoS 0/1, DISCONNECT) over blocking sockets: a
paho client and thread per node would cost more CPU than the cloud being measured. It does not
subscribe to ``…/cmd/#`` (nothing is sent to the nodes in this bench). Connections are anonymous with
client ID ``site/node`` (docs/protocol.md §5), or with ``--bundles`` over TLS as each node's provisioned
user (``qwatch-cloud provision-node`` bundles); the bench broker's configuration is in bench.cloud_load.

Output on stdout, one JSON object a line: ``{"ev": "step", …}`` when a step starts, ``{"ev": "alert",
"id", "t", "kind"}`` for each raised alert sent (``t`` = time.time() just before the PUBLISH is written),
``{"ev": "kill", "site", "node", "t"}``, and ``{"ev": "summary", …}`` at the end.

    python -m bench._load_nodes --broker 127.0.0.1:1883 --schedule 50:30,500:30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import ssl
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from protocols.credentials import load_credentials
from protocols.payloads import (
    BandState,
    BandTelemetry,
    CameraEvent,
    CameraHealth,
    NodeTelemetry,
    Status,
    new_alert,
)

TS_SENTINEL = "1234567890.125"  # replaced by the send time in every templated payload
WILL_DELAY_S = 5
TICK_S = 0.05
SLOTS = round(1 / TICK_S)  # band telemetry phases within a second


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, will_topic: str, will_payload: bytes, *, session_expiry_s: int,
                   username: str | None = None, password: str | None = None) -> bytes:
    """MQTT 5 CONNECT: clean start, keepalive off, Will QoS 1 retained with a Will Delay Interval."""
    flags = 0x02 | 0x04 | (1 << 3) | 0x20  # clean start, Will, Will QoS 1, Will retained
    flags |= (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    props = b"\x11" + struct.pack("!I", session_expiry_s)
    will_props = b"\x18" + struct.pack("!I", WILL_DELAY_S)
    var = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", 0) + _varint(len(props)) + props
    payload = (_str(client_id) + _varint(len(will_props)) + will_props + _str(will_topic)
               + struct.pack("!H", len(will_payload)) + will_payload)
    if username is not None:
        payload += _str(username)
    if password is not None:
        payload += _str(password)
    body = var + payload
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, *, qos: int, pid: int = 0, retain: bool = False) -> bytes:
    """MQTT 5 PUBLISH without properties."""
    head = _str(topic) + (struct.pack("!H", pid) if qos else b"") + b"\x00"
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes([first]) + _varint(len(head) + len(payload)) + head + payload


DISCONNECT = b"\xe0\x00"  # reason 0: normal disconnection, the Will is discarded


@dataclass
class Node:
    site: str
    node: str
    index: int
    bands: list[int]
    cameras: list[str]
    band_tmpl: list[bytes] = field(default_factory=list)
    node_base: bytes = b""
    node_tmpl: bytes = b""
    sock: socket.socket | None = None
    boot_id: str = ""
    pid: int = 0
    started: float = 0.0
    down_until: float = 0.0

    @property
    def prefix(self) -> str:
        return f"qwatch/v1/{self.site}/{self.node}"

    def next_pid(self) -> int:
        self.pid = self.pid % 65535 + 1
        return self.pid


def build_templates(n: Node, rng: random.Random) -> None:
    """Band telemetry (4 variants, positions moved) and node telemetry, with TS_SENTINEL for times."""
    ts = float(TS_SENTINEL)
    for v in range(4):
        states = [BandState(band=b, ts=ts, x=round(rng.uniform(1, 39) + v * 0.3, 2), y=round(rng.uniform(1, 19), 2),
                            err_m=round(rng.uniform(1, 4), 2), zone="block-a", rssi=float(rng.randint(-90, -55)),
                            rx_count=rng.randint(2, 6), battery=rng.randint(20, 100),
                            temp_c=round(rng.uniform(36.0, 37.2), 2), flags=0) for b in n.bands]
        tel = BandTelemetry(ts=ts, bands=states)
        n.band_tmpl.append(tel.model_dump_json(by_alias=True).encode())
    cams = {c: CameraHealth(online=True, fps_in=5.0, fps_proc=5.0, skipped=0, reconnects=0) for c in n.cameras}
    node = NodeTelemetry(ts=ts, boot_id="BOOTID", uptime_s=1000.0, cpu_pct=35.0, mem_rss_mb=140.0, mem_pct=20.0,
                         disk_free_mb=9000.0, temp_c=55.0, adverts_per_s={"accepted": len(n.bands) * 1.0,
                                                                          "duplicate": len(n.bands) * 2.0},
                         outbox_depth=0, cameras=cams,
                         watchdogs={"mqtt": {"connects": 1, "puback_refused": 0}, "agent": {"loops": 1000}})
    n.node_base = node.model_dump_json(by_alias=True).encode()


class Fleet:
    """All simulated nodes and the schedule; single-threaded, sends on blocking sockets."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        host, port = args.broker.rsplit(":", 1)
        self.addr = (host, int(port))
        self.rng = random.Random(args.seed)
        bands_per_site = args.bands // args.sites
        cams_per_site = args.cameras // args.sites
        self.nodes: list[Node] = []
        for s in range(args.sites):
            site = f"load-{s:04d}"
            bands = [100_000 + s * bands_per_site + i for i in range(bands_per_site)]
            cams = [f"cam-{c}" for c in range(cams_per_site)]
            n = Node(site, "edge-01", s, bands, cams)
            self.nodes.append(n)
        self.sent: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.pending_clears: list[tuple[float, Node, str, dict[str, object]]] = []
        self.max_lag_s = 0.0
        # --bundles: TLS verified against the province CA, each node with its provisioned user (site/node).
        self.tls: ssl.SSLContext | None = None
        self.passwords: dict[str, str] = {}
        if args.bundles:
            for n in self.nodes:
                creds = load_credentials(Path(args.bundles) / n.site / f"{n.node}.json")
                self.passwords[n.site] = creds.password.get_secret_value()
                if self.tls is None:
                    self.tls = creds.tls_context()

    # ----------------------------------------------------------------- wire
    def send(self, n: Node, kind: str, data: bytes) -> None:
        if n.sock is None:
            return
        try:
            n.sock.sendall(data)
        except OSError:
            self.sent["send_errors"] += 1
            self._drop(n)
            return
        self.sent[kind] += 1
        self.bytes[kind] += len(data)

    def _drop(self, n: Node) -> None:
        if n.sock is not None:
            n.sock.close()
            n.sock = None

    def connect(self, n: Node, now: float) -> None:
        n.boot_id = os.urandom(8).hex()
        online = Status(state="online", ts=now, version="bench-load", boot_id=n.boot_id)
        offline = Status(state="offline", ts=now, version="bench-load", boot_id=n.boot_id)
        s = socket.create_connection(self.addr, timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            s = self.tls.wrap_socket(s, server_hostname=self.addr[0])
        user = f"{n.site}/{n.node}"
        s.sendall(connect_packet(user, f"{n.prefix}/status", offline.model_dump_json(by_alias=True).encode(),
                                 session_expiry_s=WILL_DELAY_S, username=user if self.tls else None,
                                 password=self.passwords.get(n.site)))
        ack = s.recv(64)
        if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
            raise SystemExit(f"CONNACK refused for {n.site}/{n.node}: {ack!r}")
        s.settimeout(None)  # blocking: sendall waits for the broker; drain() reads without blocking
        n.sock = s
        n.started = now
        n.node_tmpl = n.node_base.replace(b'"BOOTID"', json.dumps(n.boot_id).encode())
        self.send(n, "status", publish_packet(f"{n.prefix}/status", online.model_dump_json(by_alias=True).encode(),
                                              qos=1, pid=n.next_pid(), retain=True))

    def drain(self, n: Node) -> None:
        """Read and drop what the broker sent (PUBACKs)."""
        if n.sock is None:
            return
        n.sock.setblocking(False)  # (an SSLSocket takes no recv flags)
        try:
            while n.sock.recv(65536):
                pass
            self._drop(n)  # recv returned b"": the broker closed the connection
            self.sent["closed_by_broker"] += 1
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError:
            self._drop(n)
        if n.sock is not None:
            n.sock.setblocking(True)

    # ----------------------------------------------------------------- traffic
    def bands(self, n: Node, now: float, second: int) -> None:
        ts = f"{now:.3f}".encode()
        payload = n.band_tmpl[second % len(n.band_tmpl)].replace(TS_SENTINEL.encode(), ts)
        self.send(n, "bands", publish_packet(f"{n.prefix}/telemetry/bands", payload, qos=0))

    def node_tel(self, n: Node, now: float) -> None:
        payload = n.node_tmpl.replace(TS_SENTINEL.encode(), f"{now:.3f}".encode())
        self.send(n, "node", publish_packet(f"{n.prefix}/telemetry/node", payload, qos=0))

    def alert(self, n: Node, now: float, kind: str, type_: str, subject: dict[str, object],
              state: str = "raised", alert_id: str | None = None) -> str:
        a = new_alert(site=n.site, node=n.node, type=type_, subject=subject, ts=now, detail={"bench": kind})
        if alert_id is not None:
            a = a.model_copy(update={"alert_id": alert_id, "state": state})
        t = time.time()
        self.send(n, "alert", publish_packet(f"{n.prefix}/alert", a.to_json().encode(), qos=1, pid=n.next_pid()))
        if state == "raised":
            print(json.dumps({"ev": "alert", "id": a.alert_id, "t": t, "kind": kind, "type": type_}))
        return a.alert_id

    def camera_event(self, n: Node, now: float) -> None:
        cam = self.rng.choice(n.cameras)
        for kind in ("motion_start", "motion_end"):
            ev = CameraEvent(camera=cam, zone="fence-north", kind=kind, ts=now, frame=self.rng.randint(0, 10**6),
                             bbox=(0.4, 0.3, 0.1, 0.2), score=0.01)
            self.send(n, "camera_event", publish_packet(f"{n.prefix}/camera/{cam}/event",
                                                       ev.model_dump_json(by_alias=True).encode(), qos=1,
                                                       pid=n.next_pid()))

    def power_cut(self, active: list[Node], now: float) -> None:
        k = self.args.cut_dead + self.args.cut_sites
        up = [n for n in active if n.sock is not None]
        if len(up) < k:
            return
        chosen = self.rng.sample(up, k)
        for n in chosen[:self.args.cut_dead]:
            print(json.dumps({"ev": "kill", "site": n.site, "node": n.node, "t": time.time()}))
            self._drop(n)  # no DISCONNECT: the broker sees the socket close and sends the Will
            n.down_until = now + 15
        for n in chosen[self.args.cut_dead:]:
            for band in n.bands:
                self.alert(n, now, "burst", "band_missing", {"band": band})

    # ----------------------------------------------------------------- schedule
    def run(self) -> None:
        schedule = [(int(a), float(b)) for a, b in (x.split(":") for x in self.args.schedule.split(","))]
        for n in self.nodes:
            build_templates(n, self.rng)
        active: list[Node] = []
        tick = 0
        for step, (n_sites, seconds) in enumerate(schedule):
            now = time.time()
            for n in self.nodes[len(active):n_sites]:
                self.connect(n, now)
                active.append(n)
            step_sent = Counter(self.sent)
            step_bytes = Counter(self.bytes)
            t0 = time.time()
            print(json.dumps({"ev": "step", "i": step, "sites": n_sites, "bands": sum(len(n.bands) for n in active),
                              "cameras": sum(len(n.cameras) for n in active), "t": t0}), flush=True)
            cut_at = t0 + seconds / 2
            cut_done = False
            next_tick = time.monotonic()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                next_tick += TICK_S
                now = time.time()
                slot = tick % SLOTS
                second = tick // SLOTS
                for n in active:
                    if n.sock is None:
                        if n.down_until and now >= n.down_until:
                            n.down_until = 0.0
                            self.connect(n, now)  # comes back after the power cut: a birth
                        continue
                    if n.index % SLOTS == slot:
                        self.bands(n, now, second)
                    if n.index % (SLOTS * 5) == tick % (SLOTS * 5):
                        self.node_tel(n, now)
                    if self.rng.random() < TICK_S / self.args.alert_every_s:
                        band = self.rng.choice(n.bands)
                        subject: dict[str, object] = {"band": band}
                        type_ = self.rng.choice(["geofence_breach", "fever", "low_battery", "no_motion"])
                        aid = self.alert(n, now, "bg", type_, subject)
                        self.pending_clears.append((now + 30, n, aid, {"type": type_, "subject": subject}))
                    if n.cameras and self.rng.random() < TICK_S * len(n.cameras) / self.args.camera_every_s:
                        self.camera_event(n, now)
                    if slot == n.index % SLOTS:
                        self.drain(n)
                while self.pending_clears and self.pending_clears[0][0] <= now:
                    _, n, aid, info = self.pending_clears.pop(0)
                    if n.sock is not None:
                        self.alert(n, now, "bg", str(info["type"]), info["subject"], state="cleared",  # type: ignore[arg-type]
                                   alert_id=aid)
                if not cut_done and now >= cut_at and self.args.cut_dead + self.args.cut_sites > 0:
                    cut_done = True
                    self.power_cut(active, now)
                tick += 1
                lag = time.monotonic() - next_tick
                self.max_lag_s = max(self.max_lag_s, lag)
                if lag < 0:
                    time.sleep(-lag)
            dt = time.time() - t0
            sent = self.sent - step_sent
            print(json.dumps({"ev": "step_end", "i": step, "t": time.time(), "seconds": dt,
                              "sent": dict(sent), "bytes": dict(self.bytes - step_bytes),
                              "max_lag_s": round(self.max_lag_s, 3), "cpu_s": time.process_time()}), flush=True)
            self.max_lag_s = 0.0
        for n in active:
            self.send(n, "disconnect", DISCONNECT)
            self._drop(n)
        print(json.dumps({"ev": "summary", "sent": dict(self.sent), "bytes": dict(self.bytes),
                          "cpu_s": time.process_time()}), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", required=True, help="HOST:PORT of the bench broker")
    p.add_argument("--sites", type=int, default=500)
    p.add_argument("--bands", type=int, default=50_000, help="bands in all (split evenly over the sites)")
    p.add_argument("--cameras", type=int, default=2000, help="cameras in all (split evenly over the sites)")
    p.add_argument("--schedule", default="50:30,100:30,250:30,500:30",
                   help="steps as ACTIVE_SITES:SECONDS, comma-separated (the ramp)")
    p.add_argument("--alert-every-s", type=float, default=60.0, help="background alerts: one per site per this")
    p.add_argument("--camera-every-s", type=float, default=300.0, help="one motion start/end pair per camera per this")
    p.add_argument("--cut-dead", type=int, default=10, help="sites whose node loses power at each step's power cut")
    p.add_argument("--cut-sites", type=int, default=2, help="sites whose receivers go dark (band_missing per band)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--bundles", default="", help="province bundles dir (DIR/bundles): TLS and per-node users")
    args = p.parse_args(argv)
    if args.sites < 1 or args.bands < args.sites:
        raise SystemExit("need at least one site and one band per site")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    Fleet(args).run()


if __name__ == "__main__":
    main()
