"""The dashboard's message catalogue: both languages complete, every key used exists, and no user-visible
English is left in the HTML or the scripts outside the catalogue. Static checks of the bundled files."""

from __future__ import annotations

import json
import re
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "cloud" / "static"
SCRIPTS = ["signin.js", "sound.js", "map.js", "health.js", "history.js", "messages.js", "alerts.js", "dashboard.js"]
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# String literals that are not prose: fonts, CSS, MIME types, HTTP header names, formats, and browser API
# names. Anything else with two words in a row, or a capitalised word, is taken for UI text.
NOT_PROSE = {
    "10px sans-serif", "12px sans-serif", "bold 12px sans-serif", "Content-Type", "Authorization", "Retry-After",
    "Not Found", "HTTP", "Bearer", "use strict",
    "who open-access", "last muted",  # CSS class lists
}


def catalogue() -> dict[str, dict[str, str]]:
    text = (STATIC / "i18n.js").read_text(encoding="utf-8")
    m = re.search(r"/\* catalogue:begin \*/(.*?)/\* catalogue:end \*/", text, re.S)
    assert m, "i18n.js must keep the catalogue between its markers"
    data: dict[str, dict[str, str]] = json.loads(m.group(1))
    return data


def _strip_comments(js: str) -> str:
    js = re.sub(r"/\*.*?\*/", "", js, flags=re.S)
    return re.sub(r"(?m)(^|[^:\"'`\\])//.*$", r"\1", js)


def string_literals(js: str) -> list[str]:
    """The static text of every '…', "…" and `…` literal (template ${…} parts removed)."""
    out: list[str] = []
    for m in re.finditer(r"'((?:[^'\\\n]|\\.)*)'|\"((?:[^\"\\\n]|\\.)*)\"|`((?:[^`\\]|\\.)*)`", _strip_comments(js)):
        s = next(g for g in m.groups() if g is not None)
        # A placeholder stands for a word, so "raised ${when} today" still reads as prose.
        out.append(re.sub(r"\$\{[^}]*\}", "xx", s))
    return out


def keys_used() -> set[str]:
    used: set[str] = set()
    for name in SCRIPTS:
        used |= set(re.findall(r"\bt\(\s*\"([\w.]+)\"", (STATIC / name).read_text(encoding="utf-8")))
        used |= set(re.findall(r"\"((?:signin|conn)\.why\.\w+)\"", (STATIC / name).read_text(encoding="utf-8")))
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    used |= set(re.findall(r"data-i18n(?:-[a-z-]+)?=\"([\w.]+)\"", html))
    return used


def test_both_languages_have_every_key_with_the_same_placeholders() -> None:
    cat = catalogue()
    assert set(cat) == {"vi", "en"}
    assert set(cat["vi"]) == set(cat["en"]), set(cat["vi"]) ^ set(cat["en"])
    for key in cat["vi"]:
        assert cat["vi"][key].strip() and cat["en"][key].strip(), key
        assert set(PLACEHOLDER.findall(cat["vi"][key])) == set(PLACEHOLDER.findall(cat["en"][key])), key


def test_every_key_the_page_uses_is_in_the_catalogue() -> None:
    cat = catalogue()["vi"]
    missing = sorted(k for k in keys_used() if k not in cat)
    assert not missing, missing
    # Keys built at run time: every alert type, severity, state, role and worst state.
    for prefix, names in {"type": ["geofence_breach", "band_missing", "band_tamper", "sos", "fever",
                                   "advert_forgery", "advert_replay", "camera_motion", "camera_offline",
                                   "camera_tamper", "node_offline", "low_battery", "no_motion"],
                          "sev": ["critical", "major", "minor"], "state": ["raised", "acknowledged", "cleared"],
                          "role": ["guard", "command", "admin"],
                          "wall.worst": ["ok", "warn", "crit", "esc", "idle"],
                          "event": ["raised", "cleared", "acknowledged", "escalated", "escalation_delivery"]}.items():
        for n in names:
            assert f"{prefix}.{n}" in cat, f"{prefix}.{n}"


def test_alert_types_match_the_protocol() -> None:
    from typing import get_args

    from protocols.payloads import AlertType

    cat = catalogue()["vi"]
    assert {k.removeprefix("type.") for k in cat if k.startswith("type.")} == set(get_args(AlertType))


def test_vietnamese_is_written_with_its_diacritics() -> None:
    vi = catalogue()["vi"]
    marked = [k for k, v in vi.items() if any(unicodedata.combining(c) for c in unicodedata.normalize("NFD", v))
              or "đ" in v.lower()]
    # Nearly every Vietnamese sentence has a tone mark; a catalogue typed without them would fail here.
    assert len(marked) >= 0.8 * len(vi), sorted(set(vi) - set(marked))
    assert vi["alert.ackBtn"] == "Xác nhận" and vi["view.history"] == "Lịch sử"
    assert all(unicodedata.is_normalized("NFC", v) for v in vi.values())


class _Visible(HTMLParser):
    """Text and labelled attributes of index.html that are not named by a data-i18n* attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for attr in ("placeholder", "title", "aria-label", "alt"):
            value = a.get(attr)
            if value and f"data-i18n-{attr}" not in a and not re.fullmatch(r"[A-Z0-9-]+", value):
                self.problems.append(f"<{tag} {attr}={value!r}>")
        if tag not in ("meta", "link", "input", "img", "br"):
            self.stack.append((tag, "data-i18n" in a))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        text = data.strip()
        if not text or any(named for _, named in self.stack[-1:]):
            return
        if self.stack and self.stack[-1][0] in ("script", "style", "title", "b", "code"):
            return  # <title> is set from the catalogue at start; <b>qwatch</b> is the product name
        self.problems.append(text)


def test_no_english_left_in_the_html() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert '<html lang="vi">' in html
    p = _Visible()
    p.feed(html)
    assert p.problems == [], p.problems


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_english_left_in_the_scripts(name: str) -> None:
    found = []
    for s in string_literals((STATIC / name).read_text(encoding="utf-8")):
        text = s.strip()
        words = " ".join(w for w in text.split() if w != "xx")   # "raised xx today" reads "raised today"
        if text in NOT_PROSE or words in NOT_PROSE or text.startswith(("/", "#", ".", "[", "qwatch.", "rgba(", "#")):
            continue
        if re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", words) or re.fullmatch(r"[A-Z][a-z]{2,}.*", words):
            found.append(text)
    assert found == [], found
