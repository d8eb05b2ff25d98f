"""Launchers for the real backing services (Mosquitto, VictoriaMetrics) as child processes.

Used by the test fixtures, the fault-injection suite and ``make demo``. Every service binds a free
loopback port, keeps its data under a caller-given directory, is waited for with a deadline, and is
stopped cleanly. Children are started in their own session (so a terminal Ctrl-C reaches only the
parent, which then stops them in order) and with ``PR_SET_PDEATHSIG`` so that even a ``kill -9`` of
the parent leaves no orphan behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from cloud.broker_conf import BrokerFiles, global_security, limits, listener_security

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

_PR_SET_PDEATHSIG = 1
_live: set[ServiceProcess] = set()
_live_lock = threading.Lock()


class ServiceError(RuntimeError):
    """A service could not be started (missing binary, port clash, crashed during start-up)."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _fail_missing(name: str) -> NoReturn:
    msg = f"required binary {name!r} not found on PATH (Debian package: {_DEB_PACKAGE.get(name, name)})"
    if "pytest" in sys.modules:
        import pytest

        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + " — CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(msg)
    raise ServiceError(msg)


_DEB_PACKAGE = {"postgres": "postgresql", "initdb": "postgresql",
                "mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "victoria-metrics": "victoria-metrics",
                "chromium": "chromium"}
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", *sorted(
    (str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True))  # Debian keeps PostgreSQL's here


def require_binary(name: str) -> str:
    """Return the absolute path of ``name``.

    When it is missing: inside pytest, fail under ``CI=true`` and skip otherwise; outside pytest,
    raise :class:`ServiceError`.
    """
    found = shutil.which(name)
    if found is None:
        # mosquitto lives in /usr/sbin, which is not on a normal user's PATH.
        found = shutil.which(name, path=os.pathsep.join(_EXTRA_DIRS))
    if found is None:
        _fail_missing(name)
    return found


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM us when the parent dies.
    # Caveat: the "parent" is the forking *thread*, so start services from a long-lived thread.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ServiceProcess:
    """One running (or stopped) child service on a fixed loopback port."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        workdir: Path,
        host: str,
        port: int,
        scheme: str,
        ready: Callable[[ServiceProcess], bool],
        user: str | None = None,
    ) -> None:
        self.name = name
        self.user = user  # run the child as this user (PostgreSQL refuses to run as root)
        self.argv = list(argv)
        self.workdir = workdir
        self.host = host
        self.port = port
        self.scheme = scheme
        self._ready = ready
        self.log_path = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` for VictoriaMetrics, ``mqtt://127.0.0.1:PORT`` for Mosquitto."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``HOST:PORT``, the form the CLIs take (``--mqtt``, ``--broker``)."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's PID while it runs."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """True while the child process exists (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Start the child and wait until it answers; raise :class:`ServiceError` on timeout/crash."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only calls prctl: safe between fork and exec
                user=self.user,
                group=self.user,
            )
        self.starts += 1
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self._proc.returncode}: {self.log_tail()}")
            if self._ready(self):
                log.info("service=%s event=ready port=%d pid=%d", self.name, self.port, self._proc.pid)
                return self
            time.sleep(0.05)
        self.kill()
        raise ServiceError(f"{self.name} not ready within {timeout:.0f}s: {self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (resuming it first if paused), wait, then SIGKILL if it does not go."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("service=%s event=stop_timeout action=kill", self.name)
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL now (a crash, as far as the service's clients can tell)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._forget()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files (after provision-node / revoke-node)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a stalled network, as seen by clients)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)
            # kill() returns before every thread of the target has stopped: a request sent right after
            # could still be answered (seen in CI). Wait until the kernel reports each thread stopped.
            tasks = Path(f"/proc/{self._proc.pid}/task")
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
                except (OSError, IndexError):
                    return  # gone, or no /proc: nothing left to wait for
                if all(st in ("T", "t") for st in states):
                    return
                time.sleep(0.005)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Stop, then start again on the same port with the same data."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(timeout=max(1.0, deadline - time.monotonic()))
            except ServiceError:
                # The old socket can linger for a moment after a crash; retry until the deadline.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of the service's log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _forget(self) -> None:
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServiceProcess({self.name!r}, {self.url}, pid={self.pid})"


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        services = list(_live)
    for svc in services:
        with contextlib.suppress(Exception):
            svc.stop(timeout=3.0)


def _tcp_ready(svc: ServiceProcess) -> bool:
    try:
        with socket.create_connection((svc.host, svc.port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ready(path: str) -> Callable[[ServiceProcess], bool]:
    def check(svc: ServiceProcess) -> bool:
        try:
            with urllib.request.urlopen(f"{svc.url}{path}", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return check


def mosquitto_conf(port: int, data_dir: Path, *, host: str = LOOPBACK, extra_conf: str = "") -> str:
    """Return a mosquitto.conf for a loopback test/demo broker with persistence and raised limits."""
    lines = [
        "# Generated by devtools/services.py. Test/demo broker: loopback only; anonymous unless the security",
        "# lines at the end (start_mosquitto_secure: TLS, password file, ACL) say otherwise.",
        "# Production uses per-node credentials and ACLs (see config/), never allow_anonymous.",
        f"listener {port} {host}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "# Save the in-memory store every second, so a broker crash loses at most ~1 s of queued",
        "# messages. The Mosquitto default (30 min) would lose a whole outage's worth of alerts.",
        "autosave_interval 1",
        "# Mosquitto drops QoS 1 messages queued for an offline persistent session past",
        "# max_queued_messages (1000 in 2.0, 100 in older releases). The ingest session can be away",
        "# for minutes (restart, upgrade) while 50 sites keep publishing, and a dropped alert is a",
        "# missed escape, so queue far more and cap by bytes instead. Edge nodes also keep every",
        "# alert in their outbox until it is PUBACKed, so the broker is not the only safety net.",
        "# Same size limits as production (cloud/broker_conf.py): payloads up to a snapshot's size.",
        *limits().splitlines(),
        "# In-flight QoS 1 messages per client: 20 by default, which limits the ingest drain rate",
        "# after an outage. MQTT 5 clients still bound it with their own Receive Maximum.",
        "max_inflight_messages 1000",
        "# Persistent sessions of MQTT 3 clients; MQTT 5 clients set their own session expiry.",
        "persistent_client_expiration 7d",
        "set_tcp_nodelay true",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
    ]
    if os.geteuid() == 0:
        # Run as root, Mosquitto drops to user "mosquitto", which cannot write our data dir.
        lines.append("user root")
    if extra_conf:
        lines.append(extra_conf.rstrip())
    return "\n".join(lines) + "\n"


def _start_with_port_retry(make: Callable[[int], ServiceProcess], port: int | None) -> ServiceProcess:
    # free_port() is racy (another test may grab the port between probe and bind): retry a few times.
    attempts = 1 if port is not None else 4
    last: ServiceError | None = None
    for _ in range(attempts):
        svc = make(port if port is not None else free_port())
        try:
            return svc.start()
        except ServiceError as exc:
            last = exc
            svc.kill()
    assert last is not None
    raise last


def start_mosquitto(workdir: Path, *, port: int | None = None, extra_conf: str = "") -> ServiceProcess:
    """Start Mosquitto on a free loopback port with data and config under ``workdir``."""
    binary = require_binary("mosquitto")
    workdir = Path(workdir)
    data = workdir / "mosquitto-data"
    data.mkdir(parents=True, exist_ok=True)

    def make(p: int) -> ServiceProcess:
        conf = workdir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(p, data, extra_conf=extra_conf))
        return ServiceProcess(
            "mosquitto", [binary, "-c", str(conf)], workdir=workdir, host=LOOPBACK, port=p,
            scheme="mqtt", ready=_tcp_ready,
        )

    return _start_with_port_retry(make, port)


def start_mosquitto_secure(
    workdir: Path, files: BrokerFiles, *, port: int | None = None, extra_conf: str = ""
) -> ServiceProcess:
    """Start Mosquitto like :func:`start_mosquitto`, but with the province security settings.

    The loopback listener speaks TLS with ``files.certfile``/``keyfile``, and anonymous clients
    are refused in favour of ``files.password_file`` and ``files.acl_file`` (the same lines as
    the production config, :mod:`cloud.broker_conf`). ``.reload()`` re-reads both files.
    """
    security = listener_security(files) + global_security(files)
    svc = start_mosquitto(workdir, port=port, extra_conf=security + extra_conf)
    svc.scheme = "mqtts"
    return svc


def start_victoria_metrics(
    workdir: Path,
    *,
    port: int | None = None,
    retention: str = "30d",
    extra_args: Sequence[str] = (),
) -> ServiceProcess:
    """Start single-node VictoriaMetrics on a free loopback port with its storage under ``workdir``."""
    binary = require_binary("victoria-metrics")
    workdir = Path(workdir)
    data = workdir / "vm-data"
    data.mkdir(parents=True, exist_ok=True)

    def make(p: int) -> ServiceProcess:
        argv = [
            binary,
            f"-httpListenAddr={LOOPBACK}:{p}",
            f"-storageDataPath={data}",
            f"-retentionPeriod={retention}",
            # Without this, queries hide the last 30 s of samples: a live track would lag.
            "-search.latencyOffset=0s",
            # Be a modest neighbour on a shared machine; VM sizes its caches from this.
            "-memory.allowedBytes=256MiB",
            "-loggerLevel=WARN",
            *extra_args,
        ]
        return ServiceProcess(
            "victoria-metrics", argv, workdir=workdir, host=LOOPBACK, port=p, scheme="http",
            ready=_http_ready("/health"),
        )

    return _start_with_port_retry(make, port)


def flush_victoria_metrics(url: str, timeout: float = 5.0) -> None:
    """Make just-written samples searchable now (VictoriaMetrics otherwise takes ~10 s).

    For tests and benchmarks only: it forces a flush of in-memory parts to disk.
    """
    with urllib.request.urlopen(f"{url.rstrip('/')}/internal/force_flush", timeout=timeout) as resp:
        resp.read()


PG_USER = "postgres"


def start_postgresql(workdir: Path, *, port: int | None = None, fsync: bool = True) -> ServiceProcess:
    """Start a throw-away PostgreSQL server (``initdb`` under ``workdir``) on a free loopback port.

    Trust authentication for loopback only, superuser ``postgres``; ``.url`` is a libpq URL of the
    ``postgres`` database. Run as root (this lab), the cluster belongs to the ``postgres`` system
    user, since PostgreSQL refuses to run as root. ``fsync=False`` is for tests only: it trades
    crash safety of this scratch cluster for speed (CREATE DATABASE per test).
    """
    initdb = require_binary("initdb")
    postgres = require_binary("postgres")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    user = PG_USER if os.geteuid() == 0 else None
    home = workdir / "pg"
    if user is not None:
        # The postgres user cannot enter a root-only temp dir (pytest's are 0700): a world-traversable
        # dir of its own, linked from workdir, removed when the process exits.
        link = workdir / "pg"
        if not link.exists():
            own = Path(tempfile.mkdtemp(prefix="qwatch-pg-"))
            os.chmod(own, 0o755)
            shutil.chown(own, user, user)
            atexit.register(shutil.rmtree, own, True)
            link.symlink_to(own)
        home = link.resolve()
    home.mkdir(exist_ok=True)
    data = home / "data"
    sock = home
    if not (data / "PG_VERSION").exists():
        done = subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
             *([] if fsync else ["--no-sync"])],
            capture_output=True, text=True, user=user, group=user, cwd=home, check=False)
        if done.returncode != 0:
            raise ServiceError(f"initdb failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")

    def make(p: int) -> ServiceProcess:
        argv = [postgres, "-D", str(data), "-p", str(p), "-k", str(sock), "-c", f"listen_addresses={LOOPBACK}",
                "-c", "max_connections=200", "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning"]
        if not fsync:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        svc = ServiceProcess("postgresql", argv, workdir=workdir, host=LOOPBACK, port=p, scheme="postgresql",
                             ready=_pg_ready, user=user)
        return svc

    return _start_with_port_retry(make, port)


def _pg_ready(svc: ServiceProcess) -> bool:
    try:
        import psycopg

        with psycopg.connect(pg_url(svc), connect_timeout=1):
            return True
    except Exception:  # not accepting connections yet (starting up, recovering)
        return False


def pg_url(svc: ServiceProcess, dbname: str = "postgres") -> str:
    """The libpq URL of database ``dbname`` on a server from :func:`start_postgresql`."""
    return f"postgresql://postgres@{svc.host}:{svc.port}/{dbname}"
