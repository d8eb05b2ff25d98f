"""`qwatch-edge doctor`: a self-check of this node, as a table of pass / warn / fail with fixes.

Checks, in order: the files (site config, band keys and their mode, MQTT credentials), the
radios (BLE adapters through bleak, serial scanners with HELLO), the cameras (open, one frame,
size, rate, zones against the frame), the broker with the node's own credentials (connect,
own namespace, foreign namespace refused, the cloud ingest's session), the clock against the
cloud, disk and outbox, the health of each receiver as the running agent learned it (its saved node
telemetry: gain off, deaf, silent) and whether the breach model fits the site, the compiled kernel cache,
and the Pi's temperature and throttling.

Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for bad
arguments. `--json` prints `{"ok": bool, "checks": [{group, name, status, detail, fix}]}`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from edge.breach_model_health import check_breach_model
from edge.doctor_checks import (
    Check,
    check_clock,
    check_credentials,
    check_data_dir,
    check_disk,
    check_kernel_cache,
    check_keys,
    check_outbox,
    check_pi,
    check_site_config,
)
from edge.learned_state_health import check_learned_state
from edge.receiver_health import check_receivers
from protocols.cli_errors import EXIT_FAILED, EXIT_USAGE, id_option, parse_hostport
from protocols.errors import ConfigError
from protocols.topics import NodeTopics

STATUS_STYLE = {"pass": "[green]pass[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[bold red]FAIL[/bold red]"}


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    """What the doctor looks at."""

    config: Path
    keys: Path
    node: str | None
    credentials: Path | None
    broker: str | None
    data_dir: Path
    cloud: str | None
    timeout_s: float = 5.0
    clock_skew_s: float = 0.0
    warm_kernels: bool = False
    cameras: bool = True


def run_checks(o: DoctorOptions) -> list[Check]:
    """Every check, in table order. Never raises for a broken node: that is what the checks report."""
    from edge.doctor_broker import probe_broker
    from edge.doctor_devices import check_cameras, check_radios

    checks, site = check_site_config(o.config)
    checks += check_keys(o.keys, site)
    node = o.node or "edge-01"
    cred_checks, creds = check_credentials(o.credentials, site, node)
    if o.node is None and creds is not None and creds.node:
        node = creds.node
    checks += cred_checks
    if site is not None:
        checks += check_radios(site)
        if o.cameras:
            checks += check_cameras(site, timeout_s=o.timeout_s)
    if o.broker is not None:
        host, port = parse_hostport(o.broker)
    elif creds is not None:
        host, port = creds.broker_host, creds.broker_port
    else:
        host, port = "127.0.0.1", 1883
    if site is not None and (creds is not None or o.credentials is None):
        checks += probe_broker(host, port, NodeTopics(site.site.id, node), creds, timeout=o.timeout_s)
    else:
        why = "the site config" if site is None else "the credentials bundle"
        checks.append(Check("broker", "connect", "fail", f"not tried: {why} did not load",
                            f"fix the {why} row above first"))
    checks += check_clock(o.cloud, skew_s=o.clock_skew_s, timeout=o.timeout_s)
    checks += check_data_dir(o.data_dir)
    checks += check_disk(o.data_dir)
    checks += check_outbox(o.data_dir, time.time())
    checks += check_receivers(o.data_dir)
    checks += check_breach_model(o.data_dir)
    checks += check_learned_state(o.data_dir, site)
    checks += check_kernel_cache(warm=o.warm_kernels)
    checks += check_pi()
    return checks


def render(checks: list[Check]) -> None:
    """The table, on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="qwatch-edge doctor", show_lines=False)
    for col in ("group", "check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.group, c.name, STATUS_STYLE[c.status], c.detail, c.fix, end_section=False)
    console = Console(width=max(Console().width, 160))
    console.print(table)
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    console.print(f"{len(checks)} checks: {failed} failed, {warned} warnings"
                  + ("" if failed else " — this node is ready"))


def doctor(
    config: Annotated[Path, typer.Option("--config", help="site YAML")] = Path("/etc/qwatch/site.yaml"),
    keys: Annotated[Path, typer.Option("--keys", help="band key file (must be 0600)")] = Path("/etc/qwatch/keys.json"),
    node: Annotated[str | None, typer.Option("--node", help="this node's ID (default: the bundle's node)",
                                             callback=id_option("node ID"))] = None,
    credentials: Annotated[Path | None, typer.Option(
        "--credentials", help="MQTT credentials bundle (default /etc/qwatch/mqtt.json when it exists)")] = None,
    broker: Annotated[str | None, typer.Option("--broker", help="broker HOST:PORT (default: the bundle's)")] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="outbox and recordings")] = Path("/var/lib/qwatch"),
    cloud: Annotated[str | None, typer.Option("--cloud", help="the cloud's base URL (clock reference)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.5, max=60, help="per-probe timeout, s")] = 5.0,
    warm_kernels: Annotated[bool, typer.Option("--warm-kernels", help="compile the tick kernels into the cache "
                                                                      "now (run as the service user)")] = False,
    no_cameras: Annotated[bool, typer.Option("--no-cameras", help="skip the camera checks")] = False,
    clock_skew_s: Annotated[float, typer.Option("--clock-skew-s", hidden=True, min=-86400, max=86400,
                                                help="test: add this to the local clock")] = 0.0,
) -> None:
    """Check this node end to end: files, radios, cameras, broker, clock, disk, kernels, Pi."""
    if credentials is None and Path("/etc/qwatch/mqtt.json").exists():
        credentials = Path("/etc/qwatch/mqtt.json")
    if broker is not None:
        try:
            parse_hostport(broker)
        except ConfigError as err:
            typer.echo(f"qwatch-edge: error: {err}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
    opts = DoctorOptions(config=config, keys=keys, node=node, credentials=credentials, broker=broker,
                         data_dir=data_dir, cloud=cloud, timeout_s=timeout, clock_skew_s=clock_skew_s,
                         warm_kernels=warm_kernels, cameras=not no_cameras)
    checks = run_checks(opts)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}, indent=1))
    else:
        render(checks)
    raise typer.Exit(EXIT_FAILED if failed else 0)
