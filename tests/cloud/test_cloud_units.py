"""Socket-free tests of the cloud core: alert store lifecycle, node liveness, line protocol, spool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud.alert_store import AckError, AlertQuery, AlertStore
from cloud.ingest import Ingest, IngestConfig
from cloud.node_registry import NodeLiveness, NodeRecord
from cloud.timeseries import Spool, band_lines, node_lines
from protocols.payloads import Alert, BandTelemetry, NodeTelemetry, Status, new_alert


def _alert(site: str = "s1", node: str = "n1", ts: float = 100.0, type: str = "geofence_breach") -> Alert:
    return new_alert(site=site, node=node, type=type, subject={"band": 1001}, ts=ts, detail={"zone": None})


@pytest.fixture
def store(store_db: str) -> AlertStore:
    """The alert store on SQLite, then on PostgreSQL (conftest's ``store_db``): every test below runs on both."""
    return AlertStore(store_db)


# ------------------------------------------------------------------ alert store


def test_duplicate_delivery_is_idempotent(store: AlertStore) -> None:
    a = _alert()
    assert store.upsert(a, now=1.0).outcome == "inserted"
    assert store.upsert(a, now=2.0).outcome == "duplicate"
    assert store.upsert(a.cleared(110.0), now=3.0).outcome == "updated"
    assert store.upsert(a.cleared(110.0), now=4.0).outcome == "duplicate"
    assert [e["state"] for e in store.events()] == ["raised", "cleared"]
    row = store.get(a.alert_id)
    assert row is not None and row["state"] == "cleared" and row["raised_ts"] == 100.0


def test_cleared_before_raised_ends_cleared(store: AlertStore) -> None:
    a = _alert(ts=100.0)
    store.upsert(a.cleared(120.0), now=1.0)
    late = store.upsert(a, now=2.0)
    assert late.outcome == "updated"
    row = store.get(a.alert_id)
    assert row is not None
    assert row["state"] == "cleared"
    assert (row["raised_ts"], row["cleared_ts"]) == (100.0, 120.0)
    assert row["detail"] == {"zone": None}


def test_ack_paths(store: AlertStore) -> None:
    a, b = _alert(), _alert()
    # raised -> acknowledged -> cleared
    store.upsert(a, now=1.0)
    assert store.acknowledge(a.alert_id, by="Lan", note="on it", now=2.0)["state"] == "acknowledged"
    store.upsert(a.cleared(150.0), now=3.0)
    final_a = store.get(a.alert_id)
    assert final_a is not None and final_a["state"] == "cleared" and final_a["acked_by"] == "Lan"
    # raised -> cleared -> acknowledged
    store.upsert(b, now=1.0)
    store.upsert(b.cleared(150.0), now=2.0)
    assert store.acknowledge(b.alert_id, by="Minh", note="back inside", now=3.0)["state"] == "acknowledged"
    with pytest.raises(AckError) as again:
        store.acknowledge(b.alert_id, by="Minh", note="")
    assert again.value.code == "already_acknowledged"
    with pytest.raises(AckError) as missing:
        store.acknowledge("01ARZ3NDEKTSV4RRFFQ69G5FAV", by="x", note="")
    assert missing.value.code == "not_found"


def test_list_filters(store: AlertStore) -> None:
    store.upsert(_alert(site="s1", type="sos"), now=10.0)
    store.upsert(_alert(site="s2", type="fever"), now=20.0)
    assert [r["site"] for r in store.list_alerts(AlertQuery())] == ["s2", "s1"]
    assert [r["type"] for r in store.list_alerts(AlertQuery(site="s1"))] == ["sos"]
    assert [r["site"] for r in store.list_alerts(AlertQuery(since=15.0))] == ["s2"]
    assert len(store.list_alerts(AlertQuery(limit=1))) == 1


def test_escalation_per_site(store: AlertStore) -> None:
    slow, fast, acked = _alert(site="slow", ts=100.0), _alert(site="fast", ts=100.0), _alert(ts=100.0)
    for a in (slow, fast, acked):
        store.upsert(a, now=100.0)
    store.acknowledge(acked.alert_id, by="g", note="", now=101.0)
    assert store.escalate_due(150.0, default_after_s=120.0, per_site={"fast": 30.0})[0]["site"] == "fast"
    assert [r["site"] for r in store.escalate_due(230.0, default_after_s=120.0)] == ["slow"]
    assert store.escalate_due(999.0, default_after_s=120.0) == []  # each escalates once


# ------------------------------------------------------------------ node liveness


def _status(state: str, boot: str, ts: float) -> Status:
    return Status.model_validate({"schema": "qwatch.status/1", "state": state, "ts": ts, "version": "1",
                                  "boot_id": boot})


def test_will_raises_and_birth_clears() -> None:
    nl = NodeLiveness(silence_s=60, started_at=0.0)
    assert nl.on_status("s", "n", _status("online", "B1", 10.0), 10.0) == []
    # The Will was built at connect time, so it is older than the birth: still valid.
    [raised] = nl.on_status("s", "n", _status("offline", "B1", 9.0), 20.0)
    assert (raised.type, raised.state, raised.subject.model_dump()) == ("node_offline", "raised", {"node": "n"})
    assert nl.on_status("s", "n", _status("offline", "B1", 9.0), 21.0) == []  # redelivered Will
    [cleared] = nl.on_status("s", "n", _status("online", "B2", 30.0), 30.0)
    assert (cleared.alert_id, cleared.state) == (raised.alert_id, "cleared")


def test_late_will_of_old_boot_is_ignored() -> None:
    nl = NodeLiveness(silence_s=60, started_at=0.0)
    nl.on_status("s", "n", _status("online", "B1", 10.0), 10.0)
    nl.on_status("s", "n", _status("online", "B2", 50.0), 50.0)
    assert nl.on_status("s", "n", _status("offline", "B1", 9.0), 51.0) == []
    assert nl.counts["stale_will"] == 1
    assert nl.records[("s", "n")].online


def test_new_boot_wins_even_with_clock_behind() -> None:
    nl = NodeLiveness(silence_s=60, started_at=0.0)
    nl.on_status("s", "n", _status("online", "B1", 1000.0), 1000.0)
    [raised] = nl.on_status("s", "n", _status("offline", "B1", 999.0), 1001.0)
    # A Pi without RTC reboots with its clock behind: the new boot's birth still clears.
    [cleared] = nl.on_status("s", "n", _status("online", "B2", 5.0), 1010.0)
    assert cleared.alert_id == raised.alert_id
    # A redelivered older birth of the same boot does not count as a new session.
    assert nl.on_status("s", "n", _status("online", "B2", 4.0), 1011.0) == []
    assert nl.counts["stale_birth"] == 1


def test_silence_raises_traffic_clears() -> None:
    nl = NodeLiveness(silence_s=30, started_at=0.0)
    nl.on_status("s", "n", _status("online", "B1", 10.0), 10.0)
    assert nl.tick(39.0) == []
    [raised] = nl.tick(41.0)
    assert raised.detail["cause"] == "silence"
    assert nl.tick(42.0) == []  # raised once
    [cleared] = nl.on_traffic("s", "n", 50.0)
    assert cleared.alert_id == raised.alert_id and cleared.state == "cleared"


def test_silence_counts_from_process_start() -> None:
    old = NodeRecord("s", "n", "B1", True, 10.0, 10.0)
    nl = NodeLiveness(silence_s=30, started_at=1000.0, records=[old])
    assert nl.tick(1010.0) == []  # a restarted ingest gives nodes a grace period
    assert len(nl.tick(1031.0)) == 1


def test_clear_after_restart_reuses_alert_id(store: AlertStore) -> None:
    """node_offline raised by one ingest process is cleared by the next (record persisted)."""
    ing = Ingest(IngestConfig(host="127.0.0.1", port=1, silence_s=60), store, None, clock=lambda: 20.0)
    ing.handle("qwatch/v1/s/n/status", _status("online", "B1", 10.0).model_dump_json(by_alias=True).encode())
    ing.handle("qwatch/v1/s/n/status", _status("offline", "B1", 9.0).model_dump_json(by_alias=True).encode())
    [raised] = store.list_alerts(AlertQuery(type="node_offline"))
    ing2 = Ingest(IngestConfig(host="127.0.0.1", port=1, silence_s=60), store, None, clock=lambda: 30.0)
    ing2.handle("qwatch/v1/s/n/status", _status("online", "B2", 30.0).model_dump_json(by_alias=True).encode())
    [row] = store.list_alerts(AlertQuery(type="node_offline"))
    assert row["alert_id"] == raised["alert_id"] and row["state"] == "cleared"


def test_garbage_is_counted_never_raised(store: AlertStore) -> None:
    ing = Ingest(IngestConfig(host="127.0.0.1", port=1), store, None)
    cases = [
        ("qwatch/v1/s/n/alert", b"\xff\xfe\x00"),
        ("qwatch/v1/s/n/alert", b"{}"),
        ("qwatch/v1/s/n/alert", b'{"schema": "qwatch.alert/1"}'),
        ("qwatch/v1/s/n/telemetry/bands", b"[1,2,3]"),
        ("qwatch/v1/s/n/status", b"null"),
        ("qwatch/v1/s/n/camera/cam1/snapshot/01ARZ3NDEKTSV4RRFFQ69G5FAV", b"not a jpeg"),
        ("qwatch/v1/s/n/what/ever", b"{}"),
        ("qwatch/v1/bad site/n/alert", b"{}"),
        ("qwatch/v1/s", b""),
    ]
    for topic, payload in cases:
        assert ing.handle(topic, payload) == "malformed"
    other = _alert(site="s", node="other")
    assert ing.handle("qwatch/v1/s/n/alert", other.to_json().encode()) == "malformed"
    assert sum(ing.malformed.values()) == len(cases) + 1
    assert ing.malformed["topic"] == 3
    assert ing.malformed["alert:topic_mismatch"] == 1
    assert store.list_alerts(AlertQuery()) == []


# ------------------------------------------------------------------ telemetry


def test_line_protocol_strings_are_tags() -> None:
    tel = BandTelemetry.model_validate({"schema": "qwatch.bands/1", "ts": 1.5, "bands": [
        {"band": 1001, "ts": 1.25, "x": 3.0, "y": 4.0, "err_m": 2.0, "zone": "block-a", "rssi": -70.0,
         "rx_count": 3, "battery": 80, "temp_c": None, "flags": 0},
        {"band": 1002, "ts": 1.25, "x": None, "y": None, "err_m": None, "zone": None, "rssi": None,
         "rx_count": 0, "flags": 2}]})
    lines = band_lines("s1", "n1", tel)
    assert lines[0].startswith("band,band=1001,node=n1,site=s1,zone=block-a ")
    assert lines[0].endswith(" 1250")
    fields = lines[0].split(" ")[1]
    assert '"' not in fields and "temp_c" not in fields
    assert "zone=" not in lines[1]
    node = NodeTelemetry.model_validate({"schema": "qwatch.node/1", "ts": 2.0, "boot_id": "b", "uptime_s": 5,
                                         "cpu_pct": 12.5, "mem_rss_mb": 80, "outbox_depth": 3,
                                         "adverts_per_s": {"accepted": 20.0, "bad_tag": 0.5},
                                         "watchdogs": {"mqtt": {"restarts": 1, "state": "ok"}}})
    nl = node_lines("s1", "n1", node)
    assert any(line.startswith("adverts,node=n1,outcome=bad_tag,site=s1 per_s=0.5") for line in nl)
    assert any(line.startswith("watchdog,loop=mqtt,node=n1,site=s1 restarts=1") for line in nl)
    assert all('"' not in line.split(" ")[1] for line in nl)


def test_spool_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_batches=3)
    for i in range(5):
        sp.push([f"m v={i} {i}", f"m w={i} {i}"])
    assert len(sp) == 3 and sp.dropped_batches == 2 and sp.dropped_lines == 4
    assert sp.peek() == ["m v=2 2", "m w=2 2"]
    reopened = Spool(tmp_path, max_batches=3)  # survives a restart, in order
    got = []
    while (batch := reopened.peek()) is not None:
        got.append(batch[0])
        reopened.pop()
    assert got == ["m v=2 2", "m v=3 3", "m v=4 4"]
    json.dumps(got)


# ------------------------------------------------------------------ escalation time from site configs

_SITE_YAML = "site: {{id: {sid}}}\nzones:\n  - {{id: a, kind: permitted, polygon: [[0,0],[1,0],[1,1]]}}\n{rules}"


def _site_file(tmp_path: Path, sid: str, rules: str = "") -> Path:
    p = tmp_path / f"{sid}.yaml"
    p.write_text(_SITE_YAML.format(sid=sid, rules=rules))
    return p


def test_escalation_from_site_configs_with_flags_winning(tmp_path: Path) -> None:
    from cloud.cli import Options, _setup, _teardown

    fast = _site_file(tmp_path, "fast", "rules: {escalate_after_s: 45}\n")
    plain = _site_file(tmp_path, "plain")  # no key: the site config's documented default (300 s)
    flagged = _site_file(tmp_path, "flagged", "rules: {escalate_after_s: 45}\n")
    o = Options(db=str(tmp_path / "q.db"), mqtt="127.0.0.1:9", vm="http://127.0.0.1:9", spool=None, client_id="t",
                shared=False, silence_s=90.0, escalate_after_s=120.0, escalate_site=["flagged=20", "other=7"],
                log_level="WARNING", site_config=[fast, plain, flagged])
    store, writer, ingest, _hub = _setup(o)  # the real wiring; the broker is unreachable, which is fine
    try:
        assert dict(ingest.cfg.escalate_per_site) == {"fast": 45.0, "plain": 300.0, "flagged": 20.0, "other": 7.0}
        assert ingest.cfg.escalate_after_s == 120.0  # sites without a config keep the default
    finally:
        _teardown(store, writer, ingest)


def test_bad_or_duplicate_site_config_is_a_usage_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cloud.cli import app

    bad = _site_file(tmp_path, "bad", "rules: {escalate_after_s: 1}\n")  # below the allowed minimum
    res = CliRunner().invoke(app, ["ingest", "--db", str(tmp_path / "q.db"), "--site-config", str(bad)])
    assert res.exit_code == 2 and str(bad) in res.output and "escalate_after_s" in res.output, res.output
    assert not (tmp_path / "q.db").exists()  # refused before the store was opened
    good = _site_file(tmp_path, "good")
    twice = tmp_path / "again.yaml"
    twice.write_text(good.read_text())
    res = CliRunner().invoke(app, ["ingest", "--db", str(tmp_path / "q.db"), "--site-config", str(good),
                                   "--site-config", str(twice)])
    assert res.exit_code == 2 and "already configured" in res.output, res.output
