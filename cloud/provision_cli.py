"""`qwatch-cloud pki init`, `provision-node`, `provision-cloud`, `revoke-node`, `list-nodes`.

The technician's side of broker confinement (cloud/provision.py does the work). Errors print
one line that says what is wrong and how to fix it, and exit 1; secrets are never printed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cloud.pki import PkiError
from cloud.provision import Province, ProvisionError

T = TypeVar("T")

pki_app = typer.Typer(add_completion=False, no_args_is_help=True, help="the province CA and broker certificate")

DirOpt = Annotated[Path, typer.Option("--dir", help="province directory (CA, broker files, bundles)")]
SiteOpt = Annotated[str, typer.Option("--site", help="site ID (as in the site config)")]
NodeOpt = Annotated[str, typer.Option("--node", help="node ID (as given to `qwatch-edge run --node`)")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="write the bundle here instead of DIR/bundles/…")]
RotateOpt = Annotated[bool, typer.Option("--rotate", help="already provisioned: issue a new password")]

RELOAD_HINT = "then reload the broker so it re-reads the password and ACL files: systemctl reload mosquitto"


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except (ProvisionError, PkiError) as exc:
        typer.echo(f"qwatch-cloud: error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"qwatch-cloud: error: {exc.filename or 'the province directory'}: {exc.strerror}; "
                   "run as a user who may write the province directory (usually root)", err=True)
        raise typer.Exit(1) from None


@pki_app.command("init")
def pki_init(
    directory: DirOpt,
    province: Annotated[str, typer.Option("--province", help="province name (goes into the CA's name)")],
    broker_host: Annotated[list[str], typer.Option(
        "--broker-host", help="host name or IP the nodes connect to (repeatable; the first goes into bundles)")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="the broker's TLS port")] = 8883,
    reissue: Annotated[bool, typer.Option("--reissue", help="re-issue the broker certificate (same CA)")] = False,
) -> None:
    """Create the province CA (once), the broker certificate, broker config and the cloud's credentials."""
    prov = Province(directory)
    for line in _run(lambda: prov.init(province, broker_host, port=port, reissue=reissue)):
        typer.echo(line)
    typer.echo(f"install {prov.conf_path} as /etc/mosquitto/conf.d/qwatch.conf (see docs/deploy.md), "
               "and keep ca.key off the broker if you can")


def provision_node(directory: DirOpt, site: SiteOpt, node: NodeOpt, rotate: RotateOpt = False,
                   out: OutOpt = None) -> None:
    """Create a node's MQTT user and ACL, and write its credentials bundle (mode 0600)."""
    path = _run(lambda: Province(directory).provision_node(site, node, rotate=rotate, out=out))
    typer.echo(f"{'rotated' if rotate else 'provisioned'} node {site}/{node}: bundle {path}")
    typer.echo(f"copy it to the node as /etc/qwatch/mqtt.json (owner qwatch, mode 0600), {RELOAD_HINT}")


def provision_cloud(directory: DirOpt, rotate: RotateOpt = False, out: OutOpt = None,
                    worker: Annotated[str | None, typer.Option(
                        "--worker", help="a further cloud user qwatch-cloud-WORKER (one per --shared ingest "
                                         "worker: the broker makes the client ID the username)")] = None) -> None:
    """Create (or --rotate) the cloud ingest's MQTT user: reads every topic, writes only commands."""
    path = _run(lambda: Province(directory).provision_cloud(rotate=rotate, out=out, worker=worker))
    typer.echo(f"cloud credentials: {path} (pass to `qwatch-cloud serve --credentials`), {RELOAD_HINT}")


def revoke_node(directory: DirOpt, site: SiteOpt, node: NodeOpt) -> None:
    """Remove a node's MQTT user and ACL; it is refused once the broker reloads."""
    _run(lambda: Province(directory).revoke_node(site, node))
    typer.echo(f"revoked node {site}/{node}; {RELOAD_HINT} (connected sessions of it are closed then)")


def list_nodes(directory: DirOpt) -> None:
    """Show every provisioned MQTT user as a table."""
    rows = _run(lambda: Province(directory).list_clients())
    table = Table(title=f"MQTT clients in {directory}")
    for col in ("user (site/node)", "role", "created (UTC)", "rotated (UTC)", "password", "bundle"):
        table.add_column(col, overflow="fold")
    for r in rows:
        e = r.entry
        table.add_row(e.username, e.role, _short_ts(e.created), _short_ts(e.rotated),
                      "ok" if r.in_password_file else "[red]MISSING (re-run with --rotate)[/red]",
                      str(r.bundle.relative_to(directory)) if r.bundle else "handed out (no copy kept)")
    Console().print(table)


def _short_ts(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def register(app: typer.Typer) -> None:
    """Add these commands to the `qwatch-cloud` app."""
    app.add_typer(pki_app, name="pki")
    app.command("provision-node")(provision_node)
    app.command("provision-cloud")(provision_cloud)
    app.command("revoke-node")(revoke_node)
    app.command("list-nodes")(list_nodes)
