"""Serial framing (§7): COBS + CRC round trips, resync after garbage, and message payloads."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import FrameError
from protocols.serial_frame import (
    AdvReport,
    BandInfo,
    BandProgram,
    FrameDecoder,
    HelloReply,
    MsgType,
    cobs_decode,
    cobs_encode,
    crc16,
    decode_frame,
    encode_frame,
)


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


def test_cobs_known_vectors() -> None:
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_decode(b"\x03\x11\x22\x02\x33") == b"\x11\x22\x00\x33"
    assert cobs_decode(cobs_encode(bytes(range(1, 256)))) == bytes(range(1, 256))


@given(st.binary(max_size=600))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=200))
def test_frame_round_trip(t: int, seq: int, payload: bytes) -> None:
    wire = encode_frame(t, seq, payload)
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    frame = decode_frame(wire[:-1])
    assert (frame.type, frame.seq, frame.payload) == (t, seq, payload)


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(data)


@given(st.lists(st.binary(max_size=50), max_size=10), st.data())
def test_decoder_resyncs_after_garbage_and_counts(garbage: list[bytes], data: st.DataObject) -> None:
    good = [encode_frame(MsgType.ADV_REPORT, i, bytes([i]) * 10) for i in range(5)]
    stream = b""
    for i, g in enumerate(good):
        stream += (garbage[i] if i < len(garbage) else b"") + b"\x00" + g
    dec = FrameDecoder()
    cut = data.draw(st.integers(0, len(stream)))
    frames = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
    assert [f.seq for f in frames] == list(range(5))


def test_decoder_counts_bad_crc_and_keeps_going() -> None:
    bad = bytearray(encode_frame(MsgType.HELLO, 1))
    bad[1] ^= 0x40
    dec = FrameDecoder()
    frames = dec.feed(bytes(bad) + encode_frame(MsgType.HELLO, 2))
    assert [f.seq for f in frames] == [2]
    assert sum(dec.errors.values()) == 1


def test_oversized_garbage_is_dropped_without_growing_memory() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\x01" * 100_000) == []
    assert dec.errors.get("too_long") == 1
    assert [f.seq for f in dec.feed(b"\x00" + encode_frame(MsgType.HELLO, 9))] == [9]


def test_message_payload_round_trips() -> None:
    hello = HelloReply(1, 1, b"SN000001", "scanner 1.2.0")
    assert HelloReply.from_payload(hello.to_payload()) == hello
    rep = AdvReport(123456, -71, 1, bytes(6), b"\x02\x01\x06")
    assert AdvReport.from_payload(rep.to_payload()) == rep
    prog = BandProgram(1001, bytes(range(16)), 0xFFFF, 1000, -4, 0)
    assert BandProgram.from_payload(prog.to_payload()) == prog
    info = BandInfo(1001, 55, 90, "band 0.9")
    assert BandInfo.from_payload(info.to_payload()) == info
