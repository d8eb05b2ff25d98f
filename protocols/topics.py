"""MQTT topic tree (docs/protocol.md §5): ``qwatch/v1/{site}/{node}/…``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.errors import TopicError

PREFIX = "qwatch/v1"
SUBSCRIBE_ALL = "qwatch/v1/#"
SHARED_INGEST = "$share/ingest/qwatch/v1/#"
# Every node's band telemetry (a `serve --shared` replica's live map, beside its shared subscription).
ALL_BAND_TELEMETRY = "qwatch/v1/+/+/telemetry/bands"
# The cloud's own announcements (docs/cloud.md "Escalation"): one level shorter than any node topic, so no
# node's ``qwatch/v1/{site}/{node}/#`` grant can reach them unless a site is called "cloud" (refused).
CLOUD_PREFIX = "qwatch/v1/cloud"
CLOUD_ESCALATION = "qwatch/v1/cloud/escalation"
RESERVED_SITE_IDS = frozenset({"cloud"})

# IDs become topic levels, so they must not contain MQTT separators or wildcards.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)

STATUS = "status"
ALERT = "alert"
TELEMETRY_BANDS = "telemetry/bands"
TELEMETRY_NODE = "telemetry/node"
CAMERA_EVENT = "camera_event"
SNAPSHOT = "snapshot"
CMD = "cmd"
CMD_RESULT = "cmd_result"


def check_id(value: str, what: str) -> str:
    """Return `value` if it is usable as a topic level, else raise TopicError."""
    if not _ID_RE.match(value):
        raise TopicError(f"{what} {value!r} must match {ID_PATTERN}")
    return value


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """Topic builders for one edge node."""

    site: str
    node: str

    def __post_init__(self) -> None:
        check_id(self.site, "site id")
        check_id(self.node, "node id")

    @property
    def prefix(self) -> str:
        return f"{PREFIX}/{self.site}/{self.node}"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def alert(self) -> str:
        return f"{self.prefix}/alert"

    @property
    def telemetry_bands(self) -> str:
        return f"{self.prefix}/telemetry/bands"

    @property
    def telemetry_node(self) -> str:
        return f"{self.prefix}/telemetry/node"

    def camera_event(self, camera: str) -> str:
        return f"{self.prefix}/camera/{check_id(camera, 'camera id')}/event"

    def snapshot(self, camera: str, alert_id: str) -> str:
        return f"{self.prefix}/camera/{check_id(camera, 'camera id')}/snapshot/{check_id(alert_id, 'alert id')}"

    def cmd(self, name: str) -> str:
        return f"{self.prefix}/cmd/{check_id(name, 'command name')}"

    @property
    def cmd_subscription(self) -> str:
        return f"{self.prefix}/cmd/#"

    @property
    def cmd_result(self) -> str:
        return f"{self.prefix}/cmd_result"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic taken apart. `kind` is one of the module constants (STATUS, ALERT, …)."""

    site: str
    node: str
    kind: str
    camera: str | None = None
    alert_id: str | None = None
    cmd: str | None = None


def parse_topic(topic: str) -> ParsedTopic:
    """Split a qwatch/v1 topic. Raises TopicError for anything outside the tree."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "qwatch" or parts[1] != "v1":
        raise TopicError(f"topic {topic!r} is not under {PREFIX}/{{site}}/{{node}}/")
    site, node, rest = parts[2], parts[3], parts[4:]
    check_id(site, "site id")
    check_id(node, "node id")
    simple = {(STATUS,): STATUS, (ALERT,): ALERT, ("telemetry", "bands"): TELEMETRY_BANDS,
              ("telemetry", "node"): TELEMETRY_NODE, (CMD_RESULT,): CMD_RESULT}
    kind = simple.get(tuple(rest))
    if kind is not None:
        return ParsedTopic(site, node, kind)
    if len(rest) == 3 and rest[0] == "camera" and rest[2] == "event":
        return ParsedTopic(site, node, CAMERA_EVENT, camera=check_id(rest[1], "camera id"))
    if len(rest) == 4 and rest[0] == "camera" and rest[2] == "snapshot":
        return ParsedTopic(site, node, SNAPSHOT, camera=check_id(rest[1], "camera id"),
                           alert_id=check_id(rest[3], "alert id"))
    if len(rest) == 2 and rest[0] == "cmd":
        return ParsedTopic(site, node, CMD, cmd=check_id(rest[1], "command name"))
    raise TopicError(f"topic {topic!r}: unknown suffix {'/'.join(rest)!r}")
