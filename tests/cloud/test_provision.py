"""Node provisioning end to end against a real Mosquitto with TLS, a password file and ACLs.

docs/protocol.md §5: a node writes only under its own prefix and reads only its own cmd/#; the
cloud reads everything and writes only commands. These tests use the files that
`qwatch-cloud pki init` / `provision-node` / `revoke-node` write, on a broker started with the
same security block as the production config.
"""

from __future__ import annotations

import os
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from cloud import pki
from cloud.provision import Province, ProvisionError
from devtools.services import require_binary
from protocols.credentials import diagnose_tls, load_credentials, refusal_hint
from tests.cloud.provision_harness import SITE, Client, SecureBroker, start_secure_broker
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

P1 = f"qwatch/v1/{SITE}/edge-01"
P2 = f"qwatch/v1/{SITE}/edge-02"


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    sb = start_secure_broker(tmp_path)
    try:
        yield sb
    finally:
        sb.stop()


def _clients(sb: SecureBroker, *names: str) -> list[Client]:
    out = [Client(sb.broker, sb.creds(n)).start() for n in names]
    assert all(c.ok() for c in out), [c.reason for c in out]
    return out


def test_pki_files_modes_and_broker_certificate(tmp_path: Path) -> None:
    require_binary("mosquitto_passwd")
    prov = Province(tmp_path / "p")
    prov.init("kiengiang", ["mqtt.kg.example", "10.20.0.5"], port=8884)
    for key in (prov.ca_key, prov.files.keyfile, prov.files.password_file, prov.files.acl_file):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    ca = x509.load_pem_x509_certificate(prov.files.cafile.read_bytes())
    broker = x509.load_pem_x509_certificate(prov.files.certfile.read_bytes())
    broker.verify_directly_issued_by(ca)
    assert pki.sans_of(broker) == ["mqtt.kg.example", "10.20.0.5"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    conf = prov.conf_path.read_text()
    for line in ("listener 8884", "allow_anonymous false", f"password_file {prov.files.password_file}",
                 f"acl_file {prov.files.acl_file}", f"certfile {prov.files.certfile}"):
        assert line in conf.splitlines()
    cloud = load_credentials(prov.bundles / "qwatch-cloud.json")
    assert (cloud.role, cloud.username, cloud.broker_host, cloud.broker_port) == (
        "cloud", "qwatch-cloud", "mqtt.kg.example", 8884)
    # A second init would silently replace the broker key: refused, and the message says how.
    with pytest.raises(ProvisionError, match="--reissue"):
        prov.init("kiengiang", ["mqtt.kg.example"])
    ca_before = prov.files.cafile.read_bytes()
    prov.init("kiengiang", ["mqtt2.kg.example"], reissue=True)
    assert prov.files.cafile.read_bytes() == ca_before, "the CA must never be replaced"


def test_provision_is_idempotent_and_rotation_is_explicit(tmp_path: Path) -> None:
    require_binary("mosquitto_passwd")
    prov = Province(tmp_path / "p")
    prov.init("kg", ["127.0.0.1"])
    bundle = prov.provision_node(SITE, "edge-01")
    first = load_credentials(bundle)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    acl = prov.files.acl_file.read_text()
    assert f"user {SITE}/edge-01\ntopic write {P1}/#\ntopic read {P1}/cmd/#" in acl
    assert ("user qwatch-cloud\ntopic read qwatch/v1/#\ntopic write qwatch/v1/+/+/cmd/#\n"
            "topic write qwatch/v1/cloud/escalation") in acl
    passwd = prov.files.password_file.read_text()
    assert f"{SITE}/edge-01:$7$" in passwd and first.password.get_secret_value() not in passwd
    with pytest.raises(ProvisionError, match=r"already provisioned.*--rotate"):
        prov.provision_node(SITE, "edge-01")
    assert load_credentials(bundle) == first, "a refused re-provision must not touch the bundle"
    prov.provision_node(SITE, "edge-01", rotate=True)
    assert load_credentials(bundle).password != first.password
    assert prov.files.acl_file.read_text().count(f"user {SITE}/edge-01") == 1
    [_cloud, node] = prov.list_clients()
    assert (node.entry.username, node.in_password_file, node.entry.rotated is not None) == (
        f"{SITE}/edge-01", True, True)
    with pytest.raises(ProvisionError, match="must match"):
        prov.provision_node("kg 01", "edge-01")
    with pytest.raises(ProvisionError, match="pki init"):
        Province(tmp_path / "empty").provision_node(SITE, "edge-01")


def test_node_is_confined_to_its_own_prefix_over_tls(secure: SecureBroker) -> None:
    cloud, n1, n2 = _clients(secure, "cloud", "edge-01", "edge-02")
    # A second cloud session, to see forgeries: a user of its own, since the broker makes the client ID
    # the username (two sessions of one user would take each other over).
    secure.bundles["spy"] = secure.province.provision_cloud(worker="spy")
    secure.broker.reload()
    time.sleep(0.3)
    spy = Client(secure.broker, secure.creds("spy")).start()
    try:
        assert spy.ok()
        cloud.c.subscribe("$share/ingest/qwatch/v1/#", qos=1)  # scale-out ingest: the ACL admits it too
        spy.c.subscribe("qwatch/v1/#", qos=1)
        n1.c.subscribe(f"{P1}/cmd/#", qos=1)
        n1.c.subscribe(f"{P2}/cmd/#", qos=1)  # another node's commands: the ACL delivers nothing
        n1.c.subscribe(f"{P2}/alert", qos=1)  # and not its alerts either
        time.sleep(0.3)
        # Forgeries first, then a marker that arrives after them (per-client order is kept).
        n1.c.publish(f"{P2}/alert", b"forged", qos=1).wait_for_publish(5)
        n1.c.publish("qwatch/v1/other-site/edge-01/alert", b"forged", qos=1).wait_for_publish(5)
        n1.c.publish(f"{P2}/cmd/config", b"forged", qos=1).wait_for_publish(5)
        n1.c.publish(f"{P1}/alert", b"mine", qos=1).wait_for_publish(5)
        wait_for(lambda: f"{P1}/alert" in cloud.topics(), 5, what="own alert at the cloud")
        assert cloud.topics() == [f"{P1}/alert"]
        # Commands: the cloud may send them; each node hears only its own.
        n2.c.publish(f"{P2}/alert", b"n2", qos=1).wait_for_publish(5)
        cloud.c.publish(f"{P2}/cmd/ack", b"{}", qos=1).wait_for_publish(5)
        cloud.c.publish(f"{P1}/cmd/ack", b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: f"{P1}/cmd/ack" in n1.topics(), 5, what="own command at edge-01")
        assert n1.topics() == [f"{P1}/cmd/ack"]
        # The cloud itself cannot forge node traffic: it writes only cmd topics.
        cloud.c.publish(f"{P1}/alert", b"cloud-forged", qos=1).wait_for_publish(5)
        cloud.c.publish(f"{P1}/cmd/marker", b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: f"{P1}/cmd/marker" in spy.topics(), 5, what="marker at the spy")
        assert (f"{P1}/alert", b"cloud-forged") not in spy.got
        assert (f"{P1}/alert", b"mine") in spy.got and (f"{P2}/alert", b"n2") in spy.got
    finally:
        for c in (cloud, n1, n2, spy):
            c.close()


def test_wrong_password_and_revoked_node_are_refused(secure: SecureBroker) -> None:
    creds = secure.creds("edge-02")
    bad = Client(secure.broker, creds, password="x" * 43).start()
    assert not bad.ok()
    assert bad.reason is not None
    assert "revoked" in refusal_hint(bad.reason, creds) and "--rotate" in refusal_hint(bad.reason, creds)
    bad.close()
    n2 = Client(secure.broker, creds).start()
    assert n2.ok()
    secure.province.revoke_node(SITE, "edge-02")
    assert f"{SITE}/edge-02" not in secure.province.files.password_file.read_text()
    assert f"user {SITE}/edge-02" not in secure.province.files.acl_file.read_text()
    assert not (secure.province.bundles / SITE / "edge-02.json").exists()
    secure.broker.reload()
    # Mosquitto re-checks connected clients against the reloaded password file and drops this one.
    assert n2.disconnected.wait(5), "a revoked node's live session must be closed at reload"
    n2.close()
    again = Client(secure.broker, creds).start()
    assert not again.ok(), "a revoked node must be refused after the broker reloads"
    again.close()
    still = Client(secure.broker, secure.creds("edge-01")).start()
    assert still.ok(), "revoking one node must not affect another"
    still.close()
    with pytest.raises(ProvisionError, match="not provisioned"):
        secure.province.revoke_node(SITE, "edge-02")


def test_client_without_the_province_ca_fails_the_tls_check(secure: SecureBroker, tmp_path: Path) -> None:
    other = Province(tmp_path / "other-province")
    other.init("elsewhere", ["127.0.0.1"])
    foreign = load_credentials(other.bundles / "qwatch-cloud.json").model_copy(
        update={"broker_port": secure.broker.port})
    c = Client(secure.broker, foreign)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        c.start()
    why = diagnose_tls("127.0.0.1", secure.broker.port, foreign)
    assert why is not None and "not trusted" in why
    # System CAs do not trust the province CA either (no silent fallback to the OS store).
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sys-ca", protocol=mqtt.MQTTv5)
    plain.tls_set()
    with pytest.raises(ssl.SSLCertVerificationError):
        plain.connect("127.0.0.1", secure.broker.port)
    assert diagnose_tls("127.0.0.1", secure.broker.port, secure.creds("edge-01")) is None


def test_broker_certificate_must_name_the_host(secure: SecureBroker) -> None:
    # Re-issue the broker certificate for another name (same CA), restart: the bundle's CA still
    # trusts it, but 127.0.0.1 is no longer in its SANs, so the host name check refuses it.
    secure.province.init("testprov", ["mqtt.kg.example"], reissue=True)
    secure.broker.restart()
    creds = secure.creds("edge-01")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        Client(secure.broker, creds).start()
    why = diagnose_tls("127.0.0.1", secure.broker.port, creds)
    assert why is not None and "does not name '127.0.0.1'" in why


def test_generated_production_dropin_runs_under_a_debian_style_main_config(tmp_path: Path) -> None:
    from cloud.broker_conf import BrokerFiles, production_conf
    from devtools.services import ServiceProcess, _tcp_ready, free_port

    shipped = Path(__file__).resolve().parents[2] / "config" / "mosquitto" / "qwatch.conf"
    assert shipped.read_text() == production_conf(BrokerFiles.in_dir(Path("/etc/qwatch/province"))), (
        "config/mosquitto/qwatch.conf drifted from cloud/broker_conf.py: regenerate it")
    binary = require_binary("mosquitto")
    port = free_port()
    prov = Province(tmp_path / "province")
    prov.init("testprov", ["127.0.0.1"], port=port)
    bundle = prov.provision_node(SITE, "edge-01")
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "qwatch.conf").write_text(prov.conf_path.read_text())
    # What Debian's /etc/mosquitto/mosquitto.conf sets before including conf.d (paths moved to tmp).
    main = tmp_path / "mosquitto.conf"
    main.write_text(f"pid_file {tmp_path}/mosquitto.pid\npersistence true\npersistence_location {tmp_path}/\n"
                    f"log_dest stdout\n{'user root' if os.geteuid() == 0 else ''}\ninclude_dir {confd}\n")
    svc = ServiceProcess("mosquitto-prod", [binary, "-c", str(main)], workdir=tmp_path, host="127.0.0.1", port=port,
                         scheme="mqtts", ready=_tcp_ready).start()
    try:
        c = Client(svc, load_credentials(bundle)).start()
        assert c.ok(), svc.log_tail()
        c.close()
        anon = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv5)
        anon.tls_set_context(load_credentials(bundle).tls_context())
        refused: list[object] = []
        anon.on_connect = lambda _c, _u, _f, rc, _p: refused.append(rc)
        anon.connect("127.0.0.1", port)
        anon.loop_start()
        wait_for(lambda: refused, 5, what="CONNACK for an anonymous client")
        anon.loop_stop()
        assert getattr(refused[0], "is_failure", False), "anonymous clients must be refused"
    finally:
        svc.stop()
