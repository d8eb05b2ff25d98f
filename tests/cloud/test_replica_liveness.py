"""Node liveness with ingest replicas: a Will is judged by the session the shared store knows, not by
what one replica happened to see (a shared subscription spreads a node's births and Wills over them)."""

from __future__ import annotations

from cloud.alert_store import AlertQuery, AlertStore
from cloud.ingest import Ingest, IngestConfig
from protocols.payloads import Status

TOPIC = "qwatch/v1/s/n/status"


def _status(state: str, boot_id: str, ts: float) -> bytes:
    return Status(state=state, ts=ts, version="t", boot_id=boot_id).model_dump_json(by_alias=True).encode()


def test_a_will_after_a_birth_seen_by_another_replica_raises_node_offline(pg_database: str) -> None:
    store_a, store_b = AlertStore(pg_database), AlertStore(pg_database)  # two processes
    try:
        cfg = IngestConfig(host="127.0.0.1", port=1, silence_s=600)
        b = Ingest(cfg, store_b, None, clock=lambda: 10.0)
        a = Ingest(cfg, store_a, None, clock=lambda: 20.0)
        b.handle(TOPIC, _status("online", "BOOT-0", 10.0))  # first boot: the birth went to replica b
        a.handle(TOPIC, _status("online", "BOOT-1", 20.0))  # reboot: this birth went to replica a
        assert store_a.list_alerts(AlertQuery(type="node_offline")) == []
        b.handle(TOPIC, _status("offline", "BOOT-1", 19.0))  # the Will of the current session, to b
        [raised] = store_b.list_alerts(AlertQuery(type="node_offline"))
        assert raised["state"] == "raised"
        # ...and the next birth, wherever it lands, clears it.
        a.handle(TOPIC, _status("online", "BOOT-2", 40.0))
        [cleared] = store_a.list_alerts(AlertQuery(type="node_offline"))
        assert cleared["alert_id"] == raised["alert_id"] and cleared["state"] == "cleared"
        # A Will of an older session stays stale on either replica.
        b.handle(TOPIC, _status("offline", "BOOT-1", 19.0))
        assert len(store_b.list_alerts(AlertQuery(type="node_offline"))) == 1
    finally:
        store_a.close()
        store_b.close()


def test_the_bulk_last_seen_save_does_not_overwrite_a_newer_session(pg_database: str) -> None:
    store_a, store_b = AlertStore(pg_database), AlertStore(pg_database)
    try:
        store_b.save_node({"site": "s", "node": "n", "boot_id": "NEW", "online": 1, "status_ts": 50.0,
                           "last_seen": 50.0, "version": "t", "offline_alert_id": None, "offline_cause": None})
        store_a.touch_nodes([("s", "n", 60.0), ("s", "other", 1.0)])  # a's stale view only moves last_seen
        store_a.touch_nodes([("s", "n", 55.0)])  # never backwards
        row = store_b.load_node("s", "n")
        assert row is not None and row["boot_id"] == "NEW" and row["last_seen"] == 60.0
        assert store_b.load_node("s", "other") is None
    finally:
        store_a.close()
        store_b.close()
