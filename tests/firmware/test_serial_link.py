"""Serial scanner host and dock client against the firmware simulator on real ptys."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_interface.device import DockDevice, DockedBand, Heard, ScannerDevice
from firmware_interface.dock import DockClient
from firmware_interface.link import LinkError, LinkOptions
from firmware_interface.scanner import ScannedAdvert, ScannerHost, ScannerOptions
from firmware_interface.simulator import PtyServer
from protocols.advert import encode_status
from protocols.serial_frame import BandProgram, DeviceError, Frame, MsgType, encode_frame
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]  # `python -m devtools.…` children run from the repo root
CID = 0xFFFF
KEY = bytes(range(16))
FAST_LINK = LinkOptions(read_timeout_s=0.02, hello_timeout_s=0.3, hello_attempts=2)
FAST = ScannerOptions(link=FAST_LINK, backoff_initial_s=0.05, backoff_max_s=0.3, keepalive_s=5.0)


class ListFeed:
    """Adverts the test puts on the air; all of them are due at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Heard] = []

    def put(self, rssi: int, payload: bytes, company_id: int = CID) -> None:
        with self._lock:
            self._items.append((rssi, company_id, payload))

    def due(self, now: float) -> list[Heard]:
        with self._lock:
            items, self._items = self._items, []
        return items


class MuteScanner(ScannerDevice):
    """A scanner whose firmware can hang: it stops answering and reporting."""

    muted = False

    def handle(self, frame: Frame) -> list[bytes]:
        return [] if self.muted else super().handle(frame)

    def poll(self, now: float) -> list[bytes]:
        return [] if self.muted else super().poll(now)


class Adverts:
    def __init__(self) -> None:
        self.items: list[ScannedAdvert] = []
        self.lock = threading.Lock()

    def __call__(self, adv: ScannedAdvert) -> None:
        with self.lock:
            self.items.append(adv)

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)


def payload(counter: int, band: int = 1001) -> bytes:
    return encode_status(band_id=band, counter=counter, key=KEY, company_id=CID)


@pytest.fixture
def link_path(tmp_path: Path) -> Path:
    return tmp_path / "ttyQW0"


@pytest.fixture
def scanner_server(link_path: Path) -> Iterator[tuple[PtyServer, ListFeed]]:
    feed = ListFeed()
    server = PtyServer(ScannerDevice(feed), link=link_path)
    server.start()
    yield server, feed
    server.stop()


def send_until(feed: ListFeed, got: Adverts, n: int, start: int = 0, rssi: int = -63) -> int:
    """Put adverts on the air until `n` more arrive at the host (it may be reconnecting)."""
    target = len(got) + n
    counter = start
    deadline = time.monotonic() + 5.0
    while len(got) < target:
        assert time.monotonic() < deadline, "adverts did not get through"
        feed.put(rssi, payload(counter))
        counter += 1
        time.sleep(0.02)
    return counter


def test_handshake_and_advert_stream(scanner_server: tuple[PtyServer, ListFeed], link_path: Path) -> None:
    server, feed = scanner_server
    got = Adverts()
    host = ScannerHost(str(link_path), got, options=FAST)
    host.start()
    try:
        wait_for(lambda: host.connected, what="handshake")
        assert host.hello is not None and host.hello.kind == 1 and host.hello.proto == 1
        assert host.hello.fw_version.startswith("qwatch-sim-scanner")
        for i in range(5):
            feed.put(-60 - i, payload(i))
        wait_for(lambda: len(got) == 5, what="5 adverts")
        assert [a.rssi for a in got.items] == [-60, -61, -62, -63, -64]
        assert [a.payload for a in got.items] == [payload(i) for i in range(5)]
        assert all(a.company_id == CID and a.addr_type == 1 for a in got.items)
        assert got.items[0].addr[:4] == (1001).to_bytes(4, "little")
        stats = host.stats()
        assert stats["connects"] == 1 and stats["adverts"] == 5 and stats["frame_errors"] == 0
        assert server.counts["rx_frames"] >= 1  # the HELLO
    finally:
        host.stop()
    assert host.stats()["thread_alive"] == 0


def test_garbage_and_bad_crc_are_dropped_and_counted(
    scanner_server: tuple[PtyServer, ListFeed], link_path: Path
) -> None:
    server, feed = scanner_server
    got = Adverts()
    host = ScannerHost(str(link_path), got, options=FAST)
    host.start()
    try:
        wait_for(lambda: host.connected)
        counter = send_until(feed, got, 1)
        server.inject(b"\x00" + os.urandom(300) + b"\x00")  # line noise, longer than any frame
        server.inject(b"\x05\x01\x02\x00")  # COBS code overruns the frame
        server.inject(b"\x03\x10\x01\x00")  # decodes, but too short for type|seq|crc
        server.corrupt_next(2)  # two real ADV_REPORTs with a flipped bit: CRC fails
        server.inject(encode_frame(MsgType.ERROR, 0, DeviceError(7, "radio fault").to_payload()))
        feed.put(-70, payload(counter))
        feed.put(-70, payload(counter + 1))
        wait_for(lambda: host.stats()["frame_errors_crc"] >= 2, what="crc errors")
        send_until(feed, got, 3, start=counter + 2)
        stats = host.stats()
        assert stats["frame_errors"] >= 4
        assert stats["frame_errors_cobs"] + stats["frame_errors_too_long"] >= 1
        assert stats["frame_errors_short"] >= 1
        assert stats["connects"] == 1, "noise must not cost a reconnect"
        assert stats["device_errors"] == 1
        assert all(a.payload[0] == 0x11 for a in got.items)
    finally:
        host.stop()


def test_valid_frames_with_malformed_contents_never_break_the_stream(
    scanner_server: tuple[PtyServer, ListFeed], link_path: Path
) -> None:
    """CRC-valid frames whose payloads are nonsense: short reports, overrunning AD structures,
    manufacturer data without a company ID, unknown types. Each is counted; none ends the link."""
    server, feed = scanner_server
    got = Adverts()
    host = ScannerHost(str(link_path), got, options=FAST)
    host.start()
    try:
        wait_for(lambda: host.connected)
        counter = send_until(feed, got, 1)
        rng = random.Random(7)
        head = bytes(4) + b"\xc4\x01" + bytes(6)  # uptime, rssi -60, random addr type, addr
        bad = [
            head[:5],  # shorter than the fixed report header
            head + b"\x1e\xff\xff\xff",  # AD length overruns the frame
            head + b"\x02\xff\x01",  # manufacturer data shorter than a company ID
            head + b"\x02\x01\x06",  # flags only: no manufacturer data
        ] + [head + rng.randbytes(rng.randint(0, 40)) for _ in range(100)]
        for i, payload_ in enumerate(bad):
            server.inject(encode_frame(MsgType.ADV_REPORT, i & 0xFF, payload_))
        server.inject(encode_frame(0x42, 1, b"future message type"))
        wait_for(lambda: host.stats()["unexpected_frames"] == 1, what="all injected frames handled")
        send_until(feed, got, 2, start=counter)
        stats = host.stats()
        assert stats["connects"] == 1 and stats["frame_errors"] == 0
        bad_reports = sum(v for k, v in stats.items() if k.startswith("bad_report_"))
        assert bad_reports >= 3 and stats["no_mfr_data"] >= 1
        assert stats.get("errors_internal", 0) == 0 and stats["callback_errors"] == 0
    finally:
        host.stop()


def test_unplug_replug_reopens_with_backoff(scanner_server: tuple[PtyServer, ListFeed], link_path: Path) -> None:
    server, feed = scanner_server
    got = Adverts()
    host = ScannerHost(str(link_path), got, options=FAST)
    host.start()
    try:
        wait_for(lambda: host.connected)
        counter = send_until(feed, got, 2)
        server.unplug()
        wait_for(lambda: host.stats()["errors_disconnect"] == 1, what="disconnect noticed")
        assert not host.connected
        wait_for(lambda: host.stats().get("errors_open", 0) >= 2, what="reopen attempts while unplugged")
        server.replug()
        wait_for(lambda: host.stats()["connects"] == 2, what="reconnect after replug")
        send_until(feed, got, 2, start=counter)
        stats = host.stats()
        assert stats["reopens"] >= 3
        assert stats.get("errors_internal", 0) == 0
    finally:
        host.stop()


def test_hung_device_is_detected_by_keepalive(link_path: Path) -> None:
    feed = ListFeed()
    device = MuteScanner(feed)
    server = PtyServer(device, link=link_path)
    server.start()
    host = ScannerHost(str(link_path), Adverts(),
                       options=ScannerOptions(link=FAST_LINK, backoff_initial_s=0.05, keepalive_s=0.3))
    host.start()
    try:
        wait_for(lambda: host.connected)
        # Silent but alive (no bands near): probed and kept, not reconnected.
        wait_for(lambda: host.stats()["keepalives"] >= 2, what="keepalive probes answered")
        assert host.stats()["connects"] == 1
        device.muted = True
        wait_for(lambda: host.stats().get("errors_stalled", 0) >= 1, what="stall detected")
        device.muted = False
        wait_for(lambda: host.stats()["connects"] >= 2, what="reconnect after stall")
    finally:
        host.stop()
        server.stop()


def test_scanner_host_refuses_a_dock(link_path: Path) -> None:
    server = PtyServer(DockDevice(DockedBand()), link=link_path)
    server.start()
    host = ScannerHost(str(link_path), Adverts(), options=FAST)
    host.start()
    try:
        wait_for(lambda: host.stats().get("errors_wrong_device", 0) >= 2, what="wrong device twice")
        assert host.stats()["connects"] == 0
    finally:
        host.stop()
        server.stop()


def test_missing_device_never_blocks_or_raises(tmp_path: Path) -> None:
    host = ScannerHost(str(tmp_path / "absent"), Adverts(), options=FAST)
    host.start()
    wait_for(lambda: host.stats().get("errors_open", 0) >= 3)
    t0 = time.monotonic()
    host.stop()
    assert time.monotonic() - t0 < 1.0


def test_dock_program_and_info(link_path: Path) -> None:
    device = DockDevice(DockedBand(band_id=0, counter=41))
    server = PtyServer(device, link=link_path)
    server.start()
    try:
        key = os.urandom(16)
        with DockClient(str(link_path), FAST_LINK) as dock:
            assert dock.hello is not None and dock.hello.kind == 2
            assert dock.info().counter == 41
            result = dock.program(BandProgram(1001, key, CID, 1000, 0, 42))
            assert (result.status, result.band_id) == (0, 1001)
            info = dock.info()
        assert (info.band_id, info.counter) == (1001, 42)
        assert device.band is not None and device.band.key == key
        device.fail_write = True
        with DockClient(str(link_path), FAST_LINK) as dock, pytest.raises(LinkError) as err:
            dock.program(BandProgram(1002, key, CID, 1000, 0, 0))
        assert err.value.reason == "program_failed" and "write failed" in str(err.value)
        device.band = None
        with DockClient(str(link_path), FAST_LINK) as dock, pytest.raises(LinkError) as err:
            dock.info()
        assert err.value.reason == "device_error" and "no band" in str(err.value)
    finally:
        server.stop()


def test_dock_client_refuses_a_scanner(scanner_server: tuple[PtyServer, ListFeed], link_path: Path) -> None:
    with pytest.raises(LinkError) as err, DockClient(str(link_path), FAST_LINK):
        pass
    assert err.value.reason == "wrong_device"


def test_device_answers_unknown_request_with_error_frame(link_path: Path) -> None:
    from firmware_interface.link import DeviceLink

    server = PtyServer(DockDevice(DockedBand()), link=link_path)
    server.start()
    try:
        link = DeviceLink.open(str(link_path), FAST_LINK)
        try:
            with pytest.raises(LinkError) as err:
                link.request(0x55, b"", 0xD5, 0.5)
            assert err.value.reason == "device_error"
            assert link.hello().kind == 2
        finally:
            link.close()
    finally:
        server.stop()


def test_simulator_cli_serves_a_dock(tmp_path: Path) -> None:
    link = tmp_path / "dock0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.firmware_sim", "dock", "--band-id", "7", "--link", str(link)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == str(link)
        with DockClient(line, FAST_LINK) as dock:
            assert dock.info().band_id == 7
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0



def test_simulator_cli_scanner_replays_site_simulation(tmp_path: Path) -> None:
    from protocols.site_config import load_site_config, write_band_keys
    from protocols.verify import AdvertVerifier

    demo = REPO / "config" / "examples" / "demo-site.yaml"
    site = load_site_config(demo)
    keys = {b.id: os.urandom(16) for b in site.bands} | {b.id: os.urandom(16) for b in site.beacons}
    keys_path = tmp_path / "keys.json"
    write_band_keys(keys_path, keys)
    link = tmp_path / "scan0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.firmware_sim", "scanner", "--config", str(demo),
         "--keys", str(keys_path), "--rx", "rx-a", "--seed", "2", "--link", str(link)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    got = Adverts()
    host = ScannerHost(str(link), got, options=FAST)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(link)
        host.start()
        wait_for(lambda: len(got) >= 10, timeout=10, what="10 simulated adverts over the pty")
    finally:
        host.stop()
        proc.terminate()
        proc.wait(10)
    verifier = AdvertVerifier(keys, site.company_id)
    outcomes = {verifier.verify(a.ts, a.company_id, a.payload).outcome for a in got.items}
    assert outcomes == {"accepted"}
