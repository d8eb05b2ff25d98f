"""Who is calling the API: bearer tokens checked against the users file, and what each role may see.

- ``Principal``: the authenticated caller (name, role, site scope). ``OPEN`` stands for everyone when
  the cloud runs without ``--users`` (tests, demo-like setups): it sees every site and has no name.
- ``Authenticator``: checks a presented token. It re-reads the users file when the file changes
  (stat per call), so ``user revoke``/``rotate`` take effect on the next request without a restart.
  A file that turns invalid is refused loudly and the last good one stays in force: guards keep
  working during an emergency while an admin fixes a typo.
- Token sources: ``Authorization: Bearer <token>`` (HTTP and WebSocket), or for browsers, whose
  WebSocket API cannot set headers, the subprotocol ``qwatch.bearer.<token>`` next to ``qwatch.v1``.
  Never a query parameter: uvicorn and proxies log query strings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cloud.users import UserEntry, UsersFile, load_users, token_id_of, verify_token
from protocols.errors import ConfigError

log = logging.getLogger("qwatch.cloud.auth")
WS_PROTOCOL = "qwatch.v1"
WS_BEARER_PREFIX = "qwatch.bearer."
CACHE_SIZE = 1024


class AuthError(Exception):
    """401 (``unauthorized``) or 403 (``forbidden``), with a message safe to show the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = "unauthorized" if status == 401 else "forbidden"
        self.message = message

    @property
    def ws_close_code(self) -> int:
        """WebSocket close code: 4401/4403 mirror the HTTP statuses (4000-4999 are the application's)."""
        return 4000 + self.status


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``sites`` None: every site. ``token_id`` ties an open WebSocket to the token it used."""

    name: str | None
    role: str
    sites: frozenset[str] | None
    token_id: str | None = None

    def sees(self, site: str) -> bool:
        """Whether this caller may read and acknowledge ``site``'s alerts and positions."""
        return self.sites is None or site in self.sites

    def require_site(self, site: str) -> None:
        """Raise 403 unless the site is in scope."""
        if not self.sees(site):
            raise AuthError(403, f"user {self.name!r} ({self.role}) has no access to site {site!r}")

    def public(self) -> dict[str, object]:
        """What ``GET /api/v1/me`` shows."""
        return {"auth": "off" if self.name is None else "on", "name": self.name, "role": self.role,
                "sites": None if self.sites is None else sorted(self.sites)}


OPEN = Principal(name=None, role="open", sites=None)


def _principal(u: UserEntry) -> Principal:
    return Principal(name=u.name, role=u.role, sites=frozenset(u.sites) if u.role == "guard" else None,
                     token_id=u.token_id)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def ws_token(headers: Mapping[str, str]) -> str | None:
    """The token of a WebSocket handshake: Authorization header first, else the bearer subprotocol."""
    token = bearer_token(headers)
    if token is not None:
        return token
    for proto in headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(WS_BEARER_PREFIX):
            return proto[len(WS_BEARER_PREFIX):] or None
    return None


class Authenticator:
    """Checks tokens against a users file that may change while the cloud runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stat: tuple[int, int, int] | None = None
        self._by_id: dict[str, UserEntry] = {}
        # sha256(token) -> token_id of tokens already verified with scrypt; checked against the
        # current file on every use, so a revoked or rotated token fails at once.
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self.file_error: str | None = None
        self._install(load_users(path))  # a bad file at start is the operator's error: raise

    @property
    def users(self) -> list[UserEntry]:
        """Users currently in force."""
        return list(self._by_id.values())

    def _install(self, users: UsersFile) -> None:
        self._by_id = {u.token_id: u for u in users.users}
        self._stat = self._file_stat()
        active = sum(u.active for u in users.users)
        log.info("event=users_loaded file=%s users=%d active=%d", self.path, len(users.users), active)

    def _file_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def refresh(self) -> None:
        """Re-read the file if it changed; keep the last good users when the new file is bad."""
        with self._lock:
            stat = self._file_stat()
            if stat == self._stat:
                return
            try:
                users = load_users(self.path)
            except ConfigError as err:
                if self.file_error != str(err):
                    log.error("event=users_file_invalid error=%s action=keeping_last_good_users", err)
                self.file_error = str(err)
                self._stat = stat
                return
            self.file_error = None
            self._install(users)

    def authenticate(self, token: str | None, *, client: str = "-") -> Principal:
        """The caller a token stands for; AuthError(401) when missing, malformed, wrong or revoked."""
        if not token:
            raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        self.refresh()
        token_id = token_id_of(token)
        user = self._by_id.get(token_id) if token_id else None
        if user is None or token_id is None:
            # Never log what was presented: a mistyped token is one character from a real one.
            log.warning("event=auth_failed reason=unknown_token client=%s", client)
            raise AuthError(401, "invalid token")
        if not user.active:
            log.warning("event=auth_failed reason=revoked user=%s client=%s", user.name, client)
            raise AuthError(401, "token revoked")
        key = hashlib.sha256(token.encode()).digest()
        if self._verified.get(key) != token_id:
            if not verify_token(token, user.token_hash):
                log.warning("event=auth_failed reason=bad_secret user=%s client=%s", user.name, client)
                raise AuthError(401, "invalid token")
            with self._lock:
                self._verified[key] = token_id
                while len(self._verified) > CACHE_SIZE:
                    self._verified.popitem(last=False)
        return _principal(user)

    def still_valid(self, who: Principal) -> bool:
        """Whether the token an open connection authenticated with is still active (not revoked/rotated)."""
        if who.token_id is None:
            return True
        self.refresh()
        user = self._by_id.get(who.token_id)
        return user is not None and user.active
