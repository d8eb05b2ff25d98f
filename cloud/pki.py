"""The province PKI: one CA per province, and the broker's TLS server certificate.

Pure crypto with `cryptography` (no openssl shell-outs). Keys are ECDSA P-256, written as
unencrypted PKCS#8 with mode 0600 (the broker must read its key unattended at boot); the
CA key should then live offline or at least root-only. Certificates are public (0644).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.secret_files import write_private_file

CA_DAYS = 10 * 365
# Browsers cap server certificates at ~398 days; MQTT clients do not, but a yearly-ish
# re-issue keeps the procedure practised. 825 days was the CA/B-forum cap for years.
BROKER_DAYS = 825
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class PkiError(ValueError):
    """Bad PKI input (a host name, a missing or unreadable file). The message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A private key and its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_san(host: str) -> x509.GeneralName:
    """An IP address becomes an IP SAN, a host name a DNS SAN; anything else is a PkiError."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(host):
        raise PkiError(f"--broker-host {host!r} is neither an IP address nor a DNS host name "
                       "(letters, digits, '-' and '.', e.g. mqtt.kiengiang.example or 10.20.0.5)")
    return x509.DNSName(host.lower())


def create_ca(province: str, *, days: int = CA_DAYS) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qwatch"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"qwatch {province} CA")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue_server_cert(ca: Issued, hosts: Sequence[str], *, days: int = BROKER_DAYS) -> Issued:
    """The broker's TLS certificate with every host name / IP in `hosts` as a SAN."""
    if not hosts:
        raise PkiError("give at least one --broker-host (the name or IP the nodes connect to)")
    sans = [parse_san(h) for h in hosts]
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qwatch"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def cert_pem(cert: x509.Certificate) -> str:
    """PEM text of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def save(issued: Issued, key_path: Path, cert_path: Path) -> None:
    """Write the key (0600, atomically) and the certificate (0644)."""
    key_pem = issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode()
    write_private_file(key_path, key_pem)
    tmp = cert_path.with_name(f".{cert_path.name}.tmp")
    tmp.write_text(cert_pem(issued.cert))
    os.chmod(tmp, 0o644)
    os.replace(tmp, cert_path)


def load(key_path: Path, cert_path: Path) -> Issued:
    """Read a key and certificate written by :func:`save`; PkiError names the file on failure."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PkiError(f"{key_path}: cannot load the private key ({exc}); run `qwatch-cloud pki init` first") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{cert_path}: cannot load the certificate ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: expected an EC private key")
    return Issued(key, cert)


def sans_of(cert: x509.Certificate) -> list[str]:
    """The SANs of a certificate as strings (DNS names and IPs)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*ext.get_values_for_type(x509.DNSName), *(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))]


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, colon-separated hex (what a technician compares by eye)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
