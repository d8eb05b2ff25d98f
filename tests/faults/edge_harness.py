"""Helpers shared by the fault-injection suite, integration tests and delivery benchmarks.

Real processes only: agents with a synthetic alert storm (`python -m devtools.dev_agent run
--alert-storm N`, i.e. `qwatch-edge run` plus the storm hook), `qwatch-cloud` ingest/serve,
Mosquitto and VictoriaMetrics from `devtools.services`. Each child runs in its own process
group so a test can `kill -9` exactly that child and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools.storm import storm_alert_id
from protocols.site_config import write_band_keys

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# `qwatch-edge` with the development hooks (alert storm, scripted escape); run with cwd=REPO.
DEV_AGENT = [sys.executable, "-m", "devtools.dev_agent"]
SITE_ID = "fault-site"
SITE_YAML = f"""\
site: {{id: {SITE_ID}, name: "fault injection"}}
zones:
  - {{id: block-a, kind: permitted, polygon: [[0,0],[40,0],[40,20],[0,20]]}}
"""


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll `cond` until true; return the time it took. Fail the test naming `what` on timeout."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def write_site(dirpath: Path, text: str = SITE_YAML) -> tuple[Path, Path]:
    """Write a tiny site config and an empty key file; return their paths."""
    dirpath.mkdir(parents=True, exist_ok=True)
    site, keys = dirpath / "site.yaml", dirpath / "keys.json"
    site.write_text(text)
    write_band_keys(keys, {})  # 0600: the agent refuses a key file others can read
    return site, keys


@dataclass
class Child:
    """A child process in its own process group, with its output in a log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, cwd=REPO)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the child's whole process group (no cleanup runs)."""
        if self.proc is not None and self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if it did not exit. Returns the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def storm_agent(
    node: str, broker: str, workdir: Path, *, total: int, rate: float, storm_id: str = "storm",
    extra: Sequence[str] = (), data_dir: Path | None = None,
) -> Child:
    """An agent that raises `total` synthetic alert messages (deterministic IDs) at `rate`/s."""
    site, keys = write_site(workdir / "cfg")
    data = data_dir or workdir / f"data-{node}"
    argv = [*DEV_AGENT, "run", "--config", str(site), "--keys", str(keys), "--node", node,
            "--broker", broker, "--data-dir", str(data), "--alert-storm", str(total),
            "--storm-rate", str(rate), "--storm-id", storm_id, "--keepalive", "2", "--reconnect-max", "1",
            "--node-telemetry-s", "0.5", "--log-level", "WARNING", *extra]
    return Child(f"edge-{node}", argv, workdir / f"edge-{node}.log")


def cloud_ingest(db: Path | str, broker: str, vm_url: str, workdir: Path, *, serve_port: int | None = None,
                 name: str = "cloud", extra: Sequence[str] = ()) -> Child:
    """`qwatch-cloud ingest` (or `serve` when a port is given) as a child process. ``db``: a SQLite file or a
    PostgreSQL URL (shared by several workers: each then gets its own spool and band registry file)."""
    argv = [str(BIN / "qwatch-cloud"), "ingest" if serve_port is None else "serve", "--db", str(db),
            "--mqtt", broker, "--vm", vm_url, *extra]
    if serve_port is not None:
        argv += ["--port", str(serve_port)]
    if str(db).startswith("postgresql://"):
        argv += ["--spool", str(workdir / f"{name}-spool"), "--registry-db", str(workdir / f"{name}-registry.db")]
    return Child(name, argv, workdir / f"{name}.log")


def expected_storm(storm_id: str, node: str, total: int) -> list[tuple[str, str]]:
    """The (alert_id, state) pairs an agent's storm raises, in raise order."""
    return [(storm_alert_id(storm_id, node, i // 2), "cleared" if i % 2 else "raised") for i in range(total)]


def cloud_events(db: Path | str) -> list[dict[str, Any]]:
    """Every alert event the cloud stored, in the order it stored them (read-only connection)."""
    if isinstance(db, str):
        return _pg_events(db)
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT seq, alert_id, state, node, payload FROM alert_events ORDER BY seq").fetchall()
        con.close()
    except sqlite3.OperationalError:
        return []  # schema not created yet
    return [dict(r) for r in rows]


def _pg_events(url: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    try:
        with psycopg.connect(url, row_factory=dict_row, connect_timeout=5) as con:
            return list(con.execute("SELECT seq, alert_id, state, node, payload FROM alert_events ORDER BY seq"))
    except psycopg.errors.UndefinedTable:
        return []  # schema not created yet


def check_invariants(events: list[dict[str, Any]], expected: dict[str, list[tuple[str, str]]], *,
                     ordered: bool = True) -> None:
    """Exactly once per state, nothing never raised, per-node order preserved (edge alerts only).

    ``ordered=False`` for ingest replicas on a shared subscription: the broker spreads one node's messages
    over the replicas, so storage order across them is not the node's order (the store does not need it:
    a cleared stored before its raised still ends cleared, docs/cloud.md)."""
    edge = [e for e in events if json.loads(e["payload"]).get("type") != "node_offline"]
    keys = [(e["alert_id"], e["state"]) for e in edge]
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, f"stored more than once: {sorted(dupes)[:5]}"
    want = {k for v in expected.values() for k in v}
    extra = set(keys) - want
    assert not extra, f"{len(extra)} alert events were never raised at the edge, e.g. {sorted(extra)[:3]}"
    missing = want - set(keys)
    assert not missing, f"{len(missing)} raised alert events never reached the cloud, e.g. {sorted(missing)[:3]}"
    for node, order in expected.items() if ordered else ():
        got = [(e["alert_id"], e["state"]) for e in edge if e["node"] == node]
        assert got == order, f"node {node}: cloud order differs from edge order at index " + str(
            next(i for i, (a, b) in enumerate(zip(got, order, strict=False)) if a != b))


class TopicRecorder:
    """A plain MQTT subscriber with a persistent session that records (topic, payload) tuples."""

    def __init__(self, broker: str, topic: str = "qwatch/v1/#", client_id: str = "test-recorder") -> None:
        host, port = broker.rsplit(":", 1)
        self.messages: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(1, 1)
        # Persistent session: messages published while the recorder is cut off are queued for it.
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(host, int(port), keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((time.time(), msg.topic, bytes(msg.payload)))

    def of(self, suffix: str) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return [m for m in self.messages if m[1].endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def last_node_telemetry(rec: TopicRecorder, node: str) -> dict[str, Any] | None:
    """The newest node telemetry a node published (parsed), or None."""
    # Newest by the node's own clock, not by arrival: after a reconnect, buffered older messages
    # can arrive after newer ones from another path.
    msgs = [json.loads(m[2]) for m in rec.of("/telemetry/node") if m[1].split("/")[3] == node]
    return max(msgs, key=lambda t: t["ts"]) if msgs else None


def stop_all(children: Iterable[Child]) -> None:
    """Stop children (SIGTERM, then SIGKILL); never raises."""
    for ch in children:
        with contextlib.suppress(Exception):
            ch.stop()
