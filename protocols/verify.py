"""Advert authentication and anti-replay (docs/protocol.md §1 receiver rules).

Pure: the caller passes the observation time, so replay of a field log gives the same
verdicts as the live agent did.

Counters are compared in serial-number arithmetic (RFC 1982 on 32 bits): a counter is newer
than the last accepted one when it is ahead by 1 .. 2^31-1 modulo 2^32. §1 says the counter
goes up by one on every advert and that jumps forward are normal; read with plain integers a
band that wrapped past 2^32-1 would be judged a replayer forever (its 0, 1, … are "lower").
Half the counter space is 68 years of adverts at 1 Hz, so no genuine advert is ever that far
behind, and an attacker can only replay what a band really sent (the tag covers the counter).
See docs/protocol.md §1 (receiver rules 4 and 5).

The last accepted counter of each band is the state that makes replays detectable; the agent
saves it (`take_changed_counters`) and loads it after a restart (`restore_counters`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from hmac import compare_digest
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives.cmac import CMAC

from protocols.advert import BODY_LEN, TAG_LEN, StatusAdvert, decode_status, tag_context
from protocols.errors import AdvertError

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
UNKNOWN_BAND = "unknown_band"
WRONG_COMPANY = "wrong_company"
BAD_TAG = "bad_tag"
REPLAY = "replay"

Alarm = Literal["advert_forgery", "advert_replay"]

_MASK = 0xFFFFFFFF
_HALF = 1 << 31


def counter_newer(new: int, last: int) -> bool:
    """True when counter `new` comes after `last` (serial-number arithmetic, 32 bits)."""
    return 0 < ((new - last) & _MASK) < _HALF


class Verdict(NamedTuple):
    """What the verifier decided about one received advert (a NamedTuple: one per advert, cheap).

    `outcome` is ``accepted`` (a new advert), ``duplicate`` (the same advert heard again by
    another receiver: an extra RSSI sample) or a drop reason. `advert` is set for accepted
    and duplicate adverts, and for authenticated-but-replayed ones it is None. `band_id`
    is set whenever the payload decoded, so alarms can name the band.
    """

    outcome: str
    advert: StatusAdvert | None = None
    band_id: int | None = None
    alarm: Alarm | None = None

    @property
    def usable(self) -> bool:
        return self.outcome in (ACCEPTED, DUPLICATE)


@dataclass(slots=True)
class _BandState:
    last_counter: int = -1
    last_ts: float = 0.0
    last_payload: bytes = b""
    mac: CMAC | None = None  # keyed once per band: copying it is 4× cheaper than keying AES per advert
    bad_tags: deque[float] = field(default_factory=deque)
    replays: deque[float] = field(default_factory=deque)


class AdvertVerifier:
    """Decode, authenticate and de-duplicate adverts for the enrolled bands of one site."""

    def __init__(
        self,
        keys: Mapping[int, bytes],
        company_id: int,
        *,
        dup_window_s: float = 2.0,
        alarm_window_s: float = 60.0,
        alarm_count: int = 3,
    ) -> None:
        self._keys = dict(keys)
        self._company_id = company_id
        self._cid_le = (company_id & 0xFFFF).to_bytes(2, "little")  # the first 2 bytes of every tag's message
        self._dup_window_s = dup_window_s
        self._alarm_window_s = alarm_window_s
        self._alarm_count = alarm_count
        self._bands: dict[int, _BandState] = {}
        self._changed: set[int] = set()
        self.counts: dict[str, int] = {}

    def restore_counters(self, counters: Mapping[int, int]) -> int:
        """Load each band's last accepted counter saved before a restart; returns how many were loaded.

        The restored counter has no time of its own, so an advert with that same counter is a replay
        (the duplicate window is 2 s and the restart took longer).
        """
        n = 0
        for band, counter in counters.items():
            if 0 <= counter <= _MASK:
                state = self._bands.get(band)
                if state is None:
                    state = self._bands[band] = _BandState()
                if state.last_counter < 0 or counter_newer(counter, state.last_counter):
                    state.last_counter = counter
                    state.last_ts = float("-inf")
                    n += 1
        return n

    def take_all_counters(self) -> dict[int, int]:
        """Every band's last accepted counter (to hand over to a new verifier)."""
        return {b: st.last_counter for b, st in self._bands.items() if st.last_counter >= 0}

    def take_changed_counters(self) -> dict[int, int]:
        """Bands whose last accepted counter moved since the previous call, with that counter."""
        out = {b: self._bands[b].last_counter for b in self._changed if b in self._bands}
        self._changed.clear()
        return out

    def set_keys(self, keys: Mapping[int, bytes]) -> None:
        """Replace the enrolled keys (after enrolment or a config push). Replay state is kept."""
        self._keys = dict(keys)
        for state in self._bands.values():
            state.mac = None  # a band may have a new key: key its CMAC again on the next advert

    def verify(self, ts: float, company_id: int, data: bytes) -> Verdict:
        """Judge one advert heard at `ts`. Never raises for any input bytes."""
        verdict = self._judge(ts, company_id, data)
        self.counts[verdict.outcome] = self.counts.get(verdict.outcome, 0) + 1
        return verdict

    def _judge(self, ts: float, company_id: int, data: bytes) -> Verdict:
        try:
            advert = decode_status(data)
        except AdvertError as exc:
            return Verdict(exc.reason)
        band_id = advert.band_id
        if company_id != self._company_id:
            return Verdict(WRONG_COMPANY, band_id=band_id)
        key = self._keys.get(band_id)
        if key is None:
            return Verdict(UNKNOWN_BAND, band_id=band_id)
        state = self._bands.get(band_id)
        if state is None:
            state = self._bands[band_id] = _BandState()
        if state.mac is None:
            state.mac = tag_context(key)
        # The same bytes as the last accepted advert were already authenticated: skip the CMAC.
        # This is the common case (one advert heard by several receivers) and halves the cost.
        if data != state.last_payload:
            # protocols.advert.check_tag inlined (decode_status checked the length; company_id is the
            # site's): the keyed context is copied, never keyed again per advert.
            mac = state.mac.copy()
            mac.update(self._cid_le + data[:BODY_LEN])
            if not compare_digest(mac.finalize()[:TAG_LEN], data[BODY_LEN:]):
                return Verdict(BAD_TAG, None, band_id, self._note(state.bad_tags, ts, "advert_forgery"))
        if state.last_counter < 0 or counter_newer(advert.counter, state.last_counter):
            state.last_counter = advert.counter
            self._changed.add(band_id)
            state.last_ts = ts
            state.last_payload = bytes(data)
            return Verdict(ACCEPTED, advert, band_id, None)
        if advert.counter == state.last_counter and abs(ts - state.last_ts) <= self._dup_window_s:
            return Verdict(DUPLICATE, advert, band_id, None)
        return Verdict(REPLAY, None, band_id, self._note(state.replays, ts, "advert_replay"))

    def _note(self, window: deque[float], ts: float, alarm: Alarm) -> Alarm | None:
        window.append(ts)
        while window and window[0] < ts - self._alarm_window_s:
            window.popleft()
        return alarm if len(window) >= self._alarm_count else None
