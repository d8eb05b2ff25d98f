"""Emulated device firmware (scanner co-processor and enrollment dock), independent of any tty.

A device consumes decoded request frames and returns encoded reply frames; a scanner also
produces ADV_REPORT frames from an advert feed when polled. `firmware_interface.simulator`
serves these over a pty so the real host code can be tested end to end.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from firmware_interface.link import KIND_DOCK, KIND_SCANNER, PROTO_VERSION
from protocols.advert import build_advertising_data
from protocols.errors import AdvertError, FrameError, PayloadError
from protocols.observation import parse_observation_line
from protocols.serial_frame import (
    AdvReport,
    BandInfo,
    BandProgram,
    BandProgramResult,
    DeviceError,
    Frame,
    HelloReply,
    MsgType,
    encode_frame,
)

ERR_UNKNOWN_TYPE = 1
ERR_BAD_PAYLOAD = 2
ERR_NO_BAND = 3

Heard = tuple[int, int, bytes]  # rssi, company_id, manufacturer payload


class AdvertFeed(Protocol):
    """Adverts that have 'arrived over the air' by wall-clock time `now`."""

    def due(self, now: float) -> list[Heard]: ...


class Device(Protocol):
    """Emulated firmware: answers requests, and may produce unsolicited frames when polled."""

    def handle(self, frame: Frame) -> list[bytes]: ...

    def poll(self, now: float) -> list[bytes]: ...


def advert_address(payload: bytes) -> bytes:
    """A stable random-static BLE address per band (two top bits set, as the spec requires)."""
    ident = payload[1:5] if len(payload) >= 5 else zlib.crc32(payload).to_bytes(4, "little")
    return ident + b"\x00\xc0"


class LogFeed:
    """Adverts replayed from an observation log (docs/protocol.md §2), keeping their relative timing."""

    def __init__(self, path: Path, *, rx: str | None = None, loop: bool = False) -> None:
        self._path = path
        self._rx = rx
        self._loop = loop
        self._iter = self._read()
        self._next: tuple[float, Heard] | None = None
        self._offset: float | None = None
        self.bad_lines = 0

    def _read(self) -> Iterator[tuple[float, Heard]]:
        with self._path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    obs = parse_observation_line(line)
                except PayloadError:
                    self.bad_lines += 1
                    continue
                if self._rx is None or obs.rx == self._rx:
                    yield obs.ts, (obs.rssi, obs.company_id, obs.data)

    def due(self, now: float) -> list[Heard]:
        out: list[Heard] = []
        while True:
            if self._next is None:
                self._next = next(self._iter, None)
                if self._next is None:
                    if not self._loop:
                        return out
                    self._iter, self._offset = self._read(), None
                    self._next = next(self._iter, None)
                    if self._next is None:
                        return out
            ts, heard = self._next
            if self._offset is None:
                self._offset = now - ts
            if ts + self._offset > now:
                return out
            out.append(heard)
            self._next = None


class ScannerDevice:
    """BLE scanner co-processor firmware: HELLO, then every heard advert as an ADV_REPORT."""

    def __init__(self, feed: AdvertFeed, *, serial: bytes = b"QWSIMSC1", fw: str = "qwatch-sim-scanner/1.0",
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.feed = feed
        self._hello = HelloReply(KIND_SCANNER, PROTO_VERSION, serial, fw)
        self._mono = monotonic
        self._boot = monotonic()
        self._seq = 0
        self.reports = 0

    def handle(self, frame: Frame) -> list[bytes]:
        if frame.type == MsgType.HELLO:
            return [encode_frame(MsgType.HELLO_REPLY, frame.seq, self._hello.to_payload())]
        return [_error(frame.seq, ERR_UNKNOWN_TYPE, f"scanner does not handle type 0x{frame.type:02x}")]

    def poll(self, now: float) -> list[bytes]:
        out = []
        uptime = int((self._mono() - self._boot) * 1000) & 0xFFFFFFFF
        for rssi, company_id, payload in self.feed.due(now):
            try:
                ad = build_advertising_data(company_id, payload)
            except AdvertError:
                continue  # longer than a legacy advert: a real radio could not have heard it
            report = AdvReport(uptime, max(-128, min(127, rssi)), 1, advert_address(payload), ad)
            self._seq = (self._seq + 1) & 0xFF
            out.append(encode_frame(MsgType.ADV_REPORT, self._seq, report.to_payload()))
            self.reports += 1
        return out


@dataclass(frozen=True, slots=True)
class DockedBand:
    """The band sitting in the dock, as its flash holds it."""

    band_id: int = 0
    key: bytes = bytes(16)
    company_id: int = 0xFFFF
    interval_ms: int = 1000
    tx_power: int = 0
    counter: int = 0
    battery: int = 87
    fw: str = "qwatch-band/1.2"


class DockDevice:
    """Enrollment dock firmware holding at most one band. `band=None` means the dock is empty."""

    def __init__(self, band: DockedBand | None = None, *, serial: bytes = b"QWSIMDK1",
                 fw: str = "qwatch-sim-dock/1.0", fail_write: bool = False) -> None:
        self.band = band
        self.fail_write = fail_write
        self._hello = HelloReply(KIND_DOCK, PROTO_VERSION, serial, fw)
        self.programs = 0

    def handle(self, frame: Frame) -> list[bytes]:
        if frame.type == MsgType.HELLO:
            return [encode_frame(MsgType.HELLO_REPLY, frame.seq, self._hello.to_payload())]
        if frame.type == MsgType.BAND_INFO_REQ:
            if self.band is None:
                return [_error(frame.seq, ERR_NO_BAND, "no band in dock")]
            b = self.band
            info = BandInfo(b.band_id, b.counter, b.battery, b.fw)
            return [encode_frame(MsgType.BAND_INFO, frame.seq, info.to_payload())]
        if frame.type == MsgType.BAND_PROGRAM:
            return [self._program(frame)]
        return [_error(frame.seq, ERR_UNKNOWN_TYPE, f"dock does not handle type 0x{frame.type:02x}")]

    def _program(self, frame: Frame) -> bytes:
        try:
            prog = BandProgram.from_payload(frame.payload)
        except (FrameError, struct.error) as exc:
            return _error(frame.seq, ERR_BAD_PAYLOAD, str(exc))
        status = 1 if self.band is None else 2 if self.fail_write else 0
        if status == 0 and self.band is not None:
            self.band = replace(self.band, band_id=prog.band_id, key=prog.key, company_id=prog.company_id,
                                interval_ms=prog.interval_ms, tx_power=prog.tx_power, counter=prog.counter_start)
            self.programs += 1
        result = BandProgramResult(status, prog.band_id)
        return encode_frame(MsgType.BAND_PROGRAM_RESULT, frame.seq, result.to_payload())

    def poll(self, now: float) -> list[bytes]:
        return []


def _error(seq: int, code: int, text: str) -> bytes:
    return encode_frame(MsgType.ERROR, seq, DeviceError(code, text[:200]).to_payload())
