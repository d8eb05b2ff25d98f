"""Serial link framing to device firmware (docs/protocol.md §7).

A frame on the wire is ``COBS(body) 0x00`` with ``body = type | seq | payload | crc16``.
The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), little-endian on the wire.
`FrameDecoder` is a streaming decoder: feed it any bytes, it returns whole frames and
counts what it had to throw away. It never raises.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import IntEnum

from protocols.errors import FrameError

MAX_BODY = 260  # a legacy advert report is ~45 bytes; this leaves room for long fw strings


class MsgType(IntEnum):
    """Frame types of the serial protocol."""

    HELLO = 0x01
    HELLO_REPLY = 0x81
    ADV_REPORT = 0x10
    BAND_PROGRAM = 0x20
    BAND_PROGRAM_RESULT = 0xA0
    BAND_INFO_REQ = 0x21
    BAND_INFO = 0xA1
    ERROR = 0x7E


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE. binascii's crc_hqx is the same polynomial; 0xFFFF is the FALSE init."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no zero byte."""
    out = bytearray()
    for block in data.split(b"\x00"):
        # Blocks longer than 254 bytes need extra 0xFF code bytes with no implied zero.
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of cobs_encode. Raises FrameError('cobs') on a malformed stuffing."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            raise FrameError("cobs", f"bad COBS code {code} at offset {i} of {n}")
        block = data[i + 1 : end]
        if 0 in block:
            raise FrameError("cobs", f"zero byte inside COBS block at offset {i}")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: message type, sequence number and payload (CRC already checked)."""

    type: int
    seq: int
    payload: bytes


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """Build the on-wire bytes for one frame, terminating zero included."""
    if not 0 <= msg_type <= 0xFF or not 0 <= seq <= 0xFF:
        raise FrameError("header", f"type {msg_type} and seq {seq} must each fit in one byte")
    body = bytes((msg_type, seq)) + payload
    if len(body) + 2 > MAX_BODY:
        raise FrameError("too_long", f"frame body {len(body) + 2} bytes exceeds {MAX_BODY}")
    body += crc16(body).to_bytes(2, "little")
    return cobs_encode(body) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame without its terminating zero. Raises FrameError with a reason."""
    body = cobs_decode(encoded)
    if len(body) < 4:
        raise FrameError("short", f"frame body is {len(body)} bytes, at least 4 needed")
    if crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
        raise FrameError("crc", "CRC-16/CCITT-FALSE mismatch")
    return Frame(body[0], body[1], bytes(body[2:-2]))


class FrameDecoder:
    """Streaming decoder with resync: bad bytes are dropped up to the next 0x00 and counted."""

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self._buf = bytearray()
        self._max_encoded = max_body + max_body // 254 + 2
        self._overflowed = False
        self.frames = 0
        self.errors: dict[str, int] = {}

    def feed(self, data: bytes) -> list[Frame]:
        """Consume bytes from the link; return every complete, valid frame they finish."""
        frames: list[Frame] = []
        for chunk_end in _split_keep(data):
            piece, terminated = chunk_end
            if not self._overflowed:
                self._buf += piece
                if len(self._buf) > self._max_encoded:
                    self._count("too_long")
                    self._overflowed = True
                    self._buf.clear()
            if not terminated:
                continue
            if self._overflowed:
                self._overflowed = False
            elif self._buf:
                try:
                    frames.append(decode_frame(bytes(self._buf)))
                    self.frames += 1
                except FrameError as exc:
                    self._count(exc.reason)
            self._buf.clear()
        return frames

    def _count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


def _split_keep(data: bytes) -> list[tuple[bytes, bool]]:
    parts = data.split(b"\x00")
    return [(p, i < len(parts) - 1) for i, p in enumerate(parts)]


# --- message payloads -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloReply:
    """Device identity: kind 1 = scanner, 2 = dock."""

    kind: int
    proto: int
    serial: bytes
    fw_version: str

    def to_payload(self) -> bytes:
        return bytes((self.kind, self.proto)) + self.serial[:8].ljust(8, b"\x00") + self.fw_version.encode()

    @classmethod
    def from_payload(cls, p: bytes) -> HelloReply:
        _need(p, 10, "HELLO_REPLY")
        return cls(p[0], p[1], bytes(p[2:10]), p[10:].decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class AdvReport:
    """One advert the scanner heard: `ad` holds the raw AD structures."""

    uptime_ms: int
    rssi: int
    addr_type: int
    addr: bytes
    ad: bytes

    _HEAD = struct.Struct("<IbB6s")

    def to_payload(self) -> bytes:
        return self._HEAD.pack(self.uptime_ms, self.rssi, self.addr_type, self.addr) + self.ad

    @classmethod
    def from_payload(cls, p: bytes) -> AdvReport:
        _need(p, cls._HEAD.size, "ADV_REPORT")
        up, rssi, at, addr = cls._HEAD.unpack_from(p)
        return cls(up, rssi, at, addr, bytes(p[cls._HEAD.size :]))


@dataclass(frozen=True, slots=True)
class BandProgram:
    """Host to dock: write identity and key into the band sitting in the dock."""

    band_id: int
    key: bytes
    company_id: int
    interval_ms: int
    tx_power: int
    counter_start: int

    _S = struct.Struct("<I16sHHbI")

    def to_payload(self) -> bytes:
        return self._S.pack(self.band_id, self.key, self.company_id, self.interval_ms, self.tx_power,
                            self.counter_start)

    @classmethod
    def from_payload(cls, p: bytes) -> BandProgram:
        _need(p, cls._S.size, "BAND_PROGRAM")
        return cls(*cls._S.unpack_from(p))


PROGRAM_STATUS = {0: "ok", 1: "no band in dock", 2: "write failed", 3: "verify failed"}


@dataclass(frozen=True, slots=True)
class BandProgramResult:
    """Dock's answer to BAND_PROGRAM. status 0 = ok (see PROGRAM_STATUS)."""

    status: int
    band_id: int

    def to_payload(self) -> bytes:
        return struct.pack("<BI", self.status, self.band_id)

    @classmethod
    def from_payload(cls, p: bytes) -> BandProgramResult:
        _need(p, 5, "BAND_PROGRAM_RESULT")
        return cls(*struct.unpack_from("<BI", p))


@dataclass(frozen=True, slots=True)
class BandInfo:
    """Dock's report on the band it holds."""

    band_id: int
    counter: int
    battery: int
    fw_version: str

    def to_payload(self) -> bytes:
        return struct.pack("<IIB", self.band_id, self.counter, self.battery) + self.fw_version.encode()

    @classmethod
    def from_payload(cls, p: bytes) -> BandInfo:
        _need(p, 9, "BAND_INFO")
        bid, ctr, bat = struct.unpack_from("<IIB", p)
        return cls(bid, ctr, bat, p[9:].decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class DeviceError:
    """ERROR frame from a device: a code and a human-readable text."""

    code: int
    text: str

    def to_payload(self) -> bytes:
        return bytes((self.code,)) + self.text.encode()

    @classmethod
    def from_payload(cls, p: bytes) -> DeviceError:
        _need(p, 1, "ERROR")
        return cls(p[0], p[1:].decode("utf-8", "replace"))


def _need(p: bytes, n: int, what: str) -> None:
    if len(p) < n:
        raise FrameError("payload_short", f"{what} payload is {len(p)} bytes, at least {n} needed")
