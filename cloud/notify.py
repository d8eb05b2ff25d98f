"""Where an escalation goes outside the browser: the ``serve --notify FILE`` config and the senders.

One YAML file, per site (a ``default`` block covers sites not listed)::

    version: 1
    dashboard_url: https://qwatch.example.gov.vn/     # optional: a link in each message
    retry: {max_attempts: 8, backoff_s: 5, max_backoff_s: 600}
    default:
      email:
        smtp: {host: smtp.example.gov.vn, port: 587, starttls: true, username: qwatch, password: "…"}
        from: qwatch@example.gov.vn
        to: [trucban@example.gov.vn]
    sites:
      kg-rachgia-01:
        webhooks:
          - url: https://chat.example.gov.vn/hooks/abc   # the URL may hold a secret: it is never logged
            headers: {Authorization: "Bearer …"}

Secrets (SMTP password, header values, the webhook URL itself) are never logged or stored in the
alert's history: a channel is named ``webhook:0`` or ``email`` there, and errors are our own words
(``HTTP 503``, ``ConnectError``), not the library's, which may quote the URL.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from protocols.errors import ConfigError
from protocols.site_config import read_config_text, validate_config, yaml_mapping

SiteId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Address = Annotated[str, Field(pattern=r"^[^@\s<>,;]{1,64}@[^@\s<>,;]{1,255}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Webhook(_Model):
    """An outgoing HTTP POST of the escalation as JSON; any 2xx is delivered."""

    url: str = Field(max_length=2000)
    headers: dict[str, SecretStr] = Field(default_factory=dict, max_length=20)
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v

    @property
    def target(self) -> str:
        """host:port, safe to log (no path, query or credentials)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class Smtp(_Model):
    """An SMTP submission server. ``ssl``: implicit TLS (port 465); ``starttls``: upgrade (port 587)."""

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=25, ge=1, le=65535)
    ssl: bool = False
    starttls: bool = False
    username: str | None = Field(default=None, max_length=255)
    password: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class Email(_Model):
    """E-mail to fixed recipients."""

    smtp: Smtp
    sender: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=50)


class Channels(_Model):
    """Where one site's escalations go."""

    webhooks: list[Webhook] = Field(default_factory=list, max_length=10)
    email: Email | None = None

    def names(self) -> list[str]:
        """Channel names as queued and shown in history: ``webhook:0``, …, ``email``."""
        return [f"webhook:{i}" for i in range(len(self.webhooks))] + (["email"] if self.email else [])


class Retry(_Model):
    """Exponential backoff: ``backoff_s``, 2×, 4× … capped at ``max_backoff_s``; give up after
    ``max_attempts`` tries (the last error stays in the alert's history and in /healthz)."""

    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_s: float = Field(default=5.0, gt=0, le=3600)
    max_backoff_s: float = Field(default=600.0, gt=0, le=86400)

    def retry_at(self, attempt: int, now: float) -> float | None:
        """When to try again after failed try number ``attempt`` (1-based), or None: give up."""
        if attempt >= self.max_attempts:
            return None
        return now + min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))


class NotifyConfig(_Model):
    """The whole ``--notify`` file."""

    version: Literal[1] = 1
    dashboard_url: str | None = Field(default=None, max_length=500)
    retry: Retry = Field(default_factory=Retry)
    default: Channels | None = None
    sites: dict[SiteId, Channels] = Field(default_factory=dict, max_length=1000)

    def for_site(self, site: str) -> Channels | None:
        """The site's channels, else the default's."""
        return self.sites.get(site, self.default)

    def channels(self, site: str) -> list[str]:
        """Channel names to queue when an alert of ``site`` escalates."""
        chans = self.for_site(site)
        return chans.names() if chans is not None else []

    def resolve(self, site: str, channel: str) -> Webhook | Email | None:
        """The channel a queued delivery names, or None if the file no longer has it."""
        chans = self.for_site(site)
        if chans is None:
            return None
        if channel == "email":
            return chans.email
        kind, _, idx = channel.partition(":")
        if kind == "webhook" and idx.isdigit() and int(idx) < len(chans.webhooks):
            return chans.webhooks[int(idx)]
        return None


def parse_notify(text: str, source: str = "<string>") -> NotifyConfig:
    """Validate a notify file; ConfigError naming the file and key otherwise."""
    data = yaml_mapping(text, source, "a mapping with keys version, retry, default, sites (a notify file)",
                        empty_ok=True)
    return validate_config(NotifyConfig, data, source)


def load_notify(path: Path) -> NotifyConfig:
    """Read and validate ``serve --notify FILE``."""
    try:
        return parse_notify(read_config_text(path), str(path))
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no such file") from None


# ---------------------------------------------------------------- messages
class DeliveryError(Exception):
    """A failed attempt; the message is safe to store and show (no URL, no credentials)."""


def _who(view: Mapping[str, Any]) -> str:
    subject = view.get("subject") or {}
    base = next((f"{k} {v}" for k, v in subject.items() if v is not None), "?")
    return f"{view['person']} ({base})" if view.get("person") else base


def _local(ts: float | None, tz: ZoneInfo) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S %z")


def message_text(view: Mapping[str, Any], tz: ZoneInfo, dashboard_url: str | None) -> tuple[str, str]:
    """(subject, body) of an escalation, Vietnamese first, then English."""
    who = _who(view)
    subject = f"[qwatch] LEO THANG / ESCALATED: {view['type']} – {view['site']} – {who}"
    detail = view.get("detail") or {}
    lines = [
        "Cảnh báo chưa được xác nhận đã được chuyển lên cấp trên. / An unacknowledged alert escalated.",
        "",
        f"Khu cách ly / Site: {view['site']} (node {view['node']})",
        f"Loại / Type: {view['type']} ({view['severity']})",
        f"Người / Person: {who}",
        f"Phát hiện lúc / Raised at: {_local(view.get('raised_ts'), tz)}",
        f"Leo thang lúc / Escalated at: {_local(view.get('escalated_at'), tz)}",
    ]
    if detail.get("outside_m") is not None:
        lines.append(f"Ra ngoài hàng rào / Outside the fence: {detail['outside_m']} m")
    if detail.get("left_zone"):
        lines.append(f"Rời khu / Left zone: {detail['left_zone']}")
    lines.append(f"Mã cảnh báo / Alert ID: {view['alert_id']}")
    if dashboard_url:
        lines.append(f"Bảng điều khiển / Dashboard: {dashboard_url}")
    return subject, "\n".join(lines) + "\n"


def send_webhook(hook: Webhook, view: Mapping[str, Any], text: str) -> None:
    """POST ``{"event": "qwatch.escalation/1", "text", "alert"}``; DeliveryError unless 2xx."""
    body = {"event": "qwatch.escalation/1", "text": text, "alert": dict(view)}
    headers = {k: v.get_secret_value() for k, v in hook.headers.items()}
    try:
        resp = httpx.post(hook.url, json=body, headers=headers, timeout=hook.timeout_s)
    except httpx.HTTPError as exc:
        raise DeliveryError(type(exc).__name__) from None
    if not 200 <= resp.status_code < 300:
        raise DeliveryError(f"HTTP {resp.status_code}")


def send_email(mail: Email, subject: str, body: str) -> None:
    """Send one message to every recipient; DeliveryError on any SMTP or network failure."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = mail.sender
    msg["To"] = ", ".join(mail.to)
    msg.set_content(body)
    s = mail.smtp
    try:
        client: smtplib.SMTP = (smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s,
                                                 context=ssl.create_default_context())
                                if s.ssl else smtplib.SMTP(s.host, s.port, timeout=s.timeout_s))
        with client:
            if s.starttls:
                client.starttls(context=ssl.create_default_context())
            if s.username is not None and s.password is not None:
                client.login(s.username, s.password.get_secret_value())
            client.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(type(exc).__name__) from None
