"""Wristband advertisement codec (docs/protocol.md §1).

The manufacturer payload is 22 bytes: a 14-byte status body and an 8-byte truncated
AES-128-CMAC tag over ``company_id (LE) ‖ body``. Decoding is split from verification:
`decode_status` checks structure only, `check_tag` needs the band's key.
"""

from __future__ import annotations

import hmac
import struct
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from protocols.errors import AdvertError

COMPANY_ID_TEST = 0xFFFF
PAYLOAD_LEN = 22
BODY_LEN = 14
TAG_LEN = 8
FRAME_STATUS_V1 = 0x11
KEY_LEN = 16

FLAG_STRAP_OPEN = 0x01
FLAG_SOS = 0x02
FLAG_CHARGING = 0x04
FLAG_MOVING = 0x08
FLAG_LOW_BATTERY = 0x10
FLAGS_RESERVED = 0xE0

BATTERY_UNKNOWN = 255
TEMP_UNKNOWN = 0x7FFF

AD_TYPE_FLAGS = 0x01
AD_TYPE_MANUFACTURER = 0xFF
_AD_FLAGS = bytes((0x02, AD_TYPE_FLAGS, 0x06))

_BODY = struct.Struct("<BIIBBhb")  # frame, band_id, counter, flags, battery, skin_temp, measured_power


class StatusAdvert(NamedTuple):
    """A structurally valid v1 status advert. Not yet authenticated.

    A NamedTuple, not a frozen dataclass: one is built per received advert, and a frozen
    dataclass's __init__ (object.__setattr__ per field) made decoding 4.5 µs instead of ~1.
    """

    band_id: int
    counter: int
    flags: int
    battery: int | None
    skin_temp_c: float | None
    measured_power: int
    tag: bytes

    @property
    def strap_open(self) -> bool:
        return bool(self.flags & FLAG_STRAP_OPEN)

    @property
    def sos(self) -> bool:
        return bool(self.flags & FLAG_SOS)

    @property
    def charging(self) -> bool:
        return bool(self.flags & FLAG_CHARGING)

    @property
    def moving(self) -> bool:
        return bool(self.flags & FLAG_MOVING)

    @property
    def low_battery(self) -> bool:
        return bool(self.flags & FLAG_LOW_BATTERY)


def tag_context(key: bytes) -> CMAC:
    """A CMAC keyed once. Passing it as `ctx` copies it instead of keying AES again (4× cheaper)."""
    return CMAC(algorithms.AES128(key))


def compute_tag(key: bytes, company_id: int, body: bytes, *, ctx: CMAC | None = None) -> bytes:
    """First 8 bytes of AES-128-CMAC(key, company_id LE ‖ body[0:14]). `ctx`: from tag_context(key)."""
    mac = ctx.copy() if ctx is not None else CMAC(algorithms.AES128(key))
    mac.update(company_id.to_bytes(2, "little") + body[:BODY_LEN])
    return mac.finalize()[:TAG_LEN]


def check_tag(key: bytes, company_id: int, payload: bytes, *, ctx: CMAC | None = None) -> bool:
    """True if the payload's tag is the CMAC of its body under `key`. Constant-time compare."""
    if len(payload) != PAYLOAD_LEN:
        return False
    return hmac.compare_digest(compute_tag(key, company_id, payload, ctx=ctx), payload[BODY_LEN:])


def encode_status(
    *,
    band_id: int,
    counter: int,
    key: bytes,
    company_id: int = COMPANY_ID_TEST,
    flags: int = 0,
    battery: int | None = None,
    skin_temp_c: float | None = None,
    measured_power: int = -59,
) -> bytes:
    """Build the 22-byte manufacturer payload of a v1 status advert, tag included."""
    if not 1 <= band_id <= 0xFFFFFFFF:
        raise AdvertError("band_id_range", f"band_id {band_id} must be 1..2^32-1")
    if not 0 <= counter <= 0xFFFFFFFF:
        raise AdvertError("counter_range", f"counter {counter} must be 0..2^32-1")
    if flags & ~0x1F or flags < 0:
        raise AdvertError("reserved_flags", f"flags 0x{flags:x} use reserved bits 5-7")
    if battery is not None and not 0 <= battery <= 100:
        raise AdvertError("battery_range", f"battery {battery} must be 0..100 or None")
    if not -128 <= measured_power <= 127:
        raise AdvertError("measured_power_range", f"measured_power {measured_power} must fit int8")
    if len(key) != KEY_LEN:
        raise AdvertError("key_length", "band key must be 16 bytes")
    temp = TEMP_UNKNOWN if skin_temp_c is None else round(skin_temp_c * 100)
    if not -32768 <= temp <= 32767:
        raise AdvertError("temp_range", f"skin_temp_c {skin_temp_c} does not fit int16 centi-degrees")
    body = _BODY.pack(
        FRAME_STATUS_V1,
        band_id,
        counter,
        flags,
        BATTERY_UNKNOWN if battery is None else battery,
        temp,
        measured_power,
    )
    return body + compute_tag(key, company_id, body)


def decode_status(data: bytes) -> StatusAdvert:
    """Decode a manufacturer payload. Raises AdvertError with a counter-friendly reason."""
    if len(data) != PAYLOAD_LEN:
        raise AdvertError("length", f"payload is {len(data)} bytes, expected {PAYLOAD_LEN}")
    frame, band_id, counter, flags, battery, temp, power = _BODY.unpack_from(data)
    if frame != FRAME_STATUS_V1:
        raise AdvertError("frame", f"frame byte 0x{frame:02x}, expected 0x{FRAME_STATUS_V1:02x}")
    if band_id == 0:
        raise AdvertError("band_id_zero", "band_id 0 is invalid")
    if flags & FLAGS_RESERVED:
        raise AdvertError("reserved_flags", f"flags 0x{flags:02x} set reserved bits 5-7")
    if battery > 100 and battery != BATTERY_UNKNOWN:
        raise AdvertError("battery_range", f"battery {battery} is neither 0-100 nor 255")
    # Positional tuple.__new__: one is built per received advert, keyword construction costs twice as much.
    return _new_advert(StatusAdvert, (band_id, counter, flags, None if battery == BATTERY_UNKNOWN else battery,
                                      None if temp == TEMP_UNKNOWN else temp / 100.0, power, bytes(data[BODY_LEN:])))


_new_advert = tuple.__new__


def build_advertising_data(company_id: int, payload: bytes) -> bytes:
    """The legacy advert's AD structures: Flags then Manufacturer Specific Data (30 bytes for v1)."""
    mfr = company_id.to_bytes(2, "little") + payload
    ad = _AD_FLAGS + bytes((len(mfr) + 1, AD_TYPE_MANUFACTURER)) + mfr
    if len(ad) > 31:
        raise AdvertError("ad_too_long", f"advertising data is {len(ad)} bytes, legacy adverts allow 31")
    return ad


def parse_ad_structures(ad: bytes) -> list[tuple[int, bytes]]:
    """Split advertising data into (type, data) pairs. A zero length byte ends the data early."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(ad):
        length = ad[i]
        if length == 0:
            break
        if i + 1 + length > len(ad):
            raise AdvertError("ad_malformed", f"AD structure at offset {i} overruns the data")
        out.append((ad[i + 1], bytes(ad[i + 2 : i + 1 + length])))
        i += 1 + length
    return out


def manufacturer_data(ad: bytes) -> tuple[int, bytes] | None:
    """Return (company_id, payload) of the first Manufacturer Specific Data structure, if any."""
    for ad_type, data in parse_ad_structures(ad):
        if ad_type == AD_TYPE_MANUFACTURER:
            if len(data) < 2:
                raise AdvertError("ad_malformed", "manufacturer data shorter than its company ID")
            return int.from_bytes(data[:2], "little"), data[2:]
    return None
