"""Cloud load test: ~500 sites, 50,000 bands and 2,000 cameras through one cloud, ramped to saturation.

Real parts, all child processes on loopback: Mosquitto, PostgreSQL (fsync on), VictoriaMetrics, the
cloud (``qwatch-cloud serve --db postgresql://…``, plus ``--workers`` extra ``qwatch-cloud ingest
--shared`` processes when asked), and ``bench._load_nodes``: one process of lightweight simulated
nodes speaking the real topics and payloads at the agent's rates (births, Wills, band and node
telemetry, camera events, background alerts and a power-cut burst in every step).

The ramp: each step runs ``ACTIVE_SITES:SECONDS`` of ``--schedule``. Per step it measures

- the offered and the ingested message rate (the ingest's own counters on ``/healthz``), and the
  band/node samples VictoriaMetrics inserted per second (its ``vm_rows_inserted_total``);
- alert latency, publish → stored (the commit's ``NOTIFY qwatch_alert``, received by a LISTEN
  connection of this script) and publish → WebSocket (a client on ``/api/v1/live``, which also
  receives every band position, as a command-centre dashboard does), for the background alerts and
  for the power-cut burst separately; ``node_offline`` from the Wills: kill → stored, which includes
  the 5 s Will Delay Interval by design;
- CPU (% of one core, user+system from /proc) and memory (PSS, so PostgreSQL's shared buffers are
  not counted once per backend) of each component.

A step is saturated when the ingest falls behind what is offered (ingested < 95 % of offered, or
its inbox grows past 1000 messages), when VictoriaMetrics lines are shed or spooled, or when the
alert p99 to store exceeds 1 s.

The bench broker (``bench_broker_conf``) is by default the test broker of devtools/services.py:
loopback, no TLS, anonymous, no ACL. ``--secure`` runs the province's security instead: ``pki init``
and ``provision-node`` for every simulated node (TLS verified against the province CA, a password per
node, an ACL block per node, client ID = username), and the cloud with its ``qwatch-cloud`` bundle.

    nice -n 5 .venv/bin/python -m bench.cloud_load [--schedule 50:40,100:40,250:40,500:40] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

REPO = Path(__file__).resolve().parents[1]

from cloud.provision import Province  # noqa: E402
from devtools.services import (  # noqa: E402
    LOOPBACK,
    ServiceProcess,
    free_port,
    pg_url,
    start_mosquitto,
    start_mosquitto_secure,
    start_postgresql,
    start_victoria_metrics,
)

console = Console(width=220)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- /proc sampling
def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(parts[1]) == pid:
            out.append(int(d))
    return out


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK
    except OSError:
        return 0.0


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Component:
    """One component: a root PID, with its child processes counted in (PostgreSQL's backends)."""

    name: str
    pid: int
    tree: bool = False
    # CPU of children that exited is not in /proc any more: remember the last seen value per pid.
    seen: dict[int, float] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return [self.pid, *(_children(self.pid) if self.tree else [])]

    def sample(self) -> tuple[float, float]:
        """(CPU seconds so far, PSS MB now)."""
        pss = 0.0
        for p in self.pids():
            self.seen[p] = max(self.seen.get(p, 0.0), _cpu_s(p))
            pss += _pss_mb(p)
        return sum(self.seen.values()), pss


# ---------------------------------------------------------------------------- observers
class NotifyRecorder(threading.Thread):
    """First commit time of each alert_id, from the store's own ``NOTIFY qwatch_alert``."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.first: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute("LISTEN qwatch_alert")
            self.ready.set()
            while not self.stop.is_set():
                for n in con.notifies(timeout=0.5):
                    aid = n.payload.rsplit("|", 1)[-1]
                    self.first.setdefault(aid, time.time())


class WsRecorder(threading.Thread):
    """First receipt time of each raised alert on ``/api/v1/live``; positions are only counted."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.first: dict[str, float] = {}
        self.bands_msgs = 0
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with ws_connect(self.url, max_size=None) as ws:
            self.ready.set()
            while not self.stop.is_set():
                try:
                    text = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return  # the cloud stopped at the end of the run
                assert isinstance(text, str)
                head = text[:24]
                if '"bands"' in head:
                    self.bands_msgs += 1
                    continue
                if '"alert"' not in head:
                    continue
                msg = json.loads(text)
                data = msg.get("data") or {}
                if data.get("state") != "cleared":
                    self.first.setdefault(data.get("alert_id", ""), time.time())


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def vm_rows_inserted(vm: ServiceProcess) -> int:
    """VictoriaMetrics' own count of samples inserted (all write protocols)."""
    with urllib.request.urlopen(f"{vm.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("vm_rows_inserted_total"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


# ---------------------------------------------------------------------------- the cloud
def start_cloud(work: Path, mq: ServiceProcess, vm: ServiceProcess, db: str, port: int, workers: int,
                creds: Path | None = None) -> list[subprocess.Popen[bytes]]:
    common = ["--db", db, "--mqtt", mq.address, "--vm", vm.url, "--log-level", "WARNING",
              "--registry-db", str(work / "registry.db")]

    def cred(k: int) -> list[str]:
        # --secure: `serve` is the qwatch-cloud user, worker k its own qwatch-cloud-wk (provision-cloud --worker)
        if creds is None:
            return []
        return ["--credentials", str(creds if k == 0 else creds.with_name(f"qwatch-cloud-w{k}.json"))]
    shared = ["--shared"] if workers else []
    procs = []
    log = open(work / "serve.log", "ab")  # noqa: SIM115 - lives as long as the child
    procs.append(subprocess.Popen([sys.executable, "-m", "cloud.cli", "serve", *common, *cred(0), *shared,
                                   "--port", str(port),
                                   "--client-id", "bench-ingest-0", "--spool", str(work / "spool-0")],
                                  cwd=REPO, stdout=log, stderr=log))
    for k in range(1, workers + 1):
        wlog = open(work / f"ingest-{k}.log", "ab")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, "-m", "cloud.cli", "ingest", *common, *cred(k), *shared,
                                       "--client-id", f"bench-ingest-{k}", "--spool", str(work / f"spool-{k}")],
                                      cwd=REPO, stdout=wlog, stderr=wlog))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _get_json(f"http://127.0.0.1:{port}/healthz").get("ok"):
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise SystemExit("cloud not healthy within 60 s: " + (work / "serve.log").read_text()[-2000:])
    time.sleep(2 if workers else 0)  # the workers' shared subscriptions
    return procs


def bench_broker_conf() -> str:
    """Extra lines for the bench broker: a queue deep enough for a step's worth of QoS 0 telemetry."""
    return "max_queued_messages 100000\n"


# ---------------------------------------------------------------------------- one run
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


@dataclass
class StepResult:
    i: int
    sites: int
    bands: int
    cameras: int
    seconds: float
    offered: dict[str, int]
    offered_msgs: float
    ingested_msgs: float
    vm_rows_s: float
    vm_lines_s: float
    inbox_max: int
    telemetry_max: int
    tel_shed: int
    shed: int
    spooled: int
    cpu: dict[str, float]
    pss: dict[str, float]
    lat: dict[str, list[float]]
    pub_cpu_pct: float
    pub_lag_s: float


def run(args: argparse.Namespace) -> tuple[list[StepResult], dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="qwatch-load-"))
    console.print(f"work dir {work}")
    cloud_creds: Path | None = None
    bundles = ""
    if args.secure:
        # The province's own security: TLS, a password per node (mosquitto_passwd), per-node ACL blocks,
        # client ID = username. Provisioning 500 nodes takes a while (one mosquitto_passwd run each).
        t0 = time.monotonic()
        prov = Province(work / "province")
        prov.init("loadtest", [LOOPBACK])
        for s in range(args.sites):
            prov.provision_node(f"load-{s:04d}", "edge-01")
        bundles = str(prov.bundles)
        cloud_creds = prov.bundles / "qwatch-cloud.json"
        for k in range(1, args.workers + 1):  # every concurrent cloud session needs a user of its own
            prov.provision_cloud(worker=f"w{k}")
        console.print(f"provisioned {args.sites} nodes in {time.monotonic() - t0:.0f} s")
        mq = start_mosquitto_secure(work / "mq", prov.files, extra_conf=bench_broker_conf())
    else:
        mq = start_mosquitto(work / "mq", extra_conf=bench_broker_conf())
    pg = start_postgresql(work / "pg", fsync=True)
    vm = start_victoria_metrics(work / "vm", extra_args=["-memory.allowedBytes=512MiB"])
    db = pg_url(pg)
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    pub: subprocess.Popen[str] | None = None
    try:
        procs = start_cloud(work, mq, vm, db, port, args.workers, cloud_creds)
        notes = NotifyRecorder(db)
        notes.start()
        ws = WsRecorder(f"ws://127.0.0.1:{port}/api/v1/live")
        ws.start()
        if not (notes.ready.wait(10) and ws.ready.wait(10)):
            raise SystemExit("observers did not connect")
        comps = [Component("mosquitto", mq.pid or 0), Component("postgresql", pg.pid or 0, tree=True),
                 Component("victoria-metrics", vm.pid or 0)]
        comps += [Component("cloud serve" if k == 0 else f"ingest-{k}", p.pid) for k, p in enumerate(procs)]
        argv = [sys.executable, "-m", "bench._load_nodes", "--broker", mq.address, "--sites", str(args.sites),
                "--bands", str(args.bands), "--cameras", str(args.cameras), "--schedule", args.schedule,
                "--cut-dead", str(args.cut_dead), "--cut-sites", str(args.cut_sites), "--bundles", bundles]
        pub = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, bufsize=1)
        comps.append(Component("load_nodes", pub.pid))
        assert pub.stdout is not None
        alerts: dict[str, tuple[float, str, int, str]] = {}  # id -> (t, kind, step, type)
        kills: list[tuple[float, str, int]] = []
        steps: list[StepResult] = []
        step_i = -1
        base: dict[str, Any] = {}
        inbox_max = telemetry_max = 0
        stop_poll = threading.Event()

        def poll_inbox() -> None:
            nonlocal inbox_max, telemetry_max
            while not stop_poll.wait(1.0):
                try:
                    h = _get_json(f"http://127.0.0.1:{port}/healthz")
                    inbox_max = max(inbox_max, int(h["ingest"]["inbox_depth"]))
                    telemetry_max = max(telemetry_max, int(h["ingest"].get("telemetry_depth", 0)))
                except (OSError, KeyError, ValueError):
                    pass

        poller = threading.Thread(target=poll_inbox, daemon=True)
        poller.start()

        def snapshot() -> dict[str, Any]:
            h = _get_json(f"http://127.0.0.1:{port}/healthz")
            return {"t": time.time(), "msgs": int(h["ingest"]["counts"].get("messages", 0)),
                    "vm_rows": vm_rows_inserted(vm), "lines": int(h["timeseries"]["lines_written"]),
                    "shed": int(h["timeseries"]["lines_shed_queue_full"]),
                    "spooled": int(h["timeseries"]["lines_spooled"]),
                    "tel_shed": int(h["ingest"]["counts"].get("telemetry_shed", 0)),
                    "cpu": {c.name: c.sample() for c in comps}}

        for line in pub.stdout:
            ev = json.loads(line)
            if ev["ev"] == "step":
                step_i = ev["i"]
                base = snapshot()
                base["step"] = ev
                inbox_max = telemetry_max = 0
            elif ev["ev"] == "alert":
                alerts[ev["id"]] = (ev["t"], ev["kind"], step_i, ev["type"])
            elif ev["ev"] == "kill":
                kills.append((ev["t"], ev["site"], step_i))
            elif ev["ev"] == "step_end":
                end = snapshot()
                dt = end["t"] - base["t"]
                sent = ev["sent"]
                n_sent = sum(v for k, v in sent.items() if k not in ("send_errors", "closed_by_broker"))
                cpu = {k: (end["cpu"][k][0] - base["cpu"][k][0]) / dt * 100 for k in end["cpu"]}
                pss = {k: end["cpu"][k][1] for k in end["cpu"]}
                steps.append(StepResult(
                    i=step_i, sites=base["step"]["sites"], bands=base["step"]["bands"],
                    cameras=base["step"]["cameras"], seconds=ev["seconds"], offered=sent,
                    offered_msgs=n_sent / ev["seconds"], ingested_msgs=(end["msgs"] - base["msgs"]) / dt,
                    vm_rows_s=(end["vm_rows"] - base["vm_rows"]) / dt, vm_lines_s=(end["lines"] - base["lines"]) / dt,
                    inbox_max=inbox_max, telemetry_max=telemetry_max, tel_shed=end["tel_shed"] - base["tel_shed"],
                    shed=end["shed"] - base["shed"], spooled=end["spooled"] - base["spooled"],
                    cpu=cpu, pss=pss, lat={}, pub_cpu_pct=cpu.get("load_nodes", 0.0), pub_lag_s=ev["max_lag_s"]))
                console.print(f"step {step_i}: {steps[-1].sites} sites, offered {steps[-1].offered_msgs:.0f} msg/s, "
                              f"ingested {steps[-1].ingested_msgs:.0f} msg/s, VM {steps[-1].vm_rows_s:.0f} samples/s, "
                              f"inbox max {inbox_max}, telemetry queue max {telemetry_max}, "
                              f"load {os.getloadavg()[0]:.1f}")
            elif ev["ev"] == "summary":
                break
        pub.wait(30)
        # Let the last alerts land, then collect latencies by step and kind.
        deadline = time.monotonic() + args.settle_s
        while time.monotonic() < deadline and any(a not in notes.first for a in alerts):
            time.sleep(0.5)
        time.sleep(1.0)
        stop_poll.set()
        for aid, (t, kind, step, _type) in alerts.items():
            if step < 0 or step >= len(steps):
                continue
            lat = steps[step].lat
            lat.setdefault(f"{kind}:sent", []).append(0.0)
            if aid in notes.first:
                lat.setdefault(f"{kind}:store", []).append(notes.first[aid] - t)
            if aid in ws.first:
                lat.setdefault(f"{kind}:ws", []).append(ws.first[aid] - t)
        offline = _node_offline(db)
        for t, site, step in kills:
            lat = steps[step].lat
            lat.setdefault("will:sent", []).append(0.0)
            after = [r for r in offline.get(site, []) if r >= t]  # the node_offline this kill caused
            if after:
                lat.setdefault("will:store", []).append(min(after) - t)
        info = {"ws_band_msgs": ws.bands_msgs, "alerts": len(alerts),
                "stored": sum(1 for a in alerts if a in notes.first), "ws": sum(1 for a in alerts if a in ws.first),
                "work": str(work)}
        notes.stop.set()
        ws.stop.set()
        return steps, info
    finally:
        if pub is not None and pub.poll() is None:
            pub.kill()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for svc in (vm, pg, mq):
            svc.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _node_offline(db: str) -> dict[str, list[float]]:
    """Site -> the ingest's receipt times of its raised node_offline alerts (a site may lose power twice)."""
    import psycopg

    out: dict[str, list[float]] = {}
    with psycopg.connect(db) as con:
        rows = con.execute("SELECT a.site, e.received_at FROM alerts a JOIN alert_events e "
                           "ON e.alert_id = a.alert_id WHERE a.type = 'node_offline' AND e.state = 'raised'").fetchall()
    for site, t in rows:
        out.setdefault(str(site), []).append(float(t))
    return out


# ---------------------------------------------------------------------------- report
def saturated(s: StepResult) -> list[str]:
    why = []
    if s.ingested_msgs < 0.95 * s.offered_msgs:
        why.append(f"ingested {s.ingested_msgs / s.offered_msgs:.0%} of offered")
    if s.inbox_max > 1000:
        why.append(f"inbox {s.inbox_max}")
    if s.tel_shed:
        why.append(f"telemetry messages shed {s.tel_shed}")
    if s.shed or s.spooled:
        why.append(f"VM lines shed {s.shed} / spooled {s.spooled}")
    p99 = pct(s.lat.get("bg:store", []) + s.lat.get("burst:store", []), 99)
    if p99 > 1000:
        why.append(f"alert p99 {p99:.0f} ms")
    n_sent = len(s.lat.get("bg:sent", [])) + len(s.lat.get("burst:sent", []))
    n_stored = len(s.lat.get("bg:store", [])) + len(s.lat.get("burst:store", []))
    if n_stored < n_sent:
        why.append(f"{n_sent - n_stored} alerts not stored")
    return why


def report(steps: list[StepResult], info: dict[str, Any], args: argparse.Namespace) -> None:
    t = Table(title="Load steps (rates per second over the step)")
    for col in ("sites", "bands", "cameras", "offered msg/s", "ingested msg/s", "VM samples/s", "inbox max",
                "telemetry queue max", "saturated?"):
        t.add_column(col, justify="right")
    for s in steps:
        why = saturated(s)
        t.add_row(str(s.sites), str(s.bands), str(s.cameras), f"{s.offered_msgs:.0f}", f"{s.ingested_msgs:.0f}",
                  f"{s.vm_rows_s:.0f}", str(s.inbox_max), str(s.telemetry_max), "; ".join(why) or "no")
    console.print(t)
    lt = Table(title="Alert latency per step (ms): n stored/sent, p50 / p99 / max")
    for col in ("sites", "background → store", "background → WS", "burst → store", "burst → WS", "Will → store"):
        lt.add_column(col, justify="right")

    def cell(s: StepResult, key: str) -> str:
        kind, _ = key.split(":")
        v = s.lat.get(key, [])
        n = len(s.lat.get(f"{kind}:sent", []))
        if not n:
            return "-"
        return f"{len(v)}/{n}: {pct(v, 50):.0f} / {pct(v, 99):.0f} / {max(v) * 1000 if v else float('nan'):.0f}"

    for s in steps:
        lt.add_row(str(s.sites), cell(s, "bg:store"), cell(s, "bg:ws"), cell(s, "burst:store"), cell(s, "burst:ws"),
                   cell(s, "will:store"))
    console.print(lt)
    names = list(steps[0].cpu) if steps else []
    ct = Table(title="CPU (% of one core) and memory (PSS MB at the step's end) per component")
    ct.add_column("sites", justify="right")
    for n in names:
        ct.add_column(n, justify="right")
    for s in steps:
        ct.add_row(str(s.sites), *(f"{s.cpu[n]:.0f} % / {s.pss[n]:.0f} MB" for n in names))
    console.print(ct)
    if args.workers:
        console.print("with --workers, 'ingested msg/s' is the serve process's share only (the workers have no "
                      "/healthz); VM samples/s and the alert tables cover all of them")
    console.print(f"alerts sent {info['alerts']}, stored {info['stored']}, on the WebSocket {info['ws']}; "
                  f"band messages on the WebSocket {info['ws_band_msgs']}; load average now "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} CPUs; schedule {args.schedule}, workers {args.workers}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=500)
    p.add_argument("--bands", type=int, default=50_000)
    p.add_argument("--cameras", type=int, default=2000)
    p.add_argument("--schedule", default="50:40,100:40,250:40,500:40", help="ACTIVE_SITES:SECONDS,…")
    p.add_argument("--workers", type=int, default=0, help="extra `qwatch-cloud ingest --shared` processes")
    p.add_argument("--cut-dead", type=int, default=10)
    p.add_argument("--cut-sites", type=int, default=2)
    p.add_argument("--secure", action="store_true",
                   help="the province broker: TLS, provisioned users and ACL (pki init + provision-node per node)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, data) after the run")
    p.add_argument("--settle-s", type=float, default=30.0, help="wait this long for the last alerts to be stored")
    args = p.parse_args(argv)
    console.print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    steps, info = run(args)
    report(steps, info, args)


if __name__ == "__main__":
    main()
