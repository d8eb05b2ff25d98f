"""Pydantic models for every MQTT payload (docs/protocol.md §4-§6).

Models forbid unknown keys: a producer that drifts from the contract is caught at the
first message, not weeks later in a dashboard. Every number is finite and every size is
bounded (issue 9): a single NaN once emptied a dashboard, a 60 MB `detail` was stored and
sent to every dashboard, so the limits are here, at the first boundary every message crosses.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocols.errors import PayloadError
from protocols.ulid import new_ulid

AlertType = Literal[
    "geofence_breach", "band_missing", "band_tamper", "sos",
    "fever", "advert_forgery", "advert_replay", "camera_motion", "camera_offline", "camera_tamper",
    "node_offline",
    "low_battery", "no_motion",
]
Severity = Literal["critical", "major", "minor"]
AlertState = Literal["raised", "cleared"]

DEFAULT_SEVERITY: dict[str, Severity] = {
    "geofence_breach": "critical", "band_missing": "critical", "band_tamper": "critical", "sos": "critical",
    "fever": "major", "advert_forgery": "major", "advert_replay": "major", "camera_motion": "major",
    "camera_offline": "major", "camera_tamper": "major", "node_offline": "major",
    "low_battery": "minor", "no_motion": "minor",
}

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
UlidStr = Annotated[str, Field(pattern=r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
BandId = Annotated[int, Field(ge=1, le=0xFFFFFFFF)]
Ts = Annotated[float, Field(allow_inf_nan=False, ge=-1e11, le=1e11)]  # Unix seconds; replays use small ones
Metres = Annotated[float, Field(allow_inf_nan=False, ge=-100_000, le=100_000)]  # site frame (site_config)
Text = Annotated[str, Field(max_length=1000)]

MAX_PAYLOAD_BYTES = 1 << 20  # one MQTT payload of any kind but a snapshot; band telemetry of 5000 bands fits
MAX_DETAIL_BYTES = 4096  # an alert's `detail` as compact JSON
MAX_DETAIL_DEPTH = 4


def _check_detail(value: Any, depth: int = 0) -> None:
    """`detail` is free-form JSON: bounded depth, finite numbers, string keys, short strings."""
    if depth > MAX_DETAIL_DEPTH:
        raise ValueError(f"detail is nested deeper than {MAX_DETAIL_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("detail holds a non-finite number (NaN or infinity)")
    if isinstance(value, str) and len(value) > 1000:
        raise ValueError("detail holds a string longer than 1000 characters")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError("detail keys must be strings")
            _check_detail(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_detail(v, depth + 1)
    elif not (value is None or isinstance(value, bool | int | float | str)):
        raise ValueError(f"detail holds a {type(value).__name__}, not JSON")


def check_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """Validate an alert `detail` (raises ValueError saying what is wrong); returns it."""
    _check_detail(detail)
    size = len(json.dumps(detail, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode())
    if size > MAX_DETAIL_BYTES:
        raise ValueError(f"detail is {size} bytes as JSON; at most {MAX_DETAIL_BYTES}")
    return detail


class _Model(BaseModel):
    # No NaN or infinity in any float of any payload: every comparison with NaN is False, so it slips
    # past range checks, and JSON has no way to write it (the live feed once sent a bare NaN).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BandSubject(_Model):
    band: BandId


class CameraSubject(_Model):
    camera: Id
    zone: Id | None


class NodeSubject(_Model):
    node: Id


Subject = BandSubject | CameraSubject | NodeSubject


class Alert(_Model):
    """An alert (§4): identical on MQTT, in the cloud API and in replay output."""

    schema_: Literal["qwatch.alert/1"] = Field("qwatch.alert/1", alias="schema")
    alert_id: UlidStr
    site: Id
    node: Id
    type: AlertType
    severity: Severity
    state: AlertState
    subject: Subject
    ts: Ts
    detail: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    _detail = field_validator("detail")(lambda cls, v: check_detail(v))

    def to_json(self) -> str:
        """Compact JSON with the contract's key names (``schema``, not ``schema_``)."""
        return self.model_dump_json(by_alias=True)

    def cleared(self, ts: float, detail: dict[str, Any] | None = None) -> Alert:
        """The `cleared` message for this alert: same alert_id, new time."""
        return self.model_copy(update={"state": "cleared", "ts": ts, "detail": detail or self.detail})


def new_alert(
    *,
    site: str,
    node: str,
    type: str,
    subject: dict[str, Any],
    ts: float,
    detail: dict[str, Any] | None = None,
    severity: str | None = None,
) -> Alert:
    """Raise a new alert with a fresh ULID and the type's default severity."""
    return Alert.model_validate(
        {"schema": "qwatch.alert/1", "alert_id": new_ulid(), "site": site, "node": node, "type": type,
         "severity": severity or DEFAULT_SEVERITY.get(type, "major"), "state": "raised",
         "subject": subject, "ts": ts, "detail": detail or {}}
    )


class Status(_Model):
    """Retained birth message and Last Will (§5)."""

    schema_: Literal["qwatch.status/1"] = Field("qwatch.status/1", alias="schema")
    state: Literal["online", "offline"]
    ts: Ts
    version: str = Field(max_length=64)
    boot_id: str = Field(min_length=1, max_length=64)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class BandState(_Model):
    """One band's latest estimate in band telemetry."""

    band: BandId
    ts: Ts
    x: Metres | None
    y: Metres | None
    err_m: float | None = Field(ge=0, le=100_000)
    zone: Id | None
    rssi: float | None = Field(ge=-127, le=20)
    rx_count: int = Field(ge=0, le=10_000)
    battery: int | None = Field(default=None, ge=0, le=100)
    temp_c: float | None = Field(default=None, ge=-50, le=100)
    flags: int = Field(ge=0, le=0x1F)


class BandTelemetry(_Model):
    """`…/telemetry/bands`: one message a second."""

    schema_: Literal["qwatch.bands/1"] = Field("qwatch.bands/1", alias="schema")
    ts: Ts
    bands: list[BandState] = Field(max_length=100_000)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class CameraHealth(_Model):
    """Per-camera counters in node telemetry."""

    online: bool
    fps_in: float = Field(ge=0)
    fps_proc: float = Field(ge=0)
    skipped: int = Field(ge=0)
    reconnects: int = Field(ge=0)


class ReceiverHealth(_Model):
    """Per-receiver health in node telemetry, as the wristband pipeline learned it (docs/bands.md).

    `state`: ``ok``; ``gain_off`` (its learned deviation from its configured offset is 4 dB or more
    from the receivers' median deviation: it is down-weighted; check the hardware or `rssi_offset`);
    ``deaf`` (it stops hearing 5 dB or more above the others); ``silent`` (it heard nothing recently).
    """

    floor_dbm: float = Field(ge=-140, le=20)
    gain_dev_db: float = Field(ge=-40, le=40)
    gain_links: int = Field(ge=0)
    state: Literal["ok", "gain_off", "deaf", "silent"]


class NodeTelemetry(_Model):
    """`…/telemetry/node`: node health, docs/protocol.md §5.

    `watchdogs` maps a loop name (``ble:rx-a1``, ``mqtt``, ``outbox``, ``camera:cam-gate``) to its
    counters (restarts, errors by reason, …).
    """

    schema_: Literal["qwatch.node/1"] = Field("qwatch.node/1", alias="schema")
    ts: Ts
    boot_id: str = Field(max_length=64)
    uptime_s: float = Field(ge=0)
    cpu_pct: float = Field(ge=0)
    mem_rss_mb: float = Field(ge=0)
    mem_pct: float | None = Field(default=None, ge=0, le=100)
    disk_free_mb: float | None = Field(default=None, ge=0)
    temp_c: float | None = Field(default=None, ge=-50, le=150)
    adverts_per_s: dict[Annotated[str, Field(max_length=64)], float] = Field(default_factory=dict, max_length=64)
    outbox_depth: int = Field(ge=0)
    telemetry_dropped: int = Field(default=0, ge=0)
    health_errors: list[Text] = Field(default_factory=list, max_length=64)
    cameras: dict[Id, CameraHealth] = Field(default_factory=dict, max_length=200)
    watchdogs: dict[Annotated[str, Field(max_length=64)],
                    dict[Annotated[str, Field(max_length=64)], int | float | Text]] = Field(
        default_factory=dict, max_length=256)
    # Extension: the version of the pushed site config the node runs (None: its local files, never pushed).
    config_version: int | None = Field(default=None, ge=1, le=2**53)
    # Extension (issue 16): each receiver's learned floor, gain deviation and state.
    receivers: dict[Id, ReceiverHealth] = Field(default_factory=dict, max_length=500)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class CameraEvent(_Model):
    """A camera event (§6): `camera-test` output and `…/camera/{camera}/event`."""

    schema_: Literal["qwatch.camera_event/1"] = Field("qwatch.camera_event/1", alias="schema")
    camera: Id
    zone: Id | None
    kind: Literal["motion_start", "motion_end", "offline", "online", "tamper_start", "tamper_end"]
    ts: Ts
    frame: int = Field(ge=0)
    bbox: tuple[float, float, float, float] | None = None
    score: float = Field(default=0.0, ge=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @field_validator("bbox")
    @classmethod
    def _bbox_relative(cls, v: tuple[float, float, float, float] | None) -> Any:
        if v is not None and not all(0.0 <= c <= 1.0 and math.isfinite(c) for c in v):
            raise ValueError("bbox values are relative image coordinates in 0..1")
        return v

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class AckCommand(_Model):
    """`…/cmd/ack`: a guard acknowledged an alert in the cloud; the node silences its local siren."""

    cmd_id: str = Field(min_length=1, max_length=64)
    alert_id: UlidStr
    by: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=2000)


class ConfigCommand(_Model):
    """`…/cmd/config`: a new site config (YAML text) to validate and apply.

    Extension (docs/technician.md "Config push"): `version` numbers the site's pushes (the node
    refuses one older than it runs and keeps the last good one on disk); `keys` is the site's whole
    band key set (band ID → 32 hex chars), replacing the node's keys. Both absent: the original
    contract (YAML only, keys unchanged, no version).
    """

    cmd_id: str = Field(min_length=1, max_length=64)
    site_yaml: str = Field(min_length=1, max_length=1_000_000)
    version: int | None = Field(default=None, ge=1, le=2**53)
    keys: dict[Annotated[str, Field(pattern=r"^[1-9][0-9]{0,9}$")],
               Annotated[str, Field(pattern=r"^[0-9a-fA-F]{32}$")]] | None = Field(default=None, max_length=100_000)


class SnapshotCommand(_Model):
    """`…/cmd/snapshot`: take a JPEG from a camera now."""

    cmd_id: str = Field(min_length=1, max_length=64)
    camera: Id


COMMANDS: dict[str, type[_Model]] = {"ack": AckCommand, "config": ConfigCommand, "snapshot": SnapshotCommand}


# The cmd_id of `qwatch-edge doctor`'s probe on the node's own cmd_result: the ingest ignores it,
# so running the doctor on a stopped node neither marks it online nor later raises node_offline.
DOCTOR_PROBE_ID = "doctor-probe"


class CommandResult(_Model):
    """`…/cmd_result`: the node's answer to a command."""

    cmd_id: str = Field(min_length=1, max_length=64)
    ok: bool
    error: str | None = Field(default=None, max_length=2000)
    # Extension: the config version the node runs after a `config` command (None for other commands).
    config_version: int | None = Field(default=None, ge=1, le=2**53)


M = TypeVar("M", bound=BaseModel)


def parse_payload(model: type[M], payload: bytes | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> M:
    """Validate a JSON payload against `model`. Raises PayloadError naming the bad field.

    A payload over `max_bytes` is refused before it is parsed (reason ``too_large``).
    """
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"{model.__name__}: {len(payload)} bytes; at most {max_bytes}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        reason = "json" if first["type"] == "json_invalid" else "schema"
        raise PayloadError(reason, f"{model.__name__}: {loc}: {first['msg']}") from None
