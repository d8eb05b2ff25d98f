"""The ingest's settings: broker session, liveness and escalation timing, and per-topic payload limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cloud.store_db import DB_ERRORS
from protocols import topics as T
from protocols.bounds import Range, SettingError, check_bounds
from protocols.credentials import MqttCredentials

# Largest payload accepted per topic kind, checked before parsing (the broker's own limit is the
# size of a camera snapshot, cloud.broker_conf.MESSAGE_SIZE_LIMIT). An alert's detail is at most
# 4 KiB (protocols.payloads.MAX_DETAIL_BYTES), so 16 KiB is generous; a 60 MB detail was once stored.
PAYLOAD_LIMITS: dict[str, int] = {
    T.ALERT: 16 << 10, T.STATUS: 4 << 10, T.CMD_RESULT: 8 << 10, T.CAMERA_EVENT: 8 << 10,
    T.TELEMETRY_NODE: 256 << 10, T.TELEMETRY_BANDS: 1 << 20,
}


# Bounds of IngestConfig (and of the matching `qwatch-cloud serve/ingest` options). MQTT carries
# keepalive and Receive Maximum as 16-bit values and the session expiry as 32 bits.
INGEST_BOUNDS = {
    "port": Range(ge=1, le=65535), "session_expiry_s": Range(ge=0, le=2**32 - 1), "keepalive_s": Range(ge=1, le=65535),
    "receive_maximum": Range(ge=1, le=65535), "silence_s": Range(ge=0.01, le=7 * 86400),
    "escalate_after_s": Range(ge=0.01, le=86400), "tick_s": Range(ge=0.01, le=60), "max_batch": Range(ge=1, le=100_000),
    "telemetry_queue": Range(ge=1, le=1_000_000),
}


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Broker connection, session and liveness settings. Tests shorten the timeouts."""

    host: str
    port: int
    client_id: str = "qwatch-cloud-ingest"
    shared: bool = False
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 15
    receive_maximum: int = 500
    silence_s: float = 90.0
    escalate_after_s: float = 120.0
    escalate_per_site: Mapping[str, float] = field(default_factory=dict)
    # Person labels from the site configs the cloud was given: site -> band -> label (fallback when the
    # edge did not put ``person`` in the alert's detail).
    people: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    tick_s: float = 1.0
    max_batch: int = 500
    # Telemetry messages waiting for the telemetry thread; past this, new ones are shed (counted). At
    # one band message per node per second this is several seconds of a 500-node province.
    telemetry_queue: int = 5000
    # With `shared`: also subscribe, not shared, to every node's band telemetry, for this process's live map
    # (`serve --shared`: each replica's dashboards then show every node, not only its share).
    all_positions: bool = False
    # None: plain MQTT without authentication (loopback test/demo broker). A bundle from
    # `qwatch-cloud pki init` (role cloud): TLS verified against its CA, and its username/password.
    credentials: MqttCredentials | None = None

    def __post_init__(self) -> None:
        check_bounds(self, INGEST_BOUNDS)
        for site, after in self.escalate_per_site.items():
            if not INGEST_BOUNDS["escalate_after_s"].allows(after):
                raise SettingError("IngestConfig", f"escalate_per_site[{site}]",
                                   f"{after!r} is out of range; allowed: {INGEST_BOUNDS['escalate_after_s']}")


class StoreUnavailable(Exception):
    """The durable write failed: leave the message unacknowledged."""


STORE_FAILURES: tuple[type[Exception], ...] = (StoreUnavailable, *DB_ERRORS)
