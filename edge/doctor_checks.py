"""`qwatch-edge doctor`: the checks that need only this machine (files, disk, outbox, kernels, Pi, clock).

Each check returns `Check` values: pass / warn / fail, what was found, and for anything not
passing, the fix a technician can apply. Pure where it can be: the clock check takes the two
times, the throttling check takes vcgencmd's answer, so tests need no Pi and no wrong clock.
"""

from __future__ import annotations

import email.utils
import os
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from protocols.credentials import MqttCredentials, load_node_credentials
from protocols.errors import ConfigError
from protocols.site_config import SiteConfig, load_band_keys, load_site_config

Status = Literal["pass", "warn", "fail"]

DISK_FAIL_MB = 100.0
DISK_WARN_MB = 500.0
OUTBOX_WARN_DEPTH = 1000
OUTBOX_WARN_AGE_S = 300.0
CLOCK_WARN_S = 5.0
CLOCK_FAIL_S = 60.0
TEMP_WARN_C = 75.0


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's table."""

    group: str
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON (`--json`)."""
        return asdict(self)


def ok(group: str, name: str, detail: str) -> Check:
    """A passing check."""
    return Check(group, name, "pass", detail)


def warn(group: str, name: str, detail: str, fix: str) -> Check:
    """A check that passes with a caveat (does not change the exit code)."""
    return Check(group, name, "warn", detail, fix)


def fail(group: str, name: str, detail: str, fix: str) -> Check:
    """A failing check (doctor exits 1)."""
    return Check(group, name, "fail", detail, fix)


# ---------------------------------------------------------------------- files
def _mode_note(path: Path) -> str:
    try:
        return f"mode {stat.S_IMODE(path.stat().st_mode):04o}"
    except OSError:
        return "mode ?"


def check_site_config(path: Path) -> tuple[list[Check], SiteConfig | None]:
    """The site config loads and validates."""
    try:
        site = load_site_config(path)
    except ConfigError as exc:
        return [fail("files", "site config", str(exc), f"fix the key named above in {path}, or pass --config "
                     "with the site's file (`qwatch-cloud config push` sends the current one)")], None
    return [ok("files", "site config", f"{path}: site {site.site.id}, {len(site.zones)} zones, "
               f"{len(site.receivers)} receivers, {len(site.bands)} bands, {len(site.cameras)} cameras")], site


def check_keys(path: Path, site: SiteConfig | None) -> list[Check]:
    """The band key file is private (0600), parses, and covers the site's bands."""
    try:
        keys = load_band_keys(path, require_private=True)
    except ConfigError as exc:
        fix = (f"chmod 600 {path}; chown qwatch {path}" if "mode is" in exc.detail
               else f"restore {path} from the last config push (`qwatch-cloud config push --site S`) or re-enrol")
        return [fail("files", "band keys", str(exc), fix)]
    out = [ok("files", "band keys", f"{path}: {len(keys)} keys, {_mode_note(path)}")]
    if site is not None:
        missing = sorted({b.id for b in site.bands} - set(keys))
        if missing:
            shown = ", ".join(map(str, missing[:8])) + (" …" if len(missing) > 8 else "")
            out.append(warn("files", "band keys", f"{len(missing)} bands of the site have no key ({shown}): "
                            "their adverts count as unknown_band and raise nothing",
                            "enrol them (`qwatch-edge enrol`) and push the config"))
    return out


def check_credentials(path: Path | None, site: SiteConfig | None,
                      node: str) -> tuple[list[Check], MqttCredentials | None]:
    """The MQTT credentials bundle is private, valid, and issued for this site/node."""
    if path is None:
        return [warn("files", "mqtt credentials", "none given: plain MQTT without TLS or password",
                     "only for a loopback test broker; pass --credentials /etc/qwatch/mqtt.json")], None
    try:
        if site is not None:
            creds = load_node_credentials(path, site=site.site.id, node=node)
        else:
            from protocols.credentials import load_credentials

            creds = load_credentials(path)
    except ConfigError as exc:
        fix = (f"chmod 600 {path}" if "mode is" in exc.detail
               else "get this node's bundle: `qwatch-cloud provision-node --site S --node N` on the province machine")
        return [fail("files", "mqtt credentials", str(exc), fix)], None
    return [ok("files", "mqtt credentials", f"{path}: user {creds.username}, broker {creds.broker_host}:"
               f"{creds.broker_port}, {_mode_note(path)}")], creds


def check_data_dir(data_dir: Path) -> list[Check]:
    """The data dir exists and is writable (the outbox lives there)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".doctor-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return [fail("disk", "data dir", f"{data_dir}: cannot write ({exc.strerror})",
                     f"create it for the service user: install -d -o qwatch -m 0750 {data_dir} "
                     "(`qwatch-edge install` does this)")]
    return [ok("disk", "data dir", f"{data_dir} is writable")]


# ---------------------------------------------------------------------- disk and outbox
def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(data_dir: Path) -> list[Check]:
    """Free space on the data partition."""
    usage = shutil.disk_usage(_existing(data_dir))
    free_mb = usage.free / 1e6
    detail = f"{free_mb:.0f} MB free of {usage.total / 1e6:.0f} MB on {_existing(data_dir)}"
    fix = "free space (old recordings, journal: journalctl --vacuum-size=100M) or use a larger card"
    if free_mb < DISK_FAIL_MB:
        return [fail("disk", "free space", detail, fix)]
    if free_mb < DISK_WARN_MB:
        return [warn("disk", "free space", detail, fix)]
    return [ok("disk", "free space", detail)]


def check_outbox(data_dir: Path, now: float) -> list[Check]:
    """Messages waiting for the broker (read-only: the running agent owns the outbox)."""
    from edge.outbox import DB_NAME

    path = data_dir / DB_NAME
    if not path.exists():
        return [ok("disk", "outbox", f"{path} not created yet (the agent has not run here)")]
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0) as db:
            depth, oldest = db.execute("SELECT count(*), min(created) FROM outbox").fetchone()
    except sqlite3.Error as exc:
        return [fail("disk", "outbox", f"{path}: cannot read ({exc})",
                     "stop the agent and start it again: it moves a corrupt outbox aside and starts empty")]
    age = now - oldest if oldest is not None else 0.0
    detail = f"{depth} messages waiting" + (f", oldest {age:.0f} s" if depth else "")
    if depth > OUTBOX_WARN_DEPTH or age > OUTBOX_WARN_AGE_S:
        return [warn("disk", "outbox", detail, "messages are not reaching the broker: see the broker checks")]
    return [ok("disk", "outbox", detail)]


# ---------------------------------------------------------------------- compiled kernels
def check_kernel_cache(*, warm: bool) -> list[Check]:
    """Whether the compiled tick kernels are ready: the JIT's on-disk cache (a cold one delays the first tick)
    and the module built ahead of time (without it the agent loads numba: ~120 MB more RSS)."""
    from edge.bands import jit

    if warm:
        from edge.bands.kernel_aot import prepare

        done, line = prepare()
        return [ok("kernels", "tick kernels", line) if done else
                warn("kernels", "tick kernels", line, "install gcc and python3-dev, then run "
                     "`qwatch-edge doctor --warm-kernels` again as the service user")]
    cache = jit.cache_dir()
    if not cache:
        return [warn("kernels", "kernel cache", "no writable cache dir: every start compiles the kernels",
                     "set NUMBA_CACHE_DIR to a writable dir (the unit sets it under /var/lib/qwatch)")]
    aot = _aot_module(cache)
    jit_cache = _jit_cache(cache)
    if aot.status == "pass" and jit_cache.status != "pass":  # the JIT is only the fallback then
        jit_cache = ok("kernels", "kernel cache", f"not used while the AOT module loads ({jit_cache.detail})")
    return [jit_cache, aot]


def _jit_cache(cache: str) -> Check:
    here = Path(__file__).parent / "bands"
    # Every module with compiled kernels (`@kernel`); the window test's is the largest to compile.
    sources = sorted(here / f"{m}.py" for m in ("fit_kernels", "geometry", "window_kernels"))
    stale = []
    for src in sources:
        index = list(Path(cache).rglob(f"{src.stem}.*.nbi"))
        if not index or max(p.stat().st_mtime for p in index) < src.stat().st_mtime:
            stale.append(src.stem)
    if stale:
        return warn("kernels", "kernel cache", f"cold for {', '.join(stale)} in {cache}: the pipeline compiles "
                    "them when it is built, so the agent's first tick waits for that (tens of s on a Pi)",
                    "run `qwatch-edge doctor --warm-kernels` once as the service user after install or upgrade")
    return ok("kernels", "kernel cache", f"warm in {cache}: the first tick does not wait for compilation")


def _aot_module(cache: str) -> Check:
    from edge.bands import jit

    path = jit.aot_path(cache)
    if jit.load_aot(cache) is not None:
        return ok("kernels", "AOT kernels", f"{path}: the agent runs the tick kernels without numba")
    fix = ("run `qwatch-edge doctor --warm-kernels` as the service user (it needs gcc and python3-dev); "
           "the agent then uses ~120 MB less memory")
    if path.is_file():
        return warn("kernels", "AOT kernels", f"{path} does not load (see the warning): the agent runs the "
                    "kernels on the numba JIT", f"delete it, then {fix}")
    stale = sorted(p.name for p in path.parent.glob(f"{jit.AOT_PREFIX}*")) if path.parent.is_dir() else []
    why = (f"only stale ones, built from other kernel sources or for another Python ({', '.join(stale)})" if stale
           else "none built")
    return warn("kernels", "AOT kernels", f"no module for these kernel sources in {path.parent} ({why}): "
                "the agent runs the kernels on the numba JIT", fix)


# ---------------------------------------------------------------------- Raspberry Pi
THROTTLE_BITS = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}


def judge_throttled(value: int, temp_c: float | None) -> list[Check]:
    """Judge `vcgencmd get_throttled` (bits 0-3 now, 16-19 since boot) and the SoC temperature."""
    now = [name for bit, name in THROTTLE_BITS.items() if value & (1 << bit)]
    past = [name for bit, name in THROTTLE_BITS.items() if value & (1 << (bit + 16))]
    t = f"{temp_c:.1f} °C" if temp_c is not None else "temperature unknown"
    fix = "use the official 5.1 V / 3 A supply and a short cable; add a heatsink or fan; keep the box out of the sun"
    if now:
        return [fail("pi", "throttling", f"now: {', '.join(now)} (0x{value:x}); {t}", fix)]
    if past:
        return [warn("pi", "throttling", f"since boot: {', '.join(past)} (0x{value:x}); {t}", fix)]
    if temp_c is not None and temp_c >= TEMP_WARN_C:
        return [warn("pi", "temperature", f"{t}: close to the 80 °C throttling point", fix)]
    return [ok("pi", "throttling", f"none (0x{value:x}); {t}")]


def _soc_temp() -> float | None:
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def _is_pi(model_file: Path) -> bool:
    try:
        return "raspberry pi" in model_file.read_bytes().decode("utf-8", "replace").lower()
    except OSError:
        return False


def check_pi(run: Callable[[list[str]], str] | None = None,
             model_file: Path = Path("/proc/device-tree/model")) -> list[Check]:
    """CPU temperature and throttling with vcgencmd (or sysfs); "not a Pi" elsewhere."""
    vcgencmd = shutil.which("vcgencmd")
    temp = _soc_temp()
    if vcgencmd is None and not _is_pi(model_file):
        t = f"; SoC temperature {temp:.1f} °C" if temp is not None else ""
        return [ok("pi", "throttling", f"not a Pi (no vcgencmd, no Raspberry Pi model){t}")]
    if vcgencmd is None:
        return [warn("pi", "throttling", "a Pi without vcgencmd: throttling cannot be read",
                     "apt-get install libraspberrypi-bin")] + (
            [] if temp is None else judge_throttled(0, temp)[-1:])

    def _run(cmd: list[str]) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout

    runner = run or _run
    try:
        out = runner([vcgencmd, "get_throttled"])
        value = int(out.strip().split("=", 1)[1], 16)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return [warn("pi", "throttling", f"vcgencmd get_throttled failed: {exc}",
                     "add the service user to group video (vcgencmd needs /dev/vchiq)")]
    return judge_throttled(value, temp)


# ---------------------------------------------------------------------- clock
def judge_clock(offset_s: float, reference: str) -> Check:
    """Judge this machine's clock offset against a reference (positive: we are ahead)."""
    detail = f"{offset_s:+.1f} s against {reference}"
    fix = ("enable time sync: timedatectl set-ntp true (and check that UDP 123 is allowed); "
           "a Pi has no RTC, so it needs the network time after every boot")
    if abs(offset_s) >= CLOCK_FAIL_S:
        return fail("clock", "clock offset", detail + ": alert times and advert anti-replay windows are wrong", fix)
    if abs(offset_s) >= CLOCK_WARN_S:
        return warn("clock", "clock offset", detail, fix)
    return ok("clock", "clock offset", detail)


def check_clock(cloud_url: str | None, *, skew_s: float = 0.0, timeout: float = 5.0,
                clock: Callable[[], float] = time.time) -> list[Check]:
    """Offset of this clock (plus the injected `skew_s`) against the cloud's HTTP `Date` header."""
    if cloud_url is None:
        return [warn("clock", "clock offset", "no reference: pass --cloud URL to compare with the cloud's time",
                     "pass --cloud https://CLOUD (the command centre's address)")]
    import httpx

    url = cloud_url.rstrip("/") + "/healthz"
    try:
        t0 = clock()
        resp = httpx.get(url, timeout=timeout)
        t1 = clock()
    except httpx.HTTPError as exc:
        return [fail("clock", "clock offset", f"cannot reach {url}: {exc}",
                     "check --cloud and the node's network route to the cloud")]
    date = resp.headers.get("date")
    if not date:
        return [warn("clock", "clock offset", f"{url} sent no Date header", "check --cloud points at qwatch-cloud")]
    server = email.utils.parsedate_to_datetime(date).timestamp()
    # Date has 1 s resolution and is truncated: the server's time was within [server, server + 1).
    local = (t0 + t1) / 2 + skew_s
    return [judge_clock(local - (server + 0.5), f"the cloud's clock ({cloud_url}, ±1 s)")]
