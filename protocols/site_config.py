"""Site configuration (docs/protocol.md §3) and the band key file.

Validated at load: unknown keys, bad values and broken references are errors that name
the file, the key path and what is allowed, so a technician can fix them on site.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocols.errors import ConfigError
from protocols.secret_files import json_object, read_private_text, write_private_file
from protocols.text import clean_label

# Bounds on every technician input (issue 9): a config is read by code whose cost grows with these
# sizes (candidate grids, zone tests), and a coordinate of 1e300 or .nan must never reach it.
COORD_MAX_M = 100_000.0  # a site spans metres to a few km; 100 km is a typo, not a site
SITE_MAX_EXTENT_M = 3000.0  # zones, receivers and beacons fit in a square this wide: grids over it stay small
MAX_POLYGON_POINTS = 1000
# A 500-band site is ~40 kB. YAML costs ~10 us per scalar even with libyaml (the resolver is Python): a
# 2.5 MB file of 200k polygon points took 41 s to parse on the loaded 2-vCPU test machine.
MAX_CONFIG_BYTES = 1 << 20

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="ID usable as a topic level")]
Coord = Annotated[float, Field(ge=-COORD_MAX_M, le=COORD_MAX_M, allow_inf_nan=False)]
Point = tuple[Coord, Coord]
RelPoint = Annotated[tuple[float, float], Field(description="relative image coordinates, each 0..1")]
_BAND_ID_RE = re.compile(r"[0-9]{1,10}")


def _ascii_band_id(v: Any) -> Any:
    """Band IDs are ASCII decimal: int('١٠٠١') is 1001 in Python, but no band or log writes it so."""
    if isinstance(v, str) and not _BAND_ID_RE.fullmatch(v):
        raise ValueError(f"{v[:20]!r} is not a band ID; band IDs are decimal integers 1..4294967295 (ASCII digits)")
    if isinstance(v, bool | float):
        raise ValueError("band IDs are decimal integers 1..4294967295")
    return v


BandIdField = Annotated[int, BeforeValidator(_ascii_band_id), Field(ge=1, le=0xFFFFFFFF)]


# libyaml's safe loader parses ~10x faster than the pure-Python one; same documents, same errors.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Model(BaseModel):
    # No NaN/inf in any float of a config: every comparison with NaN is False, so it slips past checks.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_polygon(points: list[Point], *, relative: bool = False) -> list[Point]:
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
    if len(points) > MAX_POLYGON_POINTS:
        raise ValueError(f"a polygon has at most {MAX_POLYGON_POINTS} points, got {len(points)}")
    if not all(math.isfinite(c) for p in points for c in p):
        raise ValueError("polygon coordinates must be finite numbers")
    if relative and not all(0.0 <= c <= 1.0 for p in points for c in p):
        raise ValueError("camera polygon coordinates are relative, each must be within 0..1")
    area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(points, points[1:] + points[:1], strict=True))
    if abs(area2) < 1e-12:
        raise ValueError("polygon has zero area")
    return points


class Origin(_Model):
    lat: float = Field(ge=-90, le=90, description="latitude of the local frame's origin")
    lon: float = Field(ge=-180, le=180, description="longitude of the local frame's origin")


def _label(max_len: int, what: str) -> Any:
    """A validator: NFC, no control characters, at most ``max_len`` characters (protocols.text)."""
    return field_validator(what)(lambda cls, v: clean_label(v, max_len=max_len, what=what, allow_empty=True))


class SiteInfo(_Model):
    id: Id
    name: str = Field(default="", max_length=200, description="human-readable site name (diacritics welcome)")

    _name = _label(200, "name")
    origin: Origin = Field(default=Origin(lat=0.0, lon=0.0), description="frame origin for maps")


class Zone(_Model):
    id: Id
    kind: Literal["permitted", "restricted"] = Field(description="permitted or restricted")
    polygon: list[Point] = Field(description="polygon in site metres (x east, y north)")

    _poly = field_validator("polygon")(lambda cls, v: _check_polygon(v))


class Receiver(_Model):
    id: Id
    position: Point = Field(description="receiver position in site metres")
    source: str = Field(description='"bluez:<adapter>", "serial:<device>" or "sim"')
    rssi_offset: float = Field(default=0.0, ge=-30, le=30, description="dB added to every RSSI it reports")

    @field_validator("source")
    @classmethod
    def _source_kind(cls, v: str) -> str:
        kind, _, arg = v.partition(":")
        if v == "sim" or (kind in ("bluez", "serial") and arg):
            return v
        raise ValueError(f'{v!r} is not a source; allowed: "bluez:<adapter>", "serial:<device>", "sim"')

    @property
    def source_kind(self) -> str:
        return self.source.partition(":")[0]

    @property
    def source_arg(self) -> str:
        return self.source.partition(":")[2]


class Band(_Model):
    id: BandIdField = Field(description="band_id from the advert, 1..2^32-1")
    person: str = Field(default="", max_length=64, description="person or room label (pseudonymous, never an ID)")
    allowed_zones: list[Id] = Field(min_length=1, description="IDs of permitted zones this person may be in")

    _person = _label(64, "person")


class Beacon(_Model):
    id: BandIdField = Field(description="band_id of the fixed reference band")
    position: Point = Field(description="surveyed position in site metres")


class Radio(_Model):
    path_loss_exponent: float = Field(default=2.7, ge=1.5, le=6.0, description="log-distance exponent")
    shadowing_db: float = Field(default=6.0, ge=0.0, le=20.0, description="log-normal shadowing sigma, dB")
    receiver_gain_sd_db: float = Field(
        default=3.0, ge=0.5, le=10.0,
        description="how far a receiver's true gain may be from its configured rssi_offset (1 sd, dB), "
                    "before the beacons and bands calibrate it")


class Rules(_Model):
    breach_dwell_s: float = Field(default=20, ge=0, le=3600, description="outside allowed zones this long")
    restricted_dwell_s: float = Field(default=5, ge=0, le=3600, description="inside a restricted zone this long")
    clear_dwell_s: float = Field(default=10, ge=0, le=3600, description="back inside this long clears")
    missing_after_s: float = Field(default=60, ge=5, le=86400, description="unheard this long: band_missing")
    fever_c: float = Field(default=37.8, ge=35, le=42, description="median skin temperature threshold")
    low_battery_pct: int = Field(default=15, ge=0, le=100, description="battery percent threshold")
    no_motion_s: float = Field(default=1800, ge=60, le=86400, description="no movement with strap closed")
    escalate_after_s: float = Field(
        default=300, ge=10, le=86400,
        description="extension: cloud escalates a raised alert nobody acknowledged within this time")


class Detect(_Model):
    width: int = Field(default=320, ge=32, le=3840, description="detect frame width in pixels")
    height: int = Field(default=180, ge=32, le=2160, description="detect frame height in pixels")
    fps: float = Field(default=5, gt=0, le=30, description="frames analysed per second")


class CameraZone(_Model):
    id: Id
    polygon: list[RelPoint]
    min_area: float = Field(default=0.002, gt=0, le=1, description="changed fraction of the zone that is motion")
    dwell_frames: int = Field(default=3, ge=1, le=100, description="frames motion must persist")
    alert: bool = Field(default=True, description="raise camera_motion for this zone")

    _poly = field_validator("polygon")(lambda cls, v: _check_polygon(v, relative=True))


class PerspectivePoint(_Model):
    """How tall a person standing with the feet at `row` looks (both relative to the picture height)."""

    row: float = Field(ge=0, le=1, allow_inf_nan=False, description="image row of the feet, 0 top .. 1 bottom")
    person_h: float = Field(gt=0, le=1, allow_inf_nan=False, description="person height, fraction of the picture")


class Camera(_Model):
    id: Id
    url: str = Field(min_length=1, description="rtsp:// URL or a video file path")
    detect: Detect = Field(default_factory=Detect)
    masks: list[list[RelPoint]] = Field(default_factory=list, description="areas ignored by motion")
    zones: list[CameraZone] = Field(default_factory=list)
    perspective: list[PerspectivePoint] | None = Field(
        default=None, min_length=2, max_length=4,
        description="2-4 measured person heights by image row; person size is then checked per row")
    person_check: Literal["off", "night", "always"] = Field(
        default="off", description="HOG person check on a track about to raise an event (needs OpenCV's HOG; "
                                   "measured in docs/camera.md)")

    @field_validator("perspective")
    @classmethod
    def _perspective(cls, v: list[PerspectivePoint] | None) -> list[PerspectivePoint] | None:
        if v is None:
            return v
        rows = sorted(p.row for p in v)
        if any(b - a < 0.05 for a, b in itertools.pairwise(rows)):
            raise ValueError("perspective rows must be at least 0.05 apart")
        by_row = sorted(v, key=lambda p: p.row)
        if any(b.person_h < a.person_h for a, b in itertools.pairwise(by_row)):
            raise ValueError("person_h must not shrink towards the bottom of the picture (nearer the camera)")
        return v

    @field_validator("masks")
    @classmethod
    def _masks(cls, v: list[list[Point]]) -> list[list[Point]]:
        return [_check_polygon(m, relative=True) for m in v]


CameraConfig = Camera


class SiteConfig(_Model):
    """A whole site: geometry, radio, rules, receivers, bands and cameras."""

    site: SiteInfo
    company_id: int = Field(default=0xFFFF, ge=0, le=0xFFFF, description="BLE company ID of the bands")
    zones: list[Zone] = Field(min_length=1, max_length=1000)
    receivers: list[Receiver] = Field(default_factory=list, max_length=1000)
    bands: list[Band] = Field(default_factory=list, max_length=100_000)
    beacons: list[Beacon] = Field(default_factory=list, max_length=1000)
    radio: Radio = Field(default_factory=Radio)
    rules: Rules = Field(default_factory=Rules)
    cameras: list[Camera] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
        _unique("zones", [z.id for z in self.zones])
        _unique("receivers", [r.id for r in self.receivers])
        _unique("cameras", [c.id for c in self.cameras])
        _unique("bands", [b.id for b in self.bands])
        _unique("beacons", [b.id for b in self.beacons])
        kinds = {z.id: z.kind for z in self.zones}
        for i, band in enumerate(self.bands):
            for zone in band.allowed_zones:
                if kinds.get(zone) != "permitted":
                    allowed = ", ".join(k for k, v in kinds.items() if v == "permitted")
                    raise ValueError(f"bands[{i}].allowed_zones: {zone!r} is not a permitted zone; "
                                     f"allowed: {allowed}")
        clash = {b.id for b in self.bands} & {b.id for b in self.beacons}
        if clash:
            raise ValueError(f"beacons: IDs {sorted(clash)} are also enrolled as bands")
        for cam in self.cameras:
            _unique(f"cameras[{cam.id}].zones", [z.id for z in cam.zones])
        pts = [p for z in self.zones for p in z.polygon] + [r.position for r in self.receivers] + [
            b.position for b in self.beacons]
        for axis, name in ((0, "x"), (1, "y")):
            span = max(p[axis] for p in pts) - min(p[axis] for p in pts)
            if span > SITE_MAX_EXTENT_M:
                raise ValueError(f"zones, receivers and beacons span {span:.0f} m in {name}; a site spans at most "
                                 f"{SITE_MAX_EXTENT_M:.0f} m (coordinates are metres from the site origin)")
        return self

    def zone(self, zone_id: str) -> Zone:
        return next(z for z in self.zones if z.id == zone_id)

    def camera(self, camera_id: str) -> Camera:
        """The camera with this ID. Raises KeyError naming the known IDs."""
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise KeyError(f"no camera {camera_id!r}; known: {', '.join(c.id for c in self.cameras) or 'none'}")


def _unique(what: str, ids: list[Any]) -> None:
    seen: set[Any] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: duplicate id {i!r}")
        seen.add(i)


def describe_error(err: Any) -> tuple[str, str]:
    """Turn one pydantic error into (key path, message with allowed values); shared by every config file."""
    loc = list(err["loc"])
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif not (isinstance(part, str) and "[" in part and part.startswith(("tuple", "function"))):
            key += ("." if key else "") + str(part)
    etype = err["type"]
    msg = err["msg"]
    if etype == "extra_forbidden":
        msg = "unknown key (typo?); unknown keys are errors"
    elif etype == "literal_error":
        msg = f"{err.get('input')!r} is not allowed; allowed: {err['ctx']['expected']}"
    elif etype == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return key, msg


def yaml_mapping(text: str, source: str, expected: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """Parse YAML text that must be a mapping; ConfigError with the line and column otherwise.

    `expected` completes "… must be …" in the error (e.g. "a YAML mapping with keys site, zones, ...").
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "", f"{len(text)} characters; config files are at most {MAX_CONFIG_BYTES}")
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # a safe loader, libyaml when present
    except RecursionError:
        raise ConfigError(source, "", "not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"must be {expected}")
    return data


def read_config_text(path: str | os.PathLike[str]) -> str:
    """A config file's text; ConfigError naming the file when it cannot be read or is not UTF-8."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(str(p), "", f"over {MAX_CONFIG_BYTES} bytes; config files are at most that big "
                                          "(is this the right file?)")
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise  # callers decide: some files are optional
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None


M = TypeVar("M", bound=BaseModel)


def validate_config(model: type[M], data: Any, source: str, *, unknown_key_first: bool = False,
                    describe: Callable[[Any], tuple[str, str]] = describe_error) -> M:
    """Validate parsed config data (every config file: site, notify, users); ConfigError naming the file,
    the key of the first error, what is allowed, and how many more errors there are.

    `unknown_key_first`: report an unknown key before the others (a typo usually explains the
    "missing" key next to it).
    """
    try:
        return model.model_validate(data)
    except RecursionError:
        raise ConfigError(source, "", "nested too deeply to be a valid config") from None
    except ValidationError as exc:
        errors = exc.errors()
        first = min(errors, key=lambda e: e["type"] != "extra_forbidden") if unknown_key_first else errors[0]
        key, msg = describe(first)
        more = exc.error_count() - 1
        raise ConfigError(source, key, msg + (f" (and {more} more errors)" if more else "")) from None


def parse_site_config(text: str, source: str = "<string>") -> SiteConfig:
    """Validate site config YAML text. `source` names the file in error messages."""
    data = yaml_mapping(text, source, "a YAML mapping with keys site, zones, ... (a site config)")
    return validate_config(SiteConfig, data, source)


def load_site_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Load and validate a site config file. Raises ConfigError naming the file and key."""
    try:
        text = read_config_text(path)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "cannot read: No such file or directory") from None
    return parse_site_config(text, str(path))


def parse_band_keys(text: str, source: str = "<string>") -> dict[int, bytes]:
    """Parse the secrets file ``{"1001": "<32 hex chars>", ...}``. Never puts a key in a message."""
    data = json_object(text, source, 'a JSON object {"<band_id>": "<32 hex chars>", ...}')
    keys: dict[int, bytes] = {}
    for band, hexkey in data.items():
        if not (_BAND_ID_RE.fullmatch(band) and 1 <= int(band) <= 0xFFFFFFFF):
            raise ConfigError(source, repr(band), "band IDs are decimal integers 1..4294967295")
        if not isinstance(hexkey, str) or len(hexkey) != 32:
            raise ConfigError(source, band, "a key must be 32 hex characters (16 bytes)")
        try:
            keys[int(band)] = bytes.fromhex(hexkey)
        except ValueError:
            raise ConfigError(source, band, "a key must be 32 hex characters (16 bytes)") from None
    return keys


def load_band_keys(path: str | os.PathLike[str], *, require_private: bool = False) -> dict[int, bytes]:
    """Load the band key file. With `require_private`, refuse a file others can read (needs 0600)."""
    text = read_private_text(path, what="the band key file", require_private=require_private)
    return parse_band_keys(text, str(path))


def write_band_keys(path: str | os.PathLike[str], keys: dict[int, bytes]) -> None:
    """Write a key file atomically with mode 0600 from the start (never briefly world-readable)."""
    write_private_file(path, json.dumps({str(k): v.hex() for k, v in sorted(keys.items())}, indent=1))
