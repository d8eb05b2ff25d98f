"""The ingest serves alerts before telemetry and sheds telemetry, never alerts (cloud/ingest_queues.py)."""

from __future__ import annotations

from cloud.ingest_queues import POSITIONS_SUB_ID, SHARED_SUB_ID, IngestQueues, delivery_mode, subscriptions

BANDS = "qwatch/v1/kg-01/edge-01/telemetry/bands"
NODE = "qwatch/v1/kg-01/edge-01/telemetry/node"
ALERT = "qwatch/v1/kg-01/edge-01/alert"


def test_alerts_are_never_shed_and_come_out_in_order_in_bounded_batches() -> None:
    q = IngestQueues(telemetry_max=2, max_batch=3)
    assert all(q.offer(ALERT, b"%d" % i, i, 1) for i in range(5))
    assert [m[1] for m in q.alert_batch()] == [b"0", b"1", b"2"]
    assert [m[1] for m in q.alert_batch()] == [b"3", b"4"]
    assert q.alert_batch() == []


def test_telemetry_is_bounded_and_qos1_telemetry_goes_with_the_alerts() -> None:
    q = IngestQueues(telemetry_max=2, max_batch=10)
    assert q.offer(BANDS, b"a", 0, 0) and q.offer(NODE, b"b", 0, 0)
    assert not q.offer(BANDS, b"c", 0, 0)  # full: shed (the caller counts it)
    assert q.offer(BANDS, b"d", 7, 1)  # QoS 1 needs its PUBACK after a durable write: alert queue
    assert q.depths() == (1, 2)


def test_a_waiting_alert_ends_the_telemetry_slice() -> None:
    q = IngestQueues(telemetry_max=100, max_batch=10)
    for i in range(10):
        q.offer(BANDS, b"%d" % i, 0, 0)
    got = []
    for _topic, payload, _mode in q.telemetry_slice(lambda: 0.0, slice_s=1.0):
        got.append(payload)
        if len(got) == 3:
            q.offer(ALERT, b"alert", 1, 1)  # arrives while telemetry is being handled
    assert got == [b"0", b"1", b"2"]  # the slice stopped for it
    assert [m[1] for m in q.alert_batch()] == [b"alert"]
    assert q.depths() == (0, 7)


def test_the_slice_ends_when_its_time_is_up() -> None:
    q = IngestQueues(telemetry_max=100, max_batch=10)
    for i in range(10):
        q.offer(BANDS, b"%d" % i, 0, 0)
    now = [0.0]

    def clock() -> float:
        now[0] += 0.01
        return now[0]

    got = list(q.telemetry_slice(clock, slice_s=0.035))
    assert 1 <= len(got) < 10 and q.depths()[1] == 10 - len(got)
    assert q.discard_alerts() == 0


def test_relayed_deliveries_are_split_by_subscription_identifier() -> None:
    assert subscriptions("$share/ingest/qwatch/v1/#", False) == [("$share/ingest/qwatch/v1/#", 1, None)]
    assert subscriptions("$share/ingest/qwatch/v1/#", True) == [
        ("$share/ingest/qwatch/v1/#", 1, SHARED_SUB_ID), ("qwatch/v1/+/+/telemetry/bands", 0, POSITIONS_SUB_ID)]
    assert delivery_mode(BANDS, [POSITIONS_SUB_ID]) == "positions"  # the direct copy: live map only
    assert delivery_mode(BANDS, [SHARED_SUB_ID]) == "lines"  # our share: lines, positions come directly
    assert delivery_mode(BANDS, [SHARED_SUB_ID, POSITIONS_SUB_ID]) == "full"  # one copy for both
    assert delivery_mode(ALERT, [SHARED_SUB_ID]) == "full"
    assert delivery_mode(NODE, [SHARED_SUB_ID]) == "full"
