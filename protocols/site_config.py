"""Site configuration (PROTOCOL.md §3) and the band key file.

Validated at load: unknown keys, bad values and broken references are errors that name
the file, the key path and what is allowed, so a technician can fix them on site.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.errors import ConfigError
from protocols.text import clean_label

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="ID usable as a topic level")]
Point = tuple[float, float]
RelPoint = Annotated[tuple[float, float], Field(description="relative image coordinates, each 0..1")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_polygon(points: list[Point], *, relative: bool = False) -> list[Point]:
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
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
    id: int = Field(ge=1, le=0xFFFFFFFF, description="band_id from the advert, 1..2^32-1")
    person: str = Field(default="", max_length=64, description="person or room label (pseudonymous, never an ID)")
    allowed_zones: list[Id] = Field(min_length=1, description="IDs of permitted zones this person may be in")

    _person = _label(64, "person")


class Beacon(_Model):
    id: int = Field(ge=1, le=0xFFFFFFFF, description="band_id of the fixed reference band")
    position: Point = Field(description="surveyed position in site metres")


class Radio(_Model):
    path_loss_exponent: float = Field(default=2.7, ge=1.5, le=6.0, description="log-distance exponent")
    shadowing_db: float = Field(default=6.0, ge=0.0, le=20.0, description="log-normal shadowing sigma, dB")


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
    zones: list[Zone] = Field(min_length=1)
    receivers: list[Receiver] = Field(default_factory=list)
    bands: list[Band] = Field(default_factory=list)
    beacons: list[Beacon] = Field(default_factory=list)
    radio: Radio = Field(default_factory=Radio)
    rules: Rules = Field(default_factory=Rules)
    cameras: list[Camera] = Field(default_factory=list)

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
    try:
        data = yaml.safe_load(text)
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
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise  # callers decide: some files are optional
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None


def parse_site_config(text: str, source: str = "<string>") -> SiteConfig:
    """Validate site config YAML text. `source` names the file in error messages."""
    data = yaml_mapping(text, source, "a YAML mapping with keys site, zones, ... (a site config)")
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        key, msg = describe_error(exc.errors()[0])
        more = exc.error_count() - 1
        raise ConfigError(source, key, msg + (f" (and {more} more errors)" if more else "")) from None


def load_site_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Load and validate a site config file. Raises ConfigError naming the file and key."""
    try:
        text = read_config_text(path)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "cannot read: No such file or directory") from None
    return parse_site_config(text, str(path))


def parse_band_keys(text: str, source: str = "<string>") -> dict[int, bytes]:
    """Parse the secrets file ``{"1001": "<32 hex chars>", ...}``. Never puts a key in a message."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(source, "", 'must be a JSON object {"<band_id>": "<32 hex chars>", ...}')
    keys: dict[int, bytes] = {}
    for band, hexkey in data.items():
        if not (isinstance(band, str) and band.isdigit() and 1 <= int(band) <= 0xFFFFFFFF):
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
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror}") from None
    if require_private and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(str(p), "", f"mode is {stat.S_IMODE(mode):04o}; key files must be 0600 "
                          f"(fix: chmod 600 {p})")
    return parse_band_keys(text, str(p))


def write_band_keys(path: str | os.PathLike[str], keys: dict[int, bytes]) -> None:
    """Write a key file atomically with mode 0600 from the start (never briefly world-readable)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({str(k): v.hex() for k, v in sorted(keys.items())}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
