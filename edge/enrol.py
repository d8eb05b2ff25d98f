"""`qwatch-edge enrol`: give the band in the dock its identity and a fresh key, and record the key.

Order matters. The band is programmed and read back first; only then is the key written to
the key file (atomically, mode 0600). A failure before that leaves the file untouched, so
the node never holds a key its band does not have (which would look like forgery).
The key is never printed or logged.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from firmware_interface.dock import DockClient
from firmware_interface.link import LinkError
from protocols.errors import ConfigError
from protocols.serial_frame import BandProgram
from protocols.site_config import load_band_keys, load_site_config, write_band_keys

log = logging.getLogger("qwatch.edge.enrol")

EXIT_DEVICE = 1
EXIT_CONFIG = 2
RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # a cloud that is (re)starting, or a flaky uplink: retry for ~7 s


def _known_keys(path: Path) -> dict[int, bytes]:
    if not path.exists():
        return {}
    return load_band_keys(path)


def _company_id(config: Path | None, band: int, company_id: int | None, *, registry: bool = False) -> int:
    if config is None:
        return 0xFFFF if company_id is None else company_id
    site = load_site_config(config)
    enrolled = {b.id for b in site.bands} | {b.id for b in site.beacons}
    if band not in enrolled and not registry:
        raise ConfigError(str(config), "bands", f"band {band} is not in the site's bands or beacons; add it first "
                          "(or register it with the cloud: --cloud URL --token T --zones Z)")
    if company_id is not None and company_id != site.company_id:
        raise ConfigError("command line", "--company-id",
                          f"{company_id} differs from the site's company_id {site.company_id}")
    return site.company_id


@dataclass(frozen=True, slots=True)
class CloudTarget:
    """Where and as whom to register the band (`--cloud`, `--token`), and what to register."""

    url: str
    token: str | None
    site: str
    person: str
    zones: list[str]


def _cloud_target(cloud: str | None, token: str | None, config: Path | None, band: int, person: str | None,
                  zones: str | None) -> CloudTarget | None:
    if cloud is None:
        return None
    if not cloud.startswith(("http://", "https://")):
        raise ConfigError("command line", "--cloud", f"{cloud!r} is not a URL (https://CLOUD)")
    if config is None:
        raise ConfigError("command line", "--config", "registering with the cloud needs the site config (--config)")
    site = load_site_config(config)
    entry = next((b for b in site.bands if b.id == band), None)
    zone_list = [z.strip() for z in zones.split(",") if z.strip()] if zones else (
        list(entry.allowed_zones) if entry else [])
    if not zone_list:
        raise ConfigError("command line", "--zones", "give the zones this person may be in, e.g. --zones ward-a")
    unknown = sorted(set(zone_list) - {z.id for z in site.zones})
    if unknown:
        raise ConfigError("command line", "--zones", f"{unknown} are not zones of site {site.site.id}; allowed: "
                          f"{', '.join(z.id for z in site.zones)}")
    label = person if person is not None else (entry.person if entry else "")
    return CloudTarget(cloud.rstrip("/"), token, site.site.id, label, zone_list)


def register_band(target: CloudTarget, band: int, key: bytes, *, rekey: bool, timeout: float = 10.0) -> str:
    """POST the band to the cloud's registry; returns the error text ('' when registered)."""
    import httpx

    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    body = {"band": band, "site": target.site, "person": target.person, "allowed_zones": target.zones,
            "key": key.hex(), "rekey": rekey}
    resp = None
    for delay in (*RETRY_DELAYS_S, 0.0):
        try:
            resp = httpx.post(f"{target.url}/api/v1/bands", json=body, headers=headers, timeout=timeout)
            break
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if not delay:
                return f"cannot reach {target.url}: {exc}"
            time.sleep(delay)
        except httpx.HTTPError as exc:
            return f"cannot reach {target.url}: {exc}"
    assert resp is not None
    if resp.status_code == 201:
        return ""
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    return f"the cloud answered {resp.status_code}: {str(detail)[:300]}"


def enrol(
    dock: Annotated[str | None, typer.Option("--dock", help="serial device of the enrollment dock")] = None,
    band: Annotated[int, typer.Option("--band", min=1, max=0xFFFFFFFF, help="band_id to give the band")] = 0,
    keys: Annotated[Path, typer.Option("--keys", help="band key file to add the key to (written 0600)")] = Path(
        "/etc/qwatch/keys.json"),
    config: Annotated[Path | None, typer.Option(help="site YAML: check the band and use its company_id")] = None,
    company_id: Annotated[int | None, typer.Option(help="BLE company ID (default 0xFFFF or the site's)")] = None,
    interval_ms: Annotated[int, typer.Option(min=100, max=10000, help="advert interval")] = 1000,
    tx_power: Annotated[int, typer.Option(min=-40, max=8, help="TX power, dBm")] = 0,
    counter_start: Annotated[int, typer.Option(min=0, max=0xFFFFFFFF,
                                               help="minimum first counter (a replacement band must start "
                                                    "above the counter the nodes last saw)")] = 0,
    force: Annotated[bool, typer.Option(help="re-key a band that already has a key")] = False,
    cloud: Annotated[str | None, typer.Option("--cloud", help="register the band with this cloud (base URL)")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="QWATCH_TOKEN",
                                              help="an admin's API token (or $QWATCH_TOKEN)")] = None,
    person: Annotated[str | None, typer.Option("--person",
                                               help="person reference for the registry (never a name)")] = None,
    zones: Annotated[str | None, typer.Option("--zones", help="zones the person may be in, comma-separated "
                                                              "(default: the site config's entry)")] = None,
    register_only: Annotated[bool, typer.Option("--register-only", help="do not touch the dock: register the key "
                                                                        "already in --keys with the cloud")] = False,
) -> None:
    """Program the band in the dock with BAND_ID and a new random key; add the key to the key file;
    with --cloud, register it in the cloud's band registry (the site's nodes get it by config push)."""
    try:
        if band == 0:
            raise ConfigError("command line", "--band", "give the band ID to enrol (1..4294967295)")
        target = _cloud_target(cloud, token, config, band, person, zones)
        cid = _company_id(config, band, company_id, registry=target is not None)
        known = _known_keys(keys)
        if register_only and target is None:
            raise ConfigError("command line", "--register-only", "needs --cloud URL (and --token)")
        if not register_only and dock is None:
            raise ConfigError("command line", "--dock", "give the dock's serial device, e.g. /dev/ttyACM0")
    except ConfigError as err:
        typer.echo(f"qwatch-edge: configuration error: {err}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if register_only:
        assert target is not None
        if band not in known:
            typer.echo(f"qwatch-edge: band {band} has no key in {keys}; enrol it at the dock first", err=True)
            raise typer.Exit(EXIT_CONFIG)
        _register(target, band, known[band], rekey=force, keys=keys)
        return
    if band in known and not force:
        typer.echo(f"qwatch-edge: band {band} already has a key in {keys}; use --force to re-key it", err=True)
        raise typer.Exit(EXIT_CONFIG)
    assert dock is not None
    key = _program(dock, band, cid, interval_ms, tx_power, counter_start, keys, known)
    if target is not None:
        _register(target, band, key, rekey=force, keys=keys)


def _program(dock: str, band: int, cid: int, interval_ms: int, tx_power: int, counter_start: int, keys: Path,
             known: dict[int, bytes]) -> bytes:
    key = os.urandom(16)
    try:
        with DockClient(dock) as client:
            before = client.info()
            # The counter lives in the band's flash; continuing from it keeps anti-replay intact.
            start = max(before.counter, counter_start)
            client.program(BandProgram(band, key, cid, interval_ms, tx_power, start))
            after = client.info()
            serial = client.hello.serial.hex() if client.hello else "?"
    except LinkError as err:
        log.warning("band=%d dock=%s event=enrol_failed reason=%s", band, dock, err.reason)
        typer.echo(f"qwatch-edge: enrol failed ({err.reason}): {err}", err=True)
        raise typer.Exit(EXIT_DEVICE) from None
    if after.band_id != band or after.counter < start:
        typer.echo(f"qwatch-edge: read-back mismatch: dock reports band {after.band_id} counter {after.counter}",
                   err=True)
        raise typer.Exit(EXIT_DEVICE)
    write_band_keys(keys, {**known, band: key})
    log.info("band=%d dock=%s event=enrolled dock_serial=%s counter_start=%d", band, dock, serial, start)
    typer.echo(f"enrolled band {band}: counter starts at {start}, battery {after.battery}%, "
               f"band fw {after.fw_version!r}; key stored in {keys} (mode 0600)")
    return key


def _register(target: CloudTarget, band: int, key: bytes, *, rekey: bool, keys: Path) -> None:
    error = register_band(target, band, key, rekey=rekey)
    if error:
        log.warning("band=%d event=register_failed site=%s", band, target.site)
        typer.echo(f"qwatch-edge: band {band} is programmed and its key is in {keys}, but {error}", err=True)
        typer.echo(f"  fix the cause, then: qwatch-edge enrol --band {band} --keys {keys} --config … --cloud "
                   f"{target.url} --register-only", err=True)
        raise typer.Exit(EXIT_DEVICE)
    log.info("band=%d event=registered site=%s cloud=%s", band, target.site, target.url)
    typer.echo(f"registered band {band} ({target.person or 'no label'}) at site {target.site}, zones "
               f"{','.join(target.zones)}; push the site's config to reach every node: "
               f"qwatch-cloud config push --site {target.site}")
