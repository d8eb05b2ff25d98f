"""The band registry: enrol / update / retire with an audit, keys write-only through the API,
keys of one site only, composed config pushes, and the `band` / `config push` CLIs' refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloud.alert_store import AlertStore
from cloud.api import CloudContext, create_app
from cloud.auth import Authenticator
from cloud.band_registry import BandRecord, BandRegistry, RegistryError, RegistryPeople
from cloud.cli import app as cloud_app
from cloud.config_push import compose
from cloud.ingest import Ingest, IngestConfig
from cloud.live import LiveHub
from cloud.users import add_user
from protocols.errors import ConfigError
from protocols.payloads import new_alert
from protocols.site_config import parse_site_config

SITE = "site: {id: kg-01}\nzones:\n  - {id: ward, kind: permitted, polygon: [[0,0],[10,0],[10,10]]}\n" \
       "  - {id: yard, kind: permitted, polygon: [[20,0],[30,0],[30,10]]}\n"
KEY = bytes(range(16))


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[BandRegistry]:
    r = BandRegistry(tmp_path / "cloud.db")
    yield r
    r.close()


def test_enrol_retire_reenrol_with_audit(reg: BandRegistry) -> None:
    rec = reg.enrol(band=1001, site="kg-01", person="P-1", allowed_zones=["ward"], key=KEY, by="tech-1", now=10.0)
    assert rec.active and rec.enrolled_by == "tech-1" and rec.enrolled_at == 10.0
    with pytest.raises(RegistryError) as exc:
        reg.enrol(band=1001, site="kg-01", person="P-1", allowed_zones=["ward"], key=KEY, by="tech-1")
    assert exc.value.code == "conflict" and "rekey" in str(exc.value)
    with pytest.raises(RegistryError) as exc:
        reg.enrol(band=1001, site="kg-02", person="P-1", allowed_zones=["ward"], key=KEY, by="tech-1")
    assert exc.value.code == "conflict" and "retire it there first" in str(exc.value)
    reg.update(1001, by="admin", allowed_zones=["ward", "yard"], now=11.0)
    gone = reg.retire(1001, by="admin", now=12.0)
    assert not gone.active and gone.retired_at == 12.0 and reg.site_keys("kg-01") == {}
    with pytest.raises(RegistryError) as exc:
        reg.retire(1001, by="admin")
    assert exc.value.code == "conflict"
    again = reg.enrol(band=1001, site="kg-02", person="P-9", allowed_zones=["ward"], key=KEY, by="tech-2", now=20.0)
    assert again.active and again.site == "kg-02"
    assert [a["action"] for a in reg.audit(1001)] == ["re-enrol", "retire", "update", "enrol"]
    assert reg.audit(1001)[2]["detail"] == {"allowed_zones": ["ward", "yard"]}


def test_the_database_is_private(reg: BandRegistry) -> None:
    import stat

    reg.enrol(band=1, site="kg-01", person="a", allowed_zones=["ward"], key=KEY, by="t")
    assert stat.S_IMODE(Path(reg.path).stat().st_mode) == 0o600


def test_keys_are_per_site(reg: BandRegistry) -> None:
    reg.enrol(band=1, site="kg-01", person="a", allowed_zones=["ward"], key=KEY, by="t")
    reg.enrol(band=2, site="kg-02", person="b", allowed_zones=["ward"], key=bytes(16), by="t")
    assert reg.site_keys("kg-01") == {1: KEY} and reg.site_keys("kg-02") == {2: bytes(16)}


def test_compose_takes_bands_from_the_registry(reg: BandRegistry) -> None:
    reg.enrol(band=7, site="kg-01", person="P-7", allowed_zones=["yard"], key=KEY, by="t")
    reg.enrol(band=8, site="kg-02", person="P-8", allowed_zones=["ward"], key=KEY, by="t")
    base = SITE + "bands:\n  - {id: 99, allowed_zones: [ward]}\n"
    out = compose(base, "site.yaml", reg, "kg-01")
    site = parse_site_config(out.yaml_text)
    assert [(b.id, b.person, b.allowed_zones) for b in site.bands] == [(7, "P-7", ["yard"])]
    assert out.keys == {7: KEY} and "99" in out.notes[0]
    reg.update(7, by="t", allowed_zones=["gate"])
    with pytest.raises(ConfigError, match="gate"):
        compose(base, "site.yaml", reg, "kg-01")
    with pytest.raises(ConfigError, match="--site is 'kg-02'"):
        compose(SITE, "site.yaml", reg, "kg-02")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, CloudContext, dict[str, str]]]:
    users = tmp_path / "users.yaml"
    tokens = {"admin": add_user(users, "boss", "admin", []).token,
              "guard": add_user(users, "g", "guard", ["kg-01"]).token,
              "other": add_user(users, "o", "guard", ["kg-02"]).token}
    ctx = CloudContext(store=AlertStore(tmp_path / "cloud.db"), hub=LiveHub(), auth=Authenticator(users),
                       bands=BandRegistry(tmp_path / "cloud.db"))
    with TestClient(create_app(ctx)) as client:
        yield client, ctx, {k: f"Bearer {v}" for k, v in tokens.items()}


def test_api_band_schema_is_the_registry_record_and_has_no_key(
        api: tuple[TestClient, CloudContext, dict[str, str]]) -> None:
    """The band responses are BandRecord itself (one definition); its schema names every field and no key."""
    client, _ctx, _h = api
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/api/v1/bands/{band}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    name = ok["$ref"].rsplit("/", 1)[-1]
    props = set(spec["components"]["schemas"][name]["properties"])
    assert props == set(BandRecord.model_fields) | {"active"}
    for schema_name, schema in spec["components"]["schemas"].items():
        if "Request" not in schema_name:  # what goes in may carry a key; nothing that comes out may
            assert not [p for p in schema.get("properties", {}) if "key" in p.lower() and p != "rekey"], schema_name


def test_api_keys_go_in_never_out(api: tuple[TestClient, CloudContext, dict[str, str]]) -> None:
    client, ctx, h = api
    body = {"band": 1001, "site": "kg-01", "person": "P-17", "allowed_zones": ["ward"], "key": KEY.hex()}
    assert client.post("/api/v1/bands", json=body, headers={"Authorization": h["guard"]}).status_code == 403
    resp = client.post("/api/v1/bands", json=body, headers={"Authorization": h["admin"]})
    assert resp.status_code == 201 and resp.json()["enrolled_by"] == "boss"
    assert client.post("/api/v1/bands", json=body, headers={"Authorization": h["admin"]}).status_code == 409
    bad = {**body, "key": "zz"}
    assert client.post("/api/v1/bands", json=bad, headers={"Authorization": h["admin"]}).status_code == 422
    for path in ("/api/v1/bands", "/api/v1/bands/1001", "/api/v1/bands/1001/audit"):
        text = client.get(path, headers={"Authorization": h["admin"]}).text
        assert KEY.hex() not in text and "key" not in text.replace("rekey", ""), (path, text)
    assert client.get("/api/v1/bands/1001", headers={"Authorization": h["other"]}).status_code == 403
    assert client.get("/api/v1/bands", headers={"Authorization": h["other"]}).json() == []
    # The alert of that band, stored by the ingest, carries the registry's person label.
    alert = new_alert(site="kg-01", node="edge-01", type="sos", subject={"band": 1001}, ts=1.0)
    assert ctx.bands is not None
    ingest = Ingest(IngestConfig(host="127.0.0.1", port=1, people=RegistryPeople(ctx.bands)), ctx.store, None)
    assert ingest.handle("qwatch/v1/kg-01/edge-01/alert", alert.to_json().encode()) == "inserted"
    rows = client.get("/api/v1/alerts", headers={"Authorization": h["guard"]}).json()
    assert rows[0]["person"] == "P-17"
    assert client.post("/api/v1/bands/1001/retire", headers={"Authorization": h["guard"]}).status_code == 403
    gone = client.post("/api/v1/bands/1001/retire", headers={"Authorization": h["admin"]})
    assert gone.status_code == 200 and gone.json()["active"] is False
    assert client.post("/api/v1/bands/1001/retire", headers={"Authorization": h["admin"]}).status_code == 409
    assert client.post("/api/v1/bands/77/retire", headers={"Authorization": h["admin"]}).status_code == 404
    schema = client.get("/openapi.json", headers={"Authorization": h["admin"]}).json()
    assert {"403", "404", "409"} <= set(schema["paths"]["/api/v1/bands/{band}/retire"]["post"]["responses"])


def test_band_retire_cli(tmp_path: Path) -> None:
    db = tmp_path / "cloud.db"
    reg = BandRegistry(db)
    reg.enrol(band=5, site="kg-01", person="P-5", allowed_zones=["ward"], key=KEY, by="t")
    run = CliRunner().invoke
    res = run(cloud_app, ["band", "retire", "5", "--db", str(db), "--by", "duty-officer"])
    assert res.exit_code == 0 and "config push --site kg-01" in res.output
    assert reg.audit(5)[0]["actor"] == "duty-officer"
    res = run(cloud_app, ["band", "retire", "5", "--db", str(db)])
    assert res.exit_code == 1 and "retired" in res.output
    res = run(cloud_app, ["band", "retire", "5", "--db", str(tmp_path / "nope.db")])
    assert res.exit_code == 2 and "no such database" in res.output
    res = run(cloud_app, ["config", "push", "--site", "kg-01", "--db", str(db)])
    assert res.exit_code == 2 and "pass --config" in res.output


def test_registry_on_the_alert_store_file_keeps_the_stores_locks(tmp_path: Path) -> None:
    """The registry opens the alert store's file in the same process. Touching the file with a raw
    open/close there would drop the store's POSIX locks; another process would then delete the WAL
    under the store, and the store's later commits would be invisible to every other process."""
    import subprocess
    import sys

    db = tmp_path / "cloud.db"
    store = AlertStore(db)
    reg = BandRegistry(db)
    count = [sys.executable, "-c", "import sqlite3, sys; "
             "print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM alert_events').fetchone()[0])", str(db)]
    try:
        assert subprocess.run(count, capture_output=True, text=True, check=True).stdout.strip() == "0"
        store.upsert(new_alert(site="kg-01", node="edge-01", type="sos", subject={"band": 1}, ts=1.0), now=2.0)
        assert subprocess.run(count, capture_output=True, text=True, check=True).stdout.strip() == "1"
    finally:
        reg.close()
        store.close()
