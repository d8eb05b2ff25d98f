"""Firmware simulator command line: serves an emulated scanner or dock on a pty, like a USB CDC device.

    python -m devtools.firmware_sim scanner --config SITE.yaml --keys KEYS.json --rx rx-a
    python -m devtools.firmware_sim scanner --log OBS.jsonl [--rx rx-a] [--loop]
    python -m devtools.firmware_sim dock [--band-id 1001] [--empty]

It prints the device path on stdout (the `--link` path if given, else /dev/pts/N) and runs
until SIGINT/SIGTERM. `--link` keeps a stable symlink, as udev's /dev/serial/by-id does, so
an unplug/replug (new pty) reappears under the same name.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from edge.sim.scenarios import Scenario
from edge.sim.simulator import Simulator
from firmware_interface.device import DockDevice, DockedBand, Heard, LogFeed, ScannerDevice
from firmware_interface.simulator import PtyServer
from protocols.site_config import SiteConfig


class SimFeed:
    """Adverts one simulated receiver hears, from `edge.sim.Simulator` in real time."""

    def __init__(self, site: SiteConfig, keys: Mapping[int, bytes], rx: str, *, seed: int = 0,
                 scenario: Scenario | None = None, start_ts: float | None = None) -> None:
        # The whole site is simulated so that, with the agent's seed and start_ts, this receiver
        # hears exactly the adverts the agent's own sim receivers hear (see edge.sources.sim).
        self._rx = rx
        self._sim = Simulator(site, keys, seed=seed, scenario=scenario,
                              start_ts=time.time() if start_ts is None else start_ts)

    def due(self, now: float) -> list[Heard]:
        return [(o.rssi, o.company_id, o.data) for o in self._sim.advance(now) if o.rx == self._rx]


cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0] if __doc__ else "")


def _serve(server: PtyServer) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(server.start(), flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        print(f"stats {server.counts}", file=sys.stderr, flush=True)


@cli.command()
def scanner(
    config: Annotated[Path | None, typer.Option(help="site YAML: replay the simulator's adverts")] = None,
    keys: Annotated[Path | None, typer.Option(help="band key file for --config")] = None,
    rx: Annotated[str | None, typer.Option(help="receiver this scanner plays (default: first in config)")] = None,
    seed: Annotated[int, typer.Option(help="simulator seed (use the agent's --sim-seed)")] = 0,
    start_ts: Annotated[float | None, typer.Option(help="simulation start, Unix s (match the agent's sim start "
                                                        "so both hear the same adverts)")] = None,
    log: Annotated[Path | None, typer.Option("--log", help="replay an observation log instead")] = None,
    loop: Annotated[bool, typer.Option(help="--log: start again at the end")] = False,
    link: Annotated[Path | None, typer.Option(help="stable symlink to the pty")] = None,
) -> None:
    """Emulate the BLE scanner co-processor."""
    if log is not None:
        feed: SimFeed | LogFeed = LogFeed(log, rx=rx, loop=loop)
    elif config is not None and keys is not None:
        from protocols.site_config import load_band_keys, load_site_config

        site = load_site_config(config)
        rx_id = rx or (site.receivers[0].id if site.receivers else "")
        if rx_id not in {r.id for r in site.receivers}:
            raise typer.BadParameter(f"--rx {rx_id!r} is not a receiver of {config}")
        feed = SimFeed(site, load_band_keys(keys), rx_id, seed=seed, start_ts=start_ts)
    else:
        raise typer.BadParameter("give --config and --keys, or --log")
    _serve(PtyServer(ScannerDevice(feed), link=link))


@cli.command()
def dock(
    band_id: Annotated[int, typer.Option(help="band_id the docked band holds now (0 = blank)")] = 0,
    counter: Annotated[int, typer.Option(help="the docked band's advert counter")] = 0,
    empty: Annotated[bool, typer.Option(help="no band in the dock")] = False,
    fail_write: Annotated[bool, typer.Option(help="flash writes fail")] = False,
    link: Annotated[Path | None, typer.Option(help="stable symlink to the pty")] = None,
) -> None:
    """Emulate the wristband enrollment dock."""
    band = None if empty else DockedBand(band_id=band_id, counter=counter)
    _serve(PtyServer(DockDevice(band, fail_write=fail_write), link=link))


if __name__ == "__main__":
    cli()
