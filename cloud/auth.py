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
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from cloud.signin import (
    SESSION_PREFIX,
    CodeBook,
    FailureLimiter,
    issue_session,
    load_session_key,
    verify_session,
)
from cloud.users import UserEntry, UsersFile, load_users, token_id_of, user_name, verify_token
from protocols.errors import ConfigError
from protocols.text import LabelError

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
    expires_at: float | None = None  # a session token's expiry; None for API tokens (they do not expire)
    signed_in_at: float | None = None  # a session's original sign-in (renewals keep it); None for API tokens

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


@dataclass(frozen=True, slots=True)
class SignInSettings:
    """Session lifetime, code lifetime and the failure limit (``serve --session-ttl-s`` …)."""

    session_ttl_s: float = 12 * 3600.0  # a guard's shift
    session_max_s: float = 7 * 86400.0  # renewals stop this long after the sign-in: then a new code
    code_ttl_s: float = 600.0
    fail_limit: int = 10  # failures per client address per window, then 429
    fail_window_s: float = 300.0
    clock: Callable[[], float] = field(default=time.time)


class SignInError(Exception):
    """A refused code request: ``status`` 404 (no such user) or 409 (revoked user, too many codes)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _principal(u: UserEntry, expires_at: float | None = None, signed_in_at: float | None = None) -> Principal:
    return Principal(name=u.name, role=u.role, sites=frozenset(u.sites) if u.role == "guard" else None,
                     token_id=u.token_id, expires_at=expires_at, signed_in_at=signed_in_at)


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

    def __init__(self, path: Path, settings: SignInSettings | None = None) -> None:
        self.path = path
        self.settings = settings or SignInSettings()
        self.limiter = FailureLimiter(self.settings.fail_limit, self.settings.fail_window_s)
        # Codes are guessable (about 40 bits): also cap failed exchanges from all addresses together.
        self.exchange_limiter = FailureLimiter(self.settings.fail_limit * 10, self.settings.fail_window_s)
        self.codes = CodeBook(path)
        self._session_key: bytes | None = None
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

    def session_key(self) -> bytes:
        """The HMAC key of session tokens (made next to the users file on first use)."""
        if self._session_key is None:
            self._session_key = load_session_key(self.path)
        return self._session_key

    def _refuse(self, client: str, message: str, *, count: bool = True) -> NoReturn:
        """Count a failed sign-in of ``client``: 401, or 429 once it is over the limit. A revoked or expired
        credential is a real one (a dashboard left open), not a guess: 401, not counted."""
        if count:
            now = self.settings.clock()
            self.limiter.check(client, now)
            self.limiter.fail(client, now)
        raise AuthError(401, message)

    def authenticate(self, token: str | None, *, client: str = "-") -> Principal:
        """The caller a token stands for; AuthError(401) when missing, malformed, wrong, expired or revoked,
        RateLimited (429) after too many failures from ``client``."""
        if not token:
            raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        self.refresh()
        if token.startswith(SESSION_PREFIX + "."):
            return self._session(token, client)
        token_id = token_id_of(token)
        user = self._by_id.get(token_id) if token_id else None
        if user is None or token_id is None:
            # Never log what was presented: a mistyped token is one character from a real one.
            log.warning("event=auth_failed reason=unknown_token client=%s", client)
            self._refuse(client, "invalid token")
        if not user.active:
            log.warning("event=auth_failed reason=revoked user=%s client=%s", user.name, client)
            self._refuse(client, "token revoked", count=False)
        key = hashlib.sha256(token.encode()).digest()
        if self._verified.get(key) != token_id:
            # A fresh scrypt check costs a core ~0.2 s: not for a client that is over its failure limit.
            self.limiter.check(client, self.settings.clock())
            if not verify_token(token, user.token_hash):
                log.warning("event=auth_failed reason=bad_secret user=%s client=%s", user.name, client)
                self._refuse(client, "invalid token")
            with self._lock:
                self._verified[key] = token_id
                while len(self._verified) > CACHE_SIZE:
                    self._verified.popitem(last=False)
        return _principal(user)

    def _session(self, token: str, client: str) -> Principal:
        claims = verify_session(self.session_key(), token, now=self.settings.clock())
        if isinstance(claims, str):
            log.warning("event=auth_failed reason=%s client=%s", claims.replace(" ", "_"), client)
            self._refuse(client, claims, count=claims != "session expired")
        user = self._by_id.get(claims.token_id)
        if user is None or user.name != claims.user or not user.active:
            # Revoked, or rotated (a new token ID): every session of the old one ends.
            log.warning("event=auth_failed reason=session_revoked user=%s client=%s", claims.user, client)
            self._refuse(client, "session revoked", count=False)
        return _principal(user, claims.expires_at, claims.signed_in_at)

    def _user_named(self, name: str) -> UserEntry:
        try:
            wanted = user_name(name)
        except LabelError as exc:
            raise SignInError(404, str(exc)) from None
        self.refresh()
        user = next((u for u in self._by_id.values() if u.name == wanted), None)
        if user is None:
            raise SignInError(404, f"no user {wanted!r}")
        if not user.active:
            raise SignInError(409, f"user {wanted!r} is revoked (reinstate with `qwatch-cloud user rotate`)")
        return user

    def issue_code(self, name: str) -> tuple[str, float]:
        """A one-time sign-in code for an active user, and when it expires."""
        user = self._user_named(name)
        try:
            code, exp = self.codes.issue(user.name, ttl_s=self.settings.code_ttl_s, now=self.settings.clock())
        except ValueError as exc:
            raise SignInError(409, str(exc)) from None
        log.info("event=signin_code_issued user=%s expires_at=%.0f", user.name, exp)
        return code, exp

    def exchange(self, code: str, *, client: str = "-") -> tuple[str, float, UserEntry]:
        """Trade a one-time code for a session token (once); 401 for a wrong, used or expired code and
        429 once the client, or everyone together, failed too often."""
        now = self.settings.clock()
        self.limiter.check(client, now)
        self.exchange_limiter.check("*", now)
        name = self.codes.redeem(code, now=now)
        self.refresh()
        user = next((u for u in self._by_id.values() if u.name == name and u.active), None) if name else None
        if user is None:
            log.warning("event=signin_failed reason=bad_code client=%s", client)
            self.exchange_limiter.fail("*", now)
            self._refuse(client, "invalid, used or expired code")
        token, exp = issue_session(self.session_key(), user.name, user.token_id, now=now,
                                   ttl_s=self.settings.session_ttl_s)
        log.info("event=signin user=%s role=%s client=%s expires_at=%.0f", user.name, user.role, client, exp)
        return token, exp, user

    def renew(self, who: Principal) -> tuple[str, float, UserEntry]:
        """A fresh session token for a signed-in caller."""
        user = self._by_id.get(who.token_id or "")
        if user is None or not user.active:
            raise AuthError(401, "token revoked")
        now = self.settings.clock()
        if who.signed_in_at is not None and now - who.signed_in_at >= self.settings.session_max_s:
            raise AuthError(401, "session too old to renew: sign in again with a new code")
        token, exp = issue_session(self.session_key(), user.name, user.token_id, now=now,
                                   ttl_s=self.settings.session_ttl_s, signed_in_at=who.signed_in_at)
        log.info("event=session_renewed user=%s expires_at=%.0f", user.name, exp)
        return token, exp, user

    def still_valid(self, who: Principal) -> bool:
        """Whether the token an open connection authenticated with is still active (not revoked/rotated)."""
        if who.token_id is None:
            return True
        if who.expires_at is not None and who.expires_at <= self.settings.clock():
            return False
        self.refresh()
        user = self._by_id.get(who.token_id)
        return user is not None and user.active
