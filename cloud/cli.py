"""``qwatch-cloud``: run the province's cloud (ingest + API + dashboard) or the ingest alone."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from cloud.alert_store import AlertStore
from cloud.api import CloudContext, create_app
from cloud.api_context import DEFAULT_TZ
from cloud.auth import SignInSettings
from cloud.band_cli import band_app, config_app
from cloud.band_registry import BandRegistry, RegistryPeople
from cloud.ingest import Ingest, IngestConfig
from cloud.live import LiveHub
from cloud.live_pg import AlertListener
from cloud.notifier import Notifier
from cloud.notify import NotifyConfig, load_notify
from cloud.provision_cli import register as register_provisioning
from cloud.report_cli import app as report_app
from cloud.site_geometry import SiteGeometry
from cloud.store_db import DB_ERRORS, DbTarget, DbUrlError, parse_db, redact
from cloud.timeseries import TelemetryWriter
from cloud.users_cli import ServeUsersOpt, log_auth_mode, open_auth
from cloud.users_cli import app as users_app
from protocols.cli_errors import run_cli
from protocols.credentials import MqttCredentials, load_credentials
from protocols.errors import ConfigError
from protocols.site_config import SiteConfig, load_site_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="qwatch provincial cloud")
log = logging.getLogger("qwatch.cloud")
register_provisioning(app)
app.add_typer(users_app, name="user")
app.add_typer(band_app, name="band")
app.add_typer(config_app, name="config")
app.add_typer(report_app, name="report")


def _host_port(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:1883", param_hint=option)
    return host, int(port)


def _escalation(values: list[str], sites: Mapping[str, SiteConfig] | None = None) -> dict[str, float]:
    """Per-site escalation times: each site config's ``rules.escalate_after_s``, then the
    ``--escalate-site SITE=SECONDS`` flags, which win over a site config."""
    # The site's value even when the file leaves it at its default (docs/protocol.md §3):
    # the site config, not the cloud's fallback, defines that site's escalation time.
    out = {sid: cfg.rules.escalate_after_s for sid, cfg in (sites or {}).items()}
    for v in values:
        site, sep, secs = v.partition("=")
        try:
            out[site] = float(secs)
        except ValueError:
            sep = ""
        if not sep or not site:
            raise typer.BadParameter(f"{v!r}: expected SITE=SECONDS", param_hint="--escalate-site")
    return out


def _load_sites(paths: list[Path]) -> dict[str, SiteConfig]:
    """Validate every ``--site-config``; a bad file or a site configured twice is a usage error."""
    out: dict[str, SiteConfig] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        try:
            site = load_site_config(path)
        except ConfigError as err:
            raise typer.BadParameter(str(err), param_hint="--site-config") from None
        sid = site.site.id
        if sid in origin:
            raise typer.BadParameter(f"{path}: site {sid!r} is already configured by {origin[sid]}",
                                     param_hint="--site-config")
        origin[sid] = path
        out[sid] = site
    return out


@dataclass
class Options:
    """Options shared by ``serve`` and ``ingest``."""

    db: str
    mqtt: str | None
    vm: str
    spool: Path | None
    client_id: str
    shared: bool
    silence_s: float
    escalate_after_s: float
    escalate_site: list[str]
    log_level: str
    site_config: list[Path]
    credentials: Path | None = None
    notify: Path | None = None
    tz: str = DEFAULT_TZ
    registry_db: Path | None = None


DbOpt = Annotated[str, typer.Option(
    "--db", help="alert store: a SQLite file (PATH or sqlite:///PATH) or postgresql://USER@HOST:PORT/DB "
                 "(shared by ingest and API replicas: docs/deploy.md)")]
RegistryOpt = Annotated[Path | None, typer.Option(
    "--registry-db", help="SQLite file of the band registry [default: the --db file; var/cloud/registry.db "
                          "when --db is PostgreSQL]")]
DEFAULT_DB = "var/cloud/qwatch.db"
MqttOpt = Annotated[str | None, typer.Option(
    "--mqtt", help="broker HOST:PORT (default: the bundle's broker with --credentials, else 127.0.0.1:1883)")]
CredOpt = Annotated[Path | None, typer.Option(
    "--credentials", help="cloud MQTT credentials bundle (mode 0600) from `qwatch-cloud pki init`: TLS verified "
                          "against the province CA, and the qwatch-cloud user")]
VmOpt = Annotated[str, typer.Option("--vm", help="VictoriaMetrics base URL")]
SpoolOpt = Annotated[Path | None, typer.Option("--spool", help="telemetry spool dir [default: next to --db]")]
ClientOpt = Annotated[str, typer.Option("--client-id", help="MQTT client ID of the persistent session")]
SharedOpt = Annotated[bool, typer.Option("--shared", help="subscribe $share/ingest/qwatch/v1/# (N workers)")]
# Bounds are IngestConfig's (cloud/ingest.py INGEST_BOUNDS).
SilenceOpt = Annotated[float, typer.Option("--silence-s", min=0.01, max=7 * 86400,
                                           help="node_offline after this long unheard")]
EscOpt = Annotated[float, typer.Option("--escalate-after-s", min=0.01, max=86400,
                                       help="escalate unacknowledged alerts after")]
EscSiteOpt = Annotated[list[str], typer.Option("--escalate-site", help="per-site override SITE=SECONDS")]
SiteCfgOpt = Annotated[list[Path], typer.Option(
    "--site-config", metavar="PATH",
    help="site YAML (repeatable): its rules.escalate_after_s is that site's escalation time (--escalate-site "
         "wins); serve also draws its zones, receivers and beacons on the dashboard")]
LogOpt = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR")]
NotifyOpt = Annotated[Path | None, typer.Option(
    "--notify", metavar="FILE", help="escalation channels per site (webhooks, SMTP e-mail): docs/cloud.md, Escalation")]
TzOpt = Annotated[str, typer.Option("--tz", help="the province's time zone: daily reports, CSV times, e-mails")]


def open_tz(name: str) -> ZoneInfo:
    """``--tz`` as a zone, or a usage error naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(f"{name!r} is not a time zone (e.g. Asia/Ho_Chi_Minh)", param_hint="--tz") from None


def _open_notify(path: Path | None) -> NotifyConfig | None:
    if path is None:
        return None
    try:
        return load_notify(path)
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--notify") from None


def people_of(sites: Mapping[str, SiteConfig]) -> dict[str, dict[int, str]]:
    """site -> band -> person label (empty when the config has none) from the site configs."""
    return {sid: {b.id: b.person for b in cfg.bands} for sid, cfg in sites.items()}


def _setup(o: Options, sites: Mapping[str, SiteConfig] | None = None, *, all_positions: bool = False,
           ) -> tuple[AlertStore, TelemetryWriter, Ingest, LiveHub]:
    _logging(o.log_level)
    creds = _load_cloud_credentials(o.credentials)
    if o.mqtt is not None:
        host, port = _host_port(o.mqtt, "--mqtt")
    elif creds is not None:
        host, port = creds.broker_host, creds.broker_port
    else:
        host, port = "127.0.0.1", 1883
    sites = _load_sites(o.site_config) if sites is None else sites
    per_site = _escalation(o.escalate_site, sites)
    tz = open_tz(o.tz)
    notify = _open_notify(o.notify)
    for site_id, after_s in sorted(per_site.items()):
        log.info("event=escalation site=%s after_s=%g", site_id, after_s)
    target = db_target(o.db)
    store = open_store(o.db)
    local_dir = Path(target.location).parent if not target.is_postgresql else Path(DEFAULT_DB).parent
    spool = o.spool if o.spool is not None else local_dir / "telemetry-spool"
    writer = TelemetryWriter(o.vm, spool)
    hub = LiveHub()
    cfg = IngestConfig(host=host, port=port, client_id=o.client_id, shared=o.shared, silence_s=o.silence_s,
                       escalate_after_s=o.escalate_after_s, escalate_per_site=per_site, credentials=creds,
                       all_positions=all_positions,
                       people=RegistryPeople(BandRegistry(registry_path(o.db, o.registry_db)), people_of(sites)))
    notifier = Notifier(store, notify, tz=tz) if notify is not None else None
    ingest = Ingest(cfg, store, writer, hub, notifier=notifier)
    writer.start()
    ingest.start()
    return store, writer, ingest, hub


def open_store(db: str) -> AlertStore:
    """The alert store of ``--db``; a database that cannot be reached is a one-line error, not a traceback."""
    db_target(db)
    try:
        return AlertStore(db)
    except DB_ERRORS as err:
        raise typer.BadParameter(f"cannot open the alert store {redact(db)}: {str(err).strip()}",
                                 param_hint="--db") from None


def _logging(log_level: str) -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"{log_level!r}: expected DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def db_target(db: str) -> DbTarget:
    """``--db`` parsed, or a usage error."""
    try:
        return parse_db(db)
    except DbUrlError as err:
        raise typer.BadParameter(str(err), param_hint="--db") from None


def registry_path(db: str, registry_db: Path | None) -> Path:
    """The band registry's SQLite file: ``--registry-db``, else the alert store's own file (SQLite), else
    ``var/cloud/registry.db`` (the registry holds band keys and is not on PostgreSQL: docs/deploy.md)."""
    if registry_db is not None:
        return registry_db
    target = db_target(db)
    return Path(target.location) if not target.is_postgresql else Path(DEFAULT_DB).parent / "registry.db"


def _load_cloud_credentials(path: Path | None) -> MqttCredentials | None:
    if path is None:
        return None
    try:
        creds = load_credentials(path)
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--credentials") from None
    if creds.role != "cloud":
        raise typer.BadParameter(f"{path}: role: is {creds.role!r}; the cloud needs its own bundle "
                                 "(DIR/bundles/qwatch-cloud.json from `qwatch-cloud pki init`)",
                                 param_hint="--credentials")
    return creds


def _teardown(store: AlertStore, writer: TelemetryWriter | None, ingest: Ingest | None) -> None:
    if ingest is not None:
        ingest.stop()
    if writer is not None:
        writer.stop()
    store.close()
    log.info("event=cloud_stopped")


@app.command()
def serve(
    db: DbOpt = DEFAULT_DB,
    mqtt: MqttOpt = None,
    vm: VmOpt = "http://127.0.0.1:8428",
    port: Annotated[int, typer.Option("--port", help="HTTP port for API and dashboard")] = 8080,
    host: Annotated[str, typer.Option("--host", help="HTTP bind address")] = "127.0.0.1",
    spool: SpoolOpt = None,
    client_id: ClientOpt = "qwatch-cloud-ingest",
    shared: SharedOpt = False,
    silence_s: SilenceOpt = 90.0,
    escalate_after_s: EscOpt = 120.0,
    escalate_site: EscSiteOpt = [],  # noqa: B006 - typer needs a literal default
    site_config: SiteCfgOpt = [],  # noqa: B006 - typer needs a literal default
    log_level: LogOpt = "INFO",
    credentials: CredOpt = None,
    users: ServeUsersOpt = None,
    notify: NotifyOpt = None,
    tz: TzOpt = DEFAULT_TZ,
    session_ttl_s: Annotated[float, typer.Option(
        "--session-ttl-s", min=1, max=30 * 86400, help="life of a session token from a sign-in code or a renewal")
    ] = 12 * 3600.0,
    code_ttl_s: Annotated[float, typer.Option("--code-ttl-s", min=1, max=86400, help="life of a sign-in code")
                          ] = 600.0,
    signin_fail_limit: Annotated[int, typer.Option(
        "--signin-fail-limit", min=1, max=10000, help="failed sign-ins per client per window, then 429")] = 10,
    signin_window_s: Annotated[float, typer.Option("--signin-window-s", min=1, max=86400,
                                                   help="the failure window")] = 300.0,
    registry_db: RegistryOpt = None,
    no_ingest: Annotated[bool, typer.Option(
        "--no-ingest", help="an API replica: no MQTT ingest here (other processes ingest into the shared "
                            "PostgreSQL --db); alerts and acks of other processes still arrive live")] = False,
    live_all_bands: Annotated[int, typer.Option(
        "--live-all-bands", min=0, max=1_000_000,
        help="a province user's dashboard gets every band position live up to this many bands; above it, "
             "per-site summaries and the map of the site opened (guards always see their sites live)")] = 1000,
) -> None:
    """Run ingest + API + live dashboard in one process (Ctrl-C stops it cleanly)."""
    import uvicorn

    o = Options(db, mqtt, vm, spool, client_id, shared, silence_s, escalate_after_s, escalate_site, log_level,
                site_config, credentials, notify, tz, registry_db)
    sites = _load_sites(site_config)
    auth = open_auth(users, SignInSettings(session_ttl_s=session_ttl_s, code_ttl_s=code_ttl_s,
                                           fail_limit=signin_fail_limit, fail_window_s=signin_window_s))
    if no_ingest and not db_target(db).is_postgresql:
        raise typer.BadParameter("an API replica shares the alert store: use a postgresql:// --db",
                                 param_hint="--no-ingest")
    if no_ingest:
        _logging(log_level)
        store, writer, ingest, hub = open_store(db), None, None, LiveHub()
    else:
        # With --shared, every node's positions for this replica's dashboards, not only its share.
        store, writer, ingest, hub = _setup(o, sites, all_positions=True)
    # Alerts stored or acknowledged by the other processes of a shared store, pushed to this one's clients.
    listener = AlertListener(store, hub).start() if store.postgresql else None
    log_auth_mode(auth, host, port)
    geometry = {sid: SiteGeometry.from_config(cfg) for sid, cfg in sites.items()}
    bands = BandRegistry(registry_path(db, registry_db))  # with SQLite, in the alert store's file
    api = create_app(CloudContext(store=store, hub=hub, ingest=ingest, writer=writer, vm_url=vm.rstrip("/"),
                                  sites=geometry, auth=auth, tz=open_tz(tz),
                                  notifier=ingest.notifier if ingest is not None else None,
                                  people=RegistryPeople(bands, people_of(sites)), bands=bands,
                                  live_all_bands=live_all_bands))
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="off"))
    log.info("event=serve url=http://%s:%d/ ingest=%s mqtt=%s tls=%s vm=%s db=%s", host, port, ingest is not None,
             f"{ingest.cfg.host}:{ingest.cfg.port}" if ingest is not None else "-", credentials is not None, vm,
             store.display)
    try:
        server.run()
    finally:
        if listener is not None:
            listener.stop()
        _teardown(store, writer, ingest)


@app.command()
def ingest(
    db: DbOpt = DEFAULT_DB,
    mqtt: MqttOpt = None,
    vm: VmOpt = "http://127.0.0.1:8428",
    spool: SpoolOpt = None,
    client_id: ClientOpt = "qwatch-cloud-ingest",
    shared: SharedOpt = False,
    silence_s: SilenceOpt = 90.0,
    escalate_after_s: EscOpt = 120.0,
    escalate_site: EscSiteOpt = [],  # noqa: B006 - typer needs a literal default
    site_config: SiteCfgOpt = [],  # noqa: B006 - typer needs a literal default
    log_level: LogOpt = "INFO",
    credentials: CredOpt = None,
    notify: NotifyOpt = None,
    tz: TzOpt = DEFAULT_TZ,
    registry_db: RegistryOpt = None,
) -> None:
    """Run the ingest alone (scale-out workers use --shared and distinct --client-id)."""
    o = Options(db, mqtt, vm, spool, client_id, shared, silence_s, escalate_after_s, escalate_site, log_level,
                site_config, credentials, notify, tz, registry_db)
    store, writer, ing, _hub = _setup(o)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        _teardown(store, writer, ing)


@app.command("ensure-session")
def ensure_session(
    mqtt: MqttOpt = None,
    client_id: ClientOpt = "qwatch-cloud-ingest",
    shared: SharedOpt = False,
    credentials: CredOpt = None,
) -> None:
    """Create the ingest's persistent session on the broker now, before any node connects (docs/deploy.md)."""
    from cloud.ingest_session import SessionError, ensure_ingest_session

    creds = _load_cloud_credentials(credentials)
    if mqtt is not None:
        host, port = _host_port(mqtt, "--mqtt")
    elif creds is not None:
        host, port = creds.broker_host, creds.broker_port
    else:
        host, port = "127.0.0.1", 1883
    try:
        existed = ensure_ingest_session(IngestConfig(host=host, port=port, client_id=client_id, shared=shared,
                                                     credentials=creds))
    except SessionError as exc:
        typer.echo(f"qwatch-cloud: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ingest session {client_id!r} {'already existed' if existed else 'created'} on {host}:{port}; "
               "the broker now queues every alert for the cloud while it is down")


def main() -> None:
    """Console-script entry point: errors are one or two lines, never a traceback."""
    run_cli(app, "qwatch-cloud")


if __name__ == "__main__":
    main()
