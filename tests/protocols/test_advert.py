"""Advert codec: round trips, the spec's byte layout, and garbage that must only raise AdvertError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.advert import (
    FLAG_SOS,
    FLAG_STRAP_OPEN,
    PAYLOAD_LEN,
    build_advertising_data,
    check_tag,
    compute_tag,
    decode_status,
    encode_status,
    manufacturer_data,
    parse_ad_structures,
)
from protocols.errors import AdvertError

KEY = bytes(range(16))


def test_layout_matches_protocol_table() -> None:
    data = encode_status(band_id=1001, counter=7, key=KEY, flags=FLAG_STRAP_OPEN | FLAG_SOS, battery=80,
                         skin_temp_c=36.55, measured_power=-59)
    assert len(data) == PAYLOAD_LEN
    assert data[0] == 0x11
    assert data[1:5] == (1001).to_bytes(4, "little")
    assert data[5:9] == (7).to_bytes(4, "little")
    assert data[9] == 0x03
    assert data[10] == 80
    assert data[11:13] == (3655).to_bytes(2, "little", signed=True)
    assert data[13] == (-59) & 0xFF
    assert data[14:] == compute_tag(KEY, 0xFFFF, data[:14])


def test_cmac_matches_rfc4493_vector() -> None:
    # RFC 4493 example 2 (16-byte message); our tag is the first 8 bytes of the CMAC.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    msg = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert compute_tag(key, int.from_bytes(msg[:2], "little"), msg[2:]) == bytes.fromhex("070a16b46b4d4144")


def test_unknown_values_decode_to_none() -> None:
    adv = decode_status(encode_status(band_id=5, counter=1, key=KEY))
    assert adv.battery is None and adv.skin_temp_c is None


@given(
    band_id=st.integers(1, 2**32 - 1), counter=st.integers(0, 2**32 - 1), flags=st.integers(0, 0x1F),
    battery=st.none() | st.integers(0, 100), temp=st.none() | st.integers(-3000, 6000),
    power=st.integers(-128, 127), company=st.integers(0, 0xFFFF),
)
def test_round_trip(band_id: int, counter: int, flags: int, battery: int | None, temp: int | None,
                    power: int, company: int) -> None:
    temp_c = None if temp is None else temp / 100
    data = encode_status(band_id=band_id, counter=counter, key=KEY, company_id=company, flags=flags,
                         battery=battery, skin_temp_c=temp_c, measured_power=power)
    adv = decode_status(data)
    assert (adv.band_id, adv.counter, adv.flags, adv.battery, adv.measured_power) == (
        band_id, counter, flags, battery, power)
    assert adv.skin_temp_c == temp_c
    assert check_tag(KEY, company, data)
    assert not check_tag(KEY, company ^ 1, data)


@given(st.binary(max_size=64))
def test_random_bytes_only_raise_advert_error(data: bytes) -> None:
    try:
        decode_status(data)
    except AdvertError as exc:
        assert exc.reason in {"length", "frame", "band_id_zero", "reserved_flags", "battery_range"}


@given(st.integers(0, PAYLOAD_LEN - 1), st.integers(1, 255))
def test_any_single_byte_change_breaks_the_tag_or_decoding(pos: int, xor: int) -> None:
    data = bytearray(encode_status(band_id=1001, counter=42, key=KEY, battery=50))
    data[pos] ^= xor
    try:
        decode_status(bytes(data))
    except AdvertError:
        return
    assert not check_tag(KEY, 0xFFFF, bytes(data))


def test_reserved_flag_bits_rejected() -> None:
    data = bytearray(encode_status(band_id=1, counter=1, key=KEY))
    data[9] = 0x20
    with pytest.raises(AdvertError) as err:
        decode_status(bytes(data))
    assert err.value.reason == "reserved_flags"


def test_advertising_data_fits_legacy_advert_and_parses_back() -> None:
    payload = encode_status(band_id=1001, counter=1, key=KEY)
    ad = build_advertising_data(0xFFFF, payload)
    assert len(ad) <= 31 and ad[:3] == bytes((2, 1, 6))
    assert manufacturer_data(ad) == (0xFFFF, payload)


@given(st.binary(max_size=40))
def test_ad_parser_only_raises_advert_error(ad: bytes) -> None:
    try:
        parse_ad_structures(ad)
        manufacturer_data(ad)
    except AdvertError as exc:
        assert exc.reason == "ad_malformed"
