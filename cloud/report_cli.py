"""``qwatch-cloud report daily``: the daily report written from the alert store, as JSON or CSV."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cloud.api_context import DEFAULT_TZ
from cloud.band_registry import BandRegistry, RegistryPeople
from cloud.report import collect, known_sites, report_csv
from protocols.errors import ConfigError
from protocols.site_config import SiteConfig, load_site_config
from protocols.text import LabelError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="reports for the province")


def _configs(paths: list[Path]) -> dict[str, SiteConfig]:
    out: dict[str, SiteConfig] = {}
    for p in paths:
        try:
            cfg = load_site_config(p)
        except (ConfigError, LabelError) as err:
            raise typer.BadParameter(str(err), param_hint="--site-config") from None
        out[cfg.site.id] = cfg
    return out


@app.command("daily")
def daily(
    date: Annotated[str, typer.Option("--date", help="local day YYYY-MM-DD in the province's time zone")],
    db: Annotated[str, typer.Option("--db", help="the cloud's alert store (as given to serve: a file or a "
                                                 "postgresql:// URL)")] = "var/cloud/qwatch.db",
    registry_db: Annotated[Path | None, typer.Option(
        "--registry-db", help="the band registry file (as given to serve) [default: as serve's]")] = None,
    site: Annotated[str | None, typer.Option("--site", help="one site only (default: every site)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None,
    site_config: Annotated[list[Path], typer.Option(
        "--site-config", metavar="PATH", help="site YAML (repeatable): people under watch and the site's name")
    ] = [],  # noqa: B006 - typer needs a literal default
    tz: Annotated[str, typer.Option("--tz", help="the province's time zone")] = DEFAULT_TZ,
) -> None:
    """Write the daily report: people under watch, alerts, breaches and time to acknowledge, escalations,
    node uptime, camera offline-minutes."""
    import datetime as dt

    from cloud.cli import db_target, open_store, open_tz, registry_path

    if fmt not in ("json", "csv"):
        raise typer.BadParameter(f"{fmt!r}: expected json or csv", param_hint="--format")
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise typer.BadParameter(f"{date!r}: expected a calendar date YYYY-MM-DD", param_hint="--date") from None
    target = db_target(db)
    if not target.is_postgresql and not Path(target.location).is_file():
        raise typer.BadParameter(f"{db}: no such alert store (the --db of `qwatch-cloud serve`)", param_hint="--db")
    zone = open_tz(tz)
    configs = _configs(site_config)
    store = open_store(db)
    try:
        people = RegistryPeople(BandRegistry(registry_path(db, registry_db)), {sid: {b.id: b.person for b in c.bands}
                                                   for sid, c in configs.items()})  # as `serve` counts them
        sites = {site} if site is not None else known_sites(store, [*configs, *people])
        report = collect(store, day, zone, sites, people=people, names={s: c.site.name for s, c in configs.items()},
                         now=time.time())
    finally:
        store.close()
    text = report_csv(report) if fmt == "csv" else json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_bytes(text.encode("utf-8"))
        typer.echo(f"wrote {out} ({len(report['sites'])} sites, {report['date']}, {report['tz']})", err=True)
