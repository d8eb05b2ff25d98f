"""Sign-in a guard can do on a phone: one-time codes, expiring session tokens, and a limit on failures.

- **Codes.** An admin (``POST /api/v1/auth/codes`` or ``qwatch-cloud user code NAME``) gets a short code
  like ``7KQ4-MZ2X``: 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), about 40 bits. It
  is single use and expires after minutes. Only its SHA-256 is kept, in ``USERS.codes.json`` next to the
  users file (0600, changed under a lock), so a code made by the CLI works on a running ``serve`` and on
  every replica that shares the file.
- **Sessions.** A code is exchanged for ``qs.<payload>.<HMAC-SHA256>``: the user's name, their token ID and
  an expiry, signed with ``USERS.session-key`` (32 random bytes, 0600, made on first start). Nothing is
  stored per session; each use is checked against the current users file, so ``user revoke`` ends a
  user's sessions at once and ``user rotate`` (a new token ID) signs them out everywhere. A session is
  renewed before it expires with ``POST /api/v1/auth/renew``.
- **Failures are limited** per client address in a sliding window (``FailureLimiter``); past the limit the
  client gets 429 with ``Retry-After``. A code exchange is refused while the client is over the limit
  (codes are guessable, tokens are not), and so is any token that would need a fresh scrypt check; a
  token already verified, or a valid session, still works, so a guard behind the same site NAT as a
  misbehaving phone is not locked out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.secret_files import locked, write_private_file

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LEN = 8
SESSION_PREFIX = "qs"
MAX_PENDING_CODES = 1000


class RateLimited(Exception):
    """Too many failures from this client: answer 429 with ``Retry-After: retry_after``."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed sign-in attempts; retry in {retry_after:.0f} s")
        self.retry_after = max(1, int(retry_after + 0.999))


class FailureLimiter:
    """At most ``limit`` failures per key within ``window_s`` (sliding). Pure: the caller passes the time."""

    def __init__(self, limit: int = 10, window_s: float = 300.0, max_keys: int = 10000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may try again, or None when it is under the limit."""
        with self._lock:
            q = self._recent(key, now)
            if len(q) < self.limit:
                return None
            return q[len(q) - self.limit] + self.window_s - now

    def check(self, key: str, now: float) -> None:
        """Raise :class:`RateLimited` when ``key`` is over the limit."""
        wait = self.retry_after(key, now)
        if wait is not None:
            raise RateLimited(wait)

    def fail(self, key: str, now: float) -> None:
        """Count one failure of ``key``."""
        with self._lock:
            if len(self._fails) >= self.max_keys and key not in self._fails:
                # Bounded memory under a spray from many addresses: forget the oldest key.
                self._fails.pop(next(iter(self._fails)))
            self._recent(key, now)
            self._fails.setdefault(key, deque()).append(now)


# ---------------------------------------------------------------- codes
def new_code() -> str:
    """``XXXX-XXXX`` from :data:`ALPHABET` (about 40 bits)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LEN))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_code(text: str) -> str | None:
    """What a person typed, as ``XXXX-XXXX``: case, spaces and dashes do not matter; None if not a code."""
    raw = "".join(ch for ch in text.upper() if ch not in " -\t")
    if len(raw) != CODE_LEN or any(ch not in ALPHABET for ch in raw):
        return None
    return f"{raw[:4]}-{raw[4:]}"


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class CodeBook:
    """Pending one-time codes in ``<users file>.codes.json`` (hashes only), shared by CLI and servers."""

    def __init__(self, users_path: Path) -> None:
        self.path = users_path.with_name(users_path.name + ".codes.json")

    def _load(self, now: float) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            codes = data["codes"] if isinstance(data, dict) else []
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, OSError):
            return []  # a damaged file holds nothing usable: codes are short-lived, start afresh
        return [c for c in codes if isinstance(c, dict) and float(c.get("expires_at", 0)) > now]

    def _save(self, codes: list[dict[str, Any]]) -> None:
        write_private_file(self.path, json.dumps({"version": 1, "codes": codes}, ensure_ascii=False).encode())

    def issue(self, user: str, *, ttl_s: float, now: float) -> tuple[str, float]:
        """A new code for ``user`` and its expiry time. Raises ValueError when too many are pending."""
        code = new_code()
        with locked(self.path):
            codes = self._load(now)
            if len(codes) >= MAX_PENDING_CODES:
                raise ValueError(f"{len(codes)} codes are pending; wait for some to expire")
            codes.append({"hash": _code_hash(code), "user": user, "created_at": now, "expires_at": now + ttl_s})
            self._save(codes)
        return code, now + ttl_s

    def redeem(self, typed: str, *, now: float) -> str | None:
        """The user a typed code was issued for, once; None when unknown, used or expired."""
        code = normalise_code(typed)
        if code is None:
            return None
        digest = _code_hash(code)
        with locked(self.path):
            codes = self._load(now)
            hit = next((c for c in codes if hmac.compare_digest(str(c.get("hash", "")), digest)), None)
            if hit is not None:
                codes.remove(hit)
            self._save(codes)
        return str(hit["user"]) if hit is not None else None


# ---------------------------------------------------------------- sessions
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a valid session token says."""

    user: str
    token_id: str
    expires_at: float
    signed_in_at: float  # when the code was exchanged: renewals keep it, so a session has a maximum age


def load_session_key(users_path: Path) -> bytes:
    """``<users file>.session-key``: 32 random bytes, created 0600 on first use (atomically, so replicas
    starting together agree on one key)."""
    path = users_path.with_name(users_path.name + ".session-key")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) < 32:  # another replica created it this instant and is still writing
            time.sleep(0.5)
            key = bytes.fromhex(path.read_text().strip())
        if len(key) < 32:
            raise ValueError(f"{path}: not a session key (delete it to make a new one; signs everyone out)") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def issue_session(key: bytes, user: str, token_id: str, *, now: float, ttl_s: float,
                  signed_in_at: float | None = None) -> tuple[str, float]:
    """A signed session token and its expiry (``signed_in_at``: the original sign-in, kept by renewals)."""
    exp = now + ttl_s
    first = now if signed_in_at is None else signed_in_at
    claims = {"u": user, "t": token_id, "e": round(exp, 3), "s": round(first, 3), "n": secrets.token_hex(8)}
    payload = _b64(json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode())
    sig = _b64(hmac.new(key, f"{SESSION_PREFIX}.{payload}".encode(), hashlib.sha256).digest())
    return f"{SESSION_PREFIX}.{payload}.{sig}", exp


def verify_session(key: bytes, token: str, *, now: float) -> SessionClaims | str:
    """The claims of a genuine, unexpired session token, or the reason it is refused (a short string)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != SESSION_PREFIX or len(token) > 2048:
        return "invalid token"
    want = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        ok = hmac.compare_digest(want, _unb64(parts[2]))
        claims = json.loads(_unb64(parts[1])) if ok else None
    except ValueError:
        return "invalid token"
    if not ok or not isinstance(claims, dict):
        return "invalid token"
    try:
        out = SessionClaims(str(claims["u"]), str(claims["t"]), float(claims["e"]), float(claims["s"]))
    except (KeyError, TypeError, ValueError):
        return "invalid token"
    if out.expires_at <= now:
        return "session expired"
    return out
