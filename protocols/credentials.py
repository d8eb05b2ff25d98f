"""MQTT credentials bundle: what a node (or the cloud ingest) needs to reach the province broker.

The bundle format is shared by the cloud (which writes it) and the edge (which reads it), so it
lives here, below both.

`qwatch-cloud provision-node` writes one JSON file, mode 0600, that the technician copies to
the node:

    {"schema": "qwatch.mqtt-credentials/1", "role": "node", "site": "kg-01", "node": "edge-01",
     "broker_host": "mqtt.province.example", "broker_port": 8883,
     "username": "kg-01/edge-01", "password": "...", "ca_pem": "-----BEGIN CERTIFICATE-----..."}

The link then speaks TLS (the broker certificate must chain to `ca_pem` and match
`broker_host`) and authenticates with the username/password. The password is a pydantic
`SecretStr`, so it never shows up in a repr, a log line or a validation error.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from pathlib import Path
from typing import Literal, Protocol

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from protocols.errors import ConfigError
from protocols.secret_files import json_object, read_private_text, write_private_file
from protocols.topics import ID_PATTERN

SCHEMA = "qwatch.mqtt-credentials/1"
CLOUD_USERNAME = "qwatch-cloud"


def node_username(site: str, node: str) -> str:
    """The broker username of a node: `site/node` (IDs cannot contain `/`, so it is unambiguous)."""
    return f"{site}/{node}"


class MqttCredentials(BaseModel):
    """One credentials bundle (validated at load: extra keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["qwatch.mqtt-credentials/1"] = Field("qwatch.mqtt-credentials/1", alias="schema")
    role: Literal["node", "cloud"]
    site: str | None = Field(None, pattern=ID_PATTERN)
    node: str | None = Field(None, pattern=ID_PATTERN)
    broker_host: str = Field(min_length=1, max_length=253)
    broker_port: int = Field(ge=1, le=65535)
    username: str = Field(min_length=1, max_length=200)
    password: SecretStr = Field(min_length=16)
    ca_pem: str

    @field_validator("ca_pem")
    @classmethod
    def _ca_is_a_ca_certificate(cls, value: str) -> str:
        try:
            certs = x509.load_pem_x509_certificates(value.encode())
        except ValueError:
            raise ValueError("not a PEM certificate (expected the province CA, ca.crt)") from None
        try:
            is_ca = certs[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ValueError("the certificate is not a CA certificate (expected the province CA, ca.crt)")
        return value

    @model_validator(mode="after")
    def _node_bundle_names_its_node(self) -> MqttCredentials:
        if self.role == "node":
            if self.site is None or self.node is None:
                raise ValueError("a node bundle needs both 'site' and 'node'")
            if self.username != node_username(self.site, self.node):
                raise ValueError(f"username must be {node_username(self.site, self.node)!r} for this site/node")
        return self

    def to_json(self) -> str:
        """The bundle file's text (it contains the password: write it with mode 0600 only)."""
        data = self.model_dump(mode="json", by_alias=True)
        data["password"] = self.password.get_secret_value()
        return json.dumps(data, indent=1) + "\n"

    def tls_context(self) -> ssl.SSLContext:
        """TLS 1.2+, broker certificate verified against the bundle's CA only, hostname checked."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_credentials(text: str, source: str = "<string>") -> MqttCredentials:
    """Validate a bundle's text; raises ConfigError naming the file, the key and what is allowed."""
    data = json_object(text, source, "a JSON object written by `qwatch-cloud provision-node`")
    try:
        return MqttCredentials.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        more = exc.error_count() - 1
        msg = err["msg"] + (f" (and {more} more errors)" if more else "")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(f.alias or n for n, f in MqttCredentials.model_fields.items())
            msg = f"unknown key; allowed keys: {allowed}"
        elif err["type"] == "literal_error" and err["loc"] == ("schema",):
            msg = f"must be {SCHEMA!r} (is this a bundle from `qwatch-cloud provision-node`?)"
        raise ConfigError(source, _where(err["loc"]), msg) from None


def load_credentials(path: str | os.PathLike[str]) -> MqttCredentials:
    """Load a bundle file. It holds a password, so a file others can read is refused (needs 0600)."""
    return parse_credentials(read_private_text(path, what="the credentials bundle"), str(path))


def write_credentials(path: Path, creds: MqttCredentials) -> None:
    """Write a bundle with mode 0600."""
    write_private_file(path, creds.to_json())


class TlsPasswordClient(Protocol):
    """The two calls of an MQTT client (paho's `Client`) that a bundle configures."""

    def tls_set_context(self, context: ssl.SSLContext | None = None) -> None: ...

    def username_pw_set(self, username: str | None, password: str | None = None) -> None: ...


def apply_credentials(client: TlsPasswordClient, creds: MqttCredentials) -> None:
    """Switch an MQTT client to TLS (verified against the bundle's CA) and username/password."""
    client.tls_set_context(creds.tls_context())
    client.username_pw_set(creds.username, creds.password.get_secret_value())


def diagnose_tls(host: str, port: int, creds: MqttCredentials, timeout: float = 3.0) -> str | None:
    """Try a TLS handshake to say WHY a connection failed; None if TCP and TLS both succeed.

    paho's background reconnect swallows the exception, so without this a wrong CA or host
    name would look like an unreachable broker. The text names the likely fix.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                creds.tls_context().wrap_socket(raw, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as exc:
        detail = exc.verify_message or str(exc)
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return (f"tls: the broker certificate does not name {host!r} ({detail}); connect with a host name "
                    "from the certificate's SANs or re-issue it with `qwatch-cloud pki init --reissue`")
        return (f"tls: broker certificate not trusted ({detail}); the bundle's CA (ca_pem) is not the CA "
                "that signed this broker's certificate: re-provision the node from the right province directory")
    except ssl.SSLError as exc:
        return f"tls: handshake failed ({exc.reason or exc}); is {host}:{port} the broker's TLS listener?"
    except OSError as exc:
        return f"tcp: cannot reach {host}:{port} ({exc.strerror or exc})"


def diagnose_tcp(host: str, port: int, timeout: float = 3.0) -> str | None:
    """Why a plain (no TLS) connection failed; None if a TCP connection can be made."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"tcp: cannot reach {host}:{port} ({exc.strerror or exc})"


def refusal_hint(reason: object, creds: MqttCredentials | None) -> str:
    """What a technician should do about a CONNACK refusal (text for the log line)."""
    text = str(reason).lower()
    if "user name or password" in text or "not authorized" in text:
        if creds is None:
            return ("the broker requires credentials: pass --credentials with the bundle from "
                    "`qwatch-cloud provision-node`")
        return (f"the broker refused user {creds.username!r}: the password was rotated or the node was revoked; "
                "get a fresh bundle (`qwatch-cloud provision-node --rotate`) and pass it with --credentials")
    return "see the broker log"


def load_node_credentials(path: Path, *, site: str, node: str) -> MqttCredentials:
    """Load a bundle and check it was issued for this very node (a copied bundle is a config error)."""
    creds = load_credentials(path)
    if creds.role != "node":
        raise ConfigError(str(path), "role", f"is {creds.role!r}; an edge node needs a node bundle "
                          "(`qwatch-cloud provision-node --site S --node N`)")
    if creds.site != site:
        raise ConfigError(str(path), "site", f"the bundle is for site {creds.site!r} but the site config says "
                          f"{site!r}: use this node's own bundle")
    if creds.node != node:
        raise ConfigError(str(path), "node", f"the bundle is for node {creds.node!r} but --node is {node!r}: "
                          "use this node's own bundle")
    return creds
