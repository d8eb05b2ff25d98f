"""`qwatch-edge enrol`: give the band in the dock its identity and a fresh key, and record the key.

Order matters. The band is programmed and read back first; only then is the key written to
the key file (atomically, mode 0600). A failure before that leaves the file untouched, so
the node never holds a key its band does not have (which would look like forgery).
The key is never printed or logged.
"""

from __future__ import annotations

import logging
import os
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


def _known_keys(path: Path) -> dict[int, bytes]:
    if not path.exists():
        return {}
    return load_band_keys(path)


def _company_id(config: Path | None, band: int, company_id: int | None) -> int:
    if config is None:
        return 0xFFFF if company_id is None else company_id
    site = load_site_config(config)
    enrolled = {b.id for b in site.bands} | {b.id for b in site.beacons}
    if band not in enrolled:
        raise ConfigError(str(config), "bands", f"band {band} is not in the site's bands or beacons; add it first")
    if company_id is not None and company_id != site.company_id:
        raise ConfigError("command line", "--company-id",
                          f"{company_id} differs from the site's company_id {site.company_id}")
    return site.company_id


def enrol(
    dock: Annotated[str, typer.Option("--dock", help="serial device of the enrollment dock")],
    band: Annotated[int, typer.Option("--band", min=1, max=0xFFFFFFFF, help="band_id to give the band")],
    keys: Annotated[Path, typer.Option("--keys", help="band key file to add the key to (written 0600)")],
    config: Annotated[Path | None, typer.Option(help="site YAML: check the band and use its company_id")] = None,
    company_id: Annotated[int | None, typer.Option(help="BLE company ID (default 0xFFFF or the site's)")] = None,
    interval_ms: Annotated[int, typer.Option(min=100, max=10000, help="advert interval")] = 1000,
    tx_power: Annotated[int, typer.Option(min=-40, max=8, help="TX power, dBm")] = 0,
    counter_start: Annotated[int, typer.Option(min=0, max=0xFFFFFFFF,
                                               help="minimum first counter (a replacement band must start "
                                                    "above the counter the nodes last saw)")] = 0,
    force: Annotated[bool, typer.Option(help="re-key a band that already has a key")] = False,
) -> None:
    """Program the band in the dock with BAND_ID and a new random key; add the key to the key file."""
    try:
        cid = _company_id(config, band, company_id)
        known = _known_keys(keys)
    except ConfigError as err:
        typer.echo(f"qwatch-edge: configuration error: {err}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if band in known and not force:
        typer.echo(f"qwatch-edge: band {band} already has a key in {keys}; use --force to re-key it", err=True)
        raise typer.Exit(EXIT_CONFIG)
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
