"""ULIDs for alert IDs: sortable by creation time, unique without coordination between nodes."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(ts: float | None = None) -> str:
    """Return a 26-character Crockford base32 ULID for time `ts` (Unix seconds; now by default)."""
    ms = int((time.time() if ts is None else ts) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_ulid(text: str) -> bool:
    """True if `text` has the shape of a ULID (26 Crockford base32 characters, first one 0-7)."""
    return len(text) == 26 and text[0] in "01234567" and all(c in _CROCKFORD for c in text)
