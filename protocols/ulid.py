"""ULIDs for alert IDs: sortable by creation time, unique without coordination between nodes."""

from __future__ import annotations

import hashlib
import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MS_MASK = (1 << 48) - 1
_RAND_MASK = (1 << 80) - 1


def encode_ulid(ms: int, randomness: int) -> str:
    """The 26-character Crockford base32 ULID of a 48-bit millisecond time and 80 random bits."""
    value = ((ms & _MS_MASK) << 80) | (randomness & _RAND_MASK)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def new_ulid(ts: float | None = None) -> str:
    """Return a fresh ULID for time `ts` (Unix seconds; now by default)."""
    ms = int((time.time() if ts is None else ts) * 1000)
    return encode_ulid(ms, int.from_bytes(os.urandom(10), "big"))


def seeded_ulid(ms: int, seed: str) -> str:
    """A repeatable ULID: time part `ms`, random part a hash of `seed`.

    Replay and the synthetic alert storm use it so the same input gives byte-identical alert IDs.
    """
    return encode_ulid(ms, int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big"))


def is_ulid(text: str) -> bool:
    """True if `text` has the shape of a ULID (26 Crockford base32 characters, first one 0-7)."""
    return len(text) == 26 and text[0] in "01234567" and all(c in _CROCKFORD for c in text)
