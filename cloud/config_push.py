"""Config push: the site's config with its bands from the registry, and its key set, to its nodes.

`compose` takes the site YAML (geometry, receivers, rules, cameras) and replaces its `bands`
with the registry's active bands of that site; `site_keys` gives only that site's keys, so a
node never receives another site's keys. `push` numbers the push (per-site version), publishes
one `ConfigCommand` per node on `qwatch/v1/{site}/{node}/cmd/config` (QoS 1, retained: a node
that is offline gets it when it reconnects) and collects the nodes' `cmd_result` answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from cloud.band_registry import BandRegistry
from protocols.credentials import MqttCredentials, apply_credentials
from protocols.errors import ConfigError, PayloadError
from protocols.payloads import CommandResult, ConfigCommand, parse_payload
from protocols.site_config import parse_site_config, yaml_mapping
from protocols.topics import PREFIX, NodeTopics
from protocols.ulid import new_ulid


@dataclass(frozen=True, slots=True)
class Composed:
    """A site config ready to push: its YAML (bands from the registry), the keys, and notes."""

    site: str
    yaml_text: str
    keys: dict[int, bytes]
    notes: list[str]


def compose(base_yaml: str, source: str, registry: BandRegistry, site: str) -> Composed:
    """The pushed config of `site`; ConfigError when the base file or a band's zones do not fit."""
    base = parse_site_config(base_yaml, source)
    if base.site.id != site:
        raise ConfigError(source, "site.id", f"is {base.site.id!r}, but --site is {site!r}")
    data = yaml_mapping(base_yaml, source, "a site config")
    zones = {z.id for z in base.zones}
    bands = registry.bands(site, include_retired=False)
    notes: list[str] = []
    for b in bands:
        unknown = sorted(set(b.allowed_zones) - zones)
        if unknown:
            raise ConfigError(source, "zones", f"band {b.band} ({b.person}) may be in zones {unknown} that this "
                              "config does not have; add them or change the band's zones")
    registered = {b.band for b in bands}
    dropped = sorted(b.id for b in base.bands if b.id not in registered)
    if dropped:
        notes.append(f"{len(dropped)} bands of {source} are not active in the registry (retired, or never "
                     f"enrolled with --cloud) and are left out: {dropped[:10]}")
    data["bands"] = [{"id": b.band, "person": b.person, "allowed_zones": b.allowed_zones} for b in bands]
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    parse_site_config(text, f"{source} (with the registry's bands)")
    return Composed(site, text, registry.site_keys(site), notes)


def publish_config(client: mqtt.Client, composed: Composed, version: int,
                   cmd_ids: Mapping[str, str]) -> list[mqtt.MQTTMessageInfo]:
    """Publish one retained QoS 1 `config` command per node (`cmd_ids`: node → cmd_id) on `client`."""
    keys = {str(k): v.hex() for k, v in composed.keys.items()}
    infos = []
    for node, cmd_id in sorted(cmd_ids.items()):
        cmd = ConfigCommand(cmd_id=cmd_id, site_yaml=composed.yaml_text, version=version, keys=keys)
        infos.append(client.publish(NodeTopics(composed.site, node).cmd("config"), cmd.model_dump_json(), qos=1,
                                    retain=True))
    return infos


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """What one node said about a push (None: no answer within the wait)."""

    node: str
    result: CommandResult | None


def push(composed: Composed, version: int, nodes: Iterable[str], *, host: str, port: int,
         creds: MqttCredentials | None, wait_s: float = 10.0,
         wait_for: Iterable[str] | None = None) -> list[NodeAnswer]:
    """Publish the config to each node (retained QoS 1) and wait for the answers of `wait_for`
    (default: every node; a node known to be offline gets the retained copy when it reconnects)."""
    nodes = sorted(set(nodes))
    expected = set(nodes) if wait_for is None else set(wait_for) & set(nodes)
    cmd_ids = {n: new_ulid() for n in nodes}
    answers: dict[str, CommandResult] = {}
    done = threading.Condition()
    connected = threading.Event()
    refused: list[str] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"qwatch-config-push-{new_ulid()}", protocol=mqtt.MQTTv5)
    if creds is not None:
        apply_credentials(c, creds)

    def on_connect(client: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            refused.append(str(rc))
        else:
            client.subscribe(f"{PREFIX}/{composed.site}/+/cmd_result", qos=1)
        connected.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        node = msg.topic.split("/")[3]
        try:
            res = parse_payload(CommandResult, bytes(msg.payload))
        except PayloadError:
            return
        if cmd_ids.get(node) == res.cmd_id:
            with done:
                answers[node] = res
                done.notify_all()

    subscribed = threading.Event()
    c.on_connect = on_connect
    c.on_message = on_message
    c.on_subscribe = lambda *_a: subscribed.set()
    c.connect(host, port, keepalive=30)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise ConnectionError(f"no CONNACK from {host}:{port}")
        if refused:
            raise ConnectionError(f"the broker refused the cloud user: {refused[0]}")
        subscribed.wait(5)
        infos = publish_config(c, composed, version, cmd_ids)
        for info in infos:
            info.wait_for_publish(timeout=10)
        deadline = time.monotonic() + wait_s
        with done:
            done.wait_for(lambda: expected <= set(answers), max(0.0, deadline - time.monotonic()))
    finally:
        c.disconnect()
        c.loop_stop()
    return [NodeAnswer(n, answers.get(n)) for n in nodes]
