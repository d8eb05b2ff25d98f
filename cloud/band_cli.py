"""`qwatch-cloud band list|retire|audit` and `qwatch-cloud config push`.

They work on the cloud's database file directly (the registry tables next to the alert store;
SQLite WAL lets them run beside `serve`). Errors are one or two lines and exit 1 (an operation
failed) or 2 (bad arguments or files); keys are never printed.
"""

from __future__ import annotations

import getpass
import sqlite3
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud.band_registry import BandRegistry, RegistryError
from protocols.cli_errors import EXIT_FAILED, EXIT_USAGE, id_option, parse_hostport
from protocols.credentials import MqttCredentials, load_credentials
from protocols.errors import ConfigError
from protocols.site_config import read_config_text

band_app = typer.Typer(add_completion=False, no_args_is_help=True, help="the band registry: list, retire, audit")
config_app = typer.Typer(add_completion=False, no_args_is_help=True, help="push a site's config to its nodes")

DbOpt = Annotated[Path, typer.Option("--db", help="the cloud's database (as given to `serve --db`)")]
ByOpt = Annotated[str | None, typer.Option("--by", help="who makes the change (audit; default: the login name)")]
DEFAULT_DB = Path("var/cloud/qwatch.db")


def _fail(msg: str, fix: str = "", code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"qwatch-cloud: error: {msg}", err=True)
    if fix:
        typer.echo(f"  {fix}", err=True)
    return typer.Exit(code)


def _registry(db: Path) -> BandRegistry:
    if not db.exists():
        raise _fail(f"{db}: no such database", "pass --db with the file `qwatch-cloud serve --db` uses",
                    EXIT_USAGE)
    try:
        return BandRegistry(db)
    except sqlite3.Error as exc:
        raise _fail(f"{db}: cannot open ({exc})", "check the path and that this user may write it") from None


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def _ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t is not None else "-"


@band_app.command("list")
def band_list(
    db: DbOpt = DEFAULT_DB,
    site: Annotated[str | None, typer.Option("--site", callback=id_option("site ID"))] = None,
    active: Annotated[bool, typer.Option("--active", help="only bands not retired")] = False,
) -> None:
    """Every band in the registry (never its key)."""
    reg = _registry(db)
    table = Table(title=f"bands in {db}")
    for col in ("band", "site", "person", "zones", "enrolled (UTC)", "by", "retired (UTC)"):
        table.add_column(col)
    for b in reg.bands(site, include_retired=not active):
        table.add_row(str(b.band), b.site, b.person, ",".join(b.allowed_zones), _ts(b.enrolled_at), b.enrolled_by,
                      _ts(b.retired_at))
    Console().print(table)


@band_app.command("retire")
def band_retire(
    band: Annotated[int, typer.Argument(min=1, max=0xFFFFFFFF, help="band ID")],
    db: DbOpt = DEFAULT_DB,
    by: ByOpt = None,
) -> None:
    """End a band's enrolment (the person left quarantine); then push the site's config."""
    reg = _registry(db)
    try:
        rec = reg.retire(band, by=_who(by))
    except RegistryError as exc:
        raise _fail(str(exc), "see `qwatch-cloud band list`") from None
    typer.echo(f"retired band {band} ({rec.person}) at site {rec.site}; its key is deleted. Push the site's config "
               f"so the nodes drop it: qwatch-cloud config push --site {rec.site}")


@band_app.command("audit")
def band_audit(
    band: Annotated[int | None, typer.Argument(min=1, max=0xFFFFFFFF, help="band ID (default: all)")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Who changed what, newest first."""
    reg = _registry(db)
    table = Table(title="band audit")
    for col in ("time (UTC)", "who", "band", "site", "action", "detail"):
        table.add_column(col, overflow="fold")
    for row in reg.audit(band):
        table.add_row(_ts(row["ts"]), row["actor"], str(row["band"]), row["site"], row["action"], str(row["detail"]))
    Console().print(table)


def _creds(path: Path | None) -> MqttCredentials | None:
    if path is None:
        return None
    try:
        creds = load_credentials(path)
    except ConfigError as exc:
        raise _fail(str(exc), "use DIR/bundles/qwatch-cloud.json from `qwatch-cloud pki init`", EXIT_USAGE) from None
    if creds.role != "cloud":
        raise _fail(f"{path}: role is {creds.role!r}", "config push needs the cloud's bundle (qwatch-cloud.json)",
                    EXIT_USAGE)
    return creds


@config_app.command("push")
def config_push(
    site: Annotated[str, typer.Option("--site", help="site ID", callback=id_option("site ID"))],
    config: Annotated[Path | None, typer.Option("--config", help="site YAML (default: the last pushed one)")] = None,
    db: DbOpt = DEFAULT_DB,
    credentials: Annotated[Path | None, typer.Option("--credentials", help="the cloud's MQTT bundle")] = None,
    mqtt: Annotated[str | None, typer.Option("--mqtt", help="broker HOST:PORT (default: the bundle's)")] = None,
    node: Annotated[list[str], typer.Option("--node", help="push to this node too (repeatable; default: every "
                                                           "node of the site the cloud has heard of)")] = [],  # noqa: B006
    wait: Annotated[float, typer.Option("--wait", min=0, max=600, help="seconds to wait for the nodes' answers")] = 30,
    by: ByOpt = None,
) -> None:
    """Send SITE's config, with its enrolled bands and their keys, to the site's nodes; show each answer."""
    from cloud.alert_store import AlertStore
    from cloud.config_push import compose, push

    for n in node:
        id_option("node ID")(n)
    reg = _registry(db)
    creds = _creds(credentials)
    try:
        host, port = parse_hostport(mqtt, option="--mqtt") if mqtt else (
            (creds.broker_host, creds.broker_port) if creds else ("127.0.0.1", 1883))
        if config is not None:
            base, source = read_config_text(config), str(config)
        else:
            last = reg.last_push(site)
            if last is None:
                raise _fail(f"no config has been pushed for site {site} yet", "pass --config SITE.yaml", EXIT_USAGE)
            base, source = last[1], f"the last push of {site} (version {last[0]})"
        composed = compose(base, source, reg, site)
    except ConfigError as exc:
        raise _fail(str(exc), "fix the file (or the band's zones) and push again", EXIT_USAGE) from None
    except FileNotFoundError:
        raise _fail(f"{config}: no such file", "pass --config with the site's YAML", EXIT_USAGE) from None
    store = AlertStore(db)
    known = [r for r in store.load_nodes() if r["site"] == site]
    store.close()
    nodes = set(node) | {r["node"] for r in known}
    # Wait for the nodes named on the command line and those the cloud sees online; the others get
    # the retained config when they reconnect.
    waited = set(node) | {r["node"] for r in known if r["online"]}
    if not nodes:
        raise _fail(f"no node of site {site} is known to the cloud", "start the nodes first (they register when "
                    "they connect) or name them with --node", EXIT_USAGE)
    for note in composed.notes:
        typer.echo(f"note: {note}")
    version = reg.record_push(site, composed.yaml_text, len(composed.keys), by=_who(by))
    try:
        answers = push(composed, version, nodes, host=host, port=port, creds=creds, wait_s=wait, wait_for=waited)
    except (OSError, ConnectionError, ValueError) as exc:
        raise _fail(f"cannot reach the broker {host}:{port}: {exc}", "check --mqtt/--credentials; the version "
                    f"{version} is recorded, push again when the broker is reachable") from None
    table = Table(title=f"config push: site {site}, version {version}, bands with keys: {len(composed.keys)}")
    for col in ("node", "result", "runs version", "error"):
        table.add_column(col, overflow="fold")
    refused = silent = 0
    for a in answers:
        if a.result is None:
            silent += 1
            why = "online but silent: check it with `qwatch-edge doctor`" if a.node in waited else "offline"
            table.add_row(a.node, "[yellow]no answer[/yellow]", "-", f"{why}; it gets this config (retained) "
                          "when it (re)connects")
        else:
            refused += not a.result.ok
            table.add_row(a.node, "ok" if a.result.ok else "[red]refused[/red]", str(a.result.config_version or "-"),
                          a.result.error or "")
    Console().print(table)
    # A silent node gets the retained config when it reconnects; a refusal or total silence is a failure.
    if refused or silent == len(answers) or any(a.result is None for a in answers if a.node in waited):
        raise typer.Exit(EXIT_FAILED)
