"""The cloud's users file: who may use the API and dashboard, in which role, for which sites.

One YAML file (``qwatch-cloud user …`` writes it; an admin may also edit it by hand)::

    version: 1
    users:
      - name: lan.nguyen
        role: guard                    # guard | command | admin
        sites: [kg-rachgia-01]         # required for guards: the only sites they see and acknowledge
        token_id: 9f3c2a1b7d4e6f80     # not secret: picks the record a presented token is checked against
        token_hash: scrypt$16384$8$1$<salt b64>$<hash b64>
        created_at: 1764300000.0
        revoked_at: null

A token is ``qw.<token_id>.<secret>`` with a 256-bit random secret. Only its scrypt hash is stored; the
token itself is shown once by ``user add``/``user rotate`` and never written or logged. Every change is
a locked read-modify-write and an atomic, 0600 replace, so a running ``serve`` (which re-reads the
file when it changes) never sees half a file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from protocols.errors import ConfigError
from protocols.secret_files import locked, write_private_file
from protocols.site_config import describe_error, read_config_text, validate_config, yaml_mapping
from protocols.text import LabelError, clean_label

ROLES = ("guard", "command", "admin")
Role = Literal["guard", "command", "admin"]
SiteId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
USER_NAME_MAX = 64


def user_name(value: str) -> str:
    """A user name as stored and compared: NFC, no control characters, 1..64 characters (protocols.text).
    Diacritics and spaces are fine ("Nguyễn Văn Lan"): it is what the command centre reads on an
    acknowledgement."""
    return clean_label(value, max_len=USER_NAME_MAX, what="user name")


UserName = Annotated[str, AfterValidator(user_name)]
TOKEN_PREFIX = "qw"
# scrypt cost: ~0.1-0.2 s on a Pi-class core. A verified token is cached in memory (cloud.auth), so a
# dashboard pays this once per process, not per request.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class UserEntry(BaseModel):
    """One user. ``sites`` is the guard's scope; command and admin see every site."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: UserName
    role: Role
    sites: list[SiteId] = Field(default_factory=list)
    token_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    token_hash: Annotated[str, Field(pattern=r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")]
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


class UsersFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    users: list[UserEntry] = Field(default_factory=list)

    def get(self, name: str) -> UserEntry | None:
        """The user called ``name``, if any."""
        return next((u for u in self.users if u.name == name), None)


# ---------------------------------------------------------------- tokens
def new_token() -> tuple[str, str]:
    """A fresh (token_id, token). The token is ``qw.<token_id>.<43 url-safe chars>``."""
    token_id = secrets.token_hex(8)
    return token_id, f"{TOKEN_PREFIX}.{token_id}.{secrets.token_urlsafe(32)}"


def token_id_of(token: str) -> str | None:
    """The record ID a presented token claims, or None when it is not shaped like a qwatch token."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 16 or not 20 <= len(parts[2]) <= 128:
        return None
    return parts[1] if all(c in "0123456789abcdef" for c in parts[1]) else None


def hash_token(token: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), the only form in which a token is stored."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_token(token: str, stored: str) -> bool:
    """Constant-time check of a presented token against its stored hash."""
    try:
        _, n, r, p, salt, want = stored.split("$")
        got = hashlib.scrypt(token.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=32, maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(want))


# ---------------------------------------------------------------- file I/O
def _describe(err: Any) -> tuple[str, str]:
    """The site config's error wording, with the users file's own allowed keys and token hints."""
    key, msg = describe_error(err)
    etype = err["type"]
    if etype == "extra_forbidden":
        msg = "unknown key (typo?); allowed: name, role, sites, token_id, token_hash, created_at, revoked_at"
    elif etype == "string_pattern_mismatch" and key.endswith(("token_hash", "token_id")):
        msg = "not a token hash written by `qwatch-cloud user add` (re-issue with `user rotate`)"
    elif etype == "string_pattern_mismatch":
        msg = f"{err.get('input')!r}: letters, digits and . _ - only (at most 64)"
    return key, msg


def _check_scopes(users: UsersFile, source: str) -> None:
    """Role rules pydantic cannot place on a key: guards need sites; sites mean nothing for other roles."""
    seen_names: set[str] = set()
    seen_ids: set[str] = set()
    for i, u in enumerate(users.users):
        if u.role == "guard" and not u.sites:
            raise ConfigError(source, f"users[{i}].sites",
                              f"required for role guard (user {u.name!r}): the sites this guard may see")
        if u.role != "guard" and u.sites:
            raise ConfigError(source, f"users[{i}].sites",
                              f"only guards have sites; role {u.role!r} sees every site (remove the key)")
        if u.name in seen_names:
            raise ConfigError(source, f"users[{i}].name", f"{u.name!r} appears twice; names must be unique")
        if u.token_id in seen_ids:
            raise ConfigError(source, f"users[{i}].token_id", "appears twice; rotate one of the users")
        seen_names.add(u.name)
        seen_ids.add(u.token_id)


def parse_users(text: str, source: str = "<string>") -> UsersFile:
    """Validate users-file YAML (JSON is YAML too). Raises ConfigError naming file, key and what is allowed."""
    data = yaml_mapping(text, source, "a mapping with keys version, users (a users file)", empty_ok=True)
    # An unknown key first: a typo (or a pasted token) usually explains the "missing" one next to it.
    users = validate_config(UsersFile, data, source, unknown_key_first=True, describe=_describe)
    _check_scopes(users, source)
    return users


def load_users(path: Path, *, missing_ok: bool = False) -> UsersFile:
    """Read and validate a users file; a missing file is an empty one only with ``missing_ok``."""
    try:
        text = read_config_text(path)
    except FileNotFoundError:
        if missing_ok:
            return UsersFile()
        raise ConfigError(str(path), "", "no such file (create it with `qwatch-cloud user add`)") from None
    return parse_users(text, str(path))


def save_users(path: Path, users: UsersFile) -> None:
    """Atomically replace the file (0600: hashes are not tokens, but nobody else needs them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# qwatch cloud users: managed by `qwatch-cloud user ...`; holds token hashes, never tokens\n"
    body += yaml.safe_dump(users.model_dump(mode="json"), sort_keys=False)
    write_private_file(path, body)


# ---------------------------------------------------------------- changes (what the CLI runs)
class UserChangeError(ValueError):
    """A refused change (unknown user, duplicate name, guard without sites …)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """The result of add/rotate: the entry as stored and the token, to show once."""

    user: UserEntry
    token: str


def _entry(name: str, role: str, sites: list[str], now: float) -> tuple[UserEntry, str]:
    token_id, token = new_token()
    try:
        entry = UserEntry(name=name, role=role, sites=sorted(set(sites)), token_id=token_id,
                          token_hash=hash_token(token), created_at=now)
    except ValidationError as exc:
        key, msg = _describe(exc.errors()[0])
        raise UserChangeError(f"{key}: {msg}") from None
    return entry, token


def add_user(path: Path, name: str, role: str, sites: list[str], *, now: float | None = None) -> Issued:
    """Create a user with a fresh token."""
    name = _norm_name(name)
    if role not in ROLES:
        raise UserChangeError(f"role {role!r} is not allowed; allowed: {', '.join(ROLES)}")
    if role == "guard" and not sites:
        raise UserChangeError("a guard needs at least one --site (the sites this guard may see)")
    if role != "guard" and sites:
        raise UserChangeError(f"only guards have sites; role {role!r} sees every site")
    with locked(path):
        current = load_users(path, missing_ok=True)
        if current.get(name) is not None:
            raise UserChangeError(f"user {name!r} exists (use `user rotate` for a new token)")
        entry, token = _entry(name, role, sites, time.time() if now is None else now)
        save_users(path, current.model_copy(update={"users": [*current.users, entry]}))
    return Issued(entry, token)


def _norm_name(name: str) -> str:
    try:
        return user_name(name)
    except LabelError as exc:
        raise UserChangeError(str(exc)) from None


def _replace(path: Path, name: str, make: Callable[[UserEntry], UserEntry]) -> UserEntry:
    name = _norm_name(name)
    with locked(path):
        current = load_users(path)
        old = current.get(name)
        if old is None:
            raise UserChangeError(f"no user {name!r} in {path}")
        new = make(old)
        save_users(path, current.model_copy(update={"users": [new if u.name == name else u
                                                               for u in current.users]}))
    return new


def revoke_user(path: Path, name: str, *, now: float | None = None) -> UserEntry:
    """Disable a user's token (kept in the file so acknowledgements stay attributable)."""
    stamp = time.time() if now is None else now
    return _replace(path, name, lambda u: u if u.revoked_at else u.model_copy(update={"revoked_at": stamp}))


def rotate_user(path: Path, name: str, *, now: float | None = None) -> Issued:
    """Issue a new token (the old one stops working at once); reinstates a revoked user."""
    issued: list[str] = []

    def make(u: UserEntry) -> UserEntry:
        entry, token = _entry(u.name, u.role, u.sites, time.time() if now is None else now)
        issued.append(token)
        return entry

    return Issued(_replace(path, name, make), issued[0])
