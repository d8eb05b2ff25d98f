"""BleakSource driven through the real `bleak.BleakScanner` with a simulated-radio backend."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.exc import BleakDBusError, BleakError

from edge.sources.base import ObservationSource
from edge.sources.bleak_source import BleakOptions, BleakSource, classify_error
from protocols.advert import encode_status
from protocols.observation import RawObservation
from tests.helpers import Collector, wait_for

from .radio_backend import RadioBackend, SimRadio

CID = 0xFFFF
KEY = bytes(range(16))
FAST = BleakOptions(
    silence_restart_s=0.6,
    backoff_initial_s=0.05,
    backoff_max_s=0.4,
    watchdog_period_s=0.05,
    start_timeout_s=0.5,
    stop_timeout_s=0.5,
)


@pytest.fixture
def radio() -> Iterator[SimRadio]:
    r = SimRadio()
    RadioBackend.radios["hci7"] = r
    yield r
    RadioBackend.radios.pop("hci7", None)


def make_source(options: BleakOptions = FAST, rx: str = "rx-a1") -> BleakSource:
    return BleakSource(rx, adapter="hci7", company_id=CID, options=options, backend=RadioBackend)


def payload(counter: int, band: int = 1001) -> bytes:
    return encode_status(band_id=band, counter=counter, key=KEY, company_id=CID)


def pump(radio: SimRadio, sink: Collector, n: int, *, start_counter: int = 0) -> None:
    """Advertise until the sink has `n` more observations (the scan may be (re)starting)."""
    target = len(sink) + n
    counter = start_counter
    deadline = time.monotonic() + 5.0
    while len(sink) < target:
        assert time.monotonic() < deadline, "adverts did not get through"
        radio.advertise("C0:00:00:00:03:E9", {CID: payload(counter)}, rssi=-61)
        counter += 1
        time.sleep(0.01)


def test_passive_scan_with_company_or_pattern_feeds_observations(radio: SimRadio) -> None:
    src = make_source()
    assert isinstance(src, ObservationSource)
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: radio.active is not None, what="scan start")
        _, mode, bluez = radio.start_attempts[0]
        assert mode == "passive"
        assert bluez["adapter"] == "hci7"
        mfr = AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA
        assert list(bluez["or_patterns"]) == [OrPattern(0, mfr, b"\xff\xff")]
        radio.advertise("AA:00:00:00:00:01", {0x004C: b"\x02\x15apple"})  # filtered by the monitor
        pump(radio, sink, 3)
        obs = sink.items[0]
        assert (obs.rx, obs.rssi, obs.company_id, obs.data) == ("rx-a1", -61, CID, payload(0))
        assert abs(obs.ts - time.time()) < 5
        stats = src.stats()
        assert stats["passive"] == 1 and stats["scanning"] == 1
        assert stats["adverts"] == 3 and stats["foreign"] == 0
    finally:
        src.stop()
    assert src.stats()["thread_alive"] == 0
    assert radio.stops >= 1


def test_falls_back_to_active_with_duplicates_when_passive_unsupported(radio: SimRadio) -> None:
    radio.passive_supported = False
    src = make_source()
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: radio.active is not None, what="active scan")
        modes = [m for _, m, _ in radio.start_attempts]
        assert modes == ["passive", "active"]
        bluez = radio.start_attempts[-1][2]
        assert bluez["filters"] == {"DuplicateData": True}
        assert "or_patterns" not in bluez
        radio.advertise("AA:00:00:00:00:01", {0x004C: b"\x02\x15apple"})
        pump(radio, sink, 2)
        wait_for(lambda: src.stats()["foreign"] == 1, what="foreign advert counted")
        assert all(o.company_id == CID for o in sink.items)
        stats = src.stats()
        assert stats["passive"] == 0
        assert stats["errors_passive_unsupported"] == 1
    finally:
        src.stop()


def test_start_errors_back_off_and_are_counted_by_reason(radio: SimRadio) -> None:
    radio.fail_next_starts(
        BleakError("adapter 'hci7' not found"),
        BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]),
        BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]),
        EOFError(),  # the system bus connection dropped under us
    )
    src = make_source(replace(FAST, backoff_initial_s=0.1, backoff_max_s=0.2))
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: radio.active is not None, what="scan after 4 failures")
        pump(radio, sink, 2)
        stats = src.stats()
        for reason in ("adapter_missing", "in_progress", "not_ready", "dbus_gone"):
            assert stats[f"errors_{reason}"] == 1, reason
        assert stats["restarts_error"] == 4
        assert stats["restarts"] == 4
        assert stats["scan_starts"] == 1
        times = [t for t, _, _ in radio.start_attempts]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Delays 0.1, 0.2, 0.2, 0.2 s (±10 % jitter): doubling, then capped at backoff_max_s.
        # Lower bounds are exact (a wait never ends early). Uncapped, the last gap would be 0.8 s;
        # the bound below leaves 0.4 s of slack for a loaded machine.
        assert gaps[0] >= 0.09 and gaps[1] >= 0.18 and gaps[2] >= 0.18 and gaps[3] >= 0.18
        assert gaps[3] < 0.6
    finally:
        src.stop()


def test_silent_scan_is_restarted_and_adverts_resume(radio: SimRadio) -> None:
    src = make_source()
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: radio.active is not None)
        pump(radio, sink, 2)
        radio.go_silent()
        assert not radio.advertise("C0:00:00:00:03:E9", {CID: payload(100)})
        wait_for(lambda: src.stats()["restarts_silence"] >= 1, timeout=5, what="silence restart")
        # the counter moves before the new scan's start() reaches the radio: wait for that too
        wait_for(lambda: len(radio.start_attempts) >= 2, timeout=5, what="scan restarted")
        restarted_at = radio.start_attempts[1][0]
        assert restarted_at - sink.last_mono >= FAST.silence_restart_s, "restarted before the silence limit"
        pump(radio, sink, 2, start_counter=200)
        stats = src.stats()
        assert stats["scan_starts"] >= 2 and stats["errors_other"] == 0
        assert int.from_bytes(sink.items[-1].data[5:9], "little") >= 200
    finally:
        src.stop()


def test_hanging_start_times_out_and_recovers(radio: SimRadio) -> None:
    radio.hang_next_start = True
    src = make_source()
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: radio.active is not None, what="scan after hung start")
        assert src.stats()["errors_timeout"] == 1
        pump(radio, sink, 1)
    finally:
        src.stop()


def test_bluez_cached_payload_re_emit_is_dropped_not_forwarded(radio: SimRadio) -> None:
    src = make_source(replace(FAST, silence_restart_s=5.0, stale_repeat_s=0.2))
    sink = Collector()
    src.start(sink)
    try:
        wait_for(lambda: radio.active is not None)
        addr = "C0:00:00:00:03:E9"
        radio.advertise(addr, {CID: payload(5)}, rssi=-70)
        radio.advertise(addr, {CID: payload(5)}, rssi=-71)  # same advert on another channel: kept
        wait_for(lambda: len(sink) == 2)
        time.sleep(0.3)
        radio.advertise(addr, {CID: payload(5)}, rssi=-75)  # RSSI-only PropertiesChanged: stale
        radio.advertise(addr, {CID: payload(6)}, rssi=-72)
        wait_for(lambda: len(sink) == 3)
        wait_for(lambda: src.stats()["stale_repeats"] == 1)
        assert [o.rssi for o in sink.items] == [-70, -71, -72]
    finally:
        src.stop()


def test_sink_exception_is_counted_and_scan_continues(radio: SimRadio) -> None:
    calls: list[int] = []

    def bad_sink(obs: RawObservation) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("queue closed")

    src = make_source()
    src.start(bad_sink)
    try:
        wait_for(lambda: radio.active is not None)
        deadline = time.monotonic() + 5
        counter = 0
        while len(calls) < 3 and time.monotonic() < deadline:
            radio.advertise("C0:00:00:00:03:E9", {CID: payload(counter)})
            counter += 1
            time.sleep(0.01)
        assert len(calls) >= 3
        assert src.stats()["sink_errors"] == 1
    finally:
        src.stop()


def test_stop_during_backoff_returns_promptly(radio: SimRadio) -> None:
    radio.fail_next_starts(*[BleakError("adapter 'hci7' not found")] * 50)
    src = make_source(BleakOptions(backoff_initial_s=30, backoff_max_s=30, watchdog_period_s=0.05))
    src.start(Collector())
    wait_for(lambda: src.stats()["errors_adapter_missing"] == 1)
    t0 = time.monotonic()
    src.stop()
    assert time.monotonic() - t0 < 2.0
    assert src.stats()["thread_alive"] == 0


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", []), "dbus_gone"),
        (BleakDBusError("org.bluez.Error.Failed", ["x"]), "other"),
        (FileNotFoundError("/run/dbus/system_bus_socket"), "dbus_gone"),
        (ConnectionRefusedError(), "dbus_gone"),
        (TimeoutError(), "timeout"),
        (BleakError("passive scanning mode requires bluez or_patterns"), "passive_unsupported"),
        (ValueError("boom"), "other"),
    ],
)
def test_classify_error(exc: BaseException, reason: str) -> None:
    assert classify_error(exc) == reason


def test_each_adapter_is_its_own_receiver_and_fails_alone(radio: SimRadio) -> None:
    other = SimRadio()
    RadioBackend.radios["hci8"] = other
    other.fail_next_starts(*[BleakError("adapter 'hci8' not found")] * 1000)  # unplugged dongle
    a = make_source(rx="rx-a")
    b = BleakSource("rx-b", adapter="hci8", company_id=CID, options=FAST, backend=RadioBackend)
    sink = Collector()
    a.start(sink)
    b.start(sink)
    try:
        wait_for(lambda: radio.active is not None)
        pump(radio, sink, 3)
        wait_for(lambda: b.stats()["errors_adapter_missing"] >= 2)
        assert {o.rx for o in sink.items} == {"rx-a"}
        with other.lock:
            other.start_errors.clear()  # plugged back in
        wait_for(lambda: other.active is not None, what="second adapter back")
        other.advertise("C0:00:00:00:03:EA", {CID: payload(1, band=1002)}, rssi=-80)
        wait_for(lambda: any(o.rx == "rx-b" for o in list(sink.items)))
        assert [o.rssi for o in sink.items if o.rx == "rx-b"] == [-80]
        assert a.stats()["restarts"] == 0
    finally:
        a.stop()
        b.stop()
        RadioBackend.radios.pop("hci8", None)
