"""Human-written labels (user names, people's labels, site display names): Unicode, but clean.

Vietnamese names carry diacritics ("Nguyễn Văn Lan"), and the same name can arrive in two Unicode
forms: precomposed (NFC, what Windows and Android send) or decomposed (NFD, what macOS file names and
some keyboards send). Normalising to NFC at every boundary makes "Nguyễn" one name, not two, in the
users file, in an acknowledgement and in a history filter. Control characters (including a newline
or an ANSI escape smuggled into a log line or a CSV cell) and bidi overrides are refused, and length
is bounded in characters after normalisation.
"""

from __future__ import annotations

import unicodedata

# Bidi overrides/isolates can make a label display as something else (e.g. reverse a name in a log).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class LabelError(ValueError):
    """A label that cannot be accepted; the message says why (safe to show the user)."""


def clean_label(value: str, *, max_len: int = 64, what: str = "name", allow_empty: bool = False) -> str:
    """``value`` in NFC with surrounding spaces removed; raises :class:`LabelError` when it holds a control
    or format character, is empty (unless ``allow_empty``) or longer than ``max_len`` characters."""
    if not isinstance(value, str):
        raise LabelError(f"{what} must be text")
    text = unicodedata.normalize("NFC", value).strip()
    if not text and not allow_empty:
        raise LabelError(f"{what} must not be empty")
    if len(text) > max_len:
        raise LabelError(f"{what} is longer than {max_len} characters")
    for ch in text:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise LabelError(f"{what} holds a control character (U+{ord(ch):04X}); letters, digits, spaces "
                             "and punctuation only")
    return text
