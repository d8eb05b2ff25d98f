"""`qwatch-edge install` / `uninstall`: the agent as a systemd service on a Pi.

install: a system user `qwatch` (groups bluetooth and dialout when they exist), the config
dir /etc/qwatch (root:qwatch 0750; keys and credentials 0600 owned by qwatch), the data dir
/var/lib/qwatch (qwatch 0750), the unit /etc/systemd/system/qwatch-edge.service, then
`systemctl daemon-reload` and `systemctl enable --now qwatch-edge`.
uninstall: stop and disable the service, remove the unit; `--purge` also removes the config
dir, the data dir (outbox!) and the user.

The plan is a list of steps computed first (pure: `plan_install` / `plan_uninstall`), so
`--dry-run` prints exactly what a real run does. `--root DIR` installs into a directory tree
instead of / (tests, image building): files go under DIR, `systemctl --root=DIR enable` makes
the symlinks, and steps that only make sense on a live system (useradd, chown, daemon-reload,
starting the service) are shown as skipped.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from protocols.cli_errors import EXIT_FAILED, EXIT_USAGE, id_option

UNIT_NAME = "qwatch-edge.service"

UNIT_TEMPLATE = """\
# Edge agent on a Raspberry Pi, written by `qwatch-edge install` (edge/install.py).
# Files: {config_dir}/site.yaml (site config), {config_dir}/keys.json (band keys, 0600, owner {user}),
# {config_dir}/mqtt.json (the node's MQTT credentials bundle from `qwatch-cloud provision-node`, 0600).
# A pushed config (`qwatch-cloud config push`) is kept in {data_dir}/config and wins over site.yaml.
# Check the node with: sudo -u {user} {exe} doctor --config {config_dir}/site.yaml --keys {config_dir}/keys.json \\
#   --credentials {config_dir}/mqtt.json --data-dir {data_dir}
[Unit]
Description=qwatch edge agent (wristbands, cameras, outbox, MQTT link)
After=network-online.target bluetooth.target time-sync.target
Wants=network-online.target

[Service]
User={user}
Group={user}
SupplementaryGroups={groups}
Environment=QWATCH_NODE={node}
# The compiled tick kernels are cached here, so a restart does not compile them again.
Environment=NUMBA_CACHE_DIR={data_dir}/numba-cache
ExecStart={exe} run --config {config_dir}/site.yaml --keys {config_dir}/keys.json --node ${{QWATCH_NODE}} \\
    --credentials {config_dir}/mqtt.json --data-dir {data_dir}
# The outbox makes a restart lossless; restart quickly so guards keep getting alerts.
Restart=always
RestartSec=2
# A stuck process is worse than a restart: the agent's own watchdogs handle stalled loops.
TimeoutStopSec=15
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
ReadWritePaths={data_dir}

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where things go (absolute paths as seen on the installed system)."""

    node: str
    user: str = "qwatch"
    config_dir: Path = Path("/etc/qwatch")
    data_dir: Path = Path("/var/lib/qwatch")
    unit_dir: Path = Path("/etc/systemd/system")
    exe: str = "/opt/qwatch/.venv/bin/qwatch-edge"
    groups: tuple[str, ...] = ("bluetooth", "dialout")


def render_unit(layout: Layout) -> str:
    """The systemd unit text for this layout."""
    return UNIT_TEMPLATE.format(user=layout.user, groups=" ".join(layout.groups) or layout.user, node=layout.node,
                                data_dir=layout.data_dir, config_dir=layout.config_dir, exe=layout.exe)


@dataclass
class Step:
    """One thing install/uninstall does. `run` is None when the step is only reported (skipped)."""

    text: str
    run: Callable[[], None] | None = None
    skipped: str = ""


@dataclass
class Plan:
    """The steps in order, and the root they apply to."""

    root: Path
    steps: list[Step] = field(default_factory=list)

    def path(self, p: Path) -> Path:
        """`p` (absolute, on the installed system) under the root."""
        return self.root / p.relative_to("/")

    @property
    def live(self) -> bool:
        return self.root == Path("/")


def _existing_groups(names: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for name in names:
        try:
            grp.getgrnam(name)
            out.append(name)
        except KeyError:
            pass
    return tuple(out)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _run(cmd: list[str], timeout_s: float = 60.0) -> Callable[[], None]:
    def go() -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise InstallError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()}")
    return go


class InstallError(Exception):
    """A step failed; the message names the step and what the system said."""


def _mkdir(path: Path, mode: int) -> Callable[[], None]:
    def go() -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    return go


def _copy(src: Path, dst: Path, mode: int) -> Callable[[], None]:
    def go() -> None:
        tmp = dst.with_name(f".{dst.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(src.read_bytes())
        os.chmod(tmp, mode)
        os.replace(tmp, dst)
    return go


def _write(dst: Path, text: str, mode: int) -> Callable[[], None]:
    def go() -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, mode)
        os.replace(tmp, dst)
    return go


def _chown(path: Path, user: str, group: str) -> Callable[[], None]:
    return lambda: shutil.chown(path, user, group)


def plan_install(layout: Layout, root: Path, files: dict[str, Path], *, enable: bool = True) -> Plan:
    """Every step of an install into `root`, in order (nothing is done here)."""
    plan = Plan(root)
    live = plan.live
    cfg, data = plan.path(layout.config_dir), plan.path(layout.data_dir)
    unit = plan.path(layout.unit_dir) / UNIT_NAME
    useradd = ["useradd", "--system", "--home-dir", str(layout.data_dir), "--no-create-home", "--shell",
               "/usr/sbin/nologin", "--user-group", layout.user]
    if not live:
        plan.steps.append(Step(f"create system user {layout.user}: {' '.join(useradd)}", skipped="--root"))
    elif _user_exists(layout.user):
        plan.steps.append(Step(f"system user {layout.user} exists", skipped="already there"))
    else:
        plan.steps.append(Step(f"create system user {layout.user}: {' '.join(useradd)}", _run(useradd)))
    if layout.groups:
        usermod = ["usermod", "--append", "--groups", ",".join(layout.groups), layout.user]
        plan.steps.append(Step(f"add {layout.user} to groups {','.join(layout.groups)}: {' '.join(usermod)}",
                               _run(usermod) if live else None, "" if live else "--root"))
    plan.steps.append(Step(f"create config dir {cfg} (0750)", _mkdir(cfg, 0o750)))
    plan.steps.append(Step(f"create data dir {data} (0750)", _mkdir(data, 0o750)))
    modes = {"site.yaml": 0o640, "keys.json": 0o600, "mqtt.json": 0o600}
    for name, src in files.items():
        plan.steps.append(Step(f"copy {src} to {cfg / name} ({modes[name]:04o})", _copy(src, cfg / name, modes[name])))
    owned = [(cfg, "root"), (data, layout.user)] + [(cfg / n, layout.user if n != "site.yaml" else "root")
                                                      for n in files]
    for path, owner in owned:
        chown = _chown(path, owner, layout.user) if live else None
        plan.steps.append(Step(f"chown {owner}:{layout.user} {path}", chown, "" if live else "--root"))
    plan.steps.append(Step(f"write unit {unit}", _write(unit, render_unit(layout), 0o644)))
    # Compile the tick kernels now, as the service user into the unit's cache dir: on a Pi a cold
    # cache would hold the first tick (and every alert) back by a minute or more (docs/benchmarks.md).
    python = str(Path(layout.exe).parent / "python")
    # Also built ahead of time into an extension module there: the agent then runs without numba
    # (~120 MB less RSS); if that build fails (no gcc / python3-dev) it only warns and the JIT is used.
    warm = ["runuser", "-u", layout.user, "--", "env", f"NUMBA_CACHE_DIR={layout.data_dir}/numba-cache",
            "QWATCH_KERNELS=jit", python, "-c", "from edge.bands.kernel_aot import prepare; print(prepare()[1])"]
    plan.steps.append(Step(f"compile the tick kernels into {data / 'numba-cache'} as {layout.user}",
                           _run(warm, timeout_s=900.0) if live else None,  # ~1-2 min on a Pi 4
                           "" if live else "--root: run `qwatch-edge doctor --warm-kernels` as the service user"))
    if live:
        plan.steps.append(Step("systemctl daemon-reload", _run(["systemctl", "daemon-reload"])))
    if enable:
        cmd = (["systemctl", "enable", "--now", UNIT_NAME] if live
               else ["systemctl", f"--root={root}", "enable", UNIT_NAME])
        plan.steps.append(Step(" ".join(cmd), _run(cmd)))
    return plan


def plan_uninstall(layout: Layout, root: Path, *, purge: bool) -> Plan:
    """Every step of an uninstall from `root`, in order."""
    plan = Plan(root)
    live = plan.live
    unit = plan.path(layout.unit_dir) / UNIT_NAME
    cmd = (["systemctl", "disable", "--now", UNIT_NAME] if live
           else ["systemctl", f"--root={root}", "disable", UNIT_NAME])
    plan.steps.append(Step(" ".join(cmd), _run(cmd) if unit.exists() else None,
                           "" if unit.exists() else "no unit installed"))
    plan.steps.append(Step(f"remove unit {unit}", (lambda: unit.unlink(missing_ok=True))))
    if live:
        plan.steps.append(Step("systemctl daemon-reload", _run(["systemctl", "daemon-reload"])))
    cfg, data = plan.path(layout.config_dir), plan.path(layout.data_dir)
    if purge:
        plan.steps.append(Step(f"remove config dir {cfg} (keys, credentials)", lambda: shutil.rmtree(cfg, True)))
        plan.steps.append(Step(f"remove data dir {data} (outbox: undelivered alerts are lost)",
                               lambda: shutil.rmtree(data, True)))
        userdel = ["userdel", layout.user]
        there = live and _user_exists(layout.user)
        plan.steps.append(Step(f"remove user {layout.user}: {' '.join(userdel)}", _run(userdel) if there else None,
                               "" if there else ("--root" if not live else "no such user")))
    else:
        plan.steps.append(Step(f"keep {cfg} and {data} (add --purge to remove them and the user)", skipped="kept"))
    return plan


def execute(plan: Plan, *, dry_run: bool) -> None:
    """Print each step; run it unless `dry_run` or skipped. Stops at the first failure (InstallError)."""
    for step in plan.steps:
        if step.run is None:
            typer.echo(f"  skip  {step.text} ({step.skipped})")
        elif dry_run:
            typer.echo(f"  would {step.text}")
        else:
            typer.echo(f"  do    {step.text}")
            try:
                step.run()
            except OSError as exc:
                raise InstallError(f"{step.text}: {exc.strerror or exc}") from None


def _exe(given: str | None) -> str:
    if given:
        return given
    found = shutil.which("qwatch-edge") or str(Path(sys.argv[0]).resolve())
    return str(Path(found).resolve()) if Path(found).exists() else "/opt/qwatch/.venv/bin/qwatch-edge"


RootOpt = Annotated[Path, typer.Option("--root", help="install into this directory tree instead of / (tests)")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="print what would be done, change nothing")]


def install(
    node: Annotated[str, typer.Option("--node", help="this node's ID (as provisioned)", callback=id_option("node ID"))],
    site_config: Annotated[Path | None, typer.Option("--site-config", help="copy this site YAML to "
                                                                           "CONFIG_DIR/site.yaml")] = None,
    keys: Annotated[Path | None, typer.Option("--keys", help="copy this key file to CONFIG_DIR/keys.json")] = None,
    credentials: Annotated[Path | None, typer.Option("--credentials", help="copy this MQTT bundle to "
                                                                           "CONFIG_DIR/mqtt.json")] = None,
    root: RootOpt = Path("/"),
    dry_run: DryOpt = False,
    user: Annotated[str, typer.Option("--user", help="service user", callback=id_option("user name"))] = "qwatch",
    config_dir: Annotated[Path, typer.Option("--config-dir")] = Path("/etc/qwatch"),
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path("/var/lib/qwatch"),
    exe: Annotated[str | None, typer.Option("--exe", help="qwatch-edge executable the unit runs "
                                                          "(default: this one)")] = None,
    no_enable: Annotated[bool, typer.Option("--no-enable", help="write the unit but do not enable it")] = False,
) -> None:
    """Install the agent as the systemd service qwatch-edge (user, dirs, files, unit, enable)."""
    files = {n: p for n, p in (("site.yaml", site_config), ("keys.json", keys), ("mqtt.json", credentials))
             if p is not None}
    for name, path in files.items():
        if not path.is_file():
            typer.echo(f"qwatch-edge: error: {path}: no such file (for {name})", err=True)
            raise typer.Exit(EXIT_USAGE)
    if not config_dir.is_absolute() or not data_dir.is_absolute():
        typer.echo("qwatch-edge: error: --config-dir and --data-dir must be absolute paths", err=True)
        raise typer.Exit(EXIT_USAGE)
    root = root.resolve()
    if root == Path("/") and not dry_run and os.geteuid() != 0:
        typer.echo("qwatch-edge: error: installing into / needs root: run it with sudo (or try --dry-run)", err=True)
        raise typer.Exit(EXIT_FAILED)
    layout = Layout(node=node, user=user, config_dir=config_dir, data_dir=data_dir, exe=_exe(exe),
                    groups=_existing_groups(("bluetooth", "dialout")))
    plan = plan_install(layout, root, files, enable=not no_enable)
    typer.echo(f"{'dry run: ' if dry_run else ''}install qwatch-edge for node {node} into {root}")
    try:
        execute(plan, dry_run=dry_run)
    except InstallError as exc:
        typer.echo(f"qwatch-edge: error: {exc}", err=True)
        typer.echo("  fix the cause and run install again (every step is safe to repeat)", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if not dry_run:
        missing = [n for n in ("site.yaml", "keys.json", "mqtt.json") if not (plan.path(config_dir) / n).exists()]
        if missing:
            typer.echo(f"note: {', '.join(missing)} not in {plan.path(config_dir)} yet: the service fails until "
                       "they are there (see `qwatch-edge doctor`)")


def uninstall(
    root: RootOpt = Path("/"),
    dry_run: DryOpt = False,
    purge: Annotated[bool, typer.Option("--purge", help="also remove config, data (outbox) and the user")] = False,
    user: Annotated[str, typer.Option("--user", callback=id_option("user name"))] = "qwatch",
    config_dir: Annotated[Path, typer.Option("--config-dir")] = Path("/etc/qwatch"),
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path("/var/lib/qwatch"),
) -> None:
    """Stop, disable and remove the qwatch-edge service (config and data stay unless --purge)."""
    root = root.resolve()
    if root == Path("/") and not dry_run and os.geteuid() != 0:
        typer.echo("qwatch-edge: error: uninstalling from / needs root: run it with sudo (or try --dry-run)",
                   err=True)
        raise typer.Exit(EXIT_FAILED)
    plan = plan_uninstall(Layout(node="-", user=user, config_dir=config_dir, data_dir=data_dir), root, purge=purge)
    typer.echo(f"{'dry run: ' if dry_run else ''}uninstall qwatch-edge from {root}")
    try:
        execute(plan, dry_run=dry_run)
    except InstallError as exc:
        typer.echo(f"qwatch-edge: error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
