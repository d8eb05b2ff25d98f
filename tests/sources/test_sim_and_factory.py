"""The real-time simulator source, `open_sources`, and the serial source fed by the simulator firmware."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from devtools.firmware_sim import SimFeed
from edge.sources import ObservationSource, open_sources, parse_source
from edge.sources.bleak_source import BleakSource
from edge.sources.serial_source import SerialSource
from edge.sources.sim import SimSource
from firmware_interface.device import LogFeed, ScannerDevice
from firmware_interface.link import LinkOptions
from firmware_interface.scanner import ScannerOptions
from firmware_interface.simulator import PtyServer
from protocols.errors import ConfigError
from protocols.observation import RawObservation
from protocols.site_config import SiteConfig, load_site_config
from protocols.verify import AdvertVerifier
from tests.helpers import Collector, wait_for

DEMO = Path(__file__).resolve().parents[2] / "config" / "examples" / "demo-site.yaml"


@pytest.fixture(scope="module")
def site() -> SiteConfig:
    return load_site_config(DEMO)


@pytest.fixture(scope="module")
def keys(site: SiteConfig) -> dict[int, bytes]:
    return {b.id: os.urandom(16) for b in site.bands} | {b.id: os.urandom(16) for b in site.beacons}


def with_sources(site: SiteConfig, sources: list[str]) -> SiteConfig:
    rxs = [r.model_copy(update={"source": s}) for r, s in zip(site.receivers, sources, strict=False)]
    return site.model_copy(update={"receivers": rxs + list(site.receivers[len(sources):])})


def test_sim_source_emits_verified_adverts_at_wall_clock_pace(site: SiteConfig, keys: dict[int, bytes]) -> None:
    src = SimSource(site, keys, receivers=["rx-a", "rx-b"], seed=3)
    assert isinstance(src, ObservationSource) and src.receiver_id == "sim"
    sink = Collector()
    t0 = time.time()
    src.start(sink)
    try:
        time.sleep(1.6)  # the thing under test is pacing: let 1.6 s of wall time pass
    finally:
        src.stop()
    # Snapshot after stop: the thread may deliver one more tick between a snapshot and stop().
    got = sink.snapshot()
    t1 = time.time()
    assert got, "no observations"
    assert {o.rx for o in got} <= {"rx-a", "rx-b"}
    assert all(t0 - 0.01 <= o.ts <= t1 + 0.05 for o in got), "observations must carry wall-clock time"
    # Time-ordered, up to the simulated receive latency (20 ms) across tick boundaries.
    assert max(a.ts - b.ts for a, b in itertools.pairwise(got)) < 0.05
    # 22 transmitters at 1 advert/s over ~1.6 s, each heard by up to 2 receivers: far from a burst.
    assert len(got) < 22 * 2 * 3
    verifier = AdvertVerifier(keys, site.company_id)
    outcomes = {verifier.verify(o.ts, o.company_id, o.data).outcome for o in got}
    assert outcomes <= {"accepted", "duplicate"}
    stats = src.stats()
    assert stats["adverts"] == len(got) and stats["sink_errors"] == 0 and stats["thread_alive"] == 0
    assert stats["max_lag_s"] < 0.5


def test_open_sources_builds_one_per_hardware_receiver_and_one_sim(site: SiteConfig,
                                                                   keys: dict[int, bytes]) -> None:
    mixed = with_sources(site, ["bluez:hci0", "bluez:hci1", "serial:/dev/ttyACM0"])
    sources = open_sources(mixed, keys, sim_seed=1)
    kinds = [(type(s).__name__, s.receiver_id) for s in sources]
    assert kinds == [("BleakSource", "rx-a"), ("BleakSource", "rx-b"), ("SerialSource", "rx-s"),
                     ("SimSource", "sim")]
    sim = sources[-1]
    assert isinstance(sim, SimSource) and sim.receivers == [r.id for r in mixed.receivers if r.source == "sim"]
    assert isinstance(sources[0], BleakSource) and isinstance(sources[2], SerialSource)


def test_open_sources_rejects_one_adapter_as_two_receivers(site: SiteConfig, keys: dict[int, bytes]) -> None:
    with pytest.raises(ConfigError) as err:
        open_sources(with_sources(site, ["bluez:hci0", "bluez:hci0"]), keys)
    assert err.value.key == "receivers[1].source" and "rx-a" in str(err.value)


@pytest.mark.parametrize("bad", ["bluez:", "usb:/dev/x", "SIM", "bluez:/dev/hci0", "serial:"])
def test_parse_source_names_allowed_forms(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_source(bad, key="receivers[0].source")
    assert "bluez:<adapter>" in str(err.value) and err.value.key == "receivers[0].source"


def test_serial_source_end_to_end_from_simulated_firmware(
    site: SiteConfig, keys: dict[int, bytes], tmp_path: Path
) -> None:
    """Simulator adverts -> scanner firmware on a pty -> host -> RawObservation -> verifier accepts."""
    link = tmp_path / "ttyACM-sim"
    server = PtyServer(ScannerDevice(SimFeed(site, keys, "rx-a", seed=5)), link=link)
    server.start()
    serial_site = with_sources(site, [f"serial:{link}"])
    (src,) = [s for s in open_sources(serial_site, keys) if s.receiver_id == "rx-a"]
    assert isinstance(src, SerialSource)
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: len(sink.snapshot()) >= 15, timeout=8, what="15 observations over serial")
    finally:
        src.stop()
        server.stop()
    got = sink.snapshot()
    assert all(o.rx == "rx-a" and o.company_id == site.company_id and -110 < o.rssi < 0 for o in got)
    verifier = AdvertVerifier(keys, site.company_id)
    assert {verifier.verify(o.ts, o.company_id, o.data).outcome for o in got} == {"accepted"}
    stats = src.stats()
    assert stats["connects"] == 1 and stats["frame_errors"] == 0 and stats["foreign"] == 0


def test_serial_source_drops_foreign_company(tmp_path: Path) -> None:
    class Feed:
        def due(self, now: float) -> list[tuple[int, int, bytes]]:
            return [(-50, 0x004C, b"\x02\x15" + bytes(20)), (-51, 0xFFFF, b"\x11" + bytes(21))]

    link = tmp_path / "tty"
    server = PtyServer(ScannerDevice(Feed()), link=link)
    server.start()
    src = SerialSource("rx-x", device=str(link), company_id=0xFFFF,
                       options=ScannerOptions(link=LinkOptions(read_timeout_s=0.02), backoff_initial_s=0.05))
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: src.stats()["foreign"] >= 3 and len(sink.snapshot()) >= 3)
    finally:
        src.stop()
        server.stop()
    assert {o.company_id for o in sink.snapshot()} == {0xFFFF}


def test_log_feed_replays_with_relative_timing(tmp_path: Path) -> None:
    log = tmp_path / "obs.jsonl"
    lines = [RawObservation(1000.0 + i * 0.5, "rx-a" if i % 2 == 0 else "rx-b", -60 - i, 0xFFFF,
                            bytes([i])).to_json_line() for i in range(6)]
    log.write_text("# field log\n\n" + "\n".join(lines[:3]) + "\nnot json\n" + "\n".join(lines[3:]) + "\n")
    feed = LogFeed(log, rx="rx-a")
    assert [h[0] for h in feed.due(50.0)] == [-60]  # the first advert anchors the timeline
    assert feed.due(50.9) == []  # rx-a's next advert is 1 s later in the log
    assert feed.due(51.0) == [(-62, 0xFFFF, bytes([2]))]
    assert [h[0] for h in feed.due(52.0)] == [-64]
    assert feed.due(99.0) == [] and feed.bad_lines == 1


def test_firmware_simulator_and_sim_source_hear_one_consistent_site(site: SiteConfig,
                                                                     keys: dict[int, bytes]) -> None:
    """A serial receiver played by the firmware simulator and the agent's sim receivers, given the
    same seed and start time, must hear the same adverts: otherwise counters look like replays."""
    t0 = 1_700_000_000.0
    serial_feed = SimFeed(site, keys, "rx-a", seed=9, start_ts=t0)
    src = SimSource(site, keys, receivers=["rx-b", "rx-s", "rx-n", "rx-w", "rx-e"], seed=9, start_ts=t0,
                    clock=lambda: t0 + 30.0)
    sink = Collector()
    src.start(sink)
    wait_for(lambda: src.stats()["ticks"] >= 2, what="sim ticks")
    src.stop()
    heard = {d for _, _, d in serial_feed.due(t0 + 30.0)}
    sim_obs = sink.snapshot()
    assert heard and sim_obs and {o.rx for o in sim_obs} <= set(src.receivers)
    # Same (band, counter) must mean the same bytes on every receiver, serial or sim.
    by_advert = {o.data[1:9]: o.data for o in sim_obs}
    common = [d for d in heard if d[1:9] in by_advert]
    assert len(common) > 0.5 * len(heard)
    assert all(by_advert[d[1:9]] == d for d in common)
