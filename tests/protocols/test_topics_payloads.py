"""Topic tree and payload models: builders parse back, and contract drift is rejected."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import PayloadError, TopicError
from protocols.observation import RawObservation, parse_observation_line
from protocols.payloads import (
    Alert,
    BandTelemetry,
    CameraEvent,
    NodeTelemetry,
    Status,
    new_alert,
    parse_payload,
)
from protocols.topics import ALERT, CAMERA_EVENT, CMD, SNAPSHOT, TELEMETRY_BANDS, NodeTopics, parse_topic
from protocols.ulid import encode_ulid, is_ulid, new_ulid, seeded_ulid


def test_topics_round_trip() -> None:
    t = NodeTopics("kg-rachgia-01", "edge-01")
    assert t.alert == "qwatch/v1/kg-rachgia-01/edge-01/alert"
    assert parse_topic(t.alert).kind == ALERT
    assert parse_topic(t.telemetry_bands).kind == TELEMETRY_BANDS
    ev = parse_topic(t.camera_event("cam-gate"))
    assert (ev.kind, ev.camera) == (CAMERA_EVENT, "cam-gate")
    uid = new_ulid()
    snap = parse_topic(t.snapshot("cam-gate", uid))
    assert (snap.kind, snap.alert_id) == (SNAPSHOT, uid)
    assert parse_topic(t.cmd("ack")).cmd == "ack" and parse_topic(t.cmd("ack")).kind == CMD


@pytest.mark.parametrize("bad", ["qwatch/v1/site", "qwatch/v2/s/n/alert", "qwatch/v1/s/n/alarm",
                                 "qwatch/v1/s+/n/alert", "qwatch/v1/s/n/camera/c/evnt", "foo"])
def test_bad_topics_raise_topic_error(bad: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(bad)


def test_ids_with_mqtt_wildcards_are_refused() -> None:
    with pytest.raises(TopicError):
        NodeTopics("site/x", "n")


def test_alert_json_is_the_contract_shape_and_clear_reuses_id() -> None:
    a = new_alert(site="kg-1", node="edge-01", type="geofence_breach", subject={"band": 1001}, ts=10.5,
                  detail={"x": 44.1, "y": 9.8, "zone": None})
    obj = json.loads(a.to_json())
    assert set(obj) == {"schema", "alert_id", "site", "node", "type", "severity", "state", "subject", "ts",
                        "detail"}
    assert obj["schema"] == "qwatch.alert/1" and obj["severity"] == "critical" and is_ulid(obj["alert_id"])
    c = a.cleared(40.0)
    assert (c.alert_id, c.state, c.ts) == (a.alert_id, "cleared", 40.0)
    assert parse_payload(Alert, c.to_json()) == c


@pytest.mark.parametrize("mutation", [
    {"type": "breach"}, {"severity": "urgent"}, {"extra": 1}, {"subject": {"band": 0}},
    {"subject": {"camera": "c"}}, {"alert_id": "not-a-ulid"}, {"ts": "yesterday"},
])
def test_alert_contract_drift_is_rejected(mutation: dict[str, object]) -> None:
    a = json.loads(new_alert(site="s", node="n", type="sos", subject={"band": 1}, ts=1.0).to_json())
    a.update(mutation)
    with pytest.raises(PayloadError):
        parse_payload(Alert, json.dumps(a))


@given(st.binary(max_size=200))
def test_garbage_payloads_only_raise_payload_error(raw: bytes) -> None:
    for model in (Alert, Status, BandTelemetry, NodeTelemetry, CameraEvent):
        with contextlib.suppress(PayloadError):
            parse_payload(model, raw)


def test_camera_event_matches_protocol_example() -> None:
    line = ('{"schema": "qwatch.camera_event/1", "camera": "cam-gate", "zone": "fence-north", '
            '"kind": "motion_start", "ts": 12.4, "frame": 62, "bbox": [0.41, 0.30, 0.08, 0.15], "score": 0.013}')
    ev = parse_payload(CameraEvent, line)
    assert json.loads(ev.to_json()) == json.loads(line)


def test_observation_line_round_trip_and_errors() -> None:
    obs = RawObservation(1627300000.125, "rx-a1", -67, 65535, bytes.fromhex("11e903"))
    assert parse_observation_line(obs.to_json_line()) == obs
    for bad, reason in [("{", "json"), ("[]", "shape"), ('{"ts": 1, "rx": "a", "rssi": -50, "company_id": 1, '
                        '"data": "zz"}', "data"), ('{"ts": 1, "rx": "", "rssi": -50, "company_id": 1, "data": ""}',
                        "rx"), ('{"ts": 1, "rx": "a", "rssi": -50, "company_id": 1, "data": "", "x": 1}',
                        "unknown_key")]:
        with pytest.raises(PayloadError) as err:
            parse_observation_line(bad)
        assert err.value.reason == reason


def test_ulids_sort_by_time() -> None:
    assert new_ulid(1000.0) < new_ulid(2000.0)


def test_seeded_ulids_are_repeatable_valid_and_time_ordered() -> None:
    a = seeded_ulid(1_627_300_020_500, "site|node|1001|geofence_breach|0")
    assert a == seeded_ulid(1_627_300_020_500, "site|node|1001|geofence_breach|0") and is_ulid(a)
    assert a != seeded_ulid(1_627_300_020_500, "site|node|1002|geofence_breach|0")
    assert seeded_ulid(1_000, "x") < seeded_ulid(2_000, "x")
    assert encode_ulid(0, 0) == "0" * 26 and encode_ulid(2**48 - 1, 2**80 - 1) == "7" + "Z" * 25
